"""The daemon's logging: text or JSON lines (`--log-format`), and the level switched at run
time (SIGUSR1 goes to debug and back, without a restart).

JSON lines carry the record's structured fields where a message has them (`policy`,
`quota`, `subject`, `request` on a denial), so an audit trail can be filtered by field.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

FIELDS = ("policy", "quota", "subject", "request", "connection", "service")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("pyroute2", "aiohttp.access", "asyncio")   # their debug is not ours


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                    timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        line.update({f: getattr(record, f) for f in FIELDS if hasattr(record, f)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup(level: str, form: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _quiet_others()
    global _configured
    _configured = root.level


def toggle_debug() -> None:
    """SIGUSR1: debug if the level set at start is not debug already, and back."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if root.level != logging.DEBUG else _configured)
    _quiet_others()
    logging.getLogger("nsmd").warning("log level now %s (SIGUSR1 switches it)",
                                      logging.getLevelName(root.level).lower())


def _quiet_others() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


_configured = logging.INFO
