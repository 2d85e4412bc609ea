"""The seams. Each is a small ``typing.Protocol``; the big three (Backend, SessionStore,
Surface) have contract test suites in tests/."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from chatbridge.core.texts import UserTexts
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Event,
    Final,
    Image,
    Inbound,
    JournalEntry,
    ListingDraft,
    ListingRequest,
    Prelude,
    PreludeRead,
    ReplyMessage,
    SessionRecord,
    TurnResult,
    TurnState,
)

if TYPE_CHECKING:
    import contextlib

    from chatbridge.core.store.redis_journal import Fence, StreamAck
    from chatbridge.core.turns import Turn


@runtime_checkable
class Backend(Protocol):
    """An AI server. Turns one user turn into a stream of events.

    Retryable faults (5xx, timeouts, dropped sockets) are retried inside the backend; what
    is left reaches the engine as a :class:`core.types.Failure` event (or an exception, which
    the engine treats as an internal failure).
    """

    name: str

    async def open(self, key: ConversationKey, language: str | None) -> str:
        """Create a backend session and return its opaque reference."""
        ...

    def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        """Send one user turn; yield events until a Final or a Failure."""
        ...

    async def close(self, session_ref: str) -> None:
        """Forget a session (drop its connection); the store forgets the reference."""
        ...

    async def aclose(self) -> None:
        """Release every connection; called once at shutdown."""
        ...


@runtime_checkable
class Recovers(Protocol):
    """Optional backend capability: after a crash, find the answer to a message the backend
    may already have received, without asking again.

    Returns the answer when the backend's history holds it, None when the backend never got
    the message (safe to send it again). Raises :class:`core.errors.BackendError` when it
    cannot tell.
    """

    async def recover(self, session_ref: str, inbound: Inbound) -> Final | None: ...


@runtime_checkable
class CountsConnections(Protocol):
    """Optional backend capability: how many live connections it holds (for metrics)."""

    @property
    def open_connections(self) -> int: ...


@runtime_checkable
class Decider(Protocol):
    """Optional backend capability: pick one of ``options`` for a prompt about an item."""

    async def decide(
        self,
        prompt: str,
        options: Sequence[str],
        item_context: str = "",
        language: str | None = None,
    ) -> Decision: ...


@runtime_checkable
class ListingDescriber(Protocol):
    """Optional backend capability: photos + what the seller said -> a marketplace listing."""

    async def describe_listing(
        self, images: Sequence[Image], request: ListingRequest, language: str | None
    ) -> ListingDraft: ...


@runtime_checkable
class SessionStore(Protocol):
    """Conversation -> backend session, plus short ids for button payloads."""

    async def get(self, key: ConversationKey) -> SessionRecord | None: ...

    async def put(self, record: SessionRecord) -> None: ...

    async def put_new(self, record: SessionRecord, replacing: str | None = None) -> SessionRecord:
        """Store ``record`` unless another session was stored meanwhile, atomically: written
        when none is stored or the stored one is ``replacing`` (a session ref); else nothing
        is written. Returns the stored record afterwards (``record``, or the other one).
        Several replicas: the one that stalled while opening a session keeps the one another
        opened meanwhile instead of writing over it."""
        ...

    async def touch(self, key: ConversationKey) -> None:
        """Mark one more turn: ``last_active`` = now, ``turn_count`` += 1."""
        ...

    async def delete(self, key: ConversationKey) -> bool: ...

    async def delete_all(self, bot: str | None = None) -> int: ...

    async def list(
        self, bot: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> list[SessionRecord]:
        """Most recently active first."""
        ...

    async def count(self, bot: str | None = None) -> int: ...

    async def short_id(self, payload: str) -> str:
        """A short (<= 16 ASCII chars) id that :meth:`resolve` maps back to ``payload``."""
        ...

    async def short_ids(self, payloads: Sequence[str]) -> builtins.list[str]:
        """:meth:`short_id` of each payload (same order), written in one batch."""
        ...

    async def resolve(self, short_id: str) -> str | None: ...

    async def ping(self) -> bool:
        """True when the store answers (for readiness checks)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Journal(Protocol):
    """The delivery journal: every user message from arrival to a delivered answer.

    Adapters record a message before telling the platform it was read; the engine moves each
    turn's state along and writes the answer before sending it; on start, :meth:`unfinished`
    is the work a crash left behind. One entry per platform message: ``source`` (the
    platform's id for it) makes recording a redelivered message a no-op.
    """

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        """Write a new message down (state received, the next ``seq`` of its bot); None when
        ``source`` is already recorded for this bot (a redelivery)."""
        ...

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        """Move a turn to ``state`` (for the answered state use :meth:`answer`)."""
        ...

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        """Write the answer down (state answered) before it is sent."""
        ...

    async def unfinished(self, bot: str) -> list[JournalEntry]:
        """The bot's entries not yet delivered, refused or failed-notified, by ``seq``."""
        ...

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        """Per chat with a message recorded since ``since``: the platform message id of the
        chat's latest recorded message (where to catch up from after downtime)."""
        ...

    async def prune(self, older_than: timedelta) -> int:
        """Forget finished entries last updated more than ``older_than`` ago."""
        ...


