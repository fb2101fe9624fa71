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


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict (uvicorn's `log_config`): JSON on stderr, access lines on stdout."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "app.logs.JsonFormatter"},
            # Access lines arrive already as JSON (built once in the middleware).
            "line": {"format": "%(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stdout"},
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
