"""The Bot API transport (core/http11.py behind adapters/telegram/gate.BotApiRequest) against real
servers on 127.0.0.1: a scripted HTTP/1.1 server on asyncio streams (to count connections and
misbehave on purpose), aiohttp servers (multipart parsing, TLS with a test CA from trustme)
and the fake Bot API through python-telegram-bot itself."""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
import pytest
import trustme
from aiohttp import web
from telegram import Bot
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter

from chatbridge.adapters.telegram.gate import BotApiRequest
from chatbridge.core.http11 import Http11Client, encode_multipart
from chatbridge.core.secrets import register_secret
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"
# one test drives the fake with a plain PTB Bot (which logs its URL at DEBUG), outside the
# adapter that would register the token for redaction
register_secret(TOKEN)
OK = b'{"ok":true,"result":true}'


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection (1, 2, ...) carried it


@dataclass
class Reply:
    data: bytes  # written as is (b"": nothing)
    close: bool = False  # then the server closes the connection


Answer = Callable[[Seen], Awaitable[Reply]]


@dataclass
class RawServer:
    """An HTTP/1.1 server on asyncio streams whose every answer the test scripts."""

    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, method: str) -> str:
        return f"http://127.0.0.1:{self.port}/bot{TOKEN}/{method}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, target, headers, body, number)
                self.seen.append(seen)
                reply = await self.answer(seen)
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
        finally:
            writer.close()


