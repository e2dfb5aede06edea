"""structlog set-up: readable console lines in development, one JSON object per line in production."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, level: str = "info", json: bool = False) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        # structlog's default console traceback (rich, with every frame's locals) costs ~1 s of the event
        # loop per logged exception, so a database outage stalled every request; locals may hold secrets.
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if json else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_NamedPrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: a line per remote contract call, which the access log of the
    # called service already has (with the trace id), and the remote client logs failures itself.
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that keeps the name given to `get_logger`, for the `add_logger_name` processor."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


class _NamedPrintLoggerFactory:
    # structlog's PrintLoggerFactory drops the name, and add_logger_name then fails on every log call.
    def __call__(self, *args: object) -> _NamedPrintLogger:
        return _NamedPrintLogger(str(args[0]) if args else "splitstone")
