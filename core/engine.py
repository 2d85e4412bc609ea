"""The conversation engine: sessions, per-conversation ordering, failures in plain language.

Adapters hand every user turn to :meth:`Engine.submit` (or :meth:`Engine.handle`). Turns of one
conversation run one at a time in arrival order through a per-key lane; different
conversations run concurrently. Whatever happens to a turn, its surface ends in ``finish`` or
``fail``: nothing a user sends is silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatbridge.core.buttons import with_button_ids
from chatbridge.core.deadline import turn_deadline
from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.item_services import read_listing_request
from chatbridge.core.logctx import log_context
from chatbridge.core.protocols import (
    Backend,
    Decider,
    FloodGate,
    ListingDescriber,
    SessionStore,
    Surface,
    TurnObserver,
)
from chatbridge.core.texts import UserTexts
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Failure,
    FailureKind,
    Final,
    Image,
    Inbound,
    ListingDraft,
    Notice,
    ReplyMessage,
    SessionRecord,
    Snapshot,
    Token,
    TurnResult,
)

log = logging.getLogger(__name__)

_turn_ids = itertools.count(1)


Job = Callable[[], Awaitable[TurnResult]]


@dataclass
class _Lane:
    """The queue of one conversation; its worker task exists only while work is pending."""

    jobs: deque[tuple[Job, asyncio.Future[TurnResult], Surface | None]] = field(
        default_factory=deque
    )
    worker: asyncio.Task[None] | None = None


class Engine:
    def __init__(
        self,
        *,
        bot: str,
        backend: Backend,
        backend_name: str,
        store: SessionStore,
        texts: UserTexts | None = None,
        flood: FloodGate | None = None,
        observer: TurnObserver | None = None,
        turn_timeout: float = 300.0,
    ) -> None:
        self.bot = bot
        self.backend = backend
        self.backend_name = backend_name
        self.store = store
        self.texts = texts or UserTexts()
        self._flood = flood
        self._observer = observer
        self._turn_timeout = turn_timeout
        self._lanes: dict[ConversationKey, _Lane] = {}
        # the running turn of each conversation, and those a user asked to stop (/cancel)
        self._running: dict[ConversationKey, asyncio.Task[TurnResult]] = {}
        self._cancelled: set[ConversationKey] = set()
        self._closing = False
        self._active = 0

    # --- submitting work ----------------------------------------------------------------------

    def submit(self, inbound: Inbound, surface: Surface) -> asyncio.Future[TurnResult]:
        """Queue a turn behind the conversation's pending ones; returns at once.

        Call it synchronously in arrival order (before any ``await`` in the platform handler):
        the order of ``submit`` calls is the order turns run in.
        """
        texts = self.texts.in_language(inbound.language)
        if self._closing:
            return self._enqueue(inbound.key, self._interrupted(surface, texts), surface)
        if self._flood is not None:
            wait = self._flood.check(inbound.key)
            if wait is not None:
                text = texts.flood.format(seconds=max(1, round(wait)))
                return self._enqueue(
                    inbound.key, self._refuse(inbound.key, surface, text, "flood"), surface
                )
        return self._enqueue(inbound.key, lambda: self._run_turn(inbound, surface), surface)

    async def handle(self, inbound: Inbound, surface: Surface) -> TurnResult:
        """Queue a turn and wait for it to finish."""
        return await asyncio.shield(self.submit(inbound, surface))

    def _enqueue(
        self, key: ConversationKey, job: Job, surface: Surface | None
    ) -> asyncio.Future[TurnResult]:
        future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        lane = self._lanes.setdefault(key, _Lane())
        lane.jobs.append((job, future, surface))
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(key, lane), name=f"lane:{key.short()}")
        self._report_queue()
        return future

    async def _drain(self, key: ConversationKey, lane: _Lane) -> None:
        try:
            while lane.jobs:
                job, future, _surface = lane.jobs[0]
                self._active += 1
                try:
                    result = await job()
                except asyncio.CancelledError:
                    # shutdown cancelled this turn: tell this user and everyone queued behind
                    if self._observer:
                        self._observer.turn_finished(self.bot, "interrupted", 0.0)
                    for _, fut, srf in lane.jobs:
                        if srf is not None:
                            await self._tell_interrupted(srf)
                        if not fut.done():
                            fut.set_result(TurnResult("interrupted"))
                    lane.jobs.clear()
                    raise
                except Exception as exc:  # a bug in an adapter or backend; never kill the lane
                    log.exception("turn crashed for %s", key.short())
                    result = TurnResult("failed", failure=Failure(FailureKind.INTERNAL, repr(exc)))
                finally:
                    self._active -= 1
                lane.jobs.popleft()
                if not future.done():
                    future.set_result(result)
                self._report_queue()
        finally:
            lane.worker = None
            if not lane.jobs and self._lanes.get(key) is lane:
                del self._lanes[key]

    # --- one turn -----------------------------------------------------------------------------

    async def _run_turn(self, inbound: Inbound, surface: Surface) -> TurnResult:
        turn_id = next(_turn_ids)
        with log_context(bot=self.bot, conversation=inbound.key.short(), turn=turn_id):
            return await self._timed_turn(turn_id, inbound, surface)

    async def _timed_turn(self, turn_id: int, inbound: Inbound, surface: Surface) -> TurnResult:
        started = time.monotonic()
        key = inbound.key
        log.info("turn %d start %s", turn_id, key.short())
        await surface.begin()
        # a task of its own, so /cancel (:meth:`cancel`) can stop this turn and only this one;
        # the deadline (read by the backend in the task's context) lets a backend end its
        # retries in time to say so itself
        with turn_deadline(self._turn_timeout):
            turn = asyncio.create_task(self._converse(inbound, surface))
        self._running[key] = turn
        try:
            async with asyncio.timeout(self._turn_timeout):
                result = await turn
        except TimeoutError:
            result = TurnResult("failed", failure=Failure(FailureKind.TIMEOUT, "turn timeout"))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if key not in self._cancelled or (task is not None and task.cancelling()):
                raise  # shutdown, not the user
            result = TurnResult("cancelled")
            await surface.fail(self.texts.in_language(inbound.language).cancelled)
        finally:
            self._running.pop(key, None)
            self._cancelled.discard(key)
        if result.failure is not None:
            if self._observer:
                self._observer.backend_error(self.bot, str(result.failure.kind))
            self._log_failure(turn_id, key, result.failure)
            await surface.fail(self.texts.for_failure(result.failure, inbound.language))
        seconds = time.monotonic() - started
        if self._observer:
            self._observer.turn_finished(self.bot, result.outcome, seconds)
        log.info("turn %d %s in %.3f s %s", turn_id, result.outcome, seconds, key.short())
        return result

    async def _converse(self, inbound: Inbound, surface: Surface) -> TurnResult:
        record, failure = await self._session_for(inbound.key, inbound.language)
        if failure is not None or record is None:
            return TurnResult("failed", failure=failure)
        if record.language and record.language != inbound.language:
            inbound = dataclasses.replace(inbound, language=record.language)
        result = await self._relay(record, inbound, surface)
        if result.failure is not None and result.failure.kind is FailureKind.SESSION_EXPIRED:
            # the backend forgot this session (expired or invalid token): start a new one,
            # tell the user, and try the same message once more
            log.info("session expired for %s; opening a new one", inbound.key.short())
            record, failure = await self._session_for(
                inbound.key, record.language, replace_ref=record.session_ref
            )
            if failure is not None or record is None:
                return TurnResult("failed", failure=failure)
            await surface.notice(self.texts.in_language(inbound.language).restarted)
            result = await self._relay(record, inbound, surface)
        await self.store.touch(inbound.key)
        return result

    async def _relay(self, record: SessionRecord, inbound: Inbound, surface: Surface) -> TurnResult:
        started = time.monotonic()
        try:
            return await self._relay_events(record, inbound, surface)
        finally:
            if self._observer:
                self._observer.backend_latency(
                    self.bot, self.backend_name, time.monotonic() - started
                )

    async def _relay_events(
        self, record: SessionRecord, inbound: Inbound, surface: Surface
    ) -> TurnResult:
        events = self.backend.turn(record.session_ref, inbound)
        try:
            async for event in events:
                match event:
                    case Token(text):
                        await surface.append(text)
                    case Snapshot(text):
                        await surface.replace(text)
                    case Notice(text, reason):
                        await surface.notice(
                            self.texts.in_language(inbound.language).text(reason)
                            if reason and reason in self.texts.catalogue.keys
                            else text
                        )
                    case Final(messages):
                        if not any(m.text.strip() or m.buttons or m.links for m in messages):
                            empty = self.texts.in_language(inbound.language).empty
                            messages = (ReplyMessage(empty),)
                        messages = await with_button_ids(self.store, messages)
                        await surface.finish(messages)
                        return TurnResult("ok", messages=messages)
                    case Failure():
                        return TurnResult("failed", failure=event)
        except Exception as exc:
            log.exception("backend %s raised during a turn", self.backend_name)
            return TurnResult("failed", failure=Failure(FailureKind.INTERNAL, repr(exc)))
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        ended = Failure(FailureKind.MALFORMED, "backend ended the turn without an answer")
        return TurnResult("failed", failure=ended)

    async def _session_for(
        self, key: ConversationKey, language: str | None, replace_ref: str | None = None
    ) -> tuple[SessionRecord | None, Failure | None]:
        """The stored session for ``key``, opening (and persisting) one when there is none."""
        record = await self.store.get(key)
        if record is not None and record.backend == self.backend_name and replace_ref is None:
            return record, None
        if record is not None and record.backend != self.backend_name:
            log.info("%s switched backend %s -> %s", key.short(), record.backend, self.backend_name)
        try:
            ref = await self.backend.open(key, language)
        except BackendError as exc:
            return None, exc.failure
        except Exception as exc:
            log.exception("backend %s could not open a session", self.backend_name)
            return None, Failure(FailureKind.UNAVAILABLE, repr(exc), retryable=True)
        if replace_ref is not None:
            with contextlib.suppress(Exception):
                await self.backend.close(replace_ref)
        now = datetime.now(UTC)
        record = SessionRecord(
            key=key,
            backend=self.backend_name,
            session_ref=ref,
            language=language,
            created_at=now,
            last_active=now,
            turn_count=record.turn_count if record is not None and replace_ref else 0,
        )
        await self.store.put(record)
        if self._observer:
            self._observer.sessions_changed(self.bot, await self.store.count(self.bot))
        return record, None

    def _log_failure(self, turn_id: int, key: ConversationKey, failure: Failure) -> None:
        # WARNING even for AUTH: the backend logs that operator error once, clearly; repeating
        # it at ERROR on every user's turn would bury it.
        log.warning(
            "turn %d failed (%s) %s: %s", turn_id, failure.kind, key.short(), failure.detail
        )

    def _refuse(self, key: ConversationKey, surface: Surface, text: str, why: str) -> Job:
        async def job() -> TurnResult:
            log.info("refused a turn (%s) for %s", why, key.short())
            await surface.fail(text)
            if self._observer:
                self._observer.turn_finished(self.bot, "refused", 0.0)
            return TurnResult("refused", failure=Failure(FailureKind.BAD_INPUT, why))

        return job

    def _interrupted(self, surface: Surface, texts: UserTexts | None = None) -> Job:
        async def job() -> TurnResult:
            await self._tell_interrupted(surface, texts)
            if self._observer:
                self._observer.turn_finished(self.bot, "interrupted", 0.0)
            return TurnResult("interrupted")

        return job

    async def _tell_interrupted(self, surface: Surface, texts: UserTexts | None = None) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await surface.fail((texts or self.texts).interrupted)

    # --- sessions and admin -------------------------------------------------------------------

    def cancel(self, key: ConversationKey) -> bool:
        """Stop the answer being generated for ``key`` (the user's /cancel); the user is told
        on the turn's surface and their next message starts normally. False when no turn of
        that conversation is running."""
        turn = self._running.get(key)
        if turn is None or turn.done():
            return False
        self._cancelled.add(key)
        turn.cancel()
        log.info("turn cancelled by the user for %s", key.short())
        return True

    async def reset(self, key: ConversationKey) -> bool:
        """Forget the conversation's session, after its pending turns."""

        async def job() -> TurnResult:
            existed = await self._forget(key)
            return TurnResult("ok", extra={"existed": str(existed)})

        result = await self._enqueue(key, job, None)
        return result.extra.get("existed") == "True"

    async def set_language(self, key: ConversationKey, language: str) -> None:
        """Start a new session in ``language`` (backends fix the language per session)."""

        async def job() -> TurnResult:
            await self._forget(key)
            _record, failure = await self._session_for(key, language)
            if failure is not None:
                return TurnResult("failed", failure=failure)
            return TurnResult("ok")

        result = await self._enqueue(key, job, None)
        if result.failure is not None:
            raise BackendError(result.failure)

    async def _forget(self, key: ConversationKey) -> bool:
        record = await self.store.get(key)
        if record is None:
            return False
        with contextlib.suppress(Exception):
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
        for record in records:
            with contextlib.suppress(Exception):
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
        """Turns waiting behind a running turn of the same conversation."""
        return sum(max(0, len(lane.jobs) - 1) for lane in self._lanes.values())

    @property
    def active_turns(self) -> int:
        return self._active

    def _report_queue(self) -> None:
        if self._observer:
            self._observer.queue_changed(self.bot, self.queued_turns)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop taking turns, let running ones finish within ``grace``, interrupt the rest.

        Users whose turn could not finish are told so. The backend and store are closed by
        whoever created them.
        """
        self._closing = True
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("interrupted %d conversations at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
