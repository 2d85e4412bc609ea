"""The ShopAI emulator itself, spoken to with raw clients: what it enforces and how it is driven."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatbridge.emulators.shopai import ShopAIEmulator, ShopAIStrict, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import (
    CATALOG,
    compose_answer,
    compose_entries,
    split_tokens,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def v01() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.1", token_delay=0.002, heartbeat_timeout=0.5)
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def v02() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.2", token_delay=0.002)
    try:
        yield emulator
    finally:
        await emulator.stop()


async def get_json(url: str, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, None


def ws_url(emulator: ShopAIEmulator, token: str) -> str:
    return emulator.url.replace("http://", "ws://") + f"/shpaiws?chat_token={token}"


async def frames_until(ws: ClientConnection, kind: str, status: str | None = None) -> list[Any]:
    seen = []
    async with asyncio.timeout(3):
        while True:
            frame = json.loads(await ws.recv())
            seen.append(frame)
            if frame["type"] == kind and (status is None or frame.get("status") == status):
                return seen


def test_catalog_answers() -> None:
    assert len(CATALOG) >= 10
    answer = compose_answer("a phone")
    assert "<b>Nova Phone 12</b>" in answer and "€299.00" in answer and "<a href=" in answer
    assert "<" not in compose_answer("hello")
    assert "".join(split_tokens(answer)) == answer
    assert compose_answer("a phone", "hu").startswith("Szia")


async def test_init_session_and_version(v01: ShopAIEmulator, v02: ShopAIEmulator) -> None:
    status, body = await get_json(f"{v01.url}/init_session", license_key="test-license", lang="en")
    assert status == 200 and body["status"] == "ok" and body["chat_token"] in v01.chats
    _, body = await get_json(f"{v01.url}/init_session", license_key="test-license", lang="de")
    assert body == {
        "status": "error",
        "message": "Invalide language, supported languages: ['en', 'hu', 'pt']",
    }
    _, body = await get_json(f"{v01.url}/init_session", license_key="nope", lang="en")
    assert body == {"status": "error", "message": "Invalid license key"}
    status, _ = await get_json(f"{v01.url}/version")
    assert status == 404
    assert await get_json(f"{v02.url}/version") == (200, {"status": "ok", "version": "v0.2"})


async def test_v01_conversation_and_processing_state(v01: ShopAIEmulator) -> None:
    token = v01.issue_token()
    async with connect(ws_url(v01, token), compression=None) as ws:
        assert json.loads(await ws.recv()) == {"type": "status", "status": "operational"}
        await ws.send(json.dumps({"type": "message", "message": "a phone"}))
        await ws.send(json.dumps({"type": "message", "message": "sent while processing"}))
        await ws.send(json.dumps({"type": "shout"}))  # unknown: ignored
        frames = await frames_until(ws, "status", "operational")
        tokens = "".join(f["token"] for f in frames if f["type"] == "token")
        assert tokens == compose_answer("a phone")
        history = next(f["history"] for f in frames if f["type"] == "history")
        assert history == [
            {"type": "user", "content": "a phone"},
            {"type": "ai", "content": compose_answer("a phone")},
        ]
        assert v01.stats.dropped_while_processing == 1
        await ws.send(json.dumps({"type": "message", "message": "x" * 513}))
        error = json.loads(await ws.recv())
        assert error == {
            "type": "error",
            "message": "Message is too long, maximum length is 512 characters",
        }
        await ws.send(json.dumps({"type": "get_history"}))
        assert json.loads(await ws.recv()) == {"type": "history", "history": history}


async def test_v01_invalid_token_is_closed_at_once(v01: ShopAIEmulator) -> None:
    async with connect(ws_url(v01, "bogus"), compression=None) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 1)
    assert v01.stats.connections_refused == 1


async def test_v01_heartbeat_timeout(v01: ShopAIEmulator) -> None:
    token = v01.issue_token()
    async with connect(ws_url(v01, token), compression=None) as ws:
        await ws.recv()
        for _ in range(4):  # 0.8 s, heartbeats every 0.2 s: kept open, each answered
            await asyncio.sleep(0.2)
            await ws.send(json.dumps({"type": "heartbeat"}))
            assert json.loads(await ws.recv()) == {"type": "heartbeat"}
        with pytest.raises(ConnectionClosed):  # then silence: closed after 0.5 s
            await asyncio.wait_for(ws.recv(), 2)
        assert ws.close_code == 4000
    assert v01.stats.heartbeats == 4 and v01.stats.heartbeat_timeouts == 1


async def test_v02_rejects_a_bad_token_and_closes_after_error(v02: ShopAIEmulator) -> None:
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(f"{v02.url}?chat_token=bogus", transports=["websocket"])
    assert v02.stats.connections_refused == 1

    token = v02.issue_token()
    client = socketio.AsyncClient(reconnection=False)
    received: list[tuple[str, Any]] = []
    gone = asyncio.Event()
    client.on("status", lambda s: received.append(("status", s)))
    client.on("error", lambda m: received.append(("error", m)))
    client.on("disconnect", lambda *a: gone.set())
    await client.connect(f"{v02.url}?chat_token={token}", transports=["websocket"])
    await client.emit("send_message", "y" * 600)
    await asyncio.wait_for(gone.wait(), 3)
    assert ("status", "operational") in received
    assert ("error", "Message is too long, maximum length is 512 characters") in received


async def test_faults_over_http(v02: ShopAIEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{v02.url}/_emulator/faults", json={"drop_mid_stream": True, "slow_token_delay": 0.2}
        ) as response:
            body = await response.json()
            assert body["faults"]["drop_mid_stream"] is True
        async with http.post(f"{v02.url}/_emulator/faults", json={"nonsense": 1}) as response:
            assert response.status == 400
        async with http.get(f"{v02.url}/_emulator/stats") as response:
            assert (await response.json())["connections_opened"] == 0
    assert v02.faults.drop_mid_stream and v02.faults.slow_token_delay == 0.2
    token = v02.issue_token()
    v02.faults.refuse_token = True
    assert v02.issue_token() in v02.chats  # new tokens still work
    assert v02._valid_chat(token) is None


def test_runs_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatbridge.emulators.shopai", "--version", "v0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "v0.1 listening on http://127.0.0.1:" in line
        url = line.rsplit(" ", 1)[1].strip()
        _, body = asyncio.run(get_json(f"{url}/init_session", license_key="test-license"))
        assert body["status"] == "error" and "supported languages" in body["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# --- the strict servers' liberties, seen with raw clients ---------------------------------------


async def test_v01_strict_liberties() -> None:
    """Stored text normalised, a comparison in several AI entries, heartbeats unanswered while
    generating, and generation stopped when the client goes."""
    emulator = await start_shopai_emulator(version="v0.1", token_delay=0.01, think_delay=0.3)
    try:
        token = emulator.issue_token()
        async with connect(ws_url(emulator, token), compression=None) as ws:
            await ws.recv()
            question = "  compare a phone   and a laptop "
            await ws.send(json.dumps({"type": "message", "message": question}))
            await ws.send(json.dumps({"type": "heartbeat"}))
            frames = await frames_until(ws, "status", "operational")
            assert {"type": "heartbeat"} not in frames, "no heartbeat answer while generating"
            history = next(f["history"] for f in frames if f["type"] == "history")
            entries = compose_entries(question)
            assert history == [
                {"type": "user", "content": "compare a phone and a laptop"},
                *({"type": "ai", "content": entry} for entry in entries),
            ]
            await ws.send(json.dumps({"type": "heartbeat"}))  # idle again: answered
            assert json.loads(await ws.recv()) == {"type": "heartbeat"}
            await ws.send(json.dumps({"type": "message", "message": "a phone"}))
        await asyncio.sleep(0.5)  # past the think delay: the answer would be written by now
        assert emulator.stats.generations_stopped == 1
        assert emulator.chats[token].history[-1] == {"type": "user", "content": "a phone"}
        assert emulator.chats[token].status == "operational"
    finally:
        await emulator.stop()


async def test_v01_strict_heartbeat_timeout_follows_the_interval() -> None:
    emulator = await start_shopai_emulator(version="v0.1", heartbeat_interval=0.2)
    lenient = await start_shopai_emulator(version="v0.1", heartbeat_interval=0.2, strict=False)
    try:
        assert emulator.heartbeat_timeout == pytest.approx(0.25)
        assert lenient.heartbeat_timeout == pytest.approx(0.6)
    finally:
        await emulator.stop()
        await lenient.stop()


async def test_v02_strict_liberties() -> None:
    emulator = await start_shopai_emulator(
        version="v0.2",
        token_delay=0.001,
        strict=ShopAIStrict(version_path="/api/version", refuse_with_http=401),
    )
    try:
        assert (await get_json(f"{emulator.url}/version"))[0] == 404
        assert await get_json(f"{emulator.url}/api/version") == (
            200,
            {"status": "ok", "version": "v0.2"},
        )
        client = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(f"{emulator.url}?chat_token=bogus", transports=["websocket"])
        assert emulator.stats.connections_refused == 1

        token = emulator.issue_token()
        client = socketio.AsyncClient(reconnection=False)
        histories: asyncio.Queue[Any] = asyncio.Queue()
        client.on("history", histories.put_nowait)
        await client.connect(f"{emulator.url}?chat_token={token}", transports=["websocket"])
        await client.emit("get_history")  # without its Array: the handler never runs
        await client.emit("get_history", [])
        assert await asyncio.wait_for(histories.get(), 3) == []
        assert emulator.stats.history_requests_ignored == 1
        assert emulator.stats.history_requests == 1
        await client.disconnect()
    finally:
        await emulator.stop()


async def test_lenient_server_keeps_text_and_one_entry() -> None:
    emulator = await start_shopai_emulator(version="v0.2", token_delay=0.001, strict=False)
    try:
        token = emulator.issue_token()
        client = socketio.AsyncClient(reconnection=False)
        histories: asyncio.Queue[Any] = asyncio.Queue()
        client.on("history", histories.put_nowait)
        await client.connect(f"{emulator.url}?chat_token={token}", transports=["websocket"])
        await client.emit("send_message", " compare a phone and a laptop")
        history = await asyncio.wait_for(histories.get(), 3)
        assert history == [
            {"type": "user", "content": " compare a phone and a laptop"},
            {"type": "ai", "content": compose_answer("compare a phone and a laptop")},
        ]
        await client.emit("get_history")  # the lenient server answers without data too
        assert await asyncio.wait_for(histories.get(), 3) == history
        await client.disconnect()
    finally:
        await emulator.stop()
