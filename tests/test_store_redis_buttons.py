"""RedisStore's button ids named again from memory (no round trip on the turn's path), on a
real redis-server: the answer is the id Redis holds, the keys are renewed off the path as if
named, and the memory never outlives what the TTL guarantees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from replica_harness import REDIS_SERVER

pytest.importorskip("redis")

from chatbridge.core.store.redis import NAMED_RECENTLY, RedisStore

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")


@pytest.fixture
async def stores(shared_redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two replicas' stores on one Redis."""
    a = await RedisStore.open(shared_redis_url)
    await a._r.flushdb()
    b = await RedisStore.open(shared_redis_url)
    yield a, b
    await a.close()
    await b.close()


def count_commands(store: RedisStore) -> list[str]:
    """Every command ``store`` sends from now on (its scripts too), by name."""
    sent: list[str] = []
    original = store._r.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(*args, **options)

    store._r.execute_command = counted  # type: ignore[method-assign]
    return sent


async def test_a_payload_named_again_costs_no_round_trip_and_is_renewed_later(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = stores
    first = await a.short_ids(["more:1", "more:2"])
    used = f"{a._p}btn:used"
    issued = await a._r.zscore(used, first[0])
    await a._r.pexpire(f"{a._p}btn:p:more:1", 60_000)  # so the renewal shows
    sent = count_commands(a)
    await asyncio.sleep(0.01)
    again = await a.short_ids(["more:1", "more:2", "more:1"])
    assert again == [first[0], first[1], first[0]]
    assert sent == []  # from memory
    await a.flush_touches()  # what the timer does within a second
    assert sent == ["EVALSHA"]  # both renewed in one script call
    renewed = await a._r.zscore(used, first[0])
    assert issued is not None and renewed is not None and renewed > issued
    assert await a._r.pttl(f"{a._p}btn:p:more:1") > 60_000  # the TTL again (30 days)
    assert await a.resolve(first[0]) == "more:1"


async def test_replicas_name_a_payload_alike_and_a_prune_keeps_what_memory_answers(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = stores
    [mine] = await a.short_ids(["cart:42"])
    assert await b.short_ids(["cart:42"]) == [mine]  # one id per payload, in Redis
    assert await a.short_ids(["cart:42"]) == [mine]  # a, from memory
    # another replica prunes (at its start, by the TTL): what a's memory answers survives it
    assert await b.prune() == 0
    assert await b.resolve(mine) == "cart:42"
    # a prune on this replica writes its pending renewals first, then forgets its memory
    await asyncio.sleep(0.2)
    assert await a.short_ids(["cart:42"]) == [mine]  # named again from memory
    assert await a.prune(timedelta(milliseconds=100)) == 0  # renewed before the cutoff
    assert a._named == {}
    assert await a.resolve(mine) == "cart:42"


async def test_memory_never_outlives_half_the_ttl(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = stores
    a.button_ttl = timedelta(milliseconds=300)
    [short] = await a.short_ids(["flash"])
    sent = count_commands(a)
    await asyncio.sleep(0.4)  # past the TTL: Redis expired the keys
    assert await a.resolve(short) is None
    assert await a.short_ids(["flash"]) == [short]  # named in Redis again, not from memory
    assert sent.count("EVALSHA") == 1
    assert await a.resolve(short) == "flash"
    # the horizon: an hour at most, half the TTL when that is shorter
    assert a._named_horizon_micros() == 150_000
    a.button_ttl = timedelta(days=30)
    assert a._named_horizon_micros() == NAMED_RECENTLY // timedelta(microseconds=1)