class Surface(Protocol):
    """Where one reply is drawn, provided by an adapter for one turn."""

    async def begin(self) -> None:
        """The turn started: show a typing indicator."""
        ...

    async def append(self, text: str) -> None:
        """Streamed text arrived."""
        ...

    async def replace(self, text: str) -> None:
        """The streamed text so far is replaced."""
        ...

    async def notice(self, text: str) -> None:
        """A status line for the user, outside the answer."""
        ...

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        """The authoritative answer: render it (buttons included) and stop streaming.

        Returns once the platform confirmed every message (rate limits and outages are
        waited out, up to the bot's delivery deadline); raises ``DeliveryRefused`` when the
        platform refuses for good (bot blocked, chat gone), after logging and counting it.
        """
        ...

    async def fail(self, text: str) -> None:
        """The turn failed: show ``text`` (plain language) instead of an answer.

        Raises nothing but :class:`core.errors.DeliveryRefused` (the platform refused for
        good: bot blocked, chat gone), which the journal records: it is the last thing that
        can reach the user and the turn is over, so any other failure is logged, not raised.
        The Surface contract suite holds every adapter to this.
        """
        ...


class TurnObserver(Protocol):
    """Metrics hook: the engine reports what happens, the observer counts it."""

    def turn_finished(self, bot: str, outcome: str, seconds: float) -> None: ...

    def backend_error(self, bot: str, kind: str) -> None: ...

    def queue_changed(self, bot: str, queued: int) -> None: ...

    def sessions_changed(self, bot: str, count: int) -> None: ...

    def backend_latency(self, bot: str, backend: str, seconds: float) -> None: ...


class PlatformMetrics(Protocol):
    """What adapters report about their platform calls (``core.metrics.Metrics`` fits)."""

    def message_sent(self, bot: str, platform: str, count: int = 1) -> None: ...

    def message_edited(self, bot: str, platform: str, count: int = 1) -> None: ...

    def rate_limited(self, bot: str, platform: str) -> None: ...

    def delivery_refused(self, bot: str, platform: str) -> None:
        """A message the platform refused for good (bot blocked, chat gone)."""
        ...


class FloodGate(Protocol):
    def check(self, key: ConversationKey) -> float | None:
        """None when the turn may run, else seconds until the user may write again."""
        ...


@runtime_checkable
class SharedFloodGate(Protocol):
    """A flood gate kept outside the process (Redis), shared by every replica."""

    async def check_shared(self, key: ConversationKey) -> float | None:
        """None when the turn may run (and it is counted), else seconds to wait."""
        ...

    def window_of(self, key: ConversationKey) -> tuple[str, int, float] | None:
        """The window ``check_shared`` takes a place in: (name, limit, period in s); None
        when there is none (no limit)."""
        ...


@runtime_checkable
class SessionFields(Protocol):
    """A store whose sessions another step may read for it (the replicas' record of a
    message reads the session its turn needs, :class:`core.types.Prelude`)."""

    def session_name(self, key: ConversationKey) -> str:
        """Where ``key``'s session is kept (a Redis hash)."""
        ...

    def session_from(self, key: ConversationKey, fields: dict[str, str]) -> SessionRecord | None:
        """The session as ``get`` returns it, from the fields read at ``session_name``."""
        ...


class WorkQueue(Protocol):
    """Several replicas: journal a message and queue it for whichever replica runs its
    conversation (:class:`core.replicas.Replicas`), in one step."""

    async def submit(self, inbound: Inbound, source: str) -> JournalEntry | None:
        """Written down and queued; None when ``source`` was recorded before."""
        ...

    async def command(self, key: ConversationKey, command: str, arg: str = "") -> str | None:
        """Queue a session command behind ``key``'s messages; the result of
        ``Engine.run_command`` where it ran, or None when it did not come in time."""
        ...

    async def cancel(self, key: ConversationKey) -> bool:
        """Stop ``key``'s running turn on the replica running it; False when none does."""
        ...


