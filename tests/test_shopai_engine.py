"""ShopAI behind the real engine: expired sessions restart, queued messages, bad license."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from engine_doubles import RecordingSurface

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.core.engine import Engine
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import ConversationKey, Inbound
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer

KEY = ConversationKey(bot="shop", platform="test", chat_id="c1", user_id="u1")


def settings(url: str, **kw: Any) -> ShopAISettings:
    values: dict[str, Any] = {
        "base_url": url,
        "license_key": "test-license",
        "heartbeat_interval": 0.2,
        "answer_timeout": 3.0,
        "reconnect_backoff": 0.02,
    }
    values.update(kw)
    return ShopAISettings.from_dict(values)


@pytest.fixture(params=["v0.1", "v0.2"])
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version=request.param, token_delay=0.001)
    try:
        yield emulator
    finally:
        await emulator.stop()


async def make_engine(url: str, **kw: Any) -> tuple[Engine, ShopAIBackend, MemoryStore]:
    backend = ShopAIBackend(settings(url, **kw), name="shop")
    store = await MemoryStore.open()
    engine = Engine(bot="shop", backend=backend, backend_name="shop", store=store)
    return engine, backend, store


async def test_expired_token_restarts_the_conversation(emu: ShopAIEmulator) -> None:
    engine, backend, store = await make_engine(emu.url)
    try:
        first = RecordingSurface()
        await engine.handle(Inbound(key=KEY, text="hello", language="en"), first)
        assert first.of("finish") == [compose_answer("hello")]
        old = await store.get(KEY)
        assert old is not None
        await backend.close(old.session_ref)  # as after an idle close: the next turn reconnects
        emu.faults.refuse_token = True
        second = RecordingSurface()
        result = await engine.handle(Inbound(key=KEY, text="I need a phone", language="en"), second)
        assert result.outcome == "ok"
        assert len(second.of("notice")) == 1, "the user is told it restarted"
        assert second.of("finish") == [visible_text(compose_answer("I need a phone"))]
        new = await store.get(KEY)
        assert new is not None and new.session_ref != old.session_ref
    finally:
        await engine.aclose()
        await backend.aclose()


async def test_messages_sent_while_streaming_are_answered_in_order(emu: ShopAIEmulator) -> None:
    emu.token_delay = 0.003
    engine, backend, _ = await make_engine(emu.url)
    try:
        questions = ["I need a phone", "a laptop for work", "headphones for music", "hello"]
        surfaces = [RecordingSurface() for _ in questions]
        futures = [
            engine.submit(Inbound(key=KEY, text=q), s)
            for q, s in zip(questions, surfaces, strict=True)
        ]
        await asyncio.gather(*futures)
        for q, s in zip(questions, surfaces, strict=True):
            assert s.of("finish") == [visible_text(compose_answer(q))]
        history = next(iter(emu.chats.values())).history
        assert [m["content"] for m in history if m["type"] == "user"] == questions
        assert emu.stats.dropped_while_processing == 0
    finally:
        await engine.aclose()
        await backend.aclose()


async def test_bad_license_tells_the_user_it_is_unavailable(emu: ShopAIEmulator) -> None:
    engine, backend, _ = await make_engine(emu.url, license_key="nope")
    try:
        for _ in range(3):
            surface = RecordingSurface()
            result = await engine.handle(Inbound(key=KEY, text="hello"), surface)
            assert result.outcome == "failed"
            (text,) = surface.of("fail")
            assert "not available" in text and "The operator has been told" in text
        assert emu.stats.init_errors == 1
    finally:
        await engine.aclose()
        await backend.aclose()


async def test_too_long_message_is_explained(emu: ShopAIEmulator) -> None:
    engine, backend, _ = await make_engine(emu.url)
    try:
        surface = RecordingSurface()
        await engine.handle(Inbound(key=KEY, text="a" * 600), surface)
        (text,) = surface.of("fail")
        assert "600" in text and "512" in text
        assert emu.stats.messages == 0
    finally:
        await engine.aclose()
        await backend.aclose()
