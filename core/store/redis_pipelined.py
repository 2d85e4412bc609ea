"""One connection to Redis with every command pipelined on it: the turn's hot path.

A turn on Redis sends four to six commands (the journal's record and three writes, the
session read, the ``turns_per_minute`` window, the last two read with the record when
several replicas run). Through redis-py each costs about 130 µs of this process's CPU (a
pooled connection taken and given back, the command encoded in Python, a timeout scope, its
observability hooks), against about 55 µs here (a script call one after another on
loopback; ``bench/README.md``): on a small machine that was most of what Redis added to a
turn (``bench/replicas_cost.py``).

What it does, and why that is enough:

- One connection per client, commands written as they come and their replies matched in
  order: Redis answers a connection's commands in the order it received them, so a FIFO of
  futures is the whole multiplexing, and concurrent commands go out back to back without
  waiting for each other's replies. No pool to exhaust.
- A caller cancelled mid-command leaves its reply to be read and dropped in its place: the
  connection stays in step (redis-py must drop the connection instead).
- Encoding and parsing in C (hiredis's ``pack_command`` and ``Reader``), replies decoded as
  UTF-8 as the rest of the store reads them (``decode_responses=True``).
- The connection breaking fails every command in flight with redis-py's
  ``ConnectionError`` (the store's callers already know it: Redis out of reach); a command
  that met a broken connection is tried again on a new one, three times, 0.05-0.2 s apart,
  as :func:`core.store.redis.redis_client` does (the writes it serves are safe to repeat).
- Never for a blocking command (``XREAD BLOCK``, pub/sub): it would hold every command
  behind it. Those stay on redis-py, as does everything off the hot path.

It speaks plain TCP and unix sockets (``redis://``, ``unix://``); a URL it does not
(``rediss://``) gets None from :meth:`PipelinedRedis.for_url`, and its callers keep redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url

RETRIES = 3  # as redis_client's Retry: a command meeting a broken connection, tried again
BACKOFF = (0.05, 0.1, 0.2)  # seconds before each retry
CONNECT_TIMEOUT = 5.0

try:  # the `redis` extra installs hiredis; without it, redis-py serves the hot path too
    import hiredis
except ImportError:  # pragma: no cover - the extra always brings it
    hiredis = None  # type: ignore[assignment]


def _pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP."""
    return hiredis.pack_command(args)


def hash_fields(flat: Sequence[str]) -> dict[str, str]:
    """A hash's fields as ``HGETALL`` (RESP2) and Lua scripts reply them: field, value, ..."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _error(reply: Exception) -> rex.RedisError:
    """redis-py's exception for an error reply (the ones the store's callers tell apart)."""
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return rex.NoScriptError(text)
    if text.startswith("LOADING"):
        return rex.BusyLoadingError(text)  # a ConnectionError: out of reach for now
    if text.startswith("READONLY"):
        return rex.ReadOnlyError(text)
    return rex.ResponseError(text)


class _Wire(asyncio.Protocol):
    """One connection: writes commands, hands each reply to the oldest waiting future."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", replyError=rex.ResponseError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.broken: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        if self.broken is not None or self._transport is None:
            future.set_exception(rex.ConnectionError("connection to Redis closed"))
            return future
        self._waiting.append(future)
        self._transport.write(packed)
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._break(rex.ConnectionError(f"Redis protocol error: {exc}"))
                return
            except UnicodeDecodeError as exc:  # not text: the reader is out of step now
                self._break(rex.ConnectionError(f"Redis reply is not UTF-8: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:  # a reply nobody asked for: out of step
                self._break(rex.ConnectionError("Redis sent a reply nobody asked for"))
                return
            future = self._waiting.popleft()
            if future.done():  # its caller was cancelled: the reply is read, and dropped
                continue
            if isinstance(reply, rex.ResponseError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rex.ConnectionError(f"connection to Redis lost: {exc or 'closed by server'}"))

    def _break(self, error: Exception) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        if self.broken is None:
            self.broken = error
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self._fail(rex.ConnectionError("client closed"))
        if self._transport is not None:
            self._transport.close()


class PipelinedRedis:
    """The commands of the turn's hot path on one pipelined connection (see the module)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._wire: _Wire | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    @classmethod
    def for_url(cls, url: str) -> PipelinedRedis | None:
        """A client for ``url``; None when it needs what this client does not do (TLS)."""
        if hiredis is None:
            return None
        options = parse_url(url)
        kind = options.get("connection_class")
        if kind is not None and kind is not UnixDomainSocketConnection:
            return None
        return cls(dict(options))

    async def _connected(self) -> _Wire:
        wire = self._wire
        if wire is not None and wire.broken is None:
            return wire
        if self._closed:
            raise rex.ConnectionError("client closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._wire is not None and self._wire.broken is None:
                return self._wire
            self._wire = await self._connect()
            return self._wire

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        o = self._options
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if "path" in o:
                    _, wire = await loop.create_unix_connection(_Wire, o["path"])
                else:
                    _, wire = await loop.create_connection(
                        _Wire, o.get("host", "localhost"), int(o.get("port", 6379))
                    )
        except (OSError, TimeoutError) as exc:
            raise rex.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        # the handshake's commands pipelined: one wait for them all
        steps = []
        if o.get("password") is not None:
            login = [o["username"]] if o.get("username") else []
            steps.append(wire.send(_pack(("AUTH", *login, o["password"]))))
        if int(o.get("db") or 0):
            steps.append(wire.send(_pack(("SELECT", int(o["db"])))))
        try:
            await asyncio.gather(*steps)
        except rex.ResponseError as exc:
            wire.close()
            raise rex.AuthenticationError(str(exc)) from exc
        except BaseException:
            wire.close()
            raise
        return wire

    async def execute(self, *args: Any) -> Any:
        """One command's reply; a broken connection is replaced and the command tried again
        (``RETRIES`` times)."""
        packed = _pack(args)
        for attempt in range(RETRIES + 1):
            try:
                wire = await self._connected()
                return await wire.send(packed)
            except (rex.ConnectionError, rex.TimeoutError):
                if attempt == RETRIES or self._closed:
                    raise
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    async def hgetall(self, name: str) -> dict[str, str]:
        return hash_fields(await self.execute("HGETALL", name))

    def register_script(self, script: str) -> PipelinedScript:
        return PipelinedScript(self, script)

    async def aclose(self) -> None:
        self._closed = True
        if self._wire is not None:
            self._wire.close()
            self._wire = None


class PipelinedScript:
    """A Lua script run by its digest (``EVALSHA``), loaded into Redis when it does not know
    it (a restart without persistence, a fresh server); called as redis-py's scripts are."""

    def __init__(self, client: PipelinedRedis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            await self.client.execute("SCRIPT", "LOAD", self.script)
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)


Script = Callable[..., Awaitable[Any]]  # called as ``script(keys=[...], args=[...])``


def hot_script(client: Redis, fast: PipelinedRedis | None, script: str) -> Script:
    """``script`` on the pipelined connection when there is one, else on redis-py's."""
    return fast.register_script(script) if fast is not None else client.register_script(script)
