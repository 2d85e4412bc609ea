"""The conversation engine: intake in arrival order, one turn at a time per conversation.

Adapters hand every user message to :meth:`Engine.accept` (journaled: it returns once the
message is written down, so the adapter may then tell the platform it was read) or
:meth:`Engine.submit` (not journaled: the console, tests). The engine alone keeps order: a
message's place in its conversation is taken when ``accept`` is called, before the adapter's
``prepare`` step (downloading photos, say) runs, so slow preparation cannot reorder turns,
and the turn runs only after every earlier message of its conversation. Different
conversations run concurrently. What a fresh turn passes first (``turns_per_minute``) is
:class:`core.turn_gate.TurnGate`; what happens inside a turn is :class:`core.turns.TurnRunner`;
what a restart resumes is :mod:`core.recovery`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from chatbridge.core import recovery
from chatbridge.core.errors import (
    BackendError,
    NotSupported,
    best_effort,
    failure_from_text,
    failure_to_text,
)
from chatbridge.core.item_services import read_listing_request
from chatbridge.core.protocols import (
    Backend,
    Decider,
    FloodGate,
    Journal,
    ListingDescriber,
    Prepared,
    SessionStore,
    SharedFloodGate,
    StoredReplies,
    Surface,
    TurnObserver,
    WorkQueue,
)
from chatbridge.core.texts import UserTexts
from chatbridge.core.turn_gate import Job, TurnGate
from chatbridge.core.turns import Turn, TurnRunner
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Failure,
    FailureKind,
    Image,
    Inbound,
    ListingDraft,
    Prelude,
    PreludeRead,
    SessionRecord,
    TurnOutcome,
    TurnResult,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot:
    """A message's place in its conversation, taken on arrival, filled once prepared."""

    job: asyncio.Future[Job | None]  # None: nothing to run (declined, or a redelivery)
    result: asyncio.Future[TurnResult]
    turn: Turn | None = None


