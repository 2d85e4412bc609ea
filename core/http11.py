"""A small HTTP/1.1 keep-alive client on asyncio (the Telegram Bot API transport's).

Why not aiohttp or httpx: the Bot API needs little of HTTP (GET and POST, a form or a
multipart upload, one response body), and a polling Telegram bot would otherwise load aiohttp
and six helper packages (about 10 MiB) for it alone, or httpx, whose httpcore pool costs about
1.5 ms of CPU a call and collapses under a thousand streams (adapters/telegram/gate.py). One
:class:`asyncio.Protocol` per connection parses the response as bytes arrive, so a call is one
write and one wake-up of the calling task (the bytes themselves: :mod:`.http11_wire`). It
lives in core/ (and knows no platform) so that other plain HTTP clients can share it.

What it does: HTTP/1.1 over TCP or TLS (SNI, the certifi bundle when installed), a pool of idle
connections per (scheme, host, port), bodies by Content-Length, chunked or read to close, a cap
on the response head, timeouts as :class:`HttpTimeout` and every other failure as
:class:`HttpError`. Messages never contain the URL (a Bot API URL holds the bot token).
What it does not do: redirects, proxies, cookies, compression (it asks for ``identity``),
pipelining, HTTP/2. The caller bounds how many requests are in flight (the Bot API transport
with its priority gate), so this client never waits for a connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from urllib.parse import quote, urlsplit

from chatbridge.core.http11_wire import (
    ConnectFailed,
    HttpError,
    HttpTimeout,
    Malformed,
    ResponseParser,
    encode_form,
    encode_multipart,
)

__all__ = [
    "ConnectFailed",
    "Http11Client",
    "HttpError",
    "HttpTimeout",
    "Malformed",
    "encode_form",
    "encode_multipart",
]

# aiohttp's default: a connection idle longer than this is closed rather than reused, which
# keeps clear of the server's own idle timeout (where the keep-alive race below lives)
IDLE_SECONDS = 15.0
# what a request target may hold as is; anything else is percent-encoded
_TARGET_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")

Key = tuple[str, str, int]  # (scheme, host, port)


def _is_ip(host: str) -> bool:
    """An address literal: one address, so no Happy Eyeballs race. The race (a task and a
    timer per attempt) made a thousand streams' first texts ~60 ms later on loopback, where
    128 connections open at once; a host name (two address families) keeps it, as aiohttp."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Closed(Exception):
    """The connection ended before the response did (internal)."""

    def __init__(self, answered: bool) -> None:
        super().__init__()
        self.answered = answered  # some response bytes had arrived


