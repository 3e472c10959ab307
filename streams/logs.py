"""Logging of the commands: one format for everything, and the libraries kept quiet.

faust, mode and aiokafka log every service start and stop at INFO (about a hundred lines
for one worker start and stop); at the default level only driftline's own INFO lines and
the libraries' warnings are shown. ``--log-level debug`` shows everything;
``--log-format json`` writes one JSON object per line for log pipelines.

>>> import io
>>> stream = io.StringIO()
>>> configure("info", "json", stream)
>>> logging.getLogger("driftline.worker").info("started %d shards", 2)
>>> logging.getLogger("aiokafka.consumer").info("joined group")
>>> orjson.loads(stream.getvalue())["message"]
'started 2 shards'
>>> len(stream.getvalue().splitlines())
1
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from driftline.schemas.exceptions import ConfigError

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "streams")
"""Loggers held at WARNING unless the level asked for is debug (``streams`` is mode's
service chatter under our module names; driftline's own loggers are ``driftline.*``)."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, and the
    exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Set up the root logger (replacing earlier handlers) for one command."""
    if level not in LEVELS:
        raise ConfigError(f"--log-level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"--log-format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = logging.DEBUG if level == "debug" else max(logging.WARNING, root.level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
