"""Structured logs: every line is one JSON object.

Two streams, as container platforms expect: access lines on stdout (`layerlab.access`, written by
app.observability, one per request), everything else (uvicorn's startup and errors, layerlab's
warnings) on stderr. `python -m app.serve` installs this configuration in every worker; apps run
another way (tests, a bare `uvicorn app.main:app`) keep Python's default logging.

No metrics here: app.serve imports this module before the workers exist (see app.serve).
"""

import logging
import time
from typing import Any

import orjson

ACCESS_LOGGER = "layerlab.access"

_second: tuple[int, str] = (-1, "")  # the last second formatted, reused within that second


def timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2025-01-31T12:00:00.123Z (it runs on every request)."""
    global _second
    whole = int(created)
    second, text = _second
    if whole != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message"} plus "exc" when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLineHandler(logging.StreamHandler):
    """Writes each message as it is, one per line: access lines arrive as JSON already.

    `write_line` is how app.observability writes them when this is the access logger's one
    handler: the line without a LogRecord, which costs more than the line itself (~16 us of a
    small request's server time, measured in place; issue 19)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.write_line(record.getMessage(), record)

    def write_line(self, line: str, record: logging.LogRecord | None = None) -> None:
        with self.lock:  # type: ignore[union-attr]  # StreamHandler always creates it
            try:
                self.stream.write(line + self.terminator)
                self.stream.flush()
            except RecursionError:
                raise
            except Exception:
                self.handleError(record or logging.makeLogRecord({"msg": line}))

    @classmethod
    def sole_handler(cls, logger: logging.Logger, level: int) -> "AccessLineHandler | None":
        """The logger's handler when logging would hand it every record of `level` and nothing
        else would see them: one AccessLineHandler, no filters, no propagation."""
        handlers = logger.handlers
        if len(handlers) != 1 or logger.propagate or logger.filters:
            return None
        handler = handlers[0]
        if type(handler) is not cls or handler.filters or level < handler.level:
            return None
        return handler


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict (uvicorn's `log_config`): JSON on stderr, access lines on stdout."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "app.logs.JsonFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            # Access lines arrive already as JSON (built once in the middleware): no formatter.
            "access": {"class": "app.logs.AccessLineHandler", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            # Our middleware writes the access lines; uvicorn's own would repeat them as text.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "layerlab": {"handlers": ["stderr"], "level": level, "propagate": False},
            ACCESS_LOGGER: {"handlers": ["access"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
