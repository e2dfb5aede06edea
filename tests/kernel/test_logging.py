"""Logging as the server configures it: named loggers, JSON in production, readable lines otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from splitstone.kernel.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_lines_carry_level_logger_time_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="info", json=True)
    log = structlog.get_logger("splitstone.test")
    log.info("hello", answer=42)
    log.debug("filtered out")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it failed")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    hello, failed = lines
    assert hello["event"] == "hello"
    assert hello["answer"] == 42
    assert hello["level"] == "info"
    assert hello["logger"] == "splitstone.test"
    assert hello["timestamp"].endswith("Z")
    assert failed["level"] == "error"
    assert "ValueError: bad value" in failed["exception"]


def test_console_lines_in_development(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="debug", json=False)
    structlog.get_logger("splitstone.events").debug("event published", event_name="notes.NoteAdded")
    line = capsys.readouterr().err.strip()
    assert "event published" in line
    assert "event_name=notes.NoteAdded" in line
    assert "splitstone.events" in line
    assert "debug" in line


def test_the_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="warning", json=True)
    log = structlog.get_logger("splitstone.test")
    log.info("quiet")
    log.warning("loud")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["loud"]


def test_console_tracebacks_are_plain_and_show_no_locals(capsys: pytest.CaptureFixture[str]) -> None:
    # Rich tracebacks with locals took ~1 s of the event loop per logged error and could print secrets.
    configure_logging(level="info", json=False)
    api_key = "ssk_abc_never-print-me"
    try:
        raise ValueError(f"bad key of length {len(api_key)}")
    except ValueError:
        structlog.get_logger("splitstone.test").exception("it failed")
    output = capsys.readouterr().err
    assert "Traceback (most recent call last):" in output
    assert "ValueError: bad key of length 22" in output
    assert "never-print-me" not in output
