"""Operator commands: `splitstone auth ...`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from splitstone.kernel.errors import DomainError
from splitstone.kernel.module import ImplementationProvider


def build_cli(provide: ImplementationProvider) -> typer.Typer:
    app = typer.Typer(help="Users, organizations and API keys.", no_args_is_help=True)

    @app.command("create-user")
    def create_user(
        email: Annotated[str, typer.Option(help="The user's email address (their login).")],
        password: Annotated[
            str,
            typer.Option(
                prompt=True,
                hide_input=True,
                confirmation_prompt=True,
                envvar="SPLITSTONE_NEW_USER_PASSWORD",
                help="Prompted for when not given (or set SPLITSTONE_NEW_USER_PASSWORD).",
            ),
        ],
        display_name: Annotated[str, typer.Option("--name", help="How the user is shown.")] = "",
        verified: Annotated[bool, typer.Option(help="Mark the email address as verified.")] = True,
    ) -> None:
        """Create a user directly, e.g. the first administrator of a fresh installation."""

        async def run() -> None:
            async with provide() as service:
                user = await service.accounts.create_user(
                    email=email,
                    password=password,
                    display_name=display_name or email.split("@")[0],
                    verified=verified,
                )
                typer.echo(f"created user {user.id} <{user.email}>")

        try:
            asyncio.run(run())
        except DomainError as error:
            typer.echo(f"error: {error.detail}", err=True)
            raise typer.Exit(code=1) from None

    return app
