"""core/store/redis_pipelined.py against a real redis-server (unix socket and loopback TCP),
and against a server that breaks the protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis")
pytest.importorskip("hiredis")

import redis.asyncio as aioredis
import redis.exceptions as rex
from replica_harness import REDIS_SERVER, TcpRedis

from chatbridge.core.store.redis_pipelined import PipelinedRedis

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")

# busy for about ``ARGV[1]`` ms inside Redis, then the caller's tag back: a command that is
# slow without blocking (DEBUG SLEEP is off by default)
BUSY = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[1])
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 >= until_
return ARGV[2]
"""


def client(url: str) -> PipelinedRedis:
    fast = PipelinedRedis.for_url(url)
    assert fast is not None
    return fast


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[PipelinedRedis]:
    fast = client(url)
    try:
        yield fast
    finally:
        await fast.aclose()


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[TcpRedis]:
    with TcpRedis(tmp_path) as server:
        yield server


async def test_commands_scripts_and_hashes(redis_url: str) -> None:
    async with opened(redis_url) as fast:
        assert await fast.execute("SET", "k", "é 1") == "OK"
        assert await fast.execute("GET", "k") == "é 1"  # decoded as the store reads
        assert await fast.execute("INCRBY", "n", 5) == 5
        assert await fast.execute("GET", "missing") is None
        await fast.execute("HSET", "h", "a", "1", "b", "two")
        assert await fast.hgetall("h") == {"a": "1", "b": "two"}
        assert await fast.hgetall("nothing") == {}
        script = fast.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, false}")
        assert await script(keys=["key"], args=["v", 41]) == ["key", "v", 42, None]


async def test_a_script_redis_does_not_know_is_loaded(redis_url: str) -> None:
    async with opened(redis_url) as fast:
        script = fast.register_script("return 'loaded'")
        assert await fast.execute("SCRIPT", "EXISTS", script.sha) == [0]
        assert await script() == "loaded"
        await fast.execute("SCRIPT", "FLUSH")  # a restart without persistence forgets them
        assert await script() == "loaded"


async def test_error_replies_are_redis_py_errors_and_the_connection_stays(redis_url: str) -> None:
    async with opened(redis_url) as fast:
        await fast.execute("SET", "s", "text")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
            await fast.execute("HGETALL", "s")
        with pytest.raises(rex.ResponseError, match="boom"):
            await fast.register_script("return redis.error_reply('boom')")()
        assert await fast.execute("GET", "s") == "text"  # still in step


async def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    async with opened(redis_url) as fast:
        replies = await asyncio.gather(*(fast.execute("ECHO", f"m{i}") for i in range(500)))
        assert replies == [f"m{i}" for i in range(500)]
        connections = await fast.execute("CLIENT", "LIST")
        assert connections.count("\n") == 1  # one connection for all of them


async def test_a_cancelled_caller_leaves_the_connection_in_step(redis_url: str) -> None:
    async with opened(redis_url) as fast:
        busy = fast.register_script(BUSY)
        await busy(args=[1, "warm"])
        slow = asyncio.ensure_future(busy(args=[300, "slow"]))
        await asyncio.sleep(0.05)  # written, not answered yet
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # the slow one's reply comes first on the wire: it is read and dropped, not given here
        assert await fast.execute("ECHO", "next") == "next"
        assert await busy(args=[1, "after"]) == "after"


async def test_db_and_password_from_the_url(tcp_redis: TcpRedis) -> None:
    admin = aioredis.Redis(port=tcp_redis.port, decode_responses=True)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    url = f"redis://:s3cret@127.0.0.1:{tcp_redis.port}/3"
    async with opened(url) as fast:
        await fast.execute("SET", "where", "db3")
    check = aioredis.Redis(port=tcp_redis.port, db=3, password="s3cret", decode_responses=True)
    assert await check.get("where") == "db3"
    await check.aclose()
    async with opened(f"redis://:wrong@127.0.0.1:{tcp_redis.port}/3") as fast:
        with pytest.raises(rex.AuthenticationError):
            await fast.execute("PING")


async def test_redis_restarting_is_waited_for_then_out_of_reach(tcp_redis: TcpRedis) -> None:
    async with opened(tcp_redis.url) as fast:
        assert await fast.execute("PING") == "PONG"
        tcp_redis.stop()
        # the connection is gone: a command meets it broken, retries, finds nothing listening
        with pytest.raises(rex.ConnectionError):
            await fast.execute("PING")
        tcp_redis.start()
        assert await fast.execute("PING") == "PONG"  # a new connection, no error
        # a restart between two commands is not seen by the caller at all
        tcp_redis.stop()
        tcp_redis.start()
        assert await fast.execute("SET", "k", "v") == "OK"


async def test_commands_in_flight_fail_when_the_connection_drops(tcp_redis: TcpRedis) -> None:
    async with opened(tcp_redis.url) as fast:
        busy = fast.register_script(BUSY)
        await busy(args=[1, "warm"])
        slow = asyncio.ensure_future(busy(args=[2000, "slow"]))
        await asyncio.sleep(0.1)
        tcp_redis.stop()  # mid-command: it fails (retried, then nothing listens), never hangs
        with pytest.raises(rex.ConnectionError):
            await asyncio.wait_for(slow, 10)


async def test_a_server_out_of_protocol_breaks_the_connection() -> None:
    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"?what\r\n")  # not RESP
        await writer.drain()
        await asyncio.sleep(5)

    server = await asyncio.start_server(junk, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with opened(f"redis://127.0.0.1:{port}/0") as fast:
            with pytest.raises(rex.ConnectionError, match="protocol"):
                await asyncio.wait_for(fast.execute("PING"), 10)
    finally:
        server.close()


async def test_a_closed_client_does_not_reconnect(redis_url: str) -> None:
    fast = client(redis_url)
    assert await fast.execute("PING") == "PONG"
    await fast.aclose()
    with pytest.raises(rex.ConnectionError):
        await fast.execute("PING")


def test_tls_urls_stay_on_redis_py() -> None:
    assert PipelinedRedis.for_url("rediss://127.0.0.1:6379/0") is None
    assert PipelinedRedis.for_url("redis://127.0.0.1:6379/0") is not None
    assert PipelinedRedis.for_url("unix:///tmp/redis.sock?db=1") is not None


async def test_a_reply_that_is_not_text_breaks_the_connection_cleanly(redis_url: str) -> None:
    """The store keeps text only; bytes that are not UTF-8 (written by something else) fail
    the command as Redis out of reach would, and the next command works on a new
    connection."""
    raw = aioredis.Redis.from_url(redis_url)
    await raw.set("binary", b"\xff\xfe")
    await raw.aclose()
    async with opened(redis_url) as fast:
        with pytest.raises(rex.ConnectionError, match="UTF-8"):
            await fast.execute("GET", "binary")
        assert await fast.execute("PING") == "PONG"
