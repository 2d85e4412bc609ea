"""The seams. Each is a small ``typing.Protocol``; the big three (Backend, SessionStore,
Surface) have contract test suites in tests/."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from chatbridge.core.texts import UserTexts
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Event,
    Image,
    Inbound,
    ListingDraft,
    ListingRequest,
    ReplyMessage,
    SessionRecord,
    TurnResult,
)


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
        """The authoritative answer: render it (buttons included) and stop streaming."""
        ...

    async def fail(self, text: str) -> None:
        """The turn failed: show ``text`` (plain language) instead of an answer.

        Never raises: it is the last thing that can reach the user and the turn is over, so a
        platform that refuses it (the chat is gone, the network is down) is logged, not
        raised. The Surface contract suite holds every adapter to this.
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


class FloodGate(Protocol):
    def check(self, key: ConversationKey) -> float | None:
        """None when the turn may run, else seconds until the user may write again."""
        ...


# --- what adapters see of the engine ----------------------------------------------------------
# Adapters depend on these small protocols, never on ``core.engine.Engine`` itself: a test can
# hand an adapter anything that submits turns, and the engine can change behind them.


class TurnSubmitter(Protocol):
    """Hands user turns to the engine, which keeps each conversation's order."""

    texts: UserTexts

    def submit(self, inbound: Inbound, surface: Surface) -> asyncio.Future[TurnResult]:
        """Queue a turn behind the conversation's pending ones; returns at once."""
        ...

    async def handle(self, inbound: Inbound, surface: Surface) -> TurnResult:
        """Queue a turn and wait for it to finish."""
        ...


class SessionAdmin(Protocol):
    """Session operations for users' commands (/reset, /language) and admins'."""

    async def reset(self, key: ConversationKey) -> bool: ...

    def cancel(self, key: ConversationKey) -> bool:
        """Stop the conversation's running turn (the user's /cancel)."""
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
