"""ShopAIBackend.recover: after a crash, the answer to a message the server may have received
comes from the server's history (never by asking again); None when the server never got it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from backend_contract import inbound, key
from test_shopai_backend import PHONE, expected, settings, start

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAIMetrics
from chatbridge.core.protocols import Recovers
from chatbridge.core.types import Final, Token
from chatbridge.emulators.shopai import ShopAIEmulator
from chatbridge.emulators.shopai_strict import ShopAIStrict

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["v0.1", "v0.2"])
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    """A strict server, except that it finishes an answer nobody is connected for any more."""
    emulator = await start(
        request.param, token_delay=0.03, strict=ShopAIStrict(stop_on_disconnect=False)
    )
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture(params=["v0.1", "v0.2"])
async def strict_emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    """A server that drops the answer when its client goes away mid-answer."""
    emulator = await start(request.param, token_delay=0.03, strict=ShopAIStrict())
    try:
        yield emulator
    finally:
        await emulator.stop()


async def crash_mid_answer(emu: ShopAIEmulator, text: str) -> str:
    """Open a session, start a turn, and die mid-stream; returns the chat token."""
    crashed = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    token = await crashed.open(key(), "en")
    events = crashed.turn(token, inbound(text))
    async for event in events:
        if isinstance(event, Token):
            break  # mid-stream: the process dies here
    await events.aclose()
    await crashed.aclose()
    return token


async def test_recover_finds_the_answer_given_while_nobody_was_connected(
    emu: ShopAIEmulator,
) -> None:
    token = await crash_mid_answer(emu, PHONE)
    restarted = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    try:
        assert isinstance(restarted, Recovers)
        # the server re-spaced the stored message: it is still recognised
        final = await restarted.recover(token, inbound(f"  {PHONE.replace(' ', '  ')} "))
        assert final is not None
        assert " ".join(m.text for m in final.messages) == expected(PHONE)
        assert emu.stats.messages == 1  # not asked again
        # the restarted backend now knows the history: the next turn is located correctly
        events_after = [e async for e in restarted.turn(token, inbound("hello there"))]
        final_after = events_after[-1]
        assert isinstance(final_after, Final)
        assert " ".join(m.text for m in final_after.messages) == expected("hello there")
    finally:
        await restarted.aclose()


async def test_recover_returns_none_for_a_message_the_server_never_got(
    emu: ShopAIEmulator,
) -> None:
    backend = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    try:
        token = await backend.open(key(), "en")
        assert await backend.recover(token, inbound("never sent")) is None
        assert emu.stats.messages == 0
    finally:
        await backend.aclose()


async def test_recover_returns_none_when_the_server_dropped_the_answer(
    strict_emu: ShopAIEmulator,
) -> None:
    token = await crash_mid_answer(strict_emu, PHONE)
    restarted = ShopAIBackend(settings(strict_emu.url), metrics=ShopAIMetrics())
    try:
        assert await restarted.recover(token, inbound(PHONE)) is None  # so it is sent again
        events = [e async for e in restarted.turn(token, inbound(PHONE))]
        final = events[-1]
        assert isinstance(final, Final)
        assert " ".join(m.text for m in final.messages) == expected(PHONE)
        assert strict_emu.stats.messages == 2
    finally:
        await restarted.aclose()