# --- one connection ---------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; carries one request at a time."""

    def __init__(self, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # has answered a request before: it may have gone stale meanwhile
        self.idle_since = 0.0
        self.last_read = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._response: ResponseParser | None = None
        self._answered = False
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        waiter, response = self._waiter, self._response
        if waiter is None or response is None or waiter.done():
            self.abort()  # bytes while idle or after the caller gave up: out of step
            return
        self._answered = True
        self.last_read = self.loop.time()
        try:
            if response.feed(data):
                waiter.set_result(None)
        except Malformed as exc:
            waiter.set_exception(exc)
            self.abort()

    def eof_received(self) -> bool:
        waiter, response = self._waiter, self._response
        if (
            waiter is not None
            and not waiter.done()
            and response is not None
            and response.feed_eof()
        ):
            waiter.set_result(None)
        return False  # close the transport; connection_lost fails anything still waiting

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(_Closed(self._answered))
        drained = self._drained
        if drained is not None and not drained.done():
            if self._waiter is not None and self._waiter.done():
                drained.set_result(None)  # answered (say, 413) before taking the whole body
            else:
                drained.set_exception(_Closed(self._answered))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # the client's side
    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _read_timed_out(self, waiter: asyncio.Future[None], timeout: float) -> None:
        """The read timer: the time since the last byte arrived, not since the request (a
        large download may take longer than ``timeout`` as long as bytes keep coming)."""
        if waiter.done():
            return
        left = self.last_read + timeout - self.loop.time()
        if left > 0:
            self._timer = self.loop.call_later(left, self._read_timed_out, waiter, timeout)
        else:
            waiter.set_exception(HttpTimeout("timed out reading the response", "read"))

    async def exchange(
        self,
        payload: bytes,
        read_timeout: float | None,
        write_timeout: float | None,
        decoded_only: bool = True,
    ) -> ResponseParser:
        """Send one request and read its response. Raises ``_Closed`` if the connection ends
        first, :class:`HttpTimeout` or :class:`Malformed`; any error aborts the connection."""
        if self.closed or self.transport is None:
            raise _Closed(answered=False)
        waiter = self.loop.create_future()
        response = ResponseParser(decoded_only=decoded_only)
        self._waiter, self._response, self._answered = waiter, response, False
        try:
            self.transport.write(payload)
            if self._paused:
                await self._drain(write_timeout)
            self.last_read = self.loop.time()
            if read_timeout is not None:
                self._timer = self.loop.call_later(
                    read_timeout, self._read_timed_out, waiter, read_timeout
                )
            await waiter
        except BaseException:
            self.abort()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiter = self._response = None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # failed while still sending: mark it seen (no asyncio warning)
        if not response.keep_alive:
            self.abort()
        return response

    async def _drain(self, timeout: float | None) -> None:
        self._drained = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError:
            raise HttpTimeout("timed out sending the request", "write") from None
        finally:
            self._drained = None


# --- the client -------------------------------------------------------------------------------


class Http11Client:
    """HTTP/1.1 requests over a pool of keep-alive connections.

    ``max_idle`` bounds the idle connections kept (all hosts together); the caller bounds the
    requests in flight. ``ssl_context`` replaces the default (system CAs, or certifi's bundle
    when installed) for https, e.g. to trust a test CA.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        max_idle: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._user_agent = user_agent.encode("latin-1", "replace")
        self._max_idle = max_idle
        self._ssl = ssl_context
        self._idle_seconds = idle_seconds
        self._idle: dict[Key, list[_Connection]] = {}
        self._idle_count = 0
        self._busy: set[_Connection] = set()
        self._targets: dict[str, tuple[Key, bytes]] = {}  # url -> (key, "target\r\nHost")
        self.connections_opened = 0  # for tests and benchmarks
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """Idle connections kept for reuse (tests and benchmarks)."""
        return self._idle_count

    async def close(self) -> None:
        """Close every connection; requests in flight fail, later ones too."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._busy):
            conn.abort()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """One request with this client's headers; returns (status, body)."""
        headers = [(b"User-Agent", self._user_agent), (b"Accept-Encoding", b"identity")]
        if content_type is not None:
            headers.append((b"Content-Type", content_type.encode("latin-1")))
        response = await self.send(
            method,
            url,
            body,
            headers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
        )
        return response.status, response.body

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: list[tuple[bytes, bytes]],
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        decoded_only: bool = True,
    ) -> ResponseParser:
        """One request with exactly ``headers`` (Host and Content-Length are the client's:
        any given are dropped); returns the parsed response (``status``, ``headers``,
        ``body``). ``decoded_only=False`` lets a body in a content coding through."""
        if self._closed:
            raise HttpError("the client is closed")
        key, target = self._target(url)
        head = [method.encode("ascii"), b" ", target]
        for name, value in headers:
            if name.lower() not in (b"host", b"content-length"):
                head += [b"\r\n", name, b": ", value]
        if body is not None or method != "GET":
            head += [b"\r\nContent-Length: ", str(len(body or b"")).encode()]
        head.append(b"\r\n\r\n")
        if body:
            head.append(body)
        payload = b"".join(head)
        exchange = (payload, read_timeout, write_timeout, decoded_only)
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._exchange(conn, *exchange)
            except _Closed as exc:
                # The keep-alive race: the server closed this idle connection as we sent on
                # it, before answering (it answered nothing). Servers close idle connections
                # only between requests, having read nothing of the next one, so the request
                # was not handled and is sent again, once, on a new connection; browsers and
                # aiohttp do the same. Not safe when the server (or a proxy) read the request,
                # acted on it and then died without a byte of answer: a sendMessage would go
                # out twice. Connections idle longer than IDLE_SECONDS are never reused,
                # which keeps clear of the usual server idle timeouts.
                if exc.answered:
                    raise HttpError("the server closed the connection mid-response") from None
        if self._closed:  # closed while the request was on its way: no new connection
            raise HttpError("the client is closed")
        conn = await self._connect(key, connect_timeout)
        try:
            return await self._exchange(conn, *exchange)
        except _Closed as exc:
            what = "mid-response" if exc.answered else "before answering"
            raise HttpError(f"the server closed the connection {what}") from None

    def _target(self, url: str) -> tuple[Key, bytes]:
        """The pool key and the request line's target plus the Host header, cached per URL
        (a bot calls a few dozen methods; file downloads add one URL each, so the cache is
        bounded)."""
        known = self._targets.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise HttpError("the URL is not http(s)")  # the URL itself never printed
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise HttpError("the URL has a bad port") from None
        path = parts.path or "/"
        target = f"{path}?{parts.query}" if parts.query else path
        if not _TARGET_OK.fullmatch(target):
            target = quote(target, safe="/?&=%:@!$'()*+,;~")
        host_header = f"[{host}]" if ":" in host else host
        if port != (443 if scheme == "https" else 80):
            host_header += f":{port}"
        if not host_header.isascii():
            host_header = host_header.encode("idna").decode("ascii")
        line = f"{target} HTTP/1.1\r\nHost: {host_header}".encode("ascii")
        if len(self._targets) >= 1024:
            self._targets.clear()
        self._targets[url] = known = ((scheme, host, port), line)
        return known

    def _take_idle(self, key: Key) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have gone stale
            self._idle_count -= 1
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.loop.time() - conn.idle_since > self._idle_seconds:
                conn.abort()
                continue
            return conn
        return None

    async def _exchange(
        self,
        conn: _Connection,
        payload: bytes,
        read_timeout: float | None,
        write_timeout: float | None,
        decoded_only: bool,
    ) -> ResponseParser:
        self._busy.add(conn)
        try:
            response = await conn.exchange(payload, read_timeout, write_timeout, decoded_only)
        finally:
            self._busy.discard(conn)
        if not conn.closed:
            self._put_idle(conn)
        return response

    def _put_idle(self, conn: _Connection) -> None:
        if self._idle_count >= self._max_idle:
            self._forget_closed()
        if self._closed or self._idle_count >= self._max_idle:
            conn.abort()
            return
        conn.reused = True
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1

    def _forget_closed(self) -> None:
        """Drop idle connections the servers have closed meanwhile (they count until then)."""
        for key, conns in self._idle.items():
            self._idle[key] = [conn for conn in conns if not conn.closed]
        self._idle_count = sum(len(conns) for conns in self._idle.values())

    async def _connect(self, key: Key, timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = self._context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(key, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    happy_eyeballs_delay=None if _is_ip(host) else 0.25,
                )
        except TimeoutError:
            raise HttpTimeout("timed out connecting", "connect") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS failed ({exc.reason or type(exc).__name__})") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect ({exc.strerror or type(exc).__name__})") from None
        self.connections_opened += 1
        if self._closed:  # closed while connecting
            conn.abort()
            raise HttpError("the client is closed")
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                import certifi  # httpx (PTB's dependency) ships it

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                self._ssl = ssl.create_default_context()
        return self._ssl
