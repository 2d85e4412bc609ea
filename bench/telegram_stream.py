"""Benchmark: N simultaneous streamed answers across N Telegram chats (prints, asserts nothing).

The fake Bot API runs in a subprocess (so its CPU is not billed to the bot); the bot side is
the real stack: python-telegram-bot polling, the adapter, the engine, a scripted backend that
streams ``--tokens`` tokens ``--token-delay`` apart to every chat at once.

The fake enforces Telegram's flood limits (30 messages/s for the bot, 20/min per group, about
one a second per chat with short bursts; drafts not counted) and answers 429 past them.

Reports: answers lost (chats whose final answer, with its keyboard, never arrived; target 0),
429s received (target 0), the delay from a chat's first backend token to its first visible
text (first sendMessage or sendMessageDraft accepted; target p95 <= 250 ms), the time from the
first backend token to the last final answer against the floor (stream length + N / 30 s;
target <= 1.2 x), CPU and peak RSS of the bot process (and the fake's CPU), paced message
operations per chat per second and the most in any 1 s window, and the event loop's lag in
both processes (how late a 10 ms sleep wakes up: while the answers stream, and overall).

The bot process's garbage collector is set as ``chatbridge run`` sets it (bots/gctune.py,
``--gc shopai``: a bot whose shoppers talk to ShopAI); ``--runs N`` repeats each kind and
ends with the spread of the first-text figures.

    python bench/telegram_stream.py [--chats 1000] [--kind group|private|both] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from percentiles import pct

from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions
from chatbridge.bots.gctune import tune_gc
from chatbridge.core.engine import Engine
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import ConversationKey, Event, Inbound, Token
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_harness import answer

TOKEN = "424242:bench-token-never-logged-0123456789"
USERNAME = "bench_bot"
PACED = ("sendMessage", "editMessageText", "editMessageReplyMarkup")
VISIBLE = (*PACED, "sendMessageDraft")
LAG_TICK = 0.01  # seconds the loop-lag probe sleeps


class LoopLag:
    """How late the event loop wakes a ``LAG_TICK`` sleep: a busy loop delays every reply."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (monotonic time, lateness in s)
        self.cpu: list[tuple[float, float]] = []  # (monotonic time, process CPU time)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def _probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK)
            now = time.monotonic()
            self.samples.append((now, now - before - LAG_TICK))
            self.cpu.append((now, time.process_time()))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def between(self, start: float, end: float) -> list[float]:
        return [lag * 1000 for at, lag in self.samples if start <= at <= end]

    def cpu_between(self, start: float, end: float) -> float:
        inside = [cpu for at, cpu in self.cpu if start <= at <= end]
        return inside[-1] - inside[0] if inside else 0.0


# --- the scripted backend: its cost is the fake's, not the bridge's ------------------------------


