"""The neutral types every layer speaks: no platform and no backend appears here.

Adapters turn platform updates into :class:`Inbound`; backends turn an :class:`Inbound` into a
stream of :data:`Event`; adapters render events through a :class:`~core.protocols.Surface`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from chatbridge.core.richtext import RichText, from_plain, plain_text


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Who is talking where. Sessions are per user *per chat* (and per thread/topic)."""

    bot: str
    platform: str
    chat_id: str
    user_id: str
    thread_id: str | None = None

    def short(self) -> str:
        """A compact, log-friendly id (no secrets, stable across restarts)."""
        base = f"{self.bot}:{self.chat_id}:{self.user_id}"
        return f"{base}:{self.thread_id}" if self.thread_id else base


@dataclass(frozen=True, slots=True)
class Image:
    """A photo the user sent, already downloaded."""

    data: bytes
    mime_type: str = "image/jpeg"

    def data_url(self) -> str:
        """The ``data:image/...;base64,`` form both backends accept."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One user turn."""

    key: ConversationKey
    text: str = ""
    images: tuple[Image, ...] = ()
    button_payload: str | None = None  # set when the turn is a pressed button
    language: str | None = None  # the user's platform language (IETF tag), if known
    message_id: str | None = None  # platform message id, for logs and replies

    @property
    def effective_text(self) -> str:
        """What the backend should read as the user's message."""
        return self.button_payload if self.button_payload is not None else self.text


@dataclass(frozen=True, slots=True)
class Button:
    """A choice offered by the backend: either sends ``payload`` back, or opens ``url``.

    ``id`` is the short id the engine gives a payload button when the answer arrives (the
    store maps it back to the payload); adapters put it in their platform's callback data.
    """

    label: str
    payload: str | None = None
    url: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if (self.payload is None) == (self.url is None):
            raise ValueError("a Button has exactly one of payload or url")


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """One message of a backend's final answer.

    ``body`` is the neutral rich text (:mod:`chatbridge.core.richtext`) adapters render, with
    the buttons already taken out; ``text`` is the same body read as plain text (logs,
    fallbacks). Give either: a message built from ``text`` alone gets paragraphs of it as its
    body, one built from ``body`` alone gets its plain reading as ``text``.
    """

    text: str = ""
    buttons: tuple[Button, ...] = ()
    links: tuple[Link, ...] = ()
    body: RichText = ()

    def __post_init__(self) -> None:
        if not self.body and self.text.strip():
            object.__setattr__(self, "body", from_plain(self.text))
        elif self.body and not self.text:
            object.__setattr__(self, "text", plain_text(self.body))


# --- events a backend yields while answering -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """Append ``text`` to the answer shown so far."""

    text: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Replace the answer shown so far with ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The authoritative answer; ends the turn."""

    messages: tuple[ReplyMessage, ...]


class NoticeReason(StrEnum):
    """What a backend tells the user besides the answer; each is a key of the catalogues
    (core/locales), so the user reads it in their language and operators can reword it."""

    PHOTOS_DROPPED = "photos_dropped"  # the backend reads text only: the photos were not sent


@dataclass(frozen=True, slots=True)
class Notice:
    """A status line for the user, named by its reason: never a sentence (see NoticeReason)."""

    reason: NoticeReason
    fields: Mapping[str, Any] = field(default_factory=dict)  # the text's placeholders


class FailureKind(StrEnum):
    VALIDATION = "validation"  # the backend refused the input (422, too long): tell the user
    AUTH = "auth"  # operator problem (bad license key): tell the user it's unavailable
    UNAVAILABLE = "unavailable"  # 5xx / connection refused after retries
    TIMEOUT = "timeout"
    MALFORMED = "malformed"  # the backend answered something we cannot read
    SESSION_EXPIRED = "session_expired"  # the engine opens a new session and retries once
    BAD_INPUT = "bad_input"  # rejected before reaching the backend (e.g. image too large)
    INTERNAL = "internal"


class FailureReason(StrEnum):
    """Why a turn failed, more precisely than its kind; each is a key of the catalogues
    (core/locales) and takes its placeholders from ``Failure.fields``."""

    TEXT_ONLY = "text_only"  # BAD_INPUT: photos or nothing, and the backend reads text only
    TOO_LONG = "too_long"  # VALIDATION: fields length, limit (characters)
    REJECTED = "rejected"  # VALIDATION (HTTP 422): fields ``fields`` (the refused field names)
    TOO_LARGE = "too_large"  # BAD_INPUT (HTTP 413): the request was too large
    PHOTOS_TOO_LARGE = "photos_too_large"  # BAD_INPUT: fields total, limit ("26 MB")
    NEEDS_PHOTO = "needs_photo"  # BAD_INPUT: a listing without a photo
    BUSY = "busy"  # UNAVAILABLE (HTTP 429): fields seconds (the server's Retry-After)
    NOT_ANSWERED = "not_answered"  # UNAVAILABLE: the server refused to answer that message


@dataclass(frozen=True, slots=True)
class Failure:
    """The turn failed. A backend says *why* (``kind``, ``reason`` and structured ``fields``:
    a status code, seconds to wait, field names), never a sentence: the engine turns it into
    the user's catalogue text (:meth:`core.texts.UserTexts.for_failure`). ``detail`` is for
    logs only and never shown to a user."""

    kind: FailureKind
    detail: str = ""
    retryable: bool = False
    _: KW_ONLY
    reason: FailureReason | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


Event = Token | Snapshot | Final | Notice | Failure


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the store keeps per conversation."""

    key: ConversationKey
    backend: str
    session_ref: str  # opaque to the engine: a LoopOS session_id, a ShopAI chat_token
    language: str | None
    created_at: datetime
    last_active: datetime
    turn_count: int = 0


