"""What the delivery journal costs a turn on SQLite (a real file, WAL, synchronous=NORMAL).

Four views, all printed, nothing asserted:

0. the floor: the same four statements through Python's ``sqlite3`` directly (same schema and
   pragmas, no store, no event loop), per turn;
1. the journal alone, one turn at a time: record -> sent_to_backend -> answer -> delivered
   (the four writes of a turn), per-turn time p50/p99/max;
2. the same four writes for many turns at once (they share the store's one connection, so
   this shows queueing);
3. end to end through the engine: the same turns with and without a journal, an instant
   backend and a do-nothing surface; the time each turn spends awaiting the journal (its
   record, sent, answer and delivered writes, timed inside the turn), and the difference of
   the per-turn times with and without. CPU is the process's, all threads.

Before and after in one command: ``--baseline DIR`` (another checkout, e.g.
``git archive <commit> | tar -x -C DIR``) runs the same measurements on that code, in
alternating rounds with this checkout so both meet the same machine load, and prints each
round and the medians of the rounds.

    python bench/journal_cost.py [--turns 2000] [--concurrent 200] [--baseline DIR --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the code under test: this checkout, or (--baseline) another one
CODE = os.environ.get("JOURNAL_COST_CODE", str(ROOT))
sys.path.insert(0, CODE)
sys.path.append(str(ROOT / "tests"))  # the test doubles of this checkout, whatever CODE is

from engine_doubles import AnswerBackend  # noqa: E402
from percentiles import pct  # noqa: E402

from chatbridge.core.engine import Engine  # noqa: E402
from chatbridge.core.protocols import Journal, Surface  # noqa: E402
from chatbridge.core.store import SQLiteStore  # noqa: E402
from chatbridge.core.types import (  # noqa: E402
    Button,
    ConversationKey,
    Inbound,
    JournalEntry,
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


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds."""
    return {
        "p50": statistics.median(values) * 1000,
        "p99": pct(values, 0.99) * 1000,
        "max": max(values) * 1000,
    }


def shown(figures: dict[str, float]) -> str:
    return f"p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms, max {figures['max']:.3f} ms"


def raw_floor(path: Path, turns: int) -> list[float]:
    """The journal's four statements per turn on a bare sqlite3 connection: what SQLite
    itself costs, with no store code and no event loop around it."""
    from chatbridge.core.store._journal_codec import dump_answer, dump_inbound
    from chatbridge.core.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for migration in MIGRATIONS:
        for statement in migration:
            conn.execute(statement)
    times = []
    for i in range(turns):
        if i % 500 == 0:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as the store's checkpointer does
        started = time.perf_counter()
        now = int(time.time() * 1e6)
        msg = inbound(i)
        seq = conn.execute(
            """INSERT INTO journal (bot, source, chat_id, message_id, inbound, state,
            received_at, updated_at) VALUES (?, ?, ?, ?, ?, 'received', ?, ?)
            ON CONFLICT (bot, source) DO NOTHING RETURNING seq""",
            ("bench", f"r{i}", msg.key.chat_id, msg.message_id, dump_inbound(msg), now, now),
        ).fetchall()[0][0]
        update = "UPDATE journal SET state = ?, updated_at = ? WHERE seq = ? AND bot = ?"
        conn.execute(update, ("sent_to_backend", now, seq, "bench"))
        conn.execute(
            "UPDATE journal SET state = 'answered', answer = ?, updated_at = ? "
            "WHERE seq = ? AND bot = ?",
            (dump_answer(ANSWER), now, seq, "bench"),
        )
        conn.execute(update, ("delivered", now, seq, "bench"))
        times.append(time.perf_counter() - started)
    conn.close()
    return times


async def one_turn(journal: Journal, i: int, source: str) -> float:
    started = time.perf_counter()
    entry = await journal.record(inbound(i), source)
    assert entry is not None
    await journal.advance("bench", entry.seq, TurnState.SENT)
    await journal.answer("bench", entry.seq, ANSWER)
    await journal.advance("bench", entry.seq, TurnState.DELIVERED)
    return time.perf_counter() - started


class Quiet:
    async def begin(self) -> None: ...
    async def append(self, text: str) -> None: ...
    async def replace(self, text: str) -> None: ...
    async def notice(self, text: str) -> None: ...
    async def finish(self, messages: Sequence[ReplyMessage]) -> None: ...
    async def fail(self, text: str) -> None: ...


class TimedJournal:
    """The store's journal, timing what each turn spends awaiting it (by entry): the
    journal's cost per turn measured inside the turn, not as a difference of two runs."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.spent: dict[int, float] = {}

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        started = time.perf_counter()
        entry = await self.journal.record(inbound, source)
        if entry is not None:
            self.spent[entry.seq] = time.perf_counter() - started
        return entry

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        started = time.perf_counter()
        await self.journal.advance(bot, seq, state)
        self.spent[seq] += time.perf_counter() - started

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        started = time.perf_counter()
        await self.journal.answer(bot, seq, messages)
        self.spent[seq] += time.perf_counter() - started

    async def unfinished(self, bot: str) -> list[JournalEntry]:
        return await self.journal.unfinished(bot)

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        return await self.journal.last_messages(bot, since)

    async def prune(self, older_than: timedelta) -> int:
        return await self.journal.prune(older_than)


async def engine_turns(
    store: SQLiteStore, journaled: bool, turns: int, base: int, timed: TimedJournal | None = None
) -> list[float]:
    engine = Engine(
        bot="bench",
        backend=AnswerBackend(ANSWER, name="instant"),
        backend_name="instant",
        store=store,
        journal=(timed or store.journal) if journaled else None,
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
        if i % 100 == 0:
            WAL.sample()
    return times


class WalSize:
    """The largest the store's WAL file was seen (sampled between turns, outside the timing)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.largest = 0

    def sample(self) -> None:
        if self.path is not None and self.path.exists():
            self.largest = max(self.largest, self.path.stat().st_size)