def length_answer(body: bytes = OK, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def always(seen: Seen) -> Reply:
    return Reply(length_answer())


@pytest.fixture
async def request_() -> AsyncIterator[BotApiRequest]:
    req = BotApiRequest(limit=8, read_timeout=5.0)
    await req.initialize()
    try:
        yield req
    finally:
        await req.shutdown()


async def serve(answer: Answer) -> RawServer:
    return await RawServer(answer).start()


def params(**values: str) -> RequestData:
    return RequestData([RequestParameter(name, value, []) for name, value in values.items()])


def opened(req: BotApiRequest) -> int:
    assert req.client is not None
    return req.client.connections_opened


# --- keep-alive and bodies --------------------------------------------------------------------


async def test_sequential_calls_share_one_keep_alive_connection(request_: BotApiRequest) -> None:
    server = await serve(always)
    try:
        for n in range(5):
            status, body = await request_.do_request(
                server.url("sendMessage"), "POST", params(chat_id="7", text=f"olá & {n}")
            )
            assert (status, body) == (200, OK)
        status, body = await request_.do_request(server.url("getMe"), "GET")
        assert (status, body) == (200, OK)
    finally:
        await server.stop()
    assert server.connections == 1 and opened(request_) == 1
    first = server.seen[0]
    assert first.method == "POST" and first.target == f"/bot{TOKEN}/sendMessage"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["user-agent"] == BotApiRequest.USER_AGENT
    # form-encoded like PTB's HTTPX transport: each value already JSON-encoded or a raw string
    assert first.headers["content-type"] == "application/x-www-form-urlencoded"
    assert int(first.headers["content-length"]) == len(first.body)
    assert parse_qs(first.body.decode()) == {"chat_id": ["7"], "text": ["olá & 0"]}
    assert server.seen[-1].method == "GET" and "content-length" not in server.seen[-1].headers


async def test_chunked_response_with_extensions_and_trailers(request_: BotApiRequest) -> None:
    payload = b'{"ok":true,"result":"' + b"x" * 5000 + b'"}'
    pieces = [payload[:1], payload[1:4000], payload[4000:]]

    async def chunked(seen: Seen) -> Reply:
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return Reply(head + chunks + b"0\r\nX-Trailer: yes\r\n\r\n")

    server = await serve(chunked)
    try:
        for _ in range(2):
            assert await request_.do_request(server.url("getMe"), "POST") == (200, payload)
    finally:
        await server.stop()
    assert server.connections == 1  # a complete chunked body leaves the connection reusable


async def test_an_answer_arriving_byte_by_byte_is_read_whole(request_: BotApiRequest) -> None:
    answer = length_answer(b'{"ok":true,"result":[1,2,3]}')

    async def serve_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i in range(len(answer)):
            writer.write(answer[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve_slowly, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        got = await request_.do_request(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe", "GET")
    finally:
        await request_.shutdown()
        server.close()
        await server.wait_closed()
    assert got == (200, b'{"ok":true,"result":[1,2,3]}')


async def test_read_to_close_and_connection_close_are_not_reused(request_: BotApiRequest) -> None:
    async def closing(seen: Seen) -> Reply:
        if seen.connection == 1:  # no length: the body runs to the end of the connection
            return Reply(b"HTTP/1.1 200 OK\r\n\r\n" + OK, close=True)
        if seen.connection == 2:  # an HTTP/1.0 answer without keep-alive
            return Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 25\r\n\r\n" + OK)
        return Reply(length_answer(extra="Connection: close\r\n"))

    server = await serve(closing)
    try:
        for _ in range(4):
            assert await request_.do_request(server.url("getMe"), "POST") == (200, OK)
    finally:
        await server.stop()
    assert [s.connection for s in server.seen] == [1, 2, 3, 4]


# --- the keep-alive race ----------------------------------------------------------------------


async def test_reused_connection_closed_before_answering_is_retried_once(
    request_: BotApiRequest,
) -> None:
    async def drop_the_second(seen: Seen) -> Reply:
        return Reply(b"", close=True) if len(server.seen) == 2 else Reply(length_answer())

    server = await serve(drop_the_second)
    try:
        assert await request_.do_request(server.url("sendMessage"), "POST") == (200, OK)
        # the second request goes out on the idle connection, which the server drops unanswered
        assert await request_.do_request(server.url("sendMessage"), "POST") == (200, OK)
    finally:
        await server.stop()
    assert [s.connection for s in server.seen] == [1, 1, 2]


async def test_a_new_connection_closed_before_answering_is_not_retried(
    request_: BotApiRequest,
) -> None:
    async def drop(seen: Seen) -> Reply:
        return Reply(b"", close=True)

    server = await serve(drop)
    try:
        with pytest.raises(NetworkError) as caught:
            await request_.do_request(server.url("sendMessage"), "POST")
    finally:
        await server.stop()
    assert len(server.seen) == 1
    assert "before answering" in caught.value.message and TOKEN not in str(caught.value)


async def test_a_reused_connection_closed_mid_answer_is_not_retried(
    request_: BotApiRequest,
) -> None:
    async def half(seen: Seen) -> Reply:
        if len(server.seen) == 1:
            return Reply(length_answer())
        return Reply(length_answer()[:40], close=True)  # part of the head, then gone

    server = await serve(half)
    try:
        assert await request_.do_request(server.url("sendMessage"), "POST") == (200, OK)
        with pytest.raises(NetworkError) as caught:
            await request_.do_request(server.url("sendMessage"), "POST")
    finally:
        await server.stop()
    assert len(server.seen) == 2  # part of an answer came: the request may have been handled
    assert "mid-response" in caught.value.message


async def test_an_idle_connection_the_server_closed_is_not_used(request_: BotApiRequest) -> None:
    async def answer_then_close(seen: Seen) -> Reply:
        return Reply(length_answer(), close=True)  # no Connection: close header (abrupt)

    server = await serve(answer_then_close)
    try:
        assert await request_.do_request(server.url("getMe"), "POST") == (200, OK)
        await asyncio.sleep(0.1)  # the close reaches the client while the connection is idle
        assert await request_.do_request(server.url("getMe"), "POST") == (200, OK)
    finally:
        await server.stop()
    assert [s.connection for s in server.seen] == [1, 2]


async def test_idle_connections_kept_are_bounded() -> None:
    four = asyncio.Event()

    async def after_four(seen: Seen) -> Reply:
        if len(server.seen) == 4:
            four.set()
        await four.wait()  # four requests in flight at once: four connections
        return Reply(length_answer())

    client = Http11Client(user_agent="test", max_idle=2)
    server = await serve(after_four)
    try:
        url = server.url("getMe")
        answers = await asyncio.gather(*(client.request("POST", url) for _ in range(4)))
        assert answers == [(200, OK)] * 4
        assert client.connections_opened == 4 and client.idle_connections == 2
        await client.request("POST", url)  # one of the two kept
        assert client.connections_opened == 4
    finally:
        await client.close()
        await server.stop()


async def test_shutdown_fails_a_request_in_flight_without_a_new_connection() -> None:
    async def second_never(seen: Seen) -> Reply:
        if len(server.seen) == 2:
            await asyncio.sleep(60)
        return Reply(length_answer())

    req = BotApiRequest(limit=2)
    await req.initialize()
    server = await serve(second_never)
    try:
        assert await req.do_request(server.url("getMe"), "POST") == (200, OK)
        call = asyncio.create_task(req.do_request(server.url("getUpdates"), "POST"))
        while len(server.seen) < 2:
            await asyncio.sleep(0.01)
        await req.shutdown()  # the reused connection ends unanswered: no retry after shutdown
        with pytest.raises(NetworkError):
            await call
    finally:
        await server.stop()
    assert server.connections == 1 and len(server.seen) == 2


# --- failures ---------------------------------------------------------------------------------


async def test_connection_refused_is_a_network_error_without_the_token(
    request_: BotApiRequest,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(NetworkError) as caught:
            await request_.do_request(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe", "POST")
    assert not isinstance(caught.value, TimedOut)
    assert "cannot connect" in caught.value.message
    assert TOKEN not in str(caught.value) and caught.value.__cause__ is None


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def never(seen: Seen) -> Reply:
        await asyncio.sleep(60)
        return Reply(b"")

    req = BotApiRequest(limit=2, read_timeout=0.2)
    await req.initialize()
    server = await serve(never)
    try:
        with pytest.raises(TimedOut):
            await req.do_request(server.url("getMe"), "POST")
        # a per-call read timeout wins over the default
        with pytest.raises(TimedOut):
            await req.do_request(server.url("getMe"), "POST", read_timeout=0.1)
    finally:
        await req.shutdown()
        await server.stop()
    assert server.connections == 2  # the timed-out connection was not reused


async def test_the_read_timeout_is_between_bytes_not_for_the_whole_download() -> None:
    body = bytes(range(256)) * 1024
    pieces = [body[i : i + 32768] for i in range(0, len(body), 32768)]

    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:  # 8 pieces 0.25 s apart: 2 s in all, each gap well under 1 s
            await asyncio.sleep(0.25)
            writer.write(piece)
            await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(steady, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    req = BotApiRequest(limit=1, read_timeout=1.0)
    await req.initialize()
    try:
        got = await req.do_request(f"http://127.0.0.1:{port}/file/bot{TOKEN}/a.jpg", "GET")
    finally:
        await req.shutdown()
        server.close()
        await server.wait_closed()
    assert got == (200, body)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
    ids=[
        "http2",
        "status",
        "not-http",
        "no-colon",
        "folded",
        "two-lengths",
        "negative-length",
        "chunk-size",
        "chunk-crlf",
        "gzip",
        "huge-head",
    ],
)
async def test_malformed_answers_are_network_errors(request_: BotApiRequest, answer: bytes) -> None:
    async def bad(seen: Seen) -> Reply:
        return Reply(answer)

    server = await serve(bad)
    try:
        with pytest.raises(NetworkError) as caught:
            await request_.do_request(server.url("getMe"), "POST")
    finally:
        await server.stop()
    assert not isinstance(caught.value, TimedOut)
    assert TOKEN not in str(caught.value)


# --- uploads, downloads, TLS ------------------------------------------------------------------


async def test_multipart_upload_arrives_intact_at_an_aiohttp_server() -> None:
    received: list[tuple[str, str | None, str, bytes]] = []

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, aiohttp.BodyPartReader)
            content_type = part.headers.get("Content-Type", "")
            received.append((part.name or "", part.filename, content_type, await part.read()))
        return web.Response(body=OK, content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/bot{token}/sendDocument", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    data = bytes(range(256)) * 4096 + b"\r\n--not-a-boundary\r\n"  # 1 MiB and a bit
    name = 'relatório "final"\\v2.bin'
    client = Http11Client(user_agent="test")
    try:
        body, content_type = encode_multipart(
            {"chat_id": "42", "caption": "olá"},
            {"document": (name, data, "application/octet-stream")},
        )
        url = f"http://127.0.0.1:{port}/bot{TOKEN}/sendDocument"
        got = await client.request("POST", url, body, content_type, write_timeout=10)
    finally:
        await client.close()
        await runner.cleanup()
    assert got == (200, OK)
    assert received[0] == ("chat_id", None, "", b"42")
    assert received[1] == ("caption", None, "", "olá".encode())
    part, filename, mimetype, content = received[2]
    assert (part, mimetype, content) == ("document", "application/octet-stream", data)
    # quotes are percent-encoded and backslashes doubled, as HTML5 forms (and httpx) do
    assert filename is not None and filename.replace("%22", '"') == name.replace("\\\\", "\\")


def test_multipart_encoding_matches_httpx_byte_for_byte() -> None:
    import httpx

    files = {"photo": ('a "b".jpg', b"\xff\xd8data", "image/jpeg")}
    fields = {"chat_id": "1", "caption": "x\ny"}
    theirs = httpx.Request("POST", "http://x/", data=fields, files=files)
    # PTB may hand over an open file instead of bytes (read from its start)
    handle = io.BytesIO(b"\xff\xd8data")
    handle.read()
    ours, content_type = encode_multipart(
        fields, {"photo": ('a "b".jpg', handle, "image/jpeg")}, boundary="b0undary"
    )
    theirs_type = theirs.headers["content-type"]
    boundary = theirs_type.split("boundary=")[1]
    assert ours == theirs.read().replace(boundary.encode(), b"b0undary")
    assert content_type == "multipart/form-data; boundary=b0undary"


async def test_photo_upload_and_download_through_python_telegram_bot() -> None:
    async with FakeTelegram(interval=0) as fake:
        fake_bot = fake.add_bot(TOKEN, "t_bot")
        user = fake_bot.make_user(5, "Ana")
        chat = fake_bot.private_chat(user)
        picture = bytes(range(256)) * 300
        ref = fake.add_file(picture)
        bot = Bot(
            TOKEN,
            base_url=f"{fake.url}/bot",
            base_file_url=f"{fake.url}/file/bot",
            request=BotApiRequest(limit=4),
            get_updates_request=BotApiRequest(limit=1),
        )
        async with bot:
            file = await bot.get_file(ref["file_id"])
            assert bytes(await file.download_as_bytearray()) == picture
            await bot.send_photo(chat["id"], picture, caption="a <b>photo</b>", parse_mode="HTML")
        sent = fake.calls_of("sendPhoto")[0]
    assert sent.files["photo"] == picture and sent.params["caption"] == "a <b>photo</b>"


@pytest.fixture(scope="module")
def local_ca() -> trustme.CA:
    return trustme.CA()


async def https_server(ca: trustme.CA) -> tuple[web.AppRunner, int]:
    async def get_me(request: web.Request) -> web.Response:
        return web.Response(body=OK, content_type="application/json")

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    app = web.Application()
    app.router.add_post("/bot{token}/getMe", get_me)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_tls_to_a_local_https_server_trusting_a_test_ca(local_ca: trustme.CA) -> None:
    runner, port = await https_server(local_ca)
    trusting = ssl.create_default_context()
    local_ca.configure_trust(trusting)
    req = BotApiRequest(limit=2, ssl_context=trusting)
    await req.initialize()
    try:
        url = f"https://localhost:{port}/bot{TOKEN}/getMe"
        assert await req.do_request(url, "POST") == (200, OK)
        assert await req.do_request(url, "POST") == (200, OK)
        assert opened(req) == 1  # TLS connections are kept alive too
    finally:
        await req.shutdown()
        await runner.cleanup()


async def test_tls_refuses_a_certificate_it_does_not_trust(local_ca: trustme.CA) -> None:
    runner, port = await https_server(local_ca)
    req = BotApiRequest(limit=2)  # the default trust store: the test CA is not in it
    await req.initialize()
    try:
        with pytest.raises(NetworkError) as caught:
            await req.do_request(f"https://localhost:{port}/bot{TOKEN}/getMe", "POST")
    finally:
        await req.shutdown()
        await runner.cleanup()
    assert "TLS failed" in caught.value.message and TOKEN not in str(caught.value)