@dataclass(frozen=True, slots=True)
class Prelude:
    """What a fresh turn reads before anything else, named where it is kept, so several
    replicas read it in the same step as they record the message (one round trip, not three:
    :mod:`core.replicas`): the conversation's ``turns_per_minute`` window and its session."""

    window: tuple[str, int, float] | None  # (name, limit, period in s); None: no shared gate
    session: str  # the store's name for the conversation's session


@dataclass(frozen=True, slots=True)
class PreludeRead:
    """A :class:`Prelude` as read with the message's record (its turn starts at once)."""

    wait: float | None  # None: the turn may run (its place in the window is taken); else s
    session: dict[str, str]  # the stored session's fields, as the store keeps them ({}: none)


@dataclass(frozen=True, slots=True)
class Decision:
    """One option picked by the backend among given ones, with its reasoning."""

    decision: str
    reasoning: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListingRequest:
    """What a seller tells the listing service about an item besides its photos.

    ``category``, ``product`` and ``brand`` are empty when the seller did not name them; the
    service then infers them from the photos and the description.
    """

    description: str
    category: str = ""
    product: str = ""
    brand: str = ""


@dataclass(frozen=True, slots=True)
class ListingDraft:
    """A marketplace listing proposed from photos and a short description."""

    title: str
    price: float | None
    currency: str = "EUR"
    details: Mapping[str, str] = field(default_factory=dict)


# "deferred": shutdown came before the turn started; it stays in the journal for the next start
TurnOutcome = Literal["ok", "failed", "interrupted", "refused", "cancelled", "deferred"]


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What happened to one turn, returned to whoever submitted it."""

    outcome: TurnOutcome
    messages: tuple[ReplyMessage, ...] = ()
    failure: Failure | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


# --- the delivery journal ----------------------------------------------------------------------


class TurnState(StrEnum):
    """Where one user message stands on its way to an answer (see ``core.protocols.Journal``).

    received -> sent_to_backend -> answered -> delivered; a turn that could not be answered
    ends failed_notified (the user was told in plain language), one the platform refused for
    good (bot blocked, chat gone) ends refused.
    """

    RECEIVED = "received"  # written down; the backend has not been asked
    SENT = "sent_to_backend"  # the backend may have received it
    ANSWERED = "answered"  # the answer is written down, not yet confirmed delivered
    DELIVERED = "delivered"
    REFUSED = "refused"
    FAILED_NOTIFIED = "failed_notified"

    @property
    def finished(self) -> bool:
        return self in (TurnState.DELIVERED, TurnState.REFUSED, TurnState.FAILED_NOTIFIED)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One user message as the journal holds it."""

    seq: int  # arrival order: increasing per bot, assigned by the journal
    source: str  # the platform's id for the message (a redelivery carries the same one)
    inbound: Inbound
    state: TurnState
    received_at: datetime
    updated_at: datetime
    answer: tuple[ReplyMessage, ...] | None = None

    @property
    def key(self) -> ConversationKey:
        return self.inbound.key
