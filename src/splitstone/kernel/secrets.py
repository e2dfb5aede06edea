"""Secrets: explicit in production, generated on first run and kept under the data dir otherwise."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


class MissingSecretError(RuntimeError):
    """Production refuses to start on a secret it would otherwise have to invent."""


class SecretStore:
    def __init__(self, directory: Path, *, production: bool) -> None:
        self._directory = directory
        self._production = production

    def get(self, name: str, *, explicit: str | None, env_var: str, generate: Callable[[], str]) -> str:
        """The explicit value if given; in production nothing else; else a generated value kept on disk."""
        if explicit:
            return explicit
        if self._production:
            raise MissingSecretError(
                f"{env_var} is not set: production does not generate secrets; set it explicitly"
            )
        path = self._directory / name
        if path.exists():
            return path.read_text()
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = generate()
        # Write-then-rename, created 0600, so a crash never leaves a half secret and nobody else reads it.
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        try:
            os.link(tmp, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text()
