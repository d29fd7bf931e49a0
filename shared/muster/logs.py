"""structlog set-up, done once by each process entrypoint (never by library code).

JSON lines when stderr is not a terminal (or MUSTER_LOG_FORMAT=json), a readable console
otherwise. Never pass a DM's text, a token or a secret to a logger.
"""

from __future__ import annotations

import logging
import sys

import structlog

from muster.settings import Settings


def configure_logging(settings: Settings, *, process: str) -> None:
    json_lines = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    level = getattr(logging, settings.log_level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    # Libraries that use stdlib logging (uvicorn, rq) keep their own format at our level.
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
