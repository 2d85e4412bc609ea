"""ShopAIBackend: chat tokens, one connection per active conversation, turns, recovery.

A turn waits until the server is ``operational``, sends the message, relays ``token`` frames,
and ends with the authoritative ``history``: its AI message after the user's message is the
Final (it overwrites whatever was streamed). A connection dropped mid-answer is reopened with
backoff and ``get_history`` recovers the answer. A token the server refuses is reported as
``SESSION_EXPIRED``; the engine then opens a new session and replays the turn once.
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
    ConnectFailed,
    ServerEvent,
    ShopAIConnection,
    ShopAIMetrics,
    TokenRejected,
)
from chatbridge.core.backends.shopai.session import (
    UNAVAILABLE_TEXT,
    SessionInitializer,
    ShopAIHttp,
)
from chatbridge.core.backends.shopai.settings import ShopAISettings
from chatbridge.core.backends.shopai.sio_v02 import SocketIOConnection
from chatbridge.core.backends.shopai.ws_v01 import WebSocketConnection
from chatbridge.core.errors import BackendError
from chatbridge.core.html import parse_reply_html
from chatbridge.core.retry import RetryPolicy
from chatbridge.core.secrets import register_secret
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Failure,
    FailureKind,
    Final,
    Inbound,
    Notice,
    ReplyMessage,
    Snapshot,
    Token,
)

__all__ = ["ShopAIBackend"]

log = logging.getLogger(__name__)

TIMEOUT_TEXT = "The shopping assistant took too long to answer. Please try again."
ERROR_TEXT = "The shopping assistant could not answer that message. Please try again."
TOO_LONG_TEXT = (
    "Your message is {length} characters long, but the shopping assistant accepts at most "
    "{limit}. Please shorten it and send it again."
)
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


def find_answer(history: list[Any], text: str, baseline: int | None) -> tuple[str, str | None]:
    """Locate this turn in a server history.

    Returns ("missing", None) when the user's message is not there, ("pending", None) when it
    is but no AI message follows it yet, and ("answer", content) with the last AI message
    after it. ``baseline`` is how many user messages the history held before this turn, when
    known; otherwise the last user message with this text is taken.
    """
    users = _user_indexes(history)
    index: int | None = None
    if baseline is not None:
        if len(users) <= baseline:
            return "missing", None  # the server has not taken this turn's message (yet)
        candidate = users[baseline]
        if history[candidate].get("content") == text:
            index = candidate
    if index is None:
        same = [i for i in users if history[i].get("content") == text]
        if not same:
            return "missing", None
        index = same[-1]
    answer: str | None = None
    for item in history[index + 1 :]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "user":
            break
        if item.get("type") == "ai" and isinstance(item.get("content"), str):
            answer = item["content"]
    return ("pending", None) if answer is None else ("answer", answer)


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
                FailureKind.BAD_INPUT,
                f"nothing to send ({what})",
                user_text="The shopping assistant reads text only: please type your question.",
            )
            return
        limit = self.settings.max_message_length
        if len(text) > limit:
            yield self._too_long(len(text), limit)
            return
        if inbound.images:
            yield Notice("The shopping assistant reads text only; your photos were not sent.")
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
        cannot be reached. A user who sent the very same text before may get the answer
        to the latest copy: the history carries no message ids.
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
            raise BackendError(
                Failure(
                    FailureKind.UNAVAILABLE,
                    "no history",
                    retryable=True,
                    user_text=UNAVAILABLE_TEXT,
                )
            )
        chat.user_count = len(_user_indexes(history))
        verdict, answer = find_answer(history, text, None)
        if verdict == "answer" and answer is not None:
            return Final((reply_from(answer),))
        return None

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
            if event.kind == "closed":
                return None
            if event.kind == "history" and isinstance(event.value, list):
                return event.value

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
            protocol = await self._init.protocol()
            conn: ShopAIConnection
            if protocol == "socketio":
                conn = SocketIOConnection(
                    self.settings, chat.token, self.metrics, self._http.session()
                )
            else:
                conn = WebSocketConnection(self.settings, chat.token, self.metrics)
            await conn.open()
            return conn

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
            user_text=TOO_LONG_TEXT.format(length=length, limit=limit),
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
            return Failure(
                FailureKind.UNAVAILABLE,
                "backend closed",
                retryable=True,
                user_text=UNAVAILABLE_TEXT,
            )
        try:
            chat.conn = await self._connect(chat)
        except TokenRejected:
            return self._expired(chat)
        except ConnectFailed as exc:
            return Failure(
                FailureKind.UNAVAILABLE, str(exc), retryable=True, user_text=UNAVAILABLE_TEXT
            )
        return chat.conn

    async def _turn(self, chat: _Chat, text: str) -> AsyncGenerator[Event, None]:  # noqa: C901
        timeout = self.settings.answer_timeout
        conn = chat.conn
        if conn is None or not conn.alive:
            opened = await self._reopen(chat)
            if isinstance(opened, Failure):
                yield opened
                return
            conn = opened
        baseline = chat.user_count
        sent = False
        recovering = False  # after a reconnect mid-answer: stream no more, wait for history
        resent = False
        reconnects = 0
        asked_history = 0  # get_history requests not yet answered
        streamed = ""
        shown = ""
        events = conn.begin_turn()
        try:
            while True:
                if not sent:
                    # "Only send messages to the server when it is confirmed operational."
                    if not await conn.wait_operational(timeout) and conn.alive:
                        await conn.aclose()
                        chat.conn = None
                        yield Failure(
                            FailureKind.TIMEOUT, "never operational", user_text=TIMEOUT_TEXT
                        )
                        return
                    if conn.alive:
                        while not events.empty():  # frames from before this message
                            events.get_nowait()
                        try:
                            await conn.send_message(text)
                            sent = True
                        except Exception as exc:  # the closed event follows; reconnect then
                            log.info("ShopAI send failed: %r", exc)
                try:
                    event = await _next_event(events, timeout)
                except TimeoutError:
                    await conn.aclose()
                    chat.conn = None
                    yield Failure(FailureKind.TIMEOUT, "no answer in time", user_text=TIMEOUT_TEXT)
                    return
                if event.kind == "closed":
                    if reconnects >= self.settings.reconnect_attempts:
                        yield Failure(
                            FailureKind.UNAVAILABLE,
                            f"connection kept dropping ({event.value})",
                            retryable=True,
                            user_text=UNAVAILABLE_TEXT,
                        )
                        return
                    reconnects += 1
                    self.metrics.reconnects += 1
                    log.info("ShopAI connection lost mid-turn (%s); reconnecting", event.value)
                    conn.end_turn(events)
                    opened = await self._reopen(chat)
                    if isinstance(opened, Failure):
                        yield opened
                        return
                    conn = opened
                    events = conn.begin_turn()
                    asked_history = 0
                    if sent:
                        recovering = True
                        if await _quietly(conn.request_history()):
                            asked_history += 1
                elif event.kind == "token":
                    if not recovering and sent:
                        streamed += event.value
                        if "<" in streamed:  # half-written markup must not reach the chat
                            visible = visible_text(streamed)
                            if visible != shown:  # a token inside a tag shows nothing new
                                shown = visible
                                yield Snapshot(visible)
                        else:
                            yield Token(event.value)
                elif event.kind == "history":
                    solicited = asked_history > 0
                    asked_history = max(0, asked_history - 1)
                    if not sent:
                        continue
                    verdict, answer = find_answer(event.value, text, baseline)
                    if verdict == "answer" and answer is not None:
                        if solicited and conn.status == "processing":
                            continue  # asked mid-answer: the final history is still to come
                        chat.user_count = len(_user_indexes(event.value))
                        yield Final((reply_from(answer),))
                        return
                    lost = verdict == "missing" or (verdict == "pending" and solicited)
                    if lost and conn.status == "operational" and not resent:
                        # The server is idle without an answer: it never took the message (it
                        # may drop one sent while it was processing) or dropped the answer
                        # with the connection. Send it again, once; the answer then follows
                        # the last copy of the message.
                        resent = True
                        baseline = None
                        await _quietly(conn.send_message(text))
                elif event.kind == "status":
                    done = sent and event.value == "operational" and asked_history == 0
                    # done without the history we expected: ask for it
                    if done and await _quietly(conn.request_history()):
                        asked_history += 1
                elif event.kind == "error":
                    message = str(event.value)
                    if conn.protocol == "websocket":
                        conn.mark_operational()  # a refused message leaves v0.1 operational
                    match = _TOO_LONG.search(message)
                    if match is not None:
                        yield self._too_long(len(text), int(match.group(1)))
                    else:
                        yield Failure(
                            FailureKind.UNAVAILABLE,
                            f"server error: {message[:200]}",
                            user_text=ERROR_TEXT,
                        )
                    return
        finally:
            conn.end_turn(events)
