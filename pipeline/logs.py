"""Log lines as text or JSON (one object per line), never with a secret in them.

``--log-format json`` (or ``STREAMINFER_LOG_FORMAT=json``) writes one JSON object per
line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, for an exception,
``error``: what log shippers (Loki, Elasticsearch, CloudWatch) parse without a pattern.
Either way, the SASL password given in the environment is replaced by ``***`` wherever
it would appear (a broker error that echoes a connection string, say).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _secrets() -> list[str]:
    return [s for s in (os.environ.get("STREAMINFER_SASL_PASSWORD"),) if s]


class _Masking(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonFormatter(_Masking):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return mask(json.dumps(line, ensure_ascii=False))


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else _Masking(_TEXT)


def mask(text: str) -> str:
    """``text`` with the secrets in the environment replaced by ``***``."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text
