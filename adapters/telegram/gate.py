"""The Bot API transport: aiohttp, a bounded number of requests in flight, first messages first.

PTB's default HTTPX transport costs about 1.5 ms of CPU per call, most of it in httpcore's
pool, which rescans every queued request against every connection on each change: a thousand
chats streaming at once cost seconds of CPU there and then time out. Requests wait in a
:class:`PriorityGate` instead, where waiting is free and counts against no timeout. When
the process is saturated, a chat's *first* visible text goes before edits of answers that are
already showing: users notice a silent chat, not an edit that lands a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
from collections.abc import Iterator

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

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


class AiohttpRequest(BaseRequest):
    """PTB's request seam on aiohttp, bounded by a :class:`PriorityGate`.

    PTB's own HTTPX request spends about 1.5 ms of CPU per call (most of it in httpcore's
    pool); a bot streaming to a thousand chats makes a thousand calls a second, so the
    cheaper aiohttp client (already a dependency) carries the chat traffic. Errors never carry
    the URL: it holds the bot token.
    """

    def __init__(
        self,
        *,
        limit: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        pool_timeout: float = 30.0,
        media_timeout: float = 20.0,
    ) -> None:
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_timeout = pool_timeout
        self._media_timeout = media_timeout
        self._gate = PriorityGate(limit)
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        if self._session is None:
            raise RuntimeError("AiohttpRequest is not initialized")
        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None
        data: aiohttp.FormData | dict[str, str] | None = fields or None
        read = self._pick(read_timeout, self._read_timeout)
        if files:
            form = aiohttp.FormData()
            for key, value in (fields or {}).items():
                form.add_field(key, value)
            for key, (filename, content, mimetype) in files.items():
                form.add_field(key, content, filename=filename, content_type=mimetype)
            data = form
            read = max(read or 0.0, self._pick(write_timeout, self._media_timeout) or 0.0)
        connect = self._pick(connect_timeout, self._connect_timeout)
        pool = self._pick(pool_timeout, self._pool_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        await self._gate.acquire(_priority.get())
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise TimedOut("Timed out talking to the Bot API") from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp {type(exc).__name__}") from None
        finally:
            self._gate.release()
