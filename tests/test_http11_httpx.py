"""httpx's API on chatbridge's HTTP/1.1 client (core/http11_httpx.py), against real servers on
127.0.0.1: aiohttp servers, and the LoopOS emulator through the LoopOS backend (the backend
contract), as the runner builds it."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web
from backend_contract import BackendContract
from test_loopos_backend import settings

from chatbridge.core.backends.loopos import LoopOSBackend
from chatbridge.core.http11_httpx import Http11Transport
from chatbridge.core.protocols import Backend
from chatbridge.emulators.loopos import LoopOSEmulator


class TestLoopOSContractOnHttp11(BackendContract):
    first_text = "Quero vender um iPhone 12"
    second_text = "128 GB"
    image_text = "Quero vender um iPhone 12"

    @pytest.fixture
    async def backend_factory(self, loopos: LoopOSEmulator) -> AsyncIterator[Backend]:
        b = LoopOSBackend(settings(loopos.url), transport=Http11Transport())
        try:
            yield b
        finally:
            await b.aclose()


async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_headers_both_ways_and_a_gzip_body_decoded_by_httpx() -> None:
    seen: list[web.Request] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        payload = await request.json()
        body = gzip.compress(json.dumps({"echo": payload}).encode())
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Retry-After": "7", "X-Twice": "a"},
            content_type="application/json",
        )

    runner, url = await serve(answer)
    transport = Http11Transport()
    try:
        async with httpx.AsyncClient(
            base_url=url, transport=transport, headers={"X-Key": "k1"}
        ) as client:
            first = await client.post("/chat", json={"message": "olá"})
            second = await client.post("/chat", json={"message": "again"})
            opened = transport.client.connections_opened
    finally:
        await runner.cleanup()
    assert first.status_code == 200 and first.json() == {"echo": {"message": "olá"}}
    assert second.json() == {"echo": {"message": "again"}}
    assert first.headers["retry-after"] == "7" and first.http_version == "HTTP/1.1"
    request = seen[0]
    assert request.headers.getall("Host") == [url.removeprefix("http://")]  # one Host only
    assert request.headers["X-Key"] == "k1"
    assert request.headers["User-Agent"].startswith("python-httpx/")
    assert request.headers["Content-Type"] == "application/json"
    assert opened == 1  # kept alive between the two


async def test_failures_become_httpx_errors() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    runner, url = await serve(slow)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(transport=Http11Transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(refused)
            with pytest.raises(httpx.ReadTimeout):
                await client.get(url, timeout=httpx.Timeout(5.0, read=0.2))
    release.set()
    await runner.cleanup()


async def test_a_connection_dropped_unanswered_is_a_remote_protocol_error() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=Http11Transport()) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"http://127.0.0.1:{port}/chat", json={})
    finally:
        server.close()
        await server.wait_closed()


async def test_a_transport_closed_by_one_client_still_serves_the_next() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    runner, url = await serve(ok)
    transport = Http11Transport()
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(url)).json() == {"ok": True}
        # a backend's clients share one transport and it is usable after aclose()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(url)).json() == {"ok": True}
    finally:
        await runner.cleanup()
