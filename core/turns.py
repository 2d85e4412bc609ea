"""One turn, from the user's message to a delivered answer, with its journal states.

:class:`TurnRunner` is the engine's inner half: the engine decides *when* a turn runs (one at a
time per conversation, in arrival order); the runner decides *what happens* in it. Whatever
goes wrong inside — the store, the backend, the adapter, a bug — ends in ``surface.fail``
with a plain-language message (which stops typing indicators), logged once with its
traceback. Journal states move received -> sent_to_backend -> answered -> delivered (or
refused / failed_notified); the answer is written down before it is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from chatbridge.core.buttons import with_button_ids
from chatbridge.core.deadline import turn_deadline
from chatbridge.core.errors import BackendError, DeliveryRefused, FencedOut, best_effort
from chatbridge.core.logctx import log_context
from chatbridge.core.protocols import (
    Backend,
    Journal,
    Recovers,
    SessionStore,
    Surface,
    TurnObserver,
)
from chatbridge.core.texts import UserTexts
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    Final,
    Inbound,
    JournalEntry,
    Notice,
    ReplyMessage,
    SessionRecord,
    Snapshot,
    Token,
    TurnResult,
    TurnState,
)

log = logging.getLogger(__name__)

_turn_ids = itertools.count(1)


class _Cancelled(Exception):
    """The user stopped the turn (/cancel)."""


@dataclass
class Turn:
    """One user message on its way through the engine."""

    inbound: Inbound
    surface: Surface
    entry: JournalEntry | None = None  # None: not journaled (console, tests, journal down)
    resume: TurnState | None = None  # set when recovered after a restart: the state it had
    # the stored session, read ahead while the turn passed a shared flood gate (several
    # replicas: one round trip's wait for both); None: read when the turn needs it
    stored: asyncio.Future[SessionRecord | None] | None = None


class TurnRunner:
    def __init__(
        self,
        *,
        bot: str,
        backend: Backend,
        backend_name: str,
        store: SessionStore,
        journal: Journal | None,
        texts: UserTexts,
        observer: TurnObserver | None,
        turn_timeout: float,
    ) -> None:
        self.bot = bot
        self.backend = backend
        self.backend_name = backend_name
        self.store = store
        self.journal = journal
        self.texts = texts
        self.observer = observer
        self.turn_timeout = turn_timeout
        # the backend's part of each conversation's running turn, and those a user stopped
        self._running: dict[ConversationKey, asyncio.Task[TurnResult]] = {}
        self._cancelled: set[ConversationKey] = set()

    # --- journal ------------------------------------------------------------------------------

    async def mark(self, turn: Turn, state: TurnState) -> None:
        """Move the turn's journal entry on (raises if the journal cannot be written)."""
        if turn.entry is not None and self.journal is not None:
            await self.journal.advance(self.bot, turn.entry.seq, state)

    async def mark_quietly(self, turn: Turn, state: TurnState) -> None:
        """For the last state of a turn: the user has their reply whatever happens here; a
        journal that cannot record it only means the reply may be repeated after a crash."""
        try:
            await self.mark(turn, state)
        except FencedOut as exc:
            log.warning("journal: turn %s not marked %s: %s", self._seq(turn), state, exc)
        except Exception:
            log.exception("journal: could not mark turn %s %s", self._seq(turn), state)

    @staticmethod
    def _seq(turn: Turn) -> str:
        return str(turn.entry.seq) if turn.entry is not None else "-"

    # --- the turn -----------------------------------------------------------------------------

    async def run(self, turn: Turn) -> TurnResult:
        turn_id = next(_turn_ids)
        with log_context(bot=self.bot, conversation=turn.inbound.key.short(), turn=turn_id):
            return await self._timed(turn_id, turn)

    async def _timed(self, turn_id: int, turn: Turn) -> TurnResult:
        started = time.monotonic()
        key = turn.inbound.key
        # one INFO line per turn (at its end): at a few hundred turns a second, every log record
        # is CPU taken from the turns themselves
        log.debug("turn %d start %s (journal %s)", turn_id, key.short(), self._seq(turn))
        texts = self.texts.in_language(turn.inbound.language)
        try:
            await turn.surface.begin()
            result = await self._cancellable(turn)
            if result.outcome == "ok" and result.messages:
                # not under the turn's timeout: the surface keeps trying to deliver a final
                # answer until its own delivery deadline, and raises DeliveryRefused for good
                result = await self.deliver(turn, result.messages)
        except TimeoutError:
            result = TurnResult("failed", failure=Failure(FailureKind.TIMEOUT, "turn timeout"))
        except _Cancelled:
            result = TurnResult("cancelled")
            await self.tell(turn, texts.cancelled)
        except FencedOut as exc:
            # several replicas: another took this conversation over while this one stalled;
            # it runs the turn, so this replica stops here, quietly
            log.warning("turn %d stopped: %s", turn_id, exc)
            result = TurnResult("interrupted")
        except DeliveryRefused as exc:
            log.warning("turn %d: the platform refused the answer for good: %s", turn_id, exc)
            await self.mark_quietly(turn, TurnState.REFUSED)
            result = TurnResult("refused", failure=Failure(FailureKind.INTERNAL, "refused"))
        except Exception as exc:  # store, adapter or a bug: the user still gets a reply
            log.exception("turn %d crashed for %s", turn_id, key.short())
            result = TurnResult("failed", failure=Failure(FailureKind.INTERNAL, repr(exc)))
        if result.failure is not None and result.outcome == "failed":
            if self.observer:
                self.observer.backend_error(self.bot, str(result.failure.kind))
            self._log_failure(turn_id, key, result.failure)
            await self.tell(turn, self.texts.for_failure(result.failure, turn.inbound.language))
        seconds = time.monotonic() - started
        if self.observer:
            self.observer.turn_finished(self.bot, result.outcome, seconds)
        log.info("turn %d %s in %.3f s %s", turn_id, result.outcome, seconds, key.short())
        return result

    async def _cancellable(self, turn: Turn) -> TurnResult:
        """The backend's part of the turn, in a task of its own so that /cancel (:meth:`cancel`)
        stops this turn and only this one; bounded by the turn's timeout. The deadline (read
        by the backend in the task's context) lets a backend end its retries in time to say
        so itself."""
        key = turn.inbound.key
        with turn_deadline(self.turn_timeout):
            task = asyncio.create_task(self._converse(turn))
        self._running[key] = task
        try:
            async with asyncio.timeout(self.turn_timeout):
                return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if key not in self._cancelled or (current is not None and current.cancelling()):
                raise  # shutdown, not the user
            raise _Cancelled from None
        finally:
            self._running.pop(key, None)
            self._cancelled.discard(key)

    def cancel(self, key: ConversationKey) -> bool:
        """Stop the backend's part of ``key``'s running turn; False when there is none."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        self._cancelled.add(key)
        task.cancel()
        log.info("turn cancelled by the user for %s", key.short())
        return True

    async def tell(self, turn: Turn, text: str) -> None:
        """End the turn with ``text`` instead of an answer, and journal that it was told."""
        try:
            await turn.surface.fail(text)
        except DeliveryRefused as exc:
            log.warning("the platform refused a failure notice for good: %s", exc)
            await self.mark_quietly(turn, TurnState.REFUSED)
            return
        except Exception:
            log.exception("could not tell the user their turn failed")
        await self.mark_quietly(turn, TurnState.FAILED_NOTIFIED)

    async def deliver(self, turn: Turn, messages: Sequence[ReplyMessage]) -> TurnResult:
        """Name the answer's buttons, write the answer down, send it, journal it delivered."""
        # one store batch for every button of the answer, before anything draws it; an answer
        # recovered from the journal keeps its ids (naming again only renews them)
        messages = await with_button_ids(self.store, messages)
        if turn.entry is not None and self.journal is not None:
            await self.journal.answer(self.bot, turn.entry.seq, messages)
        await turn.surface.finish(messages)
        await self.mark_quietly(turn, TurnState.DELIVERED)
        return TurnResult("ok", messages=tuple(messages))

    async def _converse(self, turn: Turn) -> TurnResult:
        if turn.resume is TurnState.ANSWERED and turn.entry and turn.entry.answer is not None:
            log.info("recovery: delivering an answer written down before the restart")
            return TurnResult("ok", messages=turn.entry.answer)
        inbound = turn.inbound
        ahead, turn.stored = turn.stored, None  # read ahead once: not for the retry below
        record, failure = await self.session_for(inbound.key, inbound.language, read_ahead=ahead)
        if failure is not None or record is None:
            return TurnResult("failed", failure=failure)
        if record.language and record.language != inbound.language:
            inbound = dataclasses.replace(inbound, language=record.language)
        if turn.resume is TurnState.SENT:
            recovered = await self._recover(turn, record, inbound)
            if recovered is not None:
                return recovered
        result = await self._relay(turn, record, inbound)
        if result.failure is not None and result.failure.kind is FailureKind.SESSION_EXPIRED:
            # the backend forgot this session (expired or invalid token): start a new one,
            # tell the user, and try the same message once more
            log.info("session expired for %s; opening a new one", inbound.key.short())
            record, failure = await self.session_for(
                inbound.key, record.language, replace_ref=record.session_ref
            )
            if failure is not None or record is None:
                return TurnResult("failed", failure=failure)
            await turn.surface.notice(self.texts.in_language(inbound.language).restarted)
            result = await self._relay(turn, record, inbound)
        await self.store.touch(inbound.key)
        return result

    async def _recover(
        self, turn: Turn, record: SessionRecord, inbound: Inbound
    ) -> TurnResult | None:
        """A turn the backend may have received before the restart: its answer from the
        backend's history, or the restart notice; None when it is safe to send it again."""
        if not isinstance(self.backend, Recovers):
            # e.g. LoopOS /chat: not idempotent, and nothing tells whether it was received
            log.info("recovery: %s cannot be asked again; telling the user", self.backend_name)
            await self.tell(turn, self.texts.in_language(inbound.language).resend_after_restart)
            return TurnResult("interrupted")
        try:
            final = await self.backend.recover(record.session_ref, inbound)
        except BackendError as exc:
            if exc.failure.kind is not FailureKind.SESSION_EXPIRED:
                return TurnResult("failed", failure=exc.failure)
            final = None  # the backend forgot the session, and the message with it
        if final is None:
            log.info("recovery: the backend never got the message; sending it again")
            return None
        log.info("recovery: the backend's history holds the answer; delivering it")
        empty = self.texts.in_language(inbound.language).empty
        return TurnResult("ok", messages=final.messages or (ReplyMessage(empty),))

    async def _relay(self, turn: Turn, record: SessionRecord, inbound: Inbound) -> TurnResult:
        started = time.monotonic()
        await self.mark(turn, TurnState.SENT)
        try:
            return await self._relay_events(record, inbound, turn.surface)
        finally:
            if self.observer:
                self.observer.backend_latency(
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
                    case Notice():
                        said = self.texts.for_notice(event, inbound.language)
                        if said is None:
                            log.warning("backend notice %r has no text; not shown", event.reason)
                        else:
                            await surface.notice(said)
                    case Final(messages):
                        if not any(m.text.strip() or m.buttons or m.links for m in messages):
                            empty = self.texts.in_language(inbound.language).empty
                            messages = (ReplyMessage(empty),)
                        return TurnResult("ok", messages=messages)
                    case Failure():
                        return TurnResult("failed", failure=event)
        except (DeliveryRefused, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("backend %s raised during a turn", self.backend_name)
            return TurnResult("failed", failure=Failure(FailureKind.INTERNAL, repr(exc)))
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with best_effort(log, "closing the backend's event stream"):
                    await aclose()
        ended = Failure(FailureKind.MALFORMED, "backend ended the turn without an answer")
        return TurnResult("failed", failure=ended)

    # --- sessions -----------------------------------------------------------------------------

    async def session_for(
        self,
        key: ConversationKey,
        language: str | None,
        replace_ref: str | None = None,
        *,
        read_ahead: Awaitable[SessionRecord | None] | None = None,
    ) -> tuple[SessionRecord | None, Failure | None]:
        """The stored session for ``key`` (``read_ahead``: its read, already on its way),
        opening (and persisting) one when there is none."""
        record = await (read_ahead if read_ahead is not None else self.store.get(key))
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
        now = datetime.now(UTC)
        opened = SessionRecord(
            key=key,
            backend=self.backend_name,
            session_ref=ref,
            language=language,
            created_at=now,
            last_active=now,
            turn_count=record.turn_count if record is not None and replace_ref else 0,
        )
        # several replicas: another replica may have opened one meanwhile (this one stalled
        # while opening, and the conversation moved on there). Written only if the stored
        # session is still the one read above, in one step: else that one is kept (the
        # conversation went on in it) and ours closed
        stored = await self.store.put_new(
            opened, replacing=record.session_ref if record is not None else None
        )
        if stored.session_ref != ref:
            if stored.backend == self.backend_name:
                log.info("%s: a session was opened meanwhile elsewhere; using it", key.short())
                with best_effort(log, "closing a backend session opened twice"):
                    await self.backend.close(ref)
                return stored, None
            await self.store.put(opened)  # another backend's, written meanwhile: replaced
        if replace_ref is not None:
            with best_effort(log, "closing the expired backend session"):
                await self.backend.close(replace_ref)
        record = opened
        if self.observer:
            self.observer.sessions_changed(self.bot, await self.store.count(self.bot))
        return record, None

    def _log_failure(self, turn_id: int, key: ConversationKey, failure: Failure) -> None:
        # WARNING even for AUTH: the backend logs that operator error once, clearly; repeating
        # it at ERROR on every user's turn would bury it.
        log.warning(
            "turn %d failed (%s) %s: %s", turn_id, failure.kind, key.short(), failure.detail
        )
