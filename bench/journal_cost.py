"""What the delivery journal costs a turn on SQLite (a real file, WAL, synchronous=NORMAL).

Three views, all printed, nothing asserted:

1. the journal alone, one turn at a time: record -> sent_to_backend -> answer -> delivered
   (the four writes of a turn), per-turn time p50/p99/max;
2. the same four writes for many turns at once (they share the store's one connection, so
   this shows queueing);
3. end to end through the engine: the same turns with and without a journal, an instant
   backend and a do-nothing surface; the difference of the per-turn times is the journal's
   cost as a user would feel it.

    python bench/journal_cost.py [--turns 2000] [--concurrent 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatbridge.core.engine import Engine  # noqa: E402
from chatbridge.core.protocols import Journal, Surface  # noqa: E402
from chatbridge.core.store import SQLiteStore  # noqa: E402
from chatbridge.core.types import (  # noqa: E402
    Button,
    ConversationKey,
    Event,
    Final,
    Inbound,
    ReplyMessage,
    TurnState,
)

ANSWER = (
    ReplyMessage(
        "Here is what I found for you: Aurora headphones for 89.00 EUR; Pulse buds for "
        "49.00 EUR. The most affordable choice is the Pulse buds at 49.00 EUR." * 2,
        buttons=(Button("Show more", payload="more"), Button("Details", url="https://x.test/")),
    ),
)


def key(i: int) -> ConversationKey:
    return ConversationKey("bench", "telegram", str(100_000 + i), str(100_000 + i))


def inbound(i: int) -> Inbound:
    return Inbound(key(i), text=f"I need headphones for music, number {i}", message_id=str(i))


def percentiles(values: Sequence[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"p50 {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, max {ms[-1]:.3f} ms (n={len(ms)})"
    )


async def one_turn(journal: Journal, i: int, source: str) -> float:
    started = time.perf_counter()
    entry = await journal.record(inbound(i), source)
    assert entry is not None
    await journal.advance("bench", entry.seq, TurnState.SENT)
    await journal.answer("bench", entry.seq, ANSWER)
    await journal.advance("bench", entry.seq, TurnState.DELIVERED)
    return time.perf_counter() - started


class Instant:
    name = "instant"

    async def open(self, k: ConversationKey, language: str | None) -> str:
        return f"s-{k.chat_id}"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        yield Final(ANSWER)

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Quiet:
    async def begin(self) -> None: ...
    async def append(self, text: str) -> None: ...
    async def replace(self, text: str) -> None: ...
    async def notice(self, text: str) -> None: ...
    async def finish(self, messages: Sequence[ReplyMessage]) -> None: ...
    async def fail(self, text: str) -> None: ...


async def engine_turns(store: SQLiteStore, journaled: bool, turns: int, base: int) -> list[float]:
    engine = Engine(
        bot="bench",
        backend=Instant(),
        backend_name="instant",
        store=store,
        journal=store.journal if journaled else None,
    )
    surface: Surface = Quiet()
    times = []
    for i in range(base, base + turns):
        msg = inbound(i % 500)  # 500 conversations, so sessions exist after the first round

        async def prepare(msg: Inbound = msg) -> tuple[Inbound, Surface]:
            return msg, surface

        started = time.perf_counter()
        future = await engine.accept(msg.key, prepare, source=f"e{journaled}{i}")
        assert future is not None
        await future
        times.append(time.perf_counter() - started)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = await SQLiteStore.open(Path(tmp) / "bench.db")
        try:
            journal = store.journal
            for i in range(200):  # warm-up
                await one_turn(journal, i, f"w{i}")
            seq = [await one_turn(journal, i, f"s{i}") for i in range(args.turns)]
            print(f"journal, one turn at a time (4 writes):      {percentiles(seq)}")
            rounds = max(1, args.turns // args.concurrent)
            together: list[float] = []
            wall = time.perf_counter()
            for r in range(rounds):
                together += await asyncio.gather(
                    *(one_turn(journal, i, f"c{r}-{i}") for i in range(args.concurrent))
                )
            wall = time.perf_counter() - wall
            print(
                f"journal, {args.concurrent} turns at once:           {percentiles(together)}; "
                f"{len(together) / wall:.0f} turns/s"
            )
            await engine_turns(store, True, 500, 10**6)  # sessions and warm-up
            await engine_turns(store, False, 500, 2 * 10**6)
            cpu = time.process_time()
            without = await engine_turns(store, False, args.turns, 3 * 10**6)
            cpu_without = (time.process_time() - cpu) / args.turns
            cpu = time.process_time()
            with_journal = await engine_turns(store, True, args.turns, 4 * 10**6)
            cpu_with = (time.process_time() - cpu) / args.turns
            print(f"engine turn without journal:                 {percentiles(without)}")
            print(f"engine turn with journal:                    {percentiles(with_journal)}")
            d50 = statistics.median(with_journal) - statistics.median(without)
            p99 = (
                sorted(with_journal)[int(len(with_journal) * 0.99)]
                - sorted(without)[int(len(without) * 0.99)]
            )
            print(
                f"journal's cost per engine turn:              p50 {d50 * 1000:.3f} ms, "
                f"p99 {p99 * 1000:.3f} ms; CPU (all threads) {cpu_without * 1000:.3f} -> "
                f"{cpu_with * 1000:.3f} ms a turn"
            )
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
