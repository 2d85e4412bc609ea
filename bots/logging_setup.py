"""Process logging: one line per event, plain or JSON, tagged and redacted.

Every line carries the bot, conversation and turn ids set by :func:`core.logctx.log_context`.
A redaction filter on the handler replaces every configured secret (bot tokens, license keys)
and any Telegram ``/bot<token>/`` URL segment with ``***`` in the message, its arguments, the
exception text and the stack, before any formatter sees the record: secrets never reach the
output whichever library logged them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Literal, TextIO

from chatbridge.core.logctx import FIELDS, current_context
from chatbridge.core.secrets import MASK, REDACTOR, Redactor, register_secret, scrub_record

__all__ = ["CHATTY_LOGGERS", "MASK", "Redactor", "configure_logging"]

# Libraries that log every HTTP request at INFO (a Telegram long poll every few seconds).
CHATTY_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "websockets", "socketio", "engineio")

_HANDLER_NAME = "chatbridge"


class RedactingFilter(logging.Filter):
    """Scrubs each record the handler emits: a second net behind the record factory, for
    records made by code that swapped the factory after us."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record, self.redactor)
        return True


class ContextFilter(logging.Filter):
    """Copies the current bot / conversation / turn onto the record (``record.bot`` ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_context().items():
            # An explicit extra={"bot": ...} wins over the context.
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    # time.gmtime is several times cheaper than building a datetime for every line
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{second}.{int(record.msecs):03d}Z"


class PlainFormatter(logging.Formatter):
    """``2026-11-26T11:13:06.123Z INFO core.engine [bot=sellers conv=sellers:1:2 turn=7] msg``"""

    def format(self, record: logging.LogRecord) -> str:
        tags = " ".join(
            f"{'conv' if name == 'conversation' else name}={value}"
            for name in FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        line = f"{_timestamp(record)} {record.levelname} {record.name}"
        if tags:
            line += f" [{tags}]"
        line += f" {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, bot, conversation, turn[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(
    level: str | int = "INFO",
    fmt: Literal["plain", "json"] = "plain",
    secrets: Iterable[str] = (),
    *,
    stream: TextIO | None = None,
) -> Redactor:
    """Install chatbridge's one handler on the root logger (replacing a previous one).

    Returns the :class:`Redactor`, so secrets learnt later (``redactor.add(token)``) are masked
    too. ``stream`` defaults to standard error (standard output carries console replies).
    """
    if fmt not in ("plain", "json"):
        raise ValueError(f"log format must be 'plain' or 'json', not {fmt!r}")
    register_secret(*secrets)
    redactor = REDACTOR
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    # Handler filters see every record the handler emits, including those propagated from
    # library loggers (a filter on the root *logger* would not).
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root.setLevel(numeric)
    # At DEBUG the operator wants everything; otherwise per-request lines are noise.
    chatty = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    logging.captureWarnings(True)
    # Neither formatter prints them: don't look up the thread, process and multiprocessing
    # names for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return redactor
