"""What Redis coordination adds to a turn, against the single-process SQLite path.

One process, an instant backend and a do-nothing surface, turns one at a time (so the figure
is latency, not queueing), each timed from ``engine.accept`` to the answer's ``finish``, the
next turn starting once the previous one is completely done (journal closed, entry
acknowledged):

1. ``sqlite``: SQLite store and journal, one process (the default deployment);
2. ``redis``: Redis store and journal, one process, no replicas;
3. ``replicas``: Redis with :class:`core.replicas.Replicas` (one replica holding every
   partition): the message is recorded, queued and taken in one script (the holder records
   it: no read back; a message another replica records rings the holder's bell and is read
   by a fenced script, 1/N of the turns with N replicas), run, and acknowledged under the
   partition's lease by the journal's last write: the coordination path of every turn when
   several replicas run. Round trips per turn: the record, which (the turn starting at once)
   also judges the ``turns_per_minute`` window and reads the session, and the journal's
   three writes (4; the single process on Redis: 5, the record, the session read and the
   three writes). Both Redis paths send a turn's commands on one pipelined connection
   (:mod:`core.store.redis_pipelined`).

Every path has the ``turns_per_minute`` gate on, as deployed: in memory on one process, in
Redis (:class:`core.budget.SharedFlood`) with replicas.

Robust against a noisy, shared machine: the three run in alternating blocks (``--reps``
repetitions, each with the three in a rotated order, each block ``--turns`` turns), and the
figures are the median and the spread (min-max) of the per-repetition p50/p99, plus the CPU
per turn of this process and of redis-server (which a shared CPU inflates far less than
wall-clock percentiles). It also counts the round trips to Redis of one turn on each path, by
command (client side: every request the client sends; a pipeline is one), so a change that
cuts one shows here exactly. Redis runs on loopback TCP (``--unix`` for a unix socket), the
target's setting. ``--no-hiredis`` runs every command through redis-py with replies parsed
in Python, as without the ``hiredis`` package (installed with the ``redis`` extra): no
pipelined connection (:mod:`core.store.redis_pipelined` needs hiredis), for the before/after.

``--same-core`` runs this process and redis-server on one CPU. On a virtual machine whose idle
vCPUs halt at once (this one: ``cpuidle_haltpoll.force=1 haltpoll.guest_halt_poll_ns=0``),
every wait on Redis across two vCPUs is two halted vCPUs woken by the host, whose latency
(and steal) lands in the tail; on one vCPU, waiting hands the CPU straight to the other
process. Comparing the two separates what the coordination costs from what the machine's
wake-ups cost. Prints, asserts nothing; about 10-60 s with the defaults.

    python bench/replicas_cost.py [--turns 400] [--reps 5] [--unix] [--no-hiredis] [--same-core]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if "--no-hiredis" in sys.argv:  # before redis-py is imported: it looks for hiredis once
    sys.modules["hiredis"] = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from engine_doubles import AnswerBackend  # noqa: E402
from journal_cost import ANSWER, Quiet, inbound  # noqa: E402
from percentiles import pct  # noqa: E402
from replica_harness import REDIS_SERVER, RoundTrips, TcpRedis, redis_server  # noqa: E402

from chatbridge.bots.gctune import tune_gc  # noqa: E402
from chatbridge.core.budget import SharedFlood  # noqa: E402
from chatbridge.core.engine import Engine  # noqa: E402
from chatbridge.core.flood import FloodControl  # noqa: E402
from chatbridge.core.protocols import Surface  # noqa: E402
from chatbridge.core.replicas import Replicas  # noqa: E402
from chatbridge.core.store import SQLiteStore  # noqa: E402
from chatbridge.core.store.redis import RedisStore  # noqa: E402
from chatbridge.core.store.redis_coordination import RedisCoordination, WorkItem  # noqa: E402
from chatbridge.core.store.redis_pipelined import PipelinedRedis  # noqa: E402
from chatbridge.core.types import Inbound, ReplyMessage  # noqa: E402

PATHS = ("sqlite", "redis", "replicas")
FLOOD_LIMIT = 1_000_000


# --- redis-server on loopback TCP ---------------------------------------------------------


@contextlib.contextmanager
def redis_tcp(workdir: Path) -> Iterator[str]:
    """A fresh redis-server on 127.0.0.1 (an ephemeral port), persistence off."""
    if REDIS_SERVER is None:
        raise SystemExit("redis-server is not installed")
    with TcpRedis(workdir) as server:
        yield server.url


def redis_parser() -> type:
    from redis.asyncio.connection import DefaultParser

    return DefaultParser


def redis_pid(url: str) -> int:
    import redis

    return int(redis.Redis.from_url(url).info("server")["process_id"])


def cpu_of(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the three paths --------------------------------------------------------------------


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


class DoneSignalling(Replicas):
    """Tells the bench when a claimed work item is done with: acknowledged (by the journal's
    finishing write, or on its own), its very last step."""

    done: asyncio.Future[None] | None = None

    async def _attempt(self, item: WorkItem) -> None:
        try:
            await super()._attempt(item)
        finally:
            if self.done is not None and not self.done.done():
                self.done.set_result(None)


Turns = Callable[[int, int], Awaitable[list[float]]]


def local_path(engine: Engine) -> Turns:
    async def turns(n: int, base: int) -> list[float]:
        times = []
        for i in range(base, base + n):
            msg = inbound(i % 500)
            done = asyncio.get_running_loop().create_future()
            surface = Signalling(done)

            async def prepare(
                msg: Inbound = msg, surface: Surface = surface
            ) -> tuple[Inbound, Surface]:
                return msg, surface

            started = time.perf_counter()
            result = await engine.accept(msg.key, prepare, source=f"l{i}")
            await done
            times.append(time.perf_counter() - started)
            assert result is not None
            await result  # the journal's last write: before the next turn
        return times

    return turns


def replicated_path(engine: Engine, replies: Waiting, replicas: DoneSignalling) -> Turns:
    async def turns(n: int, base: int) -> list[float]:
        times = []
        for i in range(base, base + n):
            msg = inbound(i % 500)
            msg = Inbound(msg.key, msg.text, message_id=f"m{i}")
            done = replies.expect(f"m{i}")
            replicas.done = asyncio.get_running_loop().create_future()

            async def prepare(msg: Inbound = msg) -> tuple[Inbound, Surface]:
                return msg, Quiet()

            started = time.perf_counter()
            await engine.accept(msg.key, prepare, source=f"r{i}")
            await done
            times.append(time.perf_counter() - started)
            await replicas.done  # acknowledged: before the next turn
        return times

    return turns


@dataclass
class Block:
    p50: float
    p99: float
    cpu: float  # this process, per turn
    redis_cpu: float  # redis-server, per turn


class Bench:
    def __init__(self, tmp: Path, url: str, turns: int) -> None:
        self.tmp = tmp
        self.url = url
        self.n = turns
        self.base = 10**6
        self.trips = RoundTrips()
        self.sqlite: SQLiteStore | None = None
        self.redis: RedisStore | None = None
        self.redis_pid = redis_pid(url)

    def _engine(self, store: SQLiteStore | RedisStore, work: Replicas | None = None) -> Engine:
        # turns_per_minute as deployed (on by default): in this process's memory, or across
        # the replicas in Redis; high enough never to refuse a turn here
        flood: FloodControl | SharedFlood = FloodControl(FLOOD_LIMIT)
        if work is not None:
            flood = SharedFlood(work.redis, FLOOD_LIMIT)
        return Engine(
            bot="bench",
            backend=AnswerBackend(ANSWER, name="instant"),
            backend_name="i",
            store=store,
            journal=store.journal,
            work=work,
            flood=flood,
        )

    @contextlib.asynccontextmanager
    async def path(self, name: str) -> AsyncIterator[Turns]:
        assert self.sqlite is not None and self.redis is not None
        if name == "sqlite":
            yield local_path(self._engine(self.sqlite))
        elif name == "redis":
            yield local_path(self._engine(self.redis))
        else:
            # a replica of its own per block: its lease ticks never run beside the others
            coordination = RedisCoordination.from_url(self.url)  # as the runner makes it
            self.trips.name_scripts(coordination)
            replicas = DoneSignalling(coordination, replica="bench", partitions=16, lease=3.0)
            engine = self._engine(self.redis, replicas)
            replies = Waiting()
            replicas.serve(engine, replies)
            await replicas.start()
            try:
                yield replicated_path(engine, replies, replicas)
            finally:
                await replicas.stop()
                await coordination.close()

    async def block(self, name: str, n: int) -> tuple[list[float], float, float]:
        async with self.path(name) as turns:
            self.base += 10_000
            await turns(50, self.base)  # warm-up: connections, sessions of the 500 users
            # as `chatbridge run` does once started: what starting allocated is frozen, out of
            # the cyclic collector's sight (bots/gctune.py), so full collections stay short
            tune_gc(many_connections=False)
            self.base += 10_000
            cpu, rcpu = time.process_time(), cpu_of(self.redis_pid)
            times = await turns(n, self.base)
            return times, time.process_time() - cpu, cpu_of(self.redis_pid) - rcpu

    async def count(self, name: str, n: int = 100) -> tuple[float, float, list[tuple[str, float]]]:
        async with self.path(name) as turns:
            self.base += 10_000
            await turns(20, self.base)
            self.base += 10_000
            self.trips.sends.clear()
            self.trips.commands = 0
            self.trips.on = True
            try:
                await turns(n, self.base)
            finally:
                self.trips.on = False
            sends = sum(self.trips.sends.values())
            by = sorted(self.trips.sends.items(), key=lambda kv: -kv[1])
            return sends / n, self.trips.commands / n, [(k, v / n) for k, v in by]

    async def run(self, reps: int) -> None:
        self.sqlite = await SQLiteStore.open(self.tmp / "bench.db")
        self.redis = await RedisStore.open(self.url)
        self.trips.name_scripts(self.redis, self.redis.journal)
        for name in PATHS[:2]:  # every user's session exists before anything is measured
            await self.block(name, 500)
        await bare_round_trips(self.url)
        blocks: dict[str, list[Block]] = {p: [] for p in PATHS}
        pooled: dict[str, list[float]] = {p: [] for p in PATHS}
        try:
            with self.trips.counting():
                print("round trips to Redis per turn (client requests; a pipeline is one):")
                for name in PATHS[1:]:
                    trips, commands, by = await self.count(name)
                    detail = ", ".join(f"{k} {v:.2f}" for k, v in by)
                    print(f"  {name:9s} {trips:.2f} ({commands:.2f} commands): {detail}")
            for rep in range(reps):
                order = PATHS[rep % 3 :] + PATHS[: rep % 3]  # rotated: no path always first
                for name in order:
                    times, cpu, rcpu = await self.block(name, self.n)
                    pooled[name] += times
                    blocks[name].append(
                        Block(pct(times, 0.5), pct(times, 0.99), cpu / self.n, rcpu / self.n)
                    )
                print(f"  repetition {rep + 1}/{reps} done (order {', '.join(order)})")
        finally:
            await self.redis.close()
            await self.sqlite.close()
        report(blocks, pooled, self.n)


async def bare_round_trips(url: str, n: int = 4000) -> None:
    """What one wait on Redis costs on this machine, whatever the command: PINGs one after
    another (the floor under each of a turn's waits; across two vCPUs that halt when idle,
    its tail is the host waking them)."""
    fast = PipelinedRedis.for_url(url)
    if fast is None:
        return
    try:
        for _ in range(200):
            await fast.execute("PING")
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await fast.execute("PING")
            times.append(time.perf_counter() - started)
    finally:
        await fast.aclose()
    print(
        f"one bare round trip (PING), {n} in a row: p50 {ms(pct(times, 0.5))}, "
        f"p99 {ms(pct(times, 0.99))}, p99.9 {ms(pct(times, 0.999))} ms"
    )


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def spread(values: Sequence[float], signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{fmt.format(med * 1000)} [{fmt.format(lo * 1000)} .. {fmt.format(hi * 1000)}]"


def report(blocks: dict[str, list[Block]], pooled: dict[str, list[float]], n: int) -> None:
    reps = len(blocks["sqlite"])
    print(f"\nper turn, ms: median [min .. max] over {reps} repetitions of {n} turns each")
    print(f"{'path':10s} {'p50':24s} {'p99':24s} {'CPU':22s} {'redis-server CPU'}")
    for name in PATHS:
        b = blocks[name]
        print(
            f"{name:10s} {spread([x.p50 for x in b]):24s} {spread([x.p99 for x in b]):24s} "
            f"{spread([x.cpu for x in b]):22s} {spread([x.redis_cpu for x in b])}"
        )
    print("\ndifference per repetition (same repetition, adjacent blocks), ms:")
    for name, against in (("redis", "sqlite"), ("replicas", "sqlite"), ("replicas", "redis")):
        pairs = list(zip(blocks[name], blocks[against], strict=True))
        d50 = [a.p50 - b.p50 for a, b in pairs]
        d99 = [a.p99 - b.p99 for a, b in pairs]
        dcpu = [a.cpu + a.redis_cpu - b.cpu - b.redis_cpu for a, b in pairs]
        met = sum(1 for d in d99 if d <= 0.002)
        print(
            f"  {name} - {against}: p50 {spread(d50, True)}, p99 {spread(d99, True)} "
            f"(<= +2 ms in {met}/{len(d99)}), CPU incl. redis-server {spread(dcpu, True)}"
        )
    print("\nall repetitions pooled, ms:")
    for name in PATHS:
        t = pooled[name]
        print(
            f"  {name:10s} p50 {ms(pct(t, 0.5))}, p99 {ms(pct(t, 0.99))}, "
            f"max {ms(max(t))} (n={len(t)})"
        )
    p99 = pct(pooled["replicas"], 0.99) - pct(pooled["sqlite"], 0.99)
    p50 = pct(pooled["replicas"], 0.5) - pct(pooled["sqlite"], 0.5)
    print(f"  replicas - sqlite: p50 {p50 * 1000:+.2f}, p99 {p99 * 1000:+.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=400, help="turns per block")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the three blocks")
    parser.add_argument("--unix", action="store_true", help="Redis on a unix socket, not TCP")
    parser.add_argument(
        "--no-hiredis", action="store_true", help="parse replies in Python, not with hiredis"
    )
    parser.add_argument(
        "--same-core",
        action="store_true",
        help="run this process and redis-server (started from it) on one CPU",
    )
    args = parser.parse_args()
    if args.same_core:  # redis-server, a child, inherits it
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = redis_server(tmp) if args.unix else redis_tcp(tmp)
        with server as url:
            parser_name = redis_parser().__name__
            cpus = sorted(os.sched_getaffinity(0))
            hot = "one pipelined connection" if PipelinedRedis.for_url(url) else "redis-py"
            print(f"Redis at {url.split('?')[0]}, turns' commands on {hot} (redis-py's replies "
                  f"parsed by {parser_name}), CPUs {cpus}")  # fmt: skip
            await Bench(tmp, url, args.turns).run(args.reps)


if __name__ == "__main__":
    asyncio.run(main())
