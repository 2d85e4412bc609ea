"""The shared send budget on a real redis-server: a permit's places in the shared windows
cover a call only for a short while (the margin the windows are counted beyond the
platform's). A replica frozen between grant and call (SIGSTOP, a stalled event loop) takes
them again before it sends, instead of sending what the budget allowed seconds earlier."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from replica_harness import REDIS_SERVER

from chatbridge.core.budget import SharedWindows
from chatbridge.core.pacer import Pacer, Window
from chatbridge.core.store.redis_coordination import RedisCoordination

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]

PERIOD = 0.2  # the bot-wide window: 1 call per 0.2 s (shared: counted 0.27 s)


def replica_pacer(
    coordination: RedisCoordination, limit: int = 1
) -> tuple[Pacer, SharedWindows, list[Any]]:
    """A replica's pacer on the shared budget; the list: the places it was granted."""
    pacer = Pacer(Window(limit, PERIOD))
    budget = SharedWindows(coordination, "tg:x")
    pacer.shared = budget
    takes: list[Any] = []
    take = coordination.take

    async def counting(windows: Any) -> float:
        wait = await take(windows)
        if wait <= 0:
            takes.append(windows)
        return wait

    coordination.take = counting  # type: ignore[method-assign]
    return pacer, budget, takes


async def test_a_permit_granted_before_a_freeze_takes_the_budget_again(redis_url: str) -> None:
    one, two = RedisCoordination.from_url(redis_url), RedisCoordination.from_url(redis_url)
    try:
        a, a_budget, a_takes = replica_pacer(one)
        b, _, _ = replica_pacer(two)
        async with a.permit(None) as permit:
            assert len(a_takes) == 1
            # a is frozen past what its place covers; its place lapses, b spends the budget
            await asyncio.sleep(PERIOD * 2)
            assert a._clock() > permit.shared_until
            async with b.spend(None):
                pass
            async with a.spend(None):  # a wakes and sends: it takes a place again first
                assert len(a_takes) == 2
                assert a.stale == 1
                assert a_budget.waits >= 1  # behind b's call, not over it
    finally:
        await one.close()
        await two.close()


async def test_a_permit_spent_at_once_takes_the_budget_once(redis_url: str) -> None:
    one = RedisCoordination.from_url(redis_url)
    try:
        a, _, a_takes = replica_pacer(one, limit=5)
        async with a.permit(None) as permit:
            assert permit.shared_until < float("inf")
            async with a.spend(None):
                pass
        async with a.spend(None):  # a permit of its own, used at once
            pass
        assert len(a_takes) == 2 and a.stale == 0
    finally:
        await one.close()
