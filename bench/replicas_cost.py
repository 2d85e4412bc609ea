"""What Redis coordination adds to a turn, against the single-process SQLite path.

One process, an instant backend and a do-nothing surface, turns one at a time (so the figure
is latency, not queueing), each timed from ``engine.accept`` to the answer's ``finish``:

1. SQLite store and journal, one process (the default deployment);
2. Redis store and journal, one process, no replicas (the journal's round trips to Redis);
3. Redis with :class:`core.replicas.Replicas` (one replica holding every partition): the
   message is recorded and queued in one script, read back from its partition's stream,
   loaded, run, and acknowledged under the partition's lease: the coordination path of
   every turn when several replicas run.

Prints p50/p99 of each and the differences; asserts nothing. Starts its own redis-server on
a unix socket.

    python bench/replicas_cost.py [--turns 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from journal_cost import Instant, Quiet, inbound, percentiles  # noqa: E402
from replica_harness import redis_server  # noqa: E402

from chatbridge.core.engine import Engine  # noqa: E402
from chatbridge.core.protocols import Surface  # noqa: E402
from chatbridge.core.replicas import Replicas  # noqa: E402
from chatbridge.core.store import SQLiteStore  # noqa: E402
from chatbridge.core.store.redis import RedisStore  # noqa: E402
from chatbridge.core.store.redis_coordination import RedisCoordination  # noqa: E402
from chatbridge.core.types import Inbound, ReplyMessage  # noqa: E402


class Signalling(Quiet):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        if not self.done.done():
            self.done.set_result(None)


class Waiting:
    """StoredReplies whose surfaces tell the bench when each message is answered."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[None]] = {}

    def expect(self, message_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        return future

    def surface_for(self, inbound: Inbound) -> Surface:
        return Signalling(self.pending.pop(str(inbound.message_id)))


async def local_turns(engine: Engine, turns: int, base: int) -> list[float]:
    times = []
    for i in range(base, base + turns):
        msg = inbound(i % 500)
        done = asyncio.get_running_loop().create_future()
        surface = Signalling(done)

        async def prepare(
            msg: Inbound = msg, surface: Surface = surface
        ) -> tuple[Inbound, Surface]:
            return msg, surface

        started = time.perf_counter()
        await engine.accept(msg.key, prepare, source=f"l{i}")
        await done
        times.append(time.perf_counter() - started)
    return times


async def replicated_turns(engine: Engine, replies: Waiting, turns: int, base: int) -> list[float]:
    times = []
    for i in range(base, base + turns):
        msg = inbound(i % 500)
        msg = Inbound(msg.key, msg.text, message_id=f"m{i}")
        done = replies.expect(f"m{i}")

        async def prepare(msg: Inbound = msg) -> tuple[Inbound, Surface]:
            return msg, Quiet()

        started = time.perf_counter()
        await engine.accept(msg.key, prepare, source=f"r{i}")
        await done
        times.append(time.perf_counter() - started)
    return times


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    n = args.turns
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        sqlite = await SQLiteStore.open(Path(tmp) / "bench.db")
        redis_store = await RedisStore.open(url)
        coordination = RedisCoordination.from_url(url)
        replicas = Replicas(coordination, replica="bench", partitions=16, lease=3.0)
        try:
            local = Engine(
                bot="bench",
                backend=Instant(),
                backend_name="i",
                store=sqlite,
                journal=sqlite.journal,
            )
            await local_turns(local, 500, 10**6)
            on_sqlite = await local_turns(local, n, 2 * 10**6)

            on_redis = Engine(
                bot="bench",
                backend=Instant(),
                backend_name="i",
                store=redis_store,
                journal=redis_store.journal,
            )
            await local_turns(on_redis, 500, 3 * 10**6)
            redis_local = await local_turns(on_redis, n, 4 * 10**6)

            replies = Waiting()
            coordinated = Engine(
                bot="bench",
                backend=Instant(),
                backend_name="i",
                store=redis_store,
                journal=redis_store.journal,
                work=replicas,
            )
            replicas.serve(coordinated, replies)
            await replicas.start()
            await replicated_turns(coordinated, replies, 500, 5 * 10**6)
            redis_replicas = await replicated_turns(coordinated, replies, n, 6 * 10**6)
        finally:
            await replicas.stop()
            await coordination.close()
            await redis_store.close()
            await sqlite.close()
    print(f"SQLite store + journal, one process:       {percentiles(on_sqlite)}")
    print(f"Redis store + journal, one process:        {percentiles(redis_local)}")
    print(f"Redis + replicas (stream, lease, ack):     {percentiles(redis_replicas)}")
    for name, other in (("Redis journal", redis_local), ("Redis replicas", redis_replicas)):
        d50 = (statistics.median(other) - statistics.median(on_sqlite)) * 1000
        d99 = (p99(other) - p99(on_sqlite)) * 1000
        print(f"{name} vs SQLite per turn:        p50 {d50:+.3f} ms, p99 {d99:+.3f} ms")
    d50 = (statistics.median(redis_replicas) - statistics.median(redis_local)) * 1000
    d99 = (p99(redis_replicas) - p99(redis_local)) * 1000
    print(f"coordination alone (replicas vs Redis):    p50 {d50:+.3f} ms, p99 {d99:+.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
