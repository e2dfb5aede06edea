"""Operator commands: `splitstone notifications ...`: the delivery log, and what an email said."""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from splitstone.kernel.errors import DomainError
from splitstone.kernel.module import ImplementationProvider
from splitstone.modules.notifications.api import Channel, DeliveryStatus, NotificationNotFound


def build_cli(provide: ImplementationProvider) -> typer.Typer:
    app = typer.Typer(help="Email, in-app notifications and webhooks.", no_args_is_help=True)

    @app.command("deliveries")
    def deliveries(
        to: Annotated[str | None, typer.Option(help="Only deliveries to this email address.")] = None,
        status: Annotated[DeliveryStatus | None, typer.Option(help="Only deliveries in this status.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    ) -> None:
        """The newest deliveries: kind, channel, recipient, status, attempts and last error."""

        async def run() -> None:
            async with provide() as service:
                entries = await service.delivery_log.recent(address=to, status=status, limit=limit)
            table = Table()
            table.add_column("id", no_wrap=True)  # whole, so it can be copied into `show`
            for title in ("kind", "channel", "to", "status", "attempts", "created", "last error"):
                table.add_column(title, overflow="fold")
            for e in entries:
                table.add_row(
                    str(e.id),
                    e.kind,
                    e.channel,
                    e.address or str(e.user_id),
                    e.status,
                    str(e.attempts),
                    e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    (e.last_error or "")[:60],
                )
            Console().print(table)

        asyncio.run(run())

    @app.command("show")
    def show(
        delivery_id: Annotated[
            UUID | None, typer.Argument(help="A delivery id from `deliveries`.", show_default=False)
        ] = None,
        to: Annotated[
            str | None, typer.Option(help="Instead of an id: the newest email to this address.")
        ] = None,
    ) -> None:
        """An email's subject and text, e.g. to follow a verification link without a mail server."""
        if (delivery_id is None) == (to is None):
            typer.echo("error: give a delivery id or --to ADDRESS", err=True)
            raise typer.Exit(code=2)

        async def run() -> None:
            async with provide() as service:
                chosen = delivery_id
                if chosen is None:
                    newest = await service.delivery_log.recent(address=to, channel=Channel.EMAIL, limit=1)
                    if not newest:
                        raise NotificationNotFound(f"No email to {to}.")
                    chosen = newest[0].id
                email = await service.delivery_log.email(chosen)
            typer.echo(f"To: {email.address}\nSubject: {email.subject}\nStatus: {email.status}\n")
            typer.echo(email.body_text or "")

        try:
            asyncio.run(run())
        except DomainError as error:
            typer.echo(f"error: {error.detail}", err=True)
            raise typer.Exit(code=1) from None

    return app