# --- what adapters see of the engine ----------------------------------------------------------
# Adapters depend on these small protocols, never on ``core.engine.Engine`` itself: a test can
# hand an adapter anything that submits turns, and the engine can change behind them.


#: What an adapter's ``prepare`` step returns to :meth:`TurnSubmitter.accept`: the turn and
#: where to answer it, or None when the message is not a turn after all (the adapter has told
#: the user why, if needed).
Prepared = tuple[Inbound, "Surface"] | None


class TurnSubmitter(Protocol):
    """Hands user turns to the engine, which keeps each conversation's order."""

    texts: UserTexts

    async def accept(
        self,
        key: ConversationKey,
        prepare: Callable[[], Awaitable[Prepared]],
        *,
        source: str | None = None,
    ) -> asyncio.Future[TurnResult] | None:
        """Take a message (its place in ``key``'s order is taken at the call), prepare it,
        journal it under ``source``, queue it; returns once it is written down."""
        ...

    async def recover(self, replies: StoredReplies) -> int:
        """Queue what a previous run left unfinished; before taking new messages."""
        ...

    async def last_seen(self, since: datetime) -> dict[str, str]:
        """Per chat with a message recorded since ``since``: the platform id of the latest
        (where to catch up from, on platforms that do not redeliver)."""
        ...

    def submit(self, inbound: Inbound, surface: Surface) -> asyncio.Future[TurnResult]:
        """Queue a turn (not journaled) behind the conversation's pending ones."""
        ...

    async def handle(self, inbound: Inbound, surface: Surface) -> TurnResult:
        """Queue a turn and wait for it to finish."""
        ...


class StoredReplies(Protocol):
    """Adapter capability: a surface for a conversation with no live platform update, to
    send what a crash left undelivered (an answer, a failure, the restart notice).

    ``inbound`` is the journaled message (its ``message_id`` lets the adapter reply to it).
    """

    def surface_for(self, inbound: Inbound) -> Surface: ...


class SessionAdmin(Protocol):
    """Session operations for users' commands (/reset, /language) and admins'."""

    async def reset(self, key: ConversationKey) -> bool: ...

    async def cancel(self, key: ConversationKey) -> bool:
        """Stop the conversation's running turn (the user's /cancel), wherever it runs."""
        ...

    async def set_language(self, key: ConversationKey, language: str) -> None: ...

    async def reset_user(self, user_id: str) -> int: ...

    async def reset_all(self) -> int: ...

    async def list_sessions(self, limit: int = 20) -> list[SessionRecord]: ...

    async def count_sessions(self) -> int: ...

    @property
    def queued_turns(self) -> int: ...

    @property
    def active_turns(self) -> int: ...


class ButtonRegistry(Protocol):
    """The payload of a pressed button, from the id the engine gave it (``Button.id``)."""

    async def resolve_button(self, short_id: str) -> str | None: ...


class ItemServices(Protocol):
    """Optional backend services; raise :class:`core.errors.NotSupported` when absent."""

    async def decide(
        self, prompt: str, options: Sequence[str], item_context: str, language: str | None
    ) -> Decision: ...

    async def describe_listing(
        self, images: Sequence[Image], description: str, language: str | None
    ) -> ListingDraft:
        """``description`` is the seller's text as typed; labelled facts in it ("brand: …")
        are read by :func:`core.item_services.read_listing_request`."""
        ...


class Conversations(TurnSubmitter, SessionAdmin, ButtonRegistry, ItemServices, Protocol):
    """Everything an adapter may ask of the engine."""


class ClaimedTurns(Protocol):
    """What :class:`core.replicas.Replicas` needs of an engine: run one turn it claimed from
    a stream."""

    @property
    def bot(self) -> str: ...

    def run_claimed(
        self, turn: Turn, *, fresh: bool, read: PreludeRead | None = None
    ) -> asyncio.Future[TurnResult]: ...

    def prelude(self, key: ConversationKey) -> Prelude | None: ...

    async def run_command(self, key: ConversationKey, command: str, arg: str) -> str: ...

    def cancel_here(self, key: ConversationKey) -> bool: ...


@runtime_checkable
class FencedJournal(Protocol):
    """A journal whose writes for a turn can be fenced by a partition lease (Redis's), and
    whose write that finishes the turn can acknowledge its work item too."""

    def fenced(
        self, bot: str, seq: int, lease: str, ack: StreamAck | None = None
    ) -> contextlib.AbstractContextManager[Fence]: ...
