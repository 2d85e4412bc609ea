"""RedisStore runs the SessionStore and Journal contracts against a real redis-server (skipped
if absent), started by the same helper as the replica tests.

The server listens on a unix socket in a temporary directory (no TCP port at all), with
persistence off; each test starts from an empty database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from journal_contract import JournalContract, inbound
from replica_harness import REDIS_SERVER, redis_server
from store_contract import SessionStoreContract, key, record

pytest.importorskip("redis")

from chatbridge.core.protocols import Journal
from chatbridge.core.store import open_store
from chatbridge.core.store.redis import RedisStore

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server not installed (apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


async def _fresh(url: str) -> RedisStore:
    store = await RedisStore.open(url)
    await store._r.flushdb()
    return store


class TestRedisStoreContract(SessionStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[RedisStore]:
        s = await _fresh(redis_url)
        yield s
        await s.close()


async def test_open_store_redis_url_and_reconnect_keeps_sessions(redis_url: str) -> None:
    first = await _fresh(redis_url)
    await first.put(record(key(), ref="shared-session"))
    short = await first.short_id("Sim")
    await first.close()

    second = await open_store(redis_url)
    try:
        assert isinstance(second, RedisStore)
        got = await second.get(key())
        assert got is not None and got.session_ref == "shared-session"
        assert await second.resolve(short) == "Sim"
    finally:
        await second.close()


async def test_two_replicas_share_state(redis_url: str) -> None:
    a = await _fresh(redis_url)
    b = await RedisStore.open(redis_url)
    try:
        await a.put(record(key()))
        await b.touch(key())
        await a.touch(key())
        got = await b.get(key())
        assert got is not None and got.turn_count == 2
        assert await a.short_id("Confirmar") == await b.short_id("Confirmar")
    finally:
        await a.close()
        await b.close()


async def test_button_ids_expire_by_ttl(redis_url: str) -> None:
    from datetime import timedelta

    store = await _fresh(redis_url)
    store.button_ttl = timedelta(milliseconds=150)
    try:
        short = await store.short_id("ephemeral")
        assert await store.resolve(short) == "ephemeral"
        import asyncio

        await asyncio.sleep(0.4)
        assert await store.resolve(short) is None  # Redis expired it without a prune call
    finally:
        await store.close()


async def test_open_fails_when_server_unreachable(tmp_path: Path) -> None:
    import redis.exceptions

    with pytest.raises((redis.exceptions.ConnectionError, OSError)):
        await RedisStore.open(f"unix://{tmp_path / 'missing.sock'}")


async def test_delete_all_in_batches(redis_url: str) -> None:
    store = await _fresh(redis_url)
    try:
        for i in range(1203):
            await store.put(record(key(user=f"u{i}", bot="sellers" if i % 3 else "shoppers")))
        assert await store.delete_all("sellers") == 802
        assert await store.count() == 401
        assert await store.delete_all() == 401
        assert await store.count() == 0 and await store.list() == []
    finally:
        await store.close()


class TestRedisJournal(JournalContract):
    @pytest.fixture
    async def journal(self, redis_url: str) -> AsyncIterator[Journal]:
        s = await _fresh(redis_url)
        yield s.journal
        await s.close()


async def test_redis_journal_is_shared_by_replicas(redis_url: str) -> None:
    a = await _fresh(redis_url)
    b = await RedisStore.open(redis_url)
    try:
        entry = await a.journal.record(inbound("from replica a"), "u:1")
        assert entry is not None
        assert await b.journal.record(inbound("redelivered to b"), "u:1") is None
        (seen,) = await b.journal.unfinished("sellers")
        assert seen.inbound.text == "from replica a"
    finally:
        await a.close()
        await b.close()
