"""Structured logging for the whole process.

One renderer for everything: structlog's own loggers and the stdlib loggers of asyncua, SQLAlchemy and
uvicorn all go through ``ProcessorFormatter``, so a line from asyncua looks like a line from the gateway.
JSON lines when stdout is not a terminal (production, CI, log shippers), a readable console at a
terminal. Context (station, pallet, serial, job) is bound with :func:`bound` and merged from contextvars.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]

# Third-party loggers that are chatty at INFO; they keep WARNING and above.
_QUIET = ("asyncua", "sqlalchemy", "aiosqlite", "alembic", "uvicorn.access")


def configure_logging(level: str | int = "INFO", *, json: bool | None = None) -> None:
    """Route structlog and stdlib logging through one renderer.

    ``json=None`` chooses by whether stdout is a terminal. Safe to call more than once (tests do).
    """
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()] if isinstance(level, str) else level

    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Bind shop-floor context (``station=``, ``pallet=``, ``serial=``, ``job=``) for a block of work.

    Empty values are left out so a line never says ``serial=""``.
    """
    values = {k: v for k, v in context.items() if v not in (None, "")}
    with structlog.contextvars.bound_contextvars(**values):
        yield