class Ticker:
    """Wakes every stream whose next token is due from one timer a tick, instead of one timer
    per token: a thousand streams' pauses would otherwise cost the bot process about as much
    CPU as the bridge itself spends on them (measured: 0.5-0.7 s for 40,000 tokens)."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self._due: dict[int, list[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def until(self, when: float) -> asyncio.Future[None]:
        """Resolves at loop time ``when`` (within a tick)."""
        loop = asyncio.get_running_loop()
        slot = round(when / self.tick)
        future: asyncio.Future[None] = loop.create_future()
        self._due.setdefault(slot, []).append(future)
        if self._timer is None:
            self._timer = loop.call_at(min(self._due) * self.tick, self._fire)
        return future

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time() / self.tick
        for slot in sorted(s for s in self._due if s <= now + 0.5):
            for future in self._due.pop(slot):
                if not future.done():
                    future.set_result(None)
        self._timer = loop.call_at(min(self._due) * self.tick, self._fire) if self._due else None


class BenchBackend:
    """Every chat gets the same answer: ``events``, a token every ``token_delay`` seconds."""

    name = "bench"

    def __init__(self, events: list[Event], token_delay: float) -> None:
        self.events = events
        self.token_delay = token_delay
        self.ticker = Ticker()
        self.first_token_at: dict[str, float] = {}
        self.inbounds = 0

    async def open(self, key: ConversationKey, language: str | None) -> str:
        return key.chat_id

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.inbounds += 1
        first = True
        due = asyncio.get_running_loop().time()
        for event in self.events:
            if isinstance(event, Token):
                due += self.token_delay  # a steady pace, as a model generating tokens
                await self.ticker.until(due)
                if first:
                    self.first_token_at[inbound.key.chat_id] = time.monotonic()
                    first = False
            yield event

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


# --- the fake server side (subprocess) ---------------------------------------------------------


async def serve(chats: int, kind: str) -> None:
    fake = FakeTelegram(interval=1.0)
    await fake.start()
    lag = LoopLag()
    lag.start()
    pushed: dict[str, float] = {}  # chat -> when its message became readable (getUpdates)
    bot = fake.add_bot(TOKEN, USERNAME)
    print("READY", fake.url, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = line.strip().decode()
        if command == "go":
            for i in range(chats):
                user = bot.make_user(50_000 + i, f"U{i}")
                if kind == "private":
                    chat = bot.private_chat(user)
                    text = "what do you have?"
                else:
                    chat = bot.group_chat(-(50_000 + i), f"G{i}")
                    text = f"@{USERNAME} what do you have?"
                pushed[str(chat["id"])] = time.monotonic()
                await bot.push_text(chat, user, text)
        elif command == "report":
            print(json.dumps({**report(fake), "lag": lag.samples, "pushed": pushed}), flush=True)
        elif command == "quit":
            break
    lag.stop()
    await fake.stop()


def report(fake: FakeTelegram) -> dict[str, Any]:
    first: dict[str, float] = {}
    final: dict[str, float] = {}
    paced: dict[str, list[float]] = {}
    visible: dict[str, list[float]] = {}
    methods: dict[str, int] = {}
    for call in fake.calls:
        methods[call.method] = methods.get(call.method, 0) + 1
        if not call.ok:
            continue
        chat = str(call.chat_id)
        if call.method in ("sendMessage", "sendMessageDraft") and chat not in first:
            first[chat] = call.time
        if call.method in PACED:
            paced.setdefault(chat, []).append(call.time)
            if call.params.get("reply_markup") and chat not in final:
                final[chat] = call.time  # the final answer is the one with the keyboard
        if call.method in VISIBLE:
            visible.setdefault(chat, []).append(call.time)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "first_visible": first,
        "final": final,
        "limited": fake.limited,
        "visible": visible,
        "paced": paced,
        "methods": methods,
        "count_429": fake.count_429,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


# --- the bot side ---------------------------------------------------------------------------------


@dataclass
class Setup:
    chats: int
    kind: str
    tokens: int
    token_delay: float
    pool: int
    bot_rate: int
    draft_rate: int
    gc: str


async def run(setup: Setup) -> dict[str, float]:
    """One run; prints its figures and returns the first-text ones."""
    chats, tokens, token_delay = setup.chats, setup.tokens, setup.token_delay
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--chats",
        str(chats),
        "--kind",
        setup.kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdin is not None and proc.stdout is not None
    url = (await proc.stdout.readline()).decode().split()[1]
    text = " ".join(f"token{i}" for i in range(tokens))
    script = answer(text, ["More", "Thanks"], tokens=tokens)
    backend = BenchBackend(script(Inbound(key=ConversationKey("b", "t", "0", "0"))), token_delay)
    store = await MemoryStore.open()
    engine = Engine(bot="bench", backend=backend, backend_name="bench", store=store)
    options = TelegramOptions(
        api_base_url=f"{url}/bot",
        poll_timeout=5,
        connection_pool_size=setup.pool,
        bot_rate=setup.bot_rate,
        draft_rate=setup.draft_rate,
    )
    adapter = TelegramAdapter(
        name="bench", token=TOKEN, engine=engine, options=options, admins=frozenset()
    )
    await adapter.start()
    if setup.gc != "default":  # as `chatbridge run` does once started
        tune_gc(many_connections=setup.gc == "shopai")
    lag = LoopLag()
    lag.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    # bounded: the floor (stream + N/30 s) three times over, plus a minute
    deadline = started + 60 + 3 * (tokens * token_delay + chats / 30)
    while time.monotonic() < deadline:
        busy = engine.active_turns or engine.queued_turns or adapter._pending
        if adapter.turns_started >= chats and not busy:
            break
        await asyncio.sleep(0.05)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    lag.stop()
    proc.stdin.write(b"report\n")
    await proc.stdin.drain()
    data = json.loads(await proc.stdout.readline())
    await adapter.stop()
    await engine.aclose(grace=1.0)
    await store.close()
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    await proc.wait()

    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(
        f"--- {chats} chats, {setup.kind}, {tokens} tokens every {token_delay * 1000:.0f} ms, "
        f"{setup.pool} requests in flight, bot_rate {setup.bot_rate}, "
        f"draft_rate {setup.draft_rate}, gc {setup.gc} ---"
    )
    print(
        f"turns started {adapter.turns_started}, answered {len(data['visible'])} chats, "
        f"wall {wall:.1f} s"
    )
    print(
        f"bot CPU {cpu:.1f} s, bot peak RSS {after.ru_maxrss / 1024:.0f} MB, "
        f"fake server CPU {data['cpu']:.1f} s"
    )
    return print_figures(setup, data, backend.first_token_at, lag, started)


def per_second(series: dict[str, list[float]]) -> tuple[list[float], int]:
    rates, window_max = [], 0
    for times in series.values():
        if len(times) > 1:
            rates.append((len(times) - 1) / (times[-1] - times[0]))
        for i, t in enumerate(times):
            window_max = max(window_max, sum(1 for u in times[i:] if u - t < 1.0))
    return rates, window_max


def lag_line(name: str, lags: list[float]) -> str:
    return (
        f"{name} p50 {pct(lags, 0.5):.1f} / p95 {pct(lags, 0.95):.1f} / "
        f"p99 {pct(lags, 0.99):.1f} / max {max(lags or [0]):.0f} ms"
    )


def print_figures(
    setup: Setup,
    data: dict[str, Any],
    first_token_at: dict[str, float],
    lag: LoopLag,
    started: float,
) -> dict[str, float]:
    chats, tokens, token_delay = setup.chats, setup.tokens, setup.token_delay
    delays = [
        (data["first_visible"][chat] - t0) * 1000
        for chat, t0 in first_token_at.items()
        if chat in data["first_visible"]
    ]
    rates, window_max = per_second(data["paced"])
    shown, shown_max = per_second(data["visible"])
    print(
        f"sends+edits per chat per second: mean {statistics.fmean(rates or [0]):.2f}, "
        f"max {max(rates or [0]):.2f}; most in any 1 s window: {window_max}"
    )
    print(
        f"visible updates (incl. drafts) per chat per second: "
        f"mean {statistics.fmean(shown or [0]):.2f}, max {max(shown or [0]):.2f}; "
        f"most in any 1 s window: {shown_max}"
    )
    lost = chats - len(data["final"])
    start = min(first_token_at.values(), default=started)
    last_final = max(data["final"].values(), default=float("nan")) - start
    floor = tokens * token_delay + chats / 30
    print(
        f"answers lost: {lost}; 429s received: {data['count_429']} {data['limited']}; "
        f"calls: {data['methods']}"
    )
    print(
        f"last final answer {last_final:.1f} s after the first token; floor "
        f"{floor:.1f} s (stream {tokens * token_delay:.1f} s + {chats}/30 s): "
        f"{last_final / floor:.2f} x"
    )
    # the streaming phase: from the go until every stream has had its last token
    streaming = (started, max(first_token_at.values(), default=started) + tokens * token_delay)
    fake_lag = [late * 1000 for at, late in data["lag"] if streaming[0] <= at <= streaming[1]]
    print(
        lag_line("event loop lag while streaming: bot", lag.between(*streaming))
        + "; "
        + lag_line("fake", fake_lag)
    )
    print(lag_line("event loop lag over the run: bot", lag.between(started, math.inf)))
    print(
        f"bot CPU while streaming: {lag.cpu_between(*streaming):.2f} s in "
        f"{streaming[1] - streaming[0]:.2f} s"
    )
    # what the user waits in all: from their message to the first text (intake, the backend's
    # first token at ``token_delay``, then the part the target is about)
    waits = [
        (data["first_visible"][chat] - at) * 1000
        for chat, at in data["pushed"].items()
        if chat in data["first_visible"]
    ]
    print(
        f"user's message -> first visible text: p50 {pct(waits, 0.5):.0f} ms, "
        f"p95 {pct(waits, 0.95):.0f} ms, max {max(waits or [0]):.0f} ms"
    )
    print(
        f"first token -> first visible text: p50 {pct(delays, 0.5):.0f} ms, "
        f"p95 {pct(delays, 0.95):.0f} ms, max {max(delays or [0]):.0f} ms "
        f"({len(delays)} chats)"
    )
    return {
        "p50": pct(delays, 0.5),
        "p95": pct(delays, 0.95),
        "lost": lost,
        "429": data["count_429"],
        "floor_x": last_final / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--kind", choices=["group", "private", "both"], default="both")
    parser.add_argument("--runs", type=int, default=1, help="runs of each kind")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--pool", type=int, default=TelegramOptions().connection_pool_size)
    parser.add_argument("--bot-rate", type=int, default=TelegramOptions().bot_rate)
    parser.add_argument("--draft-rate", type=int, default=TelegramOptions().draft_rate)
    parser.add_argument(
        "--gc",
        choices=["shopai", "loopos", "default"],
        default="shopai",
        help="the collector as `chatbridge run` sets it for a ShopAI / LoopOS bot, or untouched",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.chats, args.kind))
        return
    logging.basicConfig(level=logging.WARNING)
    kinds = ["group", "private"] if args.kind == "both" else [args.kind]
    if args.runs == 1:
        for kind in kinds:
            setup = Setup(
                args.chats,
                kind,
                args.tokens,
                args.token_delay,
                args.pool,
                args.bot_rate,
                args.draft_rate,
                args.gc,
            )
            result = asyncio.run(run(setup))
            if args.result:
                print("RESULT", json.dumps(result), flush=True)
        return
    for kind in kinds:
        results = [one_process(kind) for _ in range(args.runs)]
        print(f"=== {kind}, {len(results)} runs ===")
        for key in ("p50", "p95"):
            print(f"first visible text {key}: " + ", ".join(f"{r[key]:.0f}" for r in results))
        print(
            f"lost {sum(r['lost'] for r in results):.0f}, "
            f"429s {sum(r['429'] for r in results):.0f}, last final / floor "
            + ", ".join(f"{r['floor_x']:.2f}" for r in results)
        )


def one_process(kind: str) -> dict[str, float]:
    """One run in a fresh interpreter (each run's RSS and collector state its own)."""
    argv = list(sys.argv[1:])
    for flag in ("--runs", "--kind"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
    command = [sys.executable, __file__, *argv, "--kind", kind, "--result"]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        else:
            print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
