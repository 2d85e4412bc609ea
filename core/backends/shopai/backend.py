"""ShopAIBackend: chat tokens, one connection per active conversation, turns, recovery.

A turn waits until the server is ``operational``, sends the message, relays ``token`` frames,
and ends with the authoritative ``history``: the AI entries after the turn's user entry, found
by position, are the Final (they overwrite whatever was streamed). A connection dropped
mid-answer is reopened with backoff and ``get_history`` recovers the answer. A token the
server refuses is reported as ``SESSION_EXPIRED``; the engine then opens a new session and
replays the turn once.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from chatbridge.core.backends.shopai.connection import (
    Closed,
    ConnectFailed,
    ServerError,
    ServerEvent,
    ShopAIConnection,
    ShopAIMetrics,
    Status,
    StreamedToken,
    TokenRejected,
    WireHistory,
)
from chatbridge.core.backends.shopai.session import SessionInitializer, ShopAIHttp
from chatbridge.core.backends.shopai.settings import ShopAISettings
from chatbridge.core.backends.shopai.sio_v02 import SocketIOConnection
from chatbridge.core.backends.shopai.ws_v01 import WebSocketConnection
from chatbridge.core.errors import BackendError, best_effort
from chatbridge.core.html import parse_reply_html
from chatbridge.core.retry import RetryPolicy
from chatbridge.core.secrets import register_secret
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Failure,
    FailureKind,
    FailureReason,
    Final,
    Inbound,
    Notice,
    NoticeReason,
    ReplyMessage,
    Snapshot,
    Token,
)

__all__ = ["ShopAIBackend"]

log = logging.getLogger(__name__)

_TOO_LONG = re.compile(r"too long.*?(\d+)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_OPEN_TAG = re.compile(r"<[^>]*$")
_HTML_HINT = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def visible_text(markup: str) -> str:
    """What a streamed, possibly half-written, HTML answer reads as (tags dropped)."""
    return html.unescape(_OPEN_TAG.sub("", _TAG.sub("", markup)))


def reply_from(content: str) -> ReplyMessage:
    """The Final message for an answer; HTML answers keep their markup, buttons and links."""
    if _HTML_HINT.search(content):
        return parse_reply_html(content, visible_text(content))
    return ReplyMessage(text=content)


def _user_indexes(history: list[Any]) -> list[int]:
    return [i for i, m in enumerate(history) if isinstance(m, dict) and m.get("type") == "user"]


def find_answer(history: list[Any], baseline: int | None) -> tuple[str, tuple[str, ...]]:
    """Locate this turn's answer in a server history, by position.

    The turn's message is whatever user entry follows the first ``baseline`` ones: its text is
    never compared, because the document promises that the history overwrites the local one,
    not that the server stores a message byte for byte. Returns ``("missing", ())`` when the
    history holds no user entry of this turn, ``("pending", ())`` when no AI entry follows the
    last user entry yet, and ``("answer", contents)`` with every AI entry after it (an answer
    may span several). ``baseline`` None (unknown) takes the last user entry as this turn's.
    """
    users = _user_indexes(history)
    if not users or (baseline is not None and len(users) <= baseline):
        return "missing", ()
    answer = tuple(
        item["content"]
        for item in history[users[-1] + 1 :]
        if isinstance(item, dict)
        and item.get("type") == "ai"
        and isinstance(item.get("content"), str)
        and item["content"].strip()
    )
    return ("answer", answer) if answer else ("pending", ())


async def _quietly(action: Awaitable[None]) -> bool:
    """Send something mid-turn; a failure means the connection is going, and its ``closed``
    event (already queued or on its way) starts the reconnect."""
    try:
        await action
    except Exception as exc:
        log.info("ShopAI send failed: %r", exc)
        return False
    return True


async def _next_event(events: asyncio.Queue[ServerEvent], timeout: float) -> ServerEvent:
    # called once per token: skip the timer when a frame is already waiting, and use
    # asyncio.timeout (a timer handle) rather than wait_for (a new task per call)
    if not events.empty():
        return events.get_nowait()
    async with asyncio.timeout(timeout):
        return await events.get()


@dataclass(eq=False)
class _TurnState:
    """One turn's progress, fed the server's events by :meth:`ShopAIBackend._turn`."""

    text: str
    baseline: int | None  # user entries in the server's history before this turn, when known
    synced: bool = False  # the history was asked for to learn the baseline
    syncing: bool = False  # ... and has not arrived yet
    sent: bool = False
    sending: bool = False  # the message may be on its way (sent or not, the server may have it)
    ended: bool = False  # the turn's Final or Failure was handed over
    recovering: bool = False  # reconnected mid-answer: stream no more, wait for the history
    resent: bool = False
    reconnects: int = 0
    asked_history: int = 0  # get_history requests not yet answered
    streamed: str = ""
    shown: str = ""

    def preview(self, token: str) -> Event | None:
        """What a streamed token shows, if anything."""
        if self.recovering or not self.sent:
            return None
        self.streamed += token
        if "<" not in self.streamed:
            return Token(token)
        visible = visible_text(self.streamed)  # half-written markup must not reach the chat
        if visible == self.shown:  # a token inside a tag shows nothing new
            return None
        self.shown = visible
        return Snapshot(visible)


@dataclass(eq=False)
class _Chat:
    """What the backend keeps per chat token (no history: the server owns it)."""

    token: str
    user_count: int | None = None  # user messages in the server's history, when known
    conn: ShopAIConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    idle: asyncio.TimerHandle | None = None
    forgotten: bool = False


class ShopAIBackend:
    """The ShopAI backend (v0.1 WebSocket or v0.2 Socket.IO); see the module docstring."""

    def __init__(
        self,
        settings: ShopAISettings,
        *,
        name: str = "shopai",
        metrics: ShopAIMetrics | None = None,
    ) -> None:
        register_secret(settings.license_key.get_secret_value())  # init_session URLs carry it
        self.name = name
        self.settings = settings
        self.metrics = metrics or ShopAIMetrics()
        self._http = ShopAIHttp(settings)
        self._init = SessionInitializer(settings, self._http, name)
        self._retry = RetryPolicy(
            attempts=settings.reconnect_attempts,
            base_delay=settings.reconnect_backoff,
            max_delay=settings.reconnect_backoff_max,
        )
        # a burst of handshakes (e.g. after a restart) would stall the event loop, and with it
        # every heartbeat: connect a bounded number at a time
        self._connects = asyncio.Semaphore(settings.max_concurrent_connects)
        self._chats: dict[str, _Chat] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- Backend protocol ---------------------------------------------------------------------

    async def open(self, key: ConversationKey, language: str | None) -> str:
        token, lang = await self._init.init_session(language)
        log.debug("ShopAI session opened for %s in %s", key.short(), lang)
        self._chats[token] = _Chat(token=token, user_count=0)
        return token

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncGenerator[Event, None]:
        text = inbound.effective_text
        if not text.strip():
            what = "photos" if inbound.images else "an empty message"
            yield Failure(
                FailureKind.BAD_INPUT, f"nothing to send ({what})", reason=FailureReason.TEXT_ONLY
            )
            return
        limit = self.settings.max_message_length
        if len(text) > limit:
            yield self._too_long(len(text), limit)
            return
        if inbound.images:
            yield Notice(NoticeReason.PHOTOS_DROPPED)
        chat = self._chats.get(session_ref)
        if chat is None:  # e.g. after a restart: the token is still worth a try
            chat = self._chats[session_ref] = _Chat(token=session_ref)
        async with chat.lock:  # turns of one session never overlap
            if chat.idle is not None:
                chat.idle.cancel()
                chat.idle = None
            inner = self._turn(chat, text)
            try:
                async for event in inner:
                    yield event
            finally:
                # close the inner generator now, not whenever it is garbage collected: its
                # cleanup must not run in the middle of the next turn
                await inner.aclose()
                self._schedule_idle(chat)

    async def recover(self, session_ref: str, inbound: Inbound) -> Final | None:
        """After a crash: the answer to ``inbound`` if the server's history holds it (the
        server keeps answering with nobody connected), None when the server never got the
        message or holds no answer to it (the engine then sends it again).

        Waits for an answer still being generated. Raises BackendError when the server
        cannot be reached. The history carries no message ids and the turn's position in it
        is not known after a restart, so the message counts as received when it is the
        history's last user entry (compared word for word, as servers may re-space it): a user who
        sent the very same text twice in a row gets the answer to the latest copy, and a server
        that stored the text altered is asked again (the user may then read two answers).
        """
        text = inbound.effective_text
        chat = self._chats.get(session_ref)
        if chat is None:
            chat = self._chats[session_ref] = _Chat(token=session_ref)
        async with chat.lock:
            conn = chat.conn
            if conn is None or not conn.alive:
                opened = await self._reopen(chat)
                if isinstance(opened, Failure):
                    raise BackendError(opened)
                conn = opened
            events = conn.begin_turn()
            try:
                history = await self._history_when_idle(conn, events)
            finally:
                conn.end_turn(events)
                self._schedule_idle(chat)
        if history is None:
            raise BackendError(Failure(FailureKind.UNAVAILABLE, "no history", retryable=True))
        users = _user_indexes(history)
        chat.user_count = len(users)
        last = history[users[-1]].get("content") if users else None
        if not isinstance(last, str) or last.split() != text.split():
            return None  # the server never got it
        verdict, answer = find_answer(history, None)
        if verdict == "answer":
            return Final(tuple(reply_from(content) for content in answer))
        return None  # received, but the answer was lost: it is sent again

    async def _history_when_idle(
        self, conn: ShopAIConnection, events: asyncio.Queue[ServerEvent]
    ) -> list[Any] | None:
        """The server's history once it is done processing (None if the connection ends)."""
        timeout = self.settings.answer_timeout
        if not await conn.wait_operational(timeout):
            return None
        if not await _quietly(conn.request_history()):
            return None
        while True:
            try:
                event = await _next_event(events, timeout)
            except TimeoutError:
                return None
            match event:
                case Closed():
                    return None
                case WireHistory(entries):
                    return entries
                case _:
                    continue

    async def close(self, session_ref: str) -> None:
        chat = self._chats.pop(session_ref, None)
        if chat is not None:
            await self._drop(chat)

    async def aclose(self) -> None:
        self._closed = True
        chats = list(self._chats.values())
        self._chats.clear()
        await asyncio.gather(*(self._drop(c) for c in chats), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await self._http.aclose()

    # --- introspection ------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._chats.values() if c.conn is not None and c.conn.alive)

    def connection(self, session_ref: str) -> ShopAIConnection | None:
        chat = self._chats.get(session_ref)
        return chat.conn if chat is not None else None

    # --- connections --------------------------------------------------------------------------

    async def _connect(self, chat: _Chat) -> ShopAIConnection:
        """A new open connection for ``chat``; retries transient faults with backoff."""

        async def attempt() -> ShopAIConnection:
            failed: ConnectFailed | None = None
            for protocol in await self._init.protocols():
                conn: ShopAIConnection
                if protocol == "socketio":
                    conn = SocketIOConnection(
                        self.settings, chat.token, self.metrics, self._http.session()
                    )
                else:
                    conn = WebSocketConnection(self.settings, chat.token, self.metrics)
                try:
                    await conn.open()
                except ConnectFailed as exc:  # perhaps the other protocol: try it
                    log.debug("ShopAI %s connect failed: %s", protocol, exc)
                    failed = exc
                    continue
                self._init.confirm(protocol)
                return conn
            assert failed is not None
            raise failed

        def on_retry(state: Any) -> None:
            log.info("ShopAI connect attempt %d failed; retrying", state.attempt_number)

        async with self._connects:
            return await self._retry.call(attempt, lambda e: isinstance(e, ConnectFailed), on_retry)

    def _schedule_idle(self, chat: _Chat) -> None:
        if chat.forgotten or self._closed or chat.conn is None:
            return
        loop = asyncio.get_running_loop()
        chat.idle = loop.call_later(self.settings.idle_timeout, self._on_idle, chat)

    def _on_idle(self, chat: _Chat) -> None:
        chat.idle = None
        if chat.lock.locked() or chat.conn is None:
            return
        conn, chat.conn = chat.conn, None
        # forget the chat too, so a long-running process does not keep every token it ever
        # saw; the next turn with this token reconnects (and locates its answer by text)
        if self._chats.get(chat.token) is chat:
            del self._chats[chat.token]
        chat.forgotten = True
        log.debug("ShopAI connection idle for %.0f s; closing", self.settings.idle_timeout)
        task = asyncio.get_running_loop().create_task(conn.aclose())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, chat: _Chat) -> None:
        chat.forgotten = True
        if chat.idle is not None:
            chat.idle.cancel()
            chat.idle = None
        conn, chat.conn = chat.conn, None
        if conn is not None:
            await conn.aclose()

    # --- one turn -----------------------------------------------------------------------------

    def _too_long(self, length: int, limit: int) -> Failure:
        return Failure(
            FailureKind.VALIDATION,
            f"message too long ({length} > {limit})",
            reason=FailureReason.TOO_LONG,
            fields={"length": length, "limit": limit},
        )

    def _expired(self, chat: _Chat) -> Failure:
        chat.forgotten = True
        self._chats.pop(chat.token, None)
        return Failure(FailureKind.SESSION_EXPIRED, "ShopAI refused the chat token", retryable=True)

    async def _reopen(self, chat: _Chat) -> ShopAIConnection | Failure:
        if chat.conn is not None:
            await chat.conn.aclose()
            chat.conn = None
        if self._closed:  # shutting down: don't dial again
            return Failure(FailureKind.UNAVAILABLE, "backend closed", retryable=True)
        try:
            chat.conn = await self._connect(chat)
        except TokenRejected:
            return self._expired(chat)
        except ConnectFailed as exc:
            return Failure(FailureKind.UNAVAILABLE, str(exc), retryable=True)
        return chat.conn

    async def _turn(self, chat: _Chat, text: str) -> AsyncGenerator[Event, None]:
        conn = chat.conn
        if conn is None or not conn.alive:
            opened = await self._reopen(chat)
            if isinstance(opened, Failure):
                yield opened
                return
            conn = opened
        state = _TurnState(text, chat.user_count)
        events = conn.begin_turn()
        try:
            while True:
                if not state.sent and not state.syncing:
                    failure = await self._send(chat, conn, events, state)
                    if failure is not None:
                        state.ended = True
                        yield failure
                        return
                try:
                    event = await _next_event(events, self.settings.answer_timeout)
                except TimeoutError:
                    await self._abandon(chat, conn)
                    state.ended = True
                    yield Failure(FailureKind.TIMEOUT, "no answer in time")
                    return
                if isinstance(event, Closed):
                    conn.end_turn(events)
                    opened = await self._recover(chat, state, event.reason)
                    if isinstance(opened, Failure):
                        state.ended = True
                        yield opened
                        return
                    conn, events = opened, opened.begin_turn()
                    if state.sent or state.syncing:
                        await self._ask_history(conn, state)
                    continue
                out = await self._on_event(chat, conn, state, event)
                if out is not None:
                    state.ended = isinstance(out, Final | Failure)
                    yield out
                    if state.ended:
                        return
        finally:
            conn.end_turn(events)
            if not state.ended and state.sending:
                await self._stop_answer(chat, conn)

    async def _stop_answer(self, chat: _Chat, conn: ShopAIConnection) -> None:
        """The turn was given up mid-answer (the user's /cancel, shutdown). The documents have
        no "stop" message: closing the connection is what stops the server generating, and
        it keeps late tokens and the late history of the dropped answer off the connection
        the next turn uses. Where the next turn starts in the history is then unknown (the
        dropped message may or may not be in it): the next turn asks first."""
        chat.user_count = None
        log.debug("ShopAI answer given up; closing its connection")
        with best_effort(log, "closing a ShopAI connection after a dropped answer"):
            await self._abandon(chat, conn)

    async def _on_event(
        self, chat: _Chat, conn: ShopAIConnection, state: _TurnState, event: ServerEvent
    ) -> Event | None:
        """What one server message means for the turn (``Closed`` is the caller's)."""
        match event:
            case StreamedToken(token):
                return state.preview(token)
            case WireHistory(entries):
                return await self._on_history(chat, conn, state, entries)
            case Status(status):
                # done without the history we expected: ask for it
                if state.sent and status == "operational" and state.asked_history == 0:
                    await self._ask_history(conn, state)
            case ServerError(message):
                return self._refused(conn, state.text, message)
        return None

    async def _send(
        self,
        chat: _Chat,
        conn: ShopAIConnection,
        events: asyncio.Queue[ServerEvent],
        state: _TurnState,
    ) -> Failure | None:
        """Send the user's message once the server is operational (or learn the baseline first)."""
        if state.baseline is None and not state.synced:
            # Where this turn starts in the server's history is unknown (after a restart or an
            # idle close): ask for the history first, so the answer is found by position.
            state.synced = True
            state.syncing = await self._ask_history(conn, state)
            if state.syncing:
                return None
        # "Only send messages to the server when it is confirmed to be operational."
        if not await conn.wait_operational(self.settings.answer_timeout) and conn.alive:
            await self._abandon(chat, conn)
            return Failure(FailureKind.TIMEOUT, "never operational")
        if conn.alive:
            while not events.empty():  # frames from before this message
                events.get_nowait()
            try:
                state.sending = True
                await conn.send_message(state.text)
                state.sent = True
            except Exception as exc:  # the closed event follows; reconnect then
                log.info("ShopAI send failed: %r", exc)
        return None

    @staticmethod
    async def _ask_history(conn: ShopAIConnection, state: _TurnState) -> bool:
        if await _quietly(conn.request_history()):
            state.asked_history += 1
            return True
        return False

    async def _abandon(self, chat: _Chat, conn: ShopAIConnection) -> None:
        await conn.aclose()
        if chat.conn is conn:
            chat.conn = None

    async def _recover(
        self, chat: _Chat, state: _TurnState, reason: str
    ) -> ShopAIConnection | Failure:
        """A new connection after one dropped mid-turn (the caller then asks the history)."""
        if state.reconnects >= self.settings.reconnect_attempts:
            return Failure(
                FailureKind.UNAVAILABLE, f"connection kept dropping ({reason})", retryable=True
            )
        state.reconnects += 1
        self.metrics.reconnects += 1
        log.info("ShopAI connection lost mid-turn (%s); reconnecting", reason)
        opened = await self._reopen(chat)
        if not isinstance(opened, Failure):
            state.asked_history = 0
            state.recovering = state.sent  # stream no more: the history has the answer
        return opened

    async def _on_history(
        self, chat: _Chat, conn: ShopAIConnection, state: _TurnState, entries: list[Any]
    ) -> Final | None:
        solicited = state.asked_history > 0
        state.asked_history = max(0, state.asked_history - 1)
        if state.syncing:
            state.syncing = False
            state.baseline = len(_user_indexes(entries))
            return None
        if not state.sent:
            return None
        verdict, answer = find_answer(entries, state.baseline)
        if verdict == "answer":
            if solicited and conn.status == "processing":
                return None  # asked mid-answer: the final history is still to come
            chat.user_count = len(_user_indexes(entries))
            return Final(tuple(reply_from(content) for content in answer))
        lost = verdict == "missing" or (verdict == "pending" and solicited)
        if lost and conn.status == "operational" and not state.resent:
            # The server is idle without an answer: it never took the message (it may drop
            # one sent while it was processing) or dropped the answer with the connection.
            # Send it again, once; the answer then follows the last user entry.
            state.resent = True
            await _quietly(conn.send_message(state.text))
        return None

    def _refused(self, conn: ShopAIConnection, text: str, message: str) -> Failure:
        """The Failure for a server ``error`` message."""
        if conn.protocol == "websocket":
            conn.mark_operational()  # a refused message leaves v0.1 operational
        match = _TOO_LONG.search(message)
        if match is not None:
            return self._too_long(len(text), int(match.group(1)))
        return Failure(
            FailureKind.UNAVAILABLE,
            f"server error: {message[:200]}",
            reason=FailureReason.NOT_ANSWERED,
        )
