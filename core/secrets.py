"""Keeping secrets (bot tokens, license keys) out of every log line and error message.

Secrets leak through other people's code: httpx logs each request URL (Telegram URLs carry
the bot token, ShopAI's ``/init_session`` URL the license key), python-telegram-bot logs its
base URL and names the token in ``InvalidToken``. A filter on one logger does not see its
children's records, and a handler filter misses handlers someone else adds, so the process's
log-record factory is wrapped: every record created anywhere is scrubbed before any handler
formats it. Whoever holds a secret registers it once with :func:`register_secret`.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any

MASK = "***"

# Secrets shorter than this are not masked: "1" or "en" would blank out ordinary words. Real
# tokens and license keys are far longer.
MIN_SECRET_LEN = 6

# Telegram puts the token in the path: https://api.telegram.org/bot123456:AA.../getMe, and
# /file/bot<token>/... for downloads. Masked even when the token was never registered here.
TELEGRAM_URL_TOKEN = re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+")


def _mask(_match: re.Match[str]) -> str:
    return MASK


def _mask_token(match: re.Match[str]) -> str:
    return match.group(1) + MASK


class Redactor:
    """Replaces secrets in text; longest first, so a secret containing another goes whole.

    Called for every log record, so the common case (no secret in the text) is made cheap:
    plain substring tests, which scan in C, decide whether the regular expressions run at all.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        # a new object whenever the secrets change: a record scrubbed under an older
        # generation is scrubbed again
        self.generation = object()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            for secret in secrets:
                if secret and len(secret) >= MIN_SECRET_LEN:
                    self._secrets.add(secret)
            ordered = tuple(sorted(self._secrets, key=len, reverse=True))
            if ordered == self._ordered:
                return
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
            self._ordered = ordered
            self.generation = object()

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        # Function replacements, not templates: a template is compiled through an import,
        # which fails while the interpreter shuts down (objects' __del__ still log then).
        pattern, ordered = self._pattern, self._ordered
        if pattern is not None and any(secret in text for secret in ordered):
            text = pattern.sub(_mask, text)
        if "/bot" in text:
            text = TELEGRAM_URL_TOKEN.sub(_mask_token, text)
        return text


# The process-wide registry every component adds its secrets to.
REDACTOR = Redactor()

_install_lock = threading.Lock()
_installed = False


def register_secret(*secrets: str | None) -> None:
    """Mask these values in every log record from now on (and install the scrubber)."""
    parts: list[str | None] = []
    for secret in secrets:
        parts.append(secret)
        if secret and ":" in secret:  # a bot token: the id before ":" is public, the rest not
            parts.append(secret.split(":", 1)[1])
    REDACTOR.add(*parts)
    _install()


def redact(text: str) -> str:
    return REDACTOR(text)


def safe_error(exc: BaseException) -> str:
    """``exc`` as text fit for a log line or a user-facing error."""
    return redact(f"{type(exc).__name__}: {exc}")


_SCRUBBED = "_chatbridge_scrubbed"


def scrub_record(record: logging.LogRecord, redactor: Redactor = REDACTOR) -> None:
    """Mask secrets in a record's message (arguments merged), exception text and stack.

    A record is scrubbed when it is made (the record factory) and again by the handler's
    filter; the second pass costs a lookup when nothing changed since the first.
    """
    done = record.__dict__.get(_SCRUBBED)
    if (
        done is not None
        and done[0] is redactor.generation
        and done[1] is record.msg
        and record.args is None
        and done[2] is record.exc_text
        and done[3] is record.stack_info
    ):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad %-format must not lose the line (nor leak raw args)
        message = f"{record.msg!s} (unformattable args)"
    # Freeze the text now: libraries log objects they mutate afterwards (PTB's getFile result
    # gains the file URL, token included, after its debug line was emitted).
    record.msg, record.args = redactor(message), None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redactor(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor(record.stack_info)
    setattr(
        record,
        _SCRUBBED,
        (redactor.generation, record.msg, record.exc_text, record.stack_info),
    )


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                scrub_record(record)
            except Exception:  # never lose the line; never let the secret through either
                record.msg, record.args, record.exc_info, record.exc_text = (
                    "(a log line that could not be redacted was dropped)",
                    None,
                    None,
                    None,
                )
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
