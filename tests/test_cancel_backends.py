"""/cancel against the real backends: the answer being generated stops, and nothing of it
reaches the user's next turn.

ShopAI keeps generating until told or disconnected (the strict emulators of v0.1 and v0.2);
a late token or a late history of the cancelled answer must never show in the next answer.
A server that goes on generating after the disconnect (``stop_on_disconnect=False``) is the
harder case: its late frames reach the new connection. LoopOS: the next message starts
normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from engine_doubles import RecordingSurface

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.core.engine import Engine
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import ConversationKey, Inbound
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer
from chatbridge.emulators.shopai_strict import ShopAIStrict

KEY = ConversationKey(bot="shop", platform="test", chat_id="c1", user_id="u1")
CANCELLED = "a laptop for work"
NEXT = ("hello", "headphones for music")


class Surface(RecordingSurface):
    """Also keeps what the user's screen shows while the answer streams."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed = ""
        self.started = asyncio.Event()

    async def append(self, text: str) -> None:
        await super().append(text)
        self.streamed += text
        self.started.set()

    async def replace(self, text: str) -> None:
        await super().replace(text)
        self.streamed = text
        self.started.set()


def expected(question: str, language: str = "en") -> str:
    return visible_text(compose_answer(question, language))


@pytest.fixture(
    params=[
        ("v0.1", True),
        ("v0.2", True),
        ("v0.1", False),
        ("v0.2", False),
    ],
    ids=["v0.1-strict", "v0.2-strict", "v0.1-keeps-generating", "v0.2-keeps-generating"],
)
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    version, stops = request.param
    strict = ShopAIStrict(stop_on_disconnect=stops)
    emulator = await start_shopai_emulator(version=version, token_delay=0.001, strict=strict)
    try:
        yield emulator
    finally:
        await emulator.stop()


async def shop_engine(url: str, **overrides: Any) -> tuple[Engine, ShopAIBackend, MemoryStore]:
    values: dict[str, Any] = {
        "base_url": url,
        "license_key": "test-license",
        "heartbeat_interval": 0.5,
        "answer_timeout": 5.0,
        "reconnect_backoff": 0.02,
    }
    values.update(overrides)
    backend = ShopAIBackend(ShopAISettings.from_dict(values), name="shop")
    store = await MemoryStore.open()
    engine = Engine(bot="shop", backend=backend, backend_name="shop", store=store)
    return engine, backend, store


async def cancel_mid_answer(engine: Engine, text: str, language: str = "en") -> Surface:
    """Send ``text``, wait until its answer is streaming, then /cancel it."""
    surface = Surface()
    running = engine.submit(Inbound(key=KEY, text=text, language=language), surface)
    await asyncio.wait_for(surface.started.wait(), 10)
    assert await engine.cancel(KEY)
    result = await asyncio.wait_for(running, 10)
    assert result.outcome == "cancelled"
    return surface


async def test_shopai_cancel_leaks_nothing_into_the_next_turns(emu: ShopAIEmulator) -> None:
    engine, backend, store = await shop_engine(emu.url)
    try:
        warm = Surface()  # a conversation with some history first
        await engine.handle(Inbound(key=KEY, text="I need a phone"), warm)
        assert warm.of("finish") == [expected("I need a phone")]

        emu.faults.slow_tokens = True  # a long answer, cancelled while it streams
        emu.faults.slow_token_delay = 0.03
        cancelled = await cancel_mid_answer(engine, CANCELLED)
        assert cancelled.of("fail") == [en.TEXTS["cancelled"]]
        assert not cancelled.of("finish")
        shown_before = cancelled.streamed
        assert shown_before and expected(CANCELLED).startswith(shown_before)
        # a server that keeps generating streams the rest while the next turn begins
        emu.faults.slow_token_delay = 0.005

        for question in NEXT:
            surface = Surface()
            result = await asyncio.wait_for(
                engine.handle(Inbound(key=KEY, text=question), surface), 15
            )
            assert result.outcome == "ok", surface.events
            assert surface.of("finish") == [expected(question)], "only its own answer"
            assert expected(question).startswith(surface.streamed), "only its own tokens"
            assert not surface.of("fail") and not surface.of("notice")
        chat = emu.chats[(await store.get(KEY)).session_ref]  # type: ignore[union-attr]
        users = [m["content"] for m in chat.history if m["type"] == "user"]
        assert users == ["I need a phone", CANCELLED, *NEXT]
        if emu.strict.stop_on_disconnect:
            assert emu.stats.generations_stopped == 1, "the server was told to stop"
    finally:
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()


async def test_shopai_cancel_right_after_sending(emu: ShopAIEmulator) -> None:
    """Cancelled before the first token (the server is still thinking): same promise."""
    emu.think_delay = 0.3
    engine, backend, store = await shop_engine(emu.url)
    try:
        surface = Surface()
        running = engine.submit(Inbound(key=KEY, text=CANCELLED, language="pt-PT"), surface)
        while emu.stats.messages == 0:
            await asyncio.sleep(0.01)
        assert await engine.cancel(KEY)
        assert (await asyncio.wait_for(running, 10)).outcome == "cancelled"
        assert surface.of("fail") == [pt_pt.TEXTS["cancelled"]]
        emu.think_delay = 0.0
        after = Surface()
        await asyncio.wait_for(engine.handle(Inbound(key=KEY, text="hello"), after), 15)
        # the session was opened in Portuguese: the emulator answers in it
        assert after.of("finish") == [expected("hello", "pt")]
        assert expected("hello", "pt").startswith(after.streamed)
    finally:
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()


async def test_loopos_cancel_then_the_next_message_starts_normally(loopos: LoopOSEmulator) -> None:
    settings = LoopOSSettings.from_dict(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "timeout": 10.0,
        }
    )
    backend = LoopOSBackend(settings, name="sellers")
    store = await MemoryStore.open()
    engine = Engine(bot="sellers", backend=backend, backend_name="sellers", store=store)
    key = ConversationKey(bot="sellers", platform="test", chat_id="c1", user_id="u1")
    try:
        loopos.faults.slow_seconds = 5.0  # the server takes its time
        stuck = Surface()
        running = engine.submit(Inbound(key=key, text="Quero vender um iPhone 12"), stuck)
        while not loopos.requests_to("/chat"):
            await asyncio.sleep(0.01)
        assert await engine.cancel(key)
        assert (await asyncio.wait_for(running, 5)).outcome == "cancelled"
        assert stuck.of("fail") == [en.TEXTS["cancelled"]]
        loopos.faults.slow_seconds = 0.0
        surface = Surface()
        result = await asyncio.wait_for(
            engine.handle(Inbound(key=key, text="Quero vender um iPhone 12"), surface), 15
        )
        assert result.outcome == "ok" and not surface.of("fail")
        assert "capacidade" in surface.of("finish")[0]
    finally:
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()
