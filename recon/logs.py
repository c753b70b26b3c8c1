"""Logging for the command line and the DAG: text or one JSON object per line.

Every module logs to its own `logging.getLogger(__name__)` (librdkafka's lines to
`recon.kafka`); nothing here runs on import. `configure` is called by the command
line only: a library call (`recon.api`) leaves the process's logging alone.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Fields a record may carry (`extra=`), written as keys of the JSON line.
CONTEXT = ("pipeline", "window", "run_id", "stage", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's context."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {key: getattr(record, key) for key in CONTEXT if hasattr(record, key)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send recon's log records (librdkafka's included) to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("recon")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