WAL = WalSize()


async def measure(turns: int, concurrent: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        figures["raw sqlite3, 4 statements"] = summary(raw_floor(Path(tmp) / "raw.db", turns))
        store = await SQLiteStore.open(Path(tmp) / "bench.db")
        WAL.path = Path(tmp) / "bench.db-wal"
        try:
            journal = store.journal
            for i in range(200):  # warm-up
                await one_turn(journal, i, f"w{i}")
            seq = []
            for i in range(turns):
                seq.append(await one_turn(journal, i, f"s{i}"))
                if i % 100 == 0:
                    WAL.sample()
            figures["journal, one turn at a time"] = summary(seq)
            rounds = max(1, turns // concurrent)
            together: list[float] = []
            wall = time.perf_counter()
            for r in range(rounds):
                together += await asyncio.gather(
                    *(one_turn(journal, i, f"c{r}-{i}") for i in range(concurrent))
                )
                WAL.sample()
            wall = time.perf_counter() - wall
            figures[f"journal, {concurrent} turns at once"] = {
                **summary(together),
                "turns/s": len(together) / wall,
            }
            await engine_turns(store, True, 500, 10**6)  # sessions and warm-up
            await engine_turns(store, False, 500, 2 * 10**6)
            cpu = time.process_time()
            without = await engine_turns(store, False, turns, 3 * 10**6)
            cpu_without = (time.process_time() - cpu) / turns
            cpu = time.process_time()
            timed = TimedJournal(store.journal)
            with_journal = await engine_turns(store, True, turns, 4 * 10**6, timed)
            cpu_with = (time.process_time() - cpu) / turns
            figures["engine turn without journal"] = summary(without)
            figures["engine turn with journal"] = summary(with_journal)
            figures["time awaiting the journal, per engine turn"] = summary(
                list(timed.spent.values())
            )
            figures["journal's cost per engine turn"] = {
                "p50": (statistics.median(with_journal) - statistics.median(without)) * 1000,
                "p99": (pct(with_journal, 0.99) - pct(without, 0.99)) * 1000,
                "cpu without": cpu_without * 1000,
                "cpu with": cpu_with * 1000,
            }
            figures["largest WAL file seen"] = {"MiB": WAL.largest / 2**20}
        finally:
            await store.close()
    return figures


def report(figures: dict[str, dict[str, float]]) -> None:
    for name, values in figures.items():
        if name == "journal's cost per engine turn":
            print(
                f"{name + ':':45}p50 {values['p50']:.3f} ms, p99 {values['p99']:.3f} ms; "
                f"CPU (all threads) {values['cpu without']:.3f} -> {values['cpu with']:.3f} "
                "ms a turn"
            )
        elif name == "largest WAL file seen":
            print(f"{name + ':':45}{values['MiB']:.1f} MiB")
        else:
            rate = f"; {values['turns/s']:.0f} turns/s" if "turns/s" in values else ""
            print(f"{name + ':':45}{shown(values)}{rate}")


def run_child(code: str, turns: int, concurrent: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "JOURNAL_COST_CODE": code, "PYTHONPATH": code}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--json",
            "--turns",
            str(turns),
            "--concurrent",
            str(concurrent),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    result: dict[str, dict[str, float]] = json.loads(out.splitlines()[-1])
    return result


def compare(baseline: str, rounds: int, turns: int, concurrent: int) -> None:
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"baseline": [], "this": []}
    for r in range(rounds):
        for label, code in (("baseline", baseline), ("this", CODE)):
            figures = run_child(code, turns, concurrent)
            runs[label].append(figures)
            print(f"--- round {r + 1}, {label} ({code})")
            report(figures)
    print(f"--- medians of {rounds} rounds: baseline -> this checkout")
    for name in runs["this"][0]:
        keys = runs["this"][0][name].keys()
        parts = []
        for k in keys:
            if not any(name in f for f in runs["baseline"]):
                continue
            before = statistics.median(f[name][k] for f in runs["baseline"] if name in f)
            after = statistics.median(f[name][k] for f in runs["this"])
            parts.append(f"{k} {before:.3f} -> {after:.3f}")
        print(f"{name + ':':45}{', '.join(parts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--baseline", help="another checkout, measured in alternating rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        compare(str(Path(args.baseline).resolve()), args.rounds, args.turns, args.concurrent)
        return
    figures = asyncio.run(measure(args.turns, args.concurrent))
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)


if __name__ == "__main__":
    main()
