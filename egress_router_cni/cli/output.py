"""Messages for humans on stderr: plain lines, or structured JSON records (`--log-format json`).

structlog renders the JSON form; it is imported only when that format is asked for.
"""

from __future__ import annotations

import sys
from typing import Any

import click


def _format() -> str:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and "log_format" in ctx.obj:
            return str(ctx.obj["log_format"])
        ctx = ctx.parent
    return "text"


def echo(text: str) -> None:
    """click.echo for human output whose content is not ours."""
    click.echo(escaped(text))


def report(level: str, event: str, **fields: Any) -> None:
    """Write one message to stderr: 'LEVEL: event' or, with --log-format json, a JSON record."""
    if _format() == "json":
        import structlog

        logger = structlog.wrap_logger(
            structlog.PrintLogger(file=sys.stderr),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
        method = {"note": "warning", "invalid": "error"}.get(level, level)
        getattr(logger, method)(event, kind=level, **fields)
        return
    details = fields.pop("details", "")
    code = fields.pop("code", None)
    text = f"{level}: {event}" + (f": {details}" if details else "")
    text += "".join(f" ({k}: {v})" for k, v in fields.items())
    text += f" (CNI error code {code})" if code is not None else ""
    click.echo(escaped(text), err=True)


def escaped(text: str) -> str:
    """TEXT with control characters as \\xNN: interface names, aliases, pod names and log lines come from pods."""
    return "".join(c if 0x20 <= ord(c) != 0x7F and not 0x80 <= ord(c) <= 0x9F else f"\\x{ord(c):02x}" for c in text)
