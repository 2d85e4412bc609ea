"""Lease keeping on a real redis-server: the heartbeat and every partition lease a replica
holds are renewed in one round trip (sequential renewals, each behind a busy event loop, let
the last ones lapse under load), and the coordination client has the store's large pool."""

from __future__ import annotations

from typing import Any

import pytest
from replica_harness import REDIS_SERVER

from chatbridge.core.replicas import Replicas
from chatbridge.core.store.redis import MAX_CONNECTIONS
from chatbridge.core.store.redis_coordination import RedisCoordination

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]


async def test_one_call_renews_every_lease_and_names_the_lost_ones(redis_url: str) -> None:
    coordination = RedisCoordination.from_url(redis_url)
    try:
        held = {}
        for n in range(6):
            value = await coordination.acquire(f"p:{n}", "a", 200)
            assert value is not None
            held[f"p:{n}"] = value
        # p:2 was taken over by another replica (its lease lapsed and b took it)
        assert await coordination.release("p:2", held["p:2"])
        assert await coordination.acquire("p:2", "b", 60_000) is not None
        # p:4 lapsed and nobody took it yet
        assert await coordination.release("p:4", held["p:4"])
        live, lost = await coordination.beat_and_renew("a", 60_000, held)
        assert live == ["a"]
        assert lost == ["p:2", "p:4"]
        r = coordination._r
        for name in ("p:0", "p:1", "p:3", "p:5"):  # renewed to the new period
            assert await r.pttl(coordination.lease_key(name)) > 1_000
        assert await r.get(coordination.lease_key("p:4")) is None  # not brought back
        assert (await coordination.holder("p:2")) == "b"
        # nothing held: the heartbeat alone
        assert await coordination.beat_and_renew("b", 60_000, {}) == (["a", "b"], [])
    finally:
        await coordination.close()


async def test_a_tick_renews_the_heartbeat_and_all_leases_in_one_round_trip(
    redis_url: str,
) -> None:
    coordination = RedisCoordination.from_url(redis_url)
    replicas = Replicas(coordination, replica="a", partitions=16, lease=30.0)
    try:
        await replicas.check()
        await replicas.leases.tick()  # takes its share: all 16 partitions
        assert replicas.owned == list(range(16))
        client: Any = coordination._r
        sent: list[str] = []
        execute = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            sent.append(str(args[0]))
            return await execute(*args, **options)

        client.execute_command = counting
        await replicas.leases.tick()
        assert len(sent) == 1, sent
        assert replicas.owned == list(range(16))
        # a lease lost meanwhile is noticed by that same call
        held = replicas.leases.lease_of(5)
        assert held is not None
        assert await coordination.release("p:5", held)
        await coordination.acquire("p:5", "b", 60_000)
        sent.clear()
        replicas.leases._live = ["a"]
        await replicas.leases.tick()
        assert 5 not in replicas.owned
        assert sent[0] == "EVALSHA"
    finally:
        await replicas.stop()
        await coordination.close()


async def test_the_coordination_client_has_the_stores_pool(redis_url: str) -> None:
    coordination = RedisCoordination.from_url(redis_url)
    try:
        pool: Any = coordination._r.connection_pool
        assert pool.max_connections == MAX_CONNECTIONS
    finally:
        await coordination.close()
