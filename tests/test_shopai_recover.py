"""ShopAIBackend.recover: after a crash, the answer to a message the server may have received
comes from the server's history (never by asking again); None when the server never got it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from backend_contract import inbound, key
from test_shopai_backend import PHONE, expected, settings, start

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAIMetrics
from chatbridge.core.protocols import Recovers
from chatbridge.core.types import Token
from chatbridge.emulators.shopai import ShopAIEmulator

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["v0.1", "v0.2"])
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    emulator = await start(request.param, token_delay=0.03)  # an answer takes about a second
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_recover_finds_the_answer_given_while_nobody_was_connected(
    emu: ShopAIEmulator,
) -> None:
    crashed = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    token = await crashed.open(key(), "en")
    events = crashed.turn(token, inbound(PHONE))
    async for event in events:
        if isinstance(event, Token):
            break  # mid-stream: the process dies here
    await events.aclose()
    await crashed.aclose()

    restarted = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    try:
        assert isinstance(restarted, Recovers)
        final = await restarted.recover(token, inbound(PHONE))
        assert final is not None
        assert final.messages[0].text == expected(PHONE)
        assert emu.stats.messages == 1  # not asked again
        # the restarted backend now knows the history: the next turn is located correctly
        events_after = [e async for e in restarted.turn(token, inbound("hello there"))]
        assert events_after[-1].messages[0].text == expected("hello there")  # type: ignore[union-attr]
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
