"""Projects' operator commands: `splitstone projects ...`."""

from __future__ import annotations

import typer

from splitstone.kernel.module import ImplementationProvider


def build_cli(implementation: ImplementationProvider) -> typer.Typer:
    app = typer.Typer(help="Projects, tasks and the demo data.", no_args_is_help=True)
    return app
