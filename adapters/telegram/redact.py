"""Keep bot tokens out of every log line, traceback and exception message.

Telegram puts the token in every URL (``/bot<token>/sendMessage``): httpx logs each request URL
at INFO, PTB logs its base URL at DEBUG and names the token in ``InvalidToken``. A filter on
one logger does not see records of its children, so redaction is installed as the process's
log-record factory: it runs for every record created anywhere, before any handler formats it.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

REDACTED = "<redacted>"

_secrets: set[str] = set()
_ordered: list[str] = []
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    for secret in _ordered:  # longest first: a whole token before its secret half
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def register_secret(secret: str) -> None:
    """Redact ``secret`` (and, for a bot token, its secret half) from all logs from now on."""
    if not secret:
        return
    with _lock:
        _secrets.add(secret)
        if ":" in secret:  # a bot token: the id before ":" is public, the rest is not
            tail = secret.split(":", 1)[1]
            if len(tail) >= 8:
                _secrets.add(tail)
        _ordered[:] = sorted(_secrets, key=len, reverse=True)
        _install()
    # httpx's INFO line per request is pure noise with a token in it: quiet it unless the
    # operator set a level on purpose.
    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
        httpx_logger.setLevel(logging.WARNING)


def _install() -> None:
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets:
            _scrub(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    clean = redact(message)
    # freeze the text now: PTB logs dicts it mutates afterwards (getFile's result gains the
    # file URL, token included, after the debug line was emitted)
    if clean != message or record.args:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact(text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def safe_error(exc: BaseException) -> str:
    """``exc`` as text fit for a log line or a re-raised exception."""
    return redact(f"{type(exc).__name__}: {exc}")
