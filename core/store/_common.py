"""Helpers shared by every SessionStore implementation (so they behave identically)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

#: How long a button short id stays resolvable after it was last issued.
DEFAULT_BUTTON_TTL = timedelta(days=30)

#: Short ids start at this length and grow (up to :data:`MAX_SHORT_ID_LEN`) only on a collision.
SHORT_ID_LEN = 12
MAX_SHORT_ID_LEN = 16


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (the engine always passes aware ones)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_micros(value: datetime) -> int:
    """Integer microseconds since the epoch: exact, sortable, timezone-free on disk."""
    delta = as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def short_id_candidates(payload: str) -> list[str]:
    """Deterministic candidate ids for ``payload``, shortest first.

    A url-safe base64 prefix of SHA-256: 12 chars carry 72 bits, so a collision is practically
    impossible, but the longer candidates (then a salted hash) keep the mapping correct if one
    happens. The same payload always yields the same first candidate, in every store.
    """
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload.encode("utf-8")).digest())
    text = digest.decode("ascii").rstrip("=")
    out = [text[:n] for n in range(SHORT_ID_LEN, MAX_SHORT_ID_LEN + 1, 2)]
    for salt in range(1, 8):
        salted = hashlib.sha256(f"{salt}\x00{payload}".encode()).digest()
        out.append(base64.urlsafe_b64encode(salted).decode("ascii")[:MAX_SHORT_ID_LEN])
    return out
