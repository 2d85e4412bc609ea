"""What a fresh turn passes before it runs: ``turns_per_minute`` per user.

The gate is one of two kinds, decided once per engine (a protocol check costs a turn ~10 us
each time):

- in this process's memory (:class:`core.flood.FloodControl`): judged as the message is
  queued;
- shared by every replica (:class:`core.budget.SharedFlood`, a window in Redis): judged as the
  turn starts, its session read meanwhile (two round trips, one wait); or, several replicas
  running, judged with the session read in the step that records the message when its turn
  starts at once (:meth:`TurnGate.prelude`: no round trip of its own).

A refused turn is told, in the user's language, when to try again; it is not counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chatbridge.core.protocols import (
    FloodGate,
    SessionFields,
    SessionStore,
    SharedFloodGate,
    TurnObserver,
)
from chatbridge.core.texts import UserTexts
from chatbridge.core.turns import Turn, TurnRunner
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    Prelude,
    PreludeRead,
    TurnResult,
)

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[TurnResult]]


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A read ahead's error is raised where the turn awaits it; a refused turn never does,
    and asyncio must not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class TurnGate:
    def __init__(
        self,
        *,
        bot: str,
        flood: FloodGate | SharedFloodGate | None,
        store: SessionStore,
        turns: TurnRunner,
        texts: UserTexts,
        observer: TurnObserver | None,
    ) -> None:
        self.bot = bot
        self._shared = flood if isinstance(flood, SharedFloodGate) else None
        self._local = None if isinstance(flood, SharedFloodGate) else flood
        self._store = store
        self._turns = turns
        self._texts = texts
        self._observer = observer

    def job(self, turn: Turn) -> Job:
        """``turn`` run once it passed the gate (a resumed turn passed it before)."""
        shared = self._shared
        if shared is not None and turn.resume is None:
            return lambda: self._unless_flooded(turn, shared)
        if self._local is not None and turn.resume is None:
            wait = self._local.check(turn.inbound.key)
            if wait is not None:
                return lambda: self._flooded(turn, wait)
        return lambda: self._turns.run(turn)

    def job_after_prelude(self, turn: Turn, read: PreludeRead) -> Job:
        """``turn`` run by the verdict and with the session read with its record."""
        return lambda: self._after_prelude(turn, read)

    def prelude(self, key: ConversationKey) -> Prelude | None:
        """What a fresh turn of ``key`` reads first, for the replicas to read it with the
        message's record: its shared ``turns_per_minute`` window and its session (None:
        the store cannot name it)."""
        store = self._store
        if not isinstance(store, SessionFields):
            return None
        window = self._shared.window_of(key) if self._shared is not None else None
        return Prelude(window, store.session_name(key))

    async def _unless_flooded(self, turn: Turn, gate: SharedFloodGate) -> TurnResult:
        # the gate is judged as the turn starts; the session it needs next is read meanwhile
        # (two round trips to Redis, one wait)
        turn.stored = asyncio.ensure_future(self._store.get(turn.inbound.key))
        turn.stored.add_done_callback(_retrieved)  # a refused turn never awaits it
        try:
            wait = await gate.check_shared(turn.inbound.key)
        except Exception as exc:  # a flood gate out of reach lets the turn through
            log.warning("flood gate unavailable: %s", exc)
            wait = None
        if wait is not None:
            turn.stored = None
            return await self._flooded(turn, wait)
        return await self._turns.run(turn)

    async def _after_prelude(self, turn: Turn, read: PreludeRead) -> TurnResult:
        """As :meth:`_unless_flooded`, with the window judged and the session read in the
        step that recorded the message (:meth:`prelude`)."""
        wait = read.wait
        if wait is None and self._local is not None:  # a gate in this process's memory
            wait = self._local.check(turn.inbound.key)
        if wait is not None:
            return await self._flooded(turn, wait)
        assert isinstance(self._store, SessionFields)  # prelude() named it
        stored = asyncio.get_running_loop().create_future()
        stored.set_result(self._store.session_from(turn.inbound.key, read.session))
        turn.stored = stored
        return await self._turns.run(turn)

    async def _flooded(self, turn: Turn, wait: float) -> TurnResult:
        """Refused: in the user's language, when to try again."""
        texts = self._texts.in_language(turn.inbound.language)
        text = texts.flood.format(seconds=max(1, round(wait)))
        log.info("refused a turn (flood) for %s", turn.inbound.key.short())
        await self._turns.tell(turn, text)
        if self._observer:
            self._observer.turn_finished(self.bot, "refused", 0.0)
        return TurnResult("refused", failure=Failure(FailureKind.BAD_INPUT, "flood"))
