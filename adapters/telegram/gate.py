"""The Bot API transport: a bounded number of requests in flight, first messages first.

PTB's default HTTPX transport costs about 1.5 ms of CPU per call, most of it in httpcore's
pool, which rescans every queued request against every connection on each change: a thousand
chats streaming at once cost seconds of CPU there and then time out. Requests wait in a
:class:`PriorityGate` instead, where waiting is free and counts against no timeout. When
the process is saturated, a chat's *first* visible text goes before edits of answers that are
already showing: users notice a silent chat, not an edit that lands a little later.
Requests past the gate go out on :mod:`chatbridge.core.http11`, a small keep-alive HTTP/1.1
client (aiohttp did this before: it cost a polling bot 8-10 MiB of imports for little it used).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import ssl
from collections.abc import Iterator

from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from chatbridge.core.http11 import (
    Http11Client,
    HttpError,
    HttpTimeout,
    encode_form,
    encode_multipart,
)

URGENT, NORMAL = 0, 1
_priority: contextvars.ContextVar[int] = contextvars.ContextVar("telegram_priority", default=NORMAL)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Requests made inside (in this task) go before normal ones."""
    token = _priority.set(URGENT)
    try:
        yield
    finally:
        _priority.reset(token)


class PriorityGate:
    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class BotApiRequest(BaseRequest):
    """PTB's request seam on :class:`~chatbridge.core.http11.Http11Client`, bounded by a
    :class:`PriorityGate`.

    Every Bot API call and file download goes through here. At most ``limit`` requests are in
    flight, so at most ``limit`` connections are open; the others wait in the gate, where
    waiting is free and counts against no timeout (``pool_timeout`` has nothing left to bound:
    a request past the gate always gets a connection at once). Errors never carry the URL: it
    holds the bot token.
    """

    def __init__(
        self,
        *,
        limit: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        pool_timeout: float = 30.0,
        media_timeout: float = 20.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_timeout = pool_timeout
        self._media_timeout = media_timeout
        self._ssl_context = ssl_context
        self._gate = PriorityGate(limit)
        self._client: Http11Client | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    @property
    def client(self) -> Http11Client | None:
        """The HTTP client while initialized (tests count its connections)."""
        return self._client

    async def initialize(self) -> None:
        if self._client is None:
            self._client = Http11Client(
                user_agent=self.USER_AGENT, max_idle=self._limit, ssl_context=self._ssl_context
            )

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @staticmethod
    def _pick(value: ODVInput[float], default: float | None) -> float | None:
        return default if isinstance(value, DefaultValue) else value

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        client = self._client
        if client is None:
            raise RuntimeError("BotApiRequest is not initialized")
        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None
        body: bytes | None = None
        content_type: str | None = None
        read = self._pick(read_timeout, self._read_timeout)
        write = self._pick(write_timeout, self._read_timeout)
        if files:
            body, content_type = encode_multipart(fields or {}, files)
            # the answer comes once Telegram has taken the whole upload in
            write = self._pick(write_timeout, self._media_timeout)
            read = max(read or 0.0, write or 0.0)
        elif fields:
            body, content_type = encode_form(fields)
        await self._gate.acquire(_priority.get())
        try:
            return await client.request(
                method,
                url,
                body,
                content_type,
                connect_timeout=self._pick(connect_timeout, self._connect_timeout),
                read_timeout=read,
                write_timeout=write,
            )
        except HttpTimeout as exc:
            raise TimedOut(f"Bot API request: {exc}") from None
        except HttpError as exc:  # never the URL: it holds the token
            raise NetworkError(f"Bot API request failed: {exc}") from None
        finally:
            self._gate.release()
