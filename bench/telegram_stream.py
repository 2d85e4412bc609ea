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
operations per chat per second and the most in any 1 s window.

    python bench/telegram_stream.py [--chats 1000] [--kind group|private|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions
from chatbridge.core.engine import Engine
from chatbridge.core.store.memory import MemoryStore
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_harness import ScriptBackend, answer

TOKEN = "424242:bench-token-never-logged-0123456789"
USERNAME = "bench_bot"
PACED = ("sendMessage", "editMessageText", "editMessageReplyMarkup")
VISIBLE = (*PACED, "sendMessageDraft")


# --- the fake server side (subprocess) ---------------------------------------------------------


async def serve(chats: int, kind: str) -> None:
    fake = FakeTelegram(interval=1.0)
    await fake.start()
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
                    await bot.push_text(bot.private_chat(user), user, "what do you have?")
                else:
                    chat = bot.group_chat(-(50_000 + i), f"G{i}")
                    await bot.push_text(chat, user, f"@{USERNAME} what do you have?")
        elif command == "report":
            print(json.dumps(report(fake)), flush=True)
        elif command == "quit":
            break
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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    chats: int,
    kind: str,
    tokens: int,
    token_delay: float,
    pool: int,
    bot_rate: int,
    draft_rate: int,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--chats",
        str(chats),
        "--kind",
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdin is not None and proc.stdout is not None
    url = (await proc.stdout.readline()).decode().split()[1]
    text = " ".join(f"token{i}" for i in range(tokens))
    backend = ScriptBackend(
        answer(text, ["More", "Thanks"], tokens=tokens), token_delay=token_delay
    )
    store = await MemoryStore.open()
    engine = Engine(bot="bench", backend=backend, backend_name="bench", store=store)
    options = TelegramOptions(
        api_base_url=f"{url}/bot",
        poll_timeout=5,
        connection_pool_size=pool,
        bot_rate=bot_rate,
        draft_rate=draft_rate,
    )
    adapter = TelegramAdapter(
        name="bench", token=TOKEN, engine=engine, options=options, admins=frozenset()
    )
    await adapter.start()
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
    proc.stdin.write(b"report\n")
    await proc.stdin.drain()
    data = json.loads(await proc.stdout.readline())
    await adapter.stop()
    await engine.aclose(grace=1.0)
    await store.close()
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    await proc.wait()

    delays = [
        (data["first_visible"][chat] - t0) * 1000
        for chat, t0 in backend.first_token_at.items()
        if chat in data["first_visible"]
    ]

    def per_second(series: dict[str, list[float]]) -> tuple[list[float], int]:
        rates, window_max = [], 0
        for times in series.values():
            if len(times) > 1:
                rates.append((len(times) - 1) / (times[-1] - times[0]))
            for i, t in enumerate(times):
                window_max = max(window_max, sum(1 for u in times[i:] if u - t < 1.0))
        return rates, window_max

    rates, window_max = per_second(data["paced"])
    shown, shown_max = per_second(data["visible"])
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(
        f"--- {chats} chats, {kind}, {tokens} tokens every {token_delay * 1000:.0f} ms, "
        f"{pool} requests in flight, bot_rate {bot_rate}, draft_rate {draft_rate} ---"
    )
    print(
        f"turns started {adapter.turns_started}, answered {len(data['visible'])} chats, "
        f"wall {wall:.1f} s"
    )
    print(
        f"bot CPU {cpu:.1f} s, bot peak RSS {after.ru_maxrss / 1024:.0f} MB, "
        f"fake server CPU {data['cpu']:.1f} s"
    )
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
    start = min(backend.first_token_at.values(), default=started)
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
    print(
        f"first token -> first visible text: p50 {pct(delays, 0.5):.0f} ms, "
        f"p95 {pct(delays, 0.95):.0f} ms, max {max(delays or [0]):.0f} ms "
        f"({len(delays)} chats)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--kind", choices=["group", "private", "both"], default="both")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--pool", type=int, default=TelegramOptions().connection_pool_size)
    parser.add_argument("--bot-rate", type=int, default=TelegramOptions().bot_rate)
    parser.add_argument("--draft-rate", type=int, default=TelegramOptions().draft_rate)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.chats, args.kind))
        return
    logging.basicConfig(level=logging.WARNING)
    for kind in ["group", "private"] if args.kind == "both" else [args.kind]:
        asyncio.run(
            run(
                args.chats,
                kind,
                args.tokens,
                args.token_delay,
                args.pool,
                args.bot_rate,
                args.draft_rate,
            )
        )


if __name__ == "__main__":
    main()
