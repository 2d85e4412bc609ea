"""RedisStore runs the SessionStore and Journal contracts against a real redis-server (skipped
if absent), started by the same helper as the replica tests.

The server listens on a unix socket in a temporary directory (no TCP port at all), with
persistence off; each test starts from an empty database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from journal_contract import JournalContract, inbound
from replica_harness import REDIS_SERVER
from store_contract import SessionStoreContract, key, record, refs

pytest.importorskip("redis")

from chatbridge.core.protocols import Journal
from chatbridge.core.store import open_store
from chatbridge.core.store.redis import RedisStore

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server not installed (apt-get install redis-server)"
)


async def _fresh(url: str) -> RedisStore:
    store = await RedisStore.open(url)
    await store._r.flushdb()
    return store


class TestRedisStoreContract(SessionStoreContract):
    @pytest.fixture
    async def store(self, shared_redis_url: str) -> AsyncIterator[RedisStore]:
        s = await _fresh(shared_redis_url)
        yield s
        await s.close()


async def test_open_store_redis_url_and_reconnect_keeps_sessions(shared_redis_url: str) -> None:
    first = await _fresh(shared_redis_url)
    await first.put(record(key(), ref="shared-session"))
    short = await first.short_id("Sim")
    await first.close()

    second = await open_store(shared_redis_url)
    try:
        assert isinstance(second, RedisStore)
        got = await second.get(key())
        assert got is not None and got.session_ref == "shared-session"
        assert await second.resolve(short) == "Sim"
    finally:
        await second.close()


async def test_two_replicas_share_state(shared_redis_url: str) -> None:
    a = await _fresh(shared_redis_url)
    b = await RedisStore.open(shared_redis_url)
    try:
        await a.put(record(key()))
        await b.touch(key())
        await a.touch(key())
        # each replica's touches are written within TOUCH_FLUSH_DELAY; here at once
        await a.flush_touches()
        await b.flush_touches()
        got = await b.get(key())
        assert got is not None and got.turn_count == 2
        assert await a.short_id("Confirmar") == await b.short_id("Confirmar")
    finally:
        await a.close()
        await b.close()


async def test_button_ids_expire_by_ttl(shared_redis_url: str) -> None:
    from datetime import timedelta

    store = await _fresh(shared_redis_url)
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


async def test_delete_all_in_batches(shared_redis_url: str) -> None:
    store = await _fresh(shared_redis_url)
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
    async def journal(self, shared_redis_url: str) -> AsyncIterator[Journal]:
        s = await _fresh(shared_redis_url)
        yield s.journal
        await s.close()


async def test_redis_journal_is_shared_by_replicas(shared_redis_url: str) -> None:
    a = await _fresh(shared_redis_url)
    b = await RedisStore.open(shared_redis_url)
    try:
        entry = await a.journal.record(inbound("from replica a"), "u:1")
        assert entry is not None
        assert await b.journal.record(inbound("redelivered to b"), "u:1") is None
        (seen,) = await b.journal.unfinished("sellers")
        assert seen.inbound.text == "from replica a"
    finally:
        await a.close()
        await b.close()


async def test_touches_are_written_off_the_turn_in_one_call(shared_redis_url: str) -> None:
    """A turn's touch costs no round trip: this replica reads it at once, the others once
    the timer (or a flush) writes every pending touch in one script call."""
    import asyncio

    a = await _fresh(shared_redis_url)
    b = await RedisStore.open(shared_redis_url)
    a.touch_flush_delay = 3600.0  # the timer out of the way: written by flush_touches below
    try:
        await a.put(record(key(user="x")))
        await a.put(record(key(user="y")))
        for _ in range(3):
            await a.touch(key(user="x"))
        await a.touch(key(user="y"))
        mine = await a.get(key(user="x"))
        theirs = await b.get(key(user="x"))
        assert mine is not None and mine.turn_count == 3
        assert theirs is not None and theirs.turn_count == 0  # not written yet
        assert mine.last_active > theirs.last_active
        calls = 0
        script = a._touch

        async def counted(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await script(**kwargs)

        a._touch = counted  # type: ignore[assignment]
        await a.flush_touches()
        assert calls == 1  # both sessions, one script call
        theirs = await b.get(key(user="x"))
        assert theirs is not None and theirs.turn_count == 3
        assert theirs.last_active == mine.last_active
        other = await b.get(key(user="y"))
        assert other is not None and other.turn_count == 1
        assert refs(await b.list()) == ["ref-1", "ref-1"]
    finally:
        await a.close()
        await b.close()
    # and without a flush, the timer writes them
    c = await RedisStore.open(shared_redis_url)
    c.touch_flush_delay = 0.05
    try:
        await c.touch(key(user="x"))
        async with asyncio.timeout(30):
            while True:
                got = await b_get(shared_redis_url, key(user="x"))
                if got is not None and got.turn_count == 4:
                    break
                await asyncio.sleep(0.02)
    finally:
        await c.close()


async def b_get(url: str, k: Any) -> Any:
    other = await RedisStore.open(url)
    try:
        return await other.get(k)
    finally:
        await other.close()


async def test_a_touch_never_brings_back_a_deleted_session(shared_redis_url: str) -> None:
    a = await _fresh(shared_redis_url)
    b = await RedisStore.open(shared_redis_url)
    try:
        await a.put(record(key()))
        await a.touch(key())
        assert await b.delete(key()) is True  # another replica's /reset
        await a.flush_touches()
        assert await b.get(key()) is None and await b.count() == 0
        await a.touch(key())
        await a.close()  # closing writes what is pending
        assert await b.get(key()) is None
    finally:
        await a.close()
        await b.close()


async def test_button_ids_of_an_answer_are_one_round_trip(shared_redis_url: str) -> None:
    from redis.asyncio.connection import AbstractConnection

    store = await _fresh(shared_redis_url)
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(conn: object, command: object, check_health: bool = True) -> None:
        raw = command if isinstance(command, bytes) else b"".join(bytes(c) for c in command)  # type: ignore[attr-defined]
        sent.append(raw)
        await original(conn, command, check_health)  # type: ignore[arg-type]

    try:
        await store.short_ids(["warm"])  # loads the script once
        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign,assignment]
        try:
            ids = await store.short_ids(["Sim", "Não", "Sim", "Talvez"])
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        assert len(sent) == 1 and sent[0].count(b"EVALSHA") == 1
        assert ids[0] == ids[2] and len(set(ids)) == 3
        assert [await store.resolve(i) for i in ids] == ["Sim", "Não", "Sim", "Talvez"]
        assert await store.short_ids(["Não"]) == [ids[1]]  # the same id again, renewed
    finally:
        await store.close()


async def test_a_burst_of_commands_does_not_run_out_of_connections(shared_redis_url: str) -> None:
    """redis-py's default pool raises MaxConnectionsError past 100 commands in flight; a
    burst of turns (each with a command in flight) must not fail."""
    import asyncio

    from chatbridge.core.store.redis import redis_client

    client = redis_client(shared_redis_url)
    try:
        script = client.register_script("redis.call('INCR', KEYS[1]) return 1")
        await asyncio.gather(*(script(keys=["burst"]) for _ in range(300)))
        assert await client.get("burst") == "300"
    finally:
        await client.aclose()
