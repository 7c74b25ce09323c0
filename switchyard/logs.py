"""Logging set-up with secret redaction.

Every record passes a filter that masks registered secrets (provider keys, API keys, the
admin token) and anything shaped like a credential, so no key reaches a log line even when
an exception message or a URL carries one.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

import orjson

_CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(
        r"(?i)\b((?:api[_-]?key|x-api-key|x-goog-api-key|key|token|authorization)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]{6,}"
    ),
]
# Prefixed keys (OpenAI `sk-…`, `sk-proj-…`, Anthropic `sk-ant-api03-…`, ours `sy-…`): a
# candidate, masked only when its tail looks random (`looks_random`), so a folder or host named
# `sy-gateway-checkout` is printed as it is.
_PREFIXED_KEY = re.compile(r"\b(?:sk|sy|pk|rk)-[A-Za-z0-9_-]{16,}")
MASK = "***"


def looks_random(tail: str) -> bool:
    """Whether a key candidate's tail is a generated secret rather than words: generated keys
    (base64/base62/hex, 32+ random characters) are at least a fifth digits and capitals, or
    one unbroken run of 16+ characters; names are lower-case words joined by dashes, with a
    number here and there (`sy-gateway-checkout-2`)."""
    marked = sum(c.isdigit() or c.isupper() for c in tail)
    longest_run = max(len(run) for run in tail.split("-"))
    return len(tail) >= 16 and (marked * 5 >= len(tail) or longest_run >= 16)


_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Add a value that must never be printed (ignored when too short to be a secret)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() and m.group(1) else "") + MASK, text)
    return _PREFIXED_KEY.sub(lambda m: MASK if looks_random(m.group(0)[3:]) else m.group(0), text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            payload["exc"] = record.exc_text
        return orjson.dumps(payload).decode()


# Keyword arguments for every uvicorn server we start: log_config=None keeps uvicorn from
# installing its own handlers (which would print past the redaction filter); its loggers then
# propagate to the root handler that `setup_logging` installed.
UVICORN_LOGGING: dict = {"log_config": None, "log_level": "warning", "access_log": False}


def setup_logging(service: str, level: str = "INFO", json: bool = False) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Quiet libraries that log per request at INFO.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Libraries that attach handlers of their own (uvicorn does, when given a log config)
    # would bypass the filter: route them through the root handler instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
    return logging.getLogger(service)