@dataclass
class _Lane:
    """The queue of one conversation; its worker task exists only while work is pending."""

    slots: deque[_Slot] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class Engine:
    def __init__(
        self,
        *,
        bot: str,
        backend: Backend,
        backend_name: str,
        store: SessionStore,
        journal: Journal | None = None,
        texts: UserTexts | None = None,
        flood: FloodGate | SharedFloodGate | None = None,
        observer: TurnObserver | None = None,
        turn_timeout: float = 300.0,
        work: WorkQueue | None = None,
    ) -> None:
        self.bot = bot
        self.backend = backend
        self.backend_name = backend_name
        self.store = store
        self.journal = journal
        self.texts = texts or UserTexts()
        self._observer = observer
        self.turns = TurnRunner(
            bot=bot,
            backend=backend,
            backend_name=backend_name,
            store=store,
            journal=journal,
            texts=self.texts,
            observer=observer,
            turn_timeout=turn_timeout,
        )
        self._gate = TurnGate(
            bot=bot, flood=flood, store=store, turns=self.turns, texts=self.texts, observer=observer
        )
        self._lanes: dict[ConversationKey, _Lane] = {}
        # several replicas: journaled messages go to the work queue, in arrival order per
        # conversation (each waits for the previous one's write), and run where claimed
        self._work = work
        self._intake: dict[ConversationKey, asyncio.Future[None]] = {}
        self._closing = False
        self._recovered = False
        self._active = 0
        self._queued = 0  # slots behind each lane's first, kept as lanes change (see queued_turns)

    # --- taking messages ----------------------------------------------------------------------

    async def accept(
        self,
        key: ConversationKey,
        prepare: Callable[[], Awaitable[Prepared]],
        *,
        source: str | None = None,
    ) -> asyncio.Future[TurnResult] | None:
        """Take a message: its place in ``key``'s order now, then ``prepare()`` it, write it
        to the journal (when ``source``, the platform's id for it, is given) and queue it.

        Returns once the message is written down — the adapter may then tell the platform it
        was read — with the future of the turn's result; None when there is no turn (declined
        by ``prepare``, or ``source`` already journaled: a redelivery).
        """
        if self._work is not None and source is not None:
            return await self._hand_off(key, prepare, source)
        slot = self._reserve(key)  # before the first await: arrival order is call order
        try:
            prepared = await prepare()
            if prepared is None:
                return None
            inbound, surface = prepared
            entry = None
            if source is not None and self.journal is not None:
                try:
                    entry = await self.journal.record(inbound, source)
                except Exception:  # answering beats refusing: only a crash now loses it
                    log.exception("journal: could not record a message; answering anyway")
                else:
                    if entry is None:
                        log.info("journal: %s was already recorded; not run twice", source)
                        return None
            turn = Turn(inbound, surface, entry)
            slot.turn = turn
            slot.job.set_result(self._job_for(turn))
            return slot.result
        finally:
            if not slot.job.done():
                slot.job.set_result(None)

    async def _hand_off(
        self, key: ConversationKey, prepare: Callable[[], Awaitable[Prepared]], source: str
    ) -> asyncio.Future[TurnResult] | None:
        """Several replicas: journal the message and queue it for the replica that runs its
        conversation; written down after every earlier message of the conversation."""
        assert self._work is not None
        previous, mine = self._intake_place(key)  # before the first await, as in accept
        try:
            prepared = await prepare()
            if previous is not None:
                await asyncio.shield(previous)
            if prepared is None:
                return None
            inbound, surface = prepared
            try:
                entry = await self._work.submit(inbound, source)
            except Exception:  # answering beats refusing: run it here, unjournaled
                log.exception("replicas: could not queue a message; answering it here")
                return self.submit(inbound, surface)
            if entry is None:
                log.info("journal: %s was already recorded; not run twice", source)
            return None
        finally:
            self._intake_done(key, mine)

    def _intake_place(
        self, key: ConversationKey
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """A place in ``key``'s intake: the previous one to wait for, and this one's."""
        previous = self._intake.get(key)
        mine = asyncio.get_running_loop().create_future()
        self._intake[key] = mine
        return previous, mine

    def _intake_done(self, key: ConversationKey, mine: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._intake.get(key) is mine:
            del self._intake[key]

    async def _queue_command(self, key: ConversationKey, command: str, arg: str = "") -> str:
        """Several replicas: a session command queued behind the messages taken before it
        (here and in the conversation's stream); the result where it ran, "" if late."""
        assert self._work is not None
        previous, mine = self._intake_place(key)
        try:
            if previous is not None:
                await asyncio.shield(previous)
            try:
                return await self._work.command(key, command, arg) or ""
            except Exception:  # doing it here, out of order, beats not doing it at all
                log.exception("replicas: could not queue /%s; running it here", command)
                return await self.run_command(key, command, arg)
        finally:
            self._intake_done(key, mine)

    async def run_command(self, key: ConversationKey, command: str, arg: str) -> str:
        """Several replicas: run a session command this replica claimed from the work queue
        (after the conversation's earlier turns); the result goes back to its caller."""
        if command == "reset":
            return "existed" if await self._reset_here(key) else "none"
        if command == "language":
            failure = await self._set_language_here(key, arg)
            return "ok" if failure is None else "failed " + failure_to_text(failure)
        log.warning("replicas: unknown session command %r ignored", command)
        return "unknown"

    def run_claimed(
        self, turn: Turn, *, fresh: bool, read: PreludeRead | None = None
    ) -> asyncio.Future[TurnResult]:
        """Several replicas: run a journaled turn this replica claimed from the work queue;
        ``fresh`` (never started anywhere) passes the flood gate like a new message, or, with
        ``read``, by the window's verdict and with the session read with its record."""
        slot = self._reserve(turn.inbound.key)
        slot.turn = turn
        if not fresh:
            slot.job.set_result(lambda: self.turns.run(turn))
        elif read is not None and not self._closing:
            slot.job.set_result(self._gate.job_after_prelude(turn, read))
        else:
            slot.job.set_result(self._job_for(turn))
        return slot.result

    def prelude(self, key: ConversationKey) -> Prelude | None:
        """What a fresh turn of ``key`` reads first (:meth:`TurnGate.prelude`)."""
        return self._gate.prelude(key)

    def submit(self, inbound: Inbound, surface: Surface) -> asyncio.Future[TurnResult]:
        """Queue a turn that is not journaled (the console, tests); returns at once."""
        slot = self._reserve(inbound.key)
        slot.turn = Turn(inbound, surface)
        slot.job.set_result(self._job_for(slot.turn))
        return slot.result

    async def handle(self, inbound: Inbound, surface: Surface) -> TurnResult:
        """Queue a turn (not journaled) and wait for it to finish."""
        return await asyncio.shield(self.submit(inbound, surface))

    async def recover(self, replies: StoredReplies) -> int:
        """Queue the work a previous run left unfinished (see :mod:`core.recovery`); call it
        before taking new messages, so recovered turns keep their place. Returns how many.

        With several replicas the partitions' owners resume the journal instead."""
        if self._work is not None:
            return 0
        if self._recovered:  # e.g. an adapter's start retried after a platform outage
            return 0
        self._recovered = True
        return await recovery.resume(self, replies)

    async def last_seen(self, since: datetime) -> dict[str, str]:
        """Per chat, the platform id of the latest message journaled since ``since``."""
        if self.journal is None:
            return {}
        return await self.journal.last_messages(self.bot, since)

    def _job_for(self, turn: Turn) -> Job:
        if self._closing:
            return lambda: self._not_now(turn)
        return self._gate.job(turn)

    def queue_recovered(self, turn: Turn) -> asyncio.Future[TurnResult]:
        slot = self._reserve(turn.inbound.key)
        slot.turn = turn
        slot.job.set_result(lambda: self.turns.run(turn))
        return slot.result

    # --- lanes --------------------------------------------------------------------------------

    def _reserve(self, key: ConversationKey) -> _Slot:
        loop = asyncio.get_running_loop()
        slot = _Slot(job=loop.create_future(), result=loop.create_future())
        lane = self._lanes.setdefault(key, _Lane())
        lane.slots.append(slot)
        if len(lane.slots) > 1:
            self._queued += 1
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(key, lane), name=f"lane:{key.short()}")
        self._report_queue()
        return slot

    def _enqueue(self, key: ConversationKey, job: Job) -> asyncio.Future[TurnResult]:
        slot = self._reserve(key)
        slot.job.set_result(job)
        return slot.result

    async def _drain(self, key: ConversationKey, lane: _Lane) -> None:
        try:
            while lane.slots:
                slot = lane.slots[0]
                try:
                    job = await slot.job  # the message may still be being prepared
                    if job is not None and self._closing and _journaled(slot.turn):
                        result = None  # not started: the next start runs it
                    else:
                        result = TurnResult("refused") if job is None else await self._run(job)
                except asyncio.CancelledError:
                    await self._interrupt(lane)
                    raise
                lane.slots.popleft()
                if lane.slots:
                    self._queued -= 1
                if result is None:
                    self._leave(slot, "deferred")
                elif not slot.result.done():
                    slot.result.set_result(result)
                self._report_queue()
        finally:
            lane.worker = None
            if not lane.slots and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run(self, job: Job) -> TurnResult:
        self._active += 1
        try:
            return await job()
        except Exception as exc:  # a bug outside a turn (an admin job); never kill the lane
            log.exception("a queued job crashed")
            return TurnResult("failed", failure=Failure(FailureKind.INTERNAL, repr(exc)))
        finally:
            self._active -= 1

    async def _interrupt(self, lane: _Lane) -> None:
        """Shutdown cut this lane's running turn after the grace. A journaled turn keeps the
        state it reached, and the next start resumes it by recovery's rules (run again if the
        backend never had it, the answer from ShopAI's history, LoopOS's restart notice, the
        stored answer sent); a turn nothing will resume (not journaled) is told it was
        interrupted, as is anyone queued behind it who is not journaled either."""
        if self._observer:
            self._observer.turn_finished(self.bot, "interrupted", 0.0)
        for i, slot in enumerate(lane.slots):
            if _journaled(slot.turn):
                self._leave(slot, "interrupted" if i == 0 else "deferred")
                continue
            if slot.turn is not None:  # (None: an admin job, or a message still prepared)
                await self._tell_interrupted(slot.turn)
            if not slot.result.done():
                slot.result.set_result(TurnResult("interrupted"))
        self._queued -= max(0, len(lane.slots) - 1)
        lane.slots.clear()

    def _leave(self, slot: _Slot, outcome: TurnOutcome) -> None:
        """Shutting down: this journaled turn stays as it is in the journal (received, or the
        state it reached or a restart found it in) for the next start, so its user gets an
        answer rather than a notice. With several replicas its result is cancelled, not set:
        the replica then leaves its work item pending, and whoever owns the partition next
        claims it (a result would acknowledge it as done)."""
        if slot.result.done():
            return
        if self._work is not None:
            slot.result.cancel()
        else:
            slot.result.set_result(TurnResult(outcome))

    async def _not_now(self, turn: Turn) -> TurnResult:
        """A message taken while shutting down that nothing will resume (not journaled; a
        journaled one never gets here, :meth:`_drain` leaves it in the journal)."""
        return await self._interrupted(turn)

    async def _interrupted(self, turn: Turn) -> TurnResult:
        await self._tell_interrupted(turn)
        if self._observer:
            self._observer.turn_finished(self.bot, "interrupted", 0.0)
        return TurnResult("interrupted")

    async def _tell_interrupted(self, turn: Turn) -> None:
        texts = self.texts.in_language(turn.inbound.language)
        with best_effort(log, "telling a user their turn was interrupted"):
            async with asyncio.timeout(5):
                await self.turns.tell(turn, texts.interrupted)

    # --- sessions and admin -------------------------------------------------------------------

    async def cancel(self, key: ConversationKey) -> bool:
        """Stop the answer being generated for ``key`` (the user's /cancel); the user is told
        on the turn's surface and their next message starts normally. False when no turn of
        that conversation is running (with several replicas: on any of them)."""
        if self.turns.cancel(key):
            return True
        if self._work is not None:
            return await self._work.cancel(key)
        return False

    def cancel_here(self, key: ConversationKey) -> bool:
        """:meth:`cancel` for a turn running in this process only."""
        return self.turns.cancel(key)

    async def reset(self, key: ConversationKey) -> bool:
        """Forget the conversation's session, after its pending turns (with several
        replicas, on the replica running the conversation, in its order)."""
        if self._work is not None:
            return await self._queue_command(key, "reset") == "existed"
        return await self._reset_here(key)

    async def _reset_here(self, key: ConversationKey) -> bool:
        async def job() -> TurnResult:
            existed = await self._forget(key)
            return TurnResult("ok", extra={"existed": str(existed)})

        result = await self._enqueue(key, job)
        return result.extra.get("existed") == "True"

    async def set_language(self, key: ConversationKey, language: str) -> None:
        """Start a new session in ``language`` (backends fix the language per session)."""
        if self._work is not None:
            result = await self._queue_command(key, "language", language)
            if result.startswith("failed "):
                raise BackendError(failure_from_text(result.removeprefix("failed ")))
            return
        failure = await self._set_language_here(key, language)
        if failure is not None:
            raise BackendError(failure)

    async def _set_language_here(self, key: ConversationKey, language: str) -> Failure | None:
        async def job() -> TurnResult:
            await self._forget(key)
            _record, failure = await self.turns.session_for(key, language)
            if failure is not None:
                return TurnResult("failed", failure=failure)
            return TurnResult("ok")

        result = await self._enqueue(key, job)
        return result.failure

    async def _forget(self, key: ConversationKey) -> bool:
        record = await self.store.get(key)
        if record is None:
            return False
        with best_effort(log, "closing a forgotten backend session"):
            await self.backend.close(record.session_ref)
        deleted = await self.store.delete(key)
        if self._observer:
            self._observer.sessions_changed(self.bot, await self.store.count(self.bot))
        return deleted

    async def reset_user(self, user_id: str) -> int:
        records = await self.store.list(self.bot, user_id=user_id, limit=10_000)
        results = await asyncio.gather(*(self.reset(r.key) for r in records))
        return sum(results)

    async def reset_all(self) -> int:
        records = await self.store.list(self.bot, limit=100_000)
        if self._work is not None:
            # several replicas: each conversation's reset in its order with its turns, on the
            # replica running it (a few at a time: each waits for its result)
            at_once = asyncio.Semaphore(16)

            async def reset(key: ConversationKey) -> bool:
                async with at_once:
                    return await self.reset(key)

            return sum(await asyncio.gather(*(reset(r.key) for r in records)))
        for record in records:
            with best_effort(log, "closing a backend session on reset_all"):
                await self.backend.close(record.session_ref)
        count = await self.store.delete_all(self.bot)
        if self._observer:
            self._observer.sessions_changed(self.bot, 0)
        return count

    async def list_sessions(self, limit: int = 20) -> list[SessionRecord]:
        return await self.store.list(self.bot, limit=limit)

    async def count_sessions(self) -> int:
        return await self.store.count(self.bot)

    async def resolve_button(self, short_id: str) -> str | None:
        return await self.store.resolve(short_id)

    async def decide(
        self, prompt: str, options: Sequence[str], item_context: str, language: str | None
    ) -> Decision:
        """Ask the backend to pick one of ``options`` (LoopOS's decision service)."""
        if not isinstance(self.backend, Decider):
            raise NotSupported(f"backend {self.backend_name} cannot make decisions")
        return await self.backend.decide(prompt, options, item_context, language)

    async def describe_listing(
        self, images: Sequence[Image], description: str, language: str | None
    ) -> ListingDraft:
        if not isinstance(self.backend, ListingDescriber):
            raise NotSupported(f"backend {self.backend_name} cannot describe listings")
        request = read_listing_request(description)
        return await self.backend.describe_listing(images, request, language)

    # --- state and shutdown -------------------------------------------------------------------

    @property
    def queued_turns(self) -> int:
        """Turns waiting behind a running turn of the same conversation (kept as a count:
        reported twice a turn, summing over every conversation would grow with their number)."""
        return self._queued

    @property
    def active_turns(self) -> int:
        return self._active

    def _report_queue(self) -> None:
        if self._observer:
            self._observer.queue_changed(self.bot, self.queued_turns)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop starting turns, let running ones finish within ``grace``, cut the rest.

        A turn not started yet is left in the journal for the next start (no notice: it will
        be answered); a turn cut after the grace keeps the journal state it reached, and the
        next start applies recovery's rules to it (:meth:`_interrupt`). Only turns nothing
        will resume (not journaled) are told they were interrupted. The backend and store are
        closed by whoever created them.
        """
        self._closing = True
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "shutdown: cut %d running turns after %.0f s; the next start resumes them",
                len(pending),
                grace,
            )
            await asyncio.gather(*pending, return_exceptions=True)


def _journaled(turn: Turn | None) -> bool:
    return turn is not None and turn.entry is not None


__all__ = ["Engine", "Prepared"]
