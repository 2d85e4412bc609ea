"""Benchmark: N simultaneous streamed answers in N Discord channels (prints, asserts nothing).

The fake Discord API (REST + gateway) runs in a subprocess with Discord's limits enforced:
50 requests a second for the bot token across every REST route (interactions excepted), 429
with ``"global": true`` past it, and the per-channel message bucket (5 creates/edits per 5 s,
announced in ``X-RateLimit-*`` headers). The bot side is the real stack: discord.py, the
adapter (pacing every request through the bot's shared budget), the engine, and a scripted
backend streaming ``--tokens`` tokens ``--token-delay`` apart to every channel at once, then
a final answer with a button.

Reports: answers lost (channels whose final answer, with its button, never arrived; target
0), 429s (global and per route; target 0), first backend token -> first visible text (the
channel's first message accepted), first token -> last final answer against the floor
(stream length + N / 50 s), CPU and peak RSS of the bot process and the fake's CPU.

    python bench/discord_stream.py [--channels 1000] [--tokens 40] [--token-delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from percentiles import pct

from chatbridge.adapters.discord_adapter import DiscordAdapter, DiscordOptions
from chatbridge.core.engine import Engine
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import Button, Final, ReplyMessage, Token
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_harness import ScriptBackend

# --- the fake server side (subprocess) ---------------------------------------------------------


async def serve(channels: int) -> None:
    fake = FakeDiscord()
    ids = [fake.add_channel(fake.guild_id, f"shop-{i}") for i in range(channels)]
    users = [fake.add_user(f"shopper{i}") for i in range(channels)]
    await fake.start()
    print("READY", json.dumps([fake.api_base_url, fake.gateway_url, fake.token]), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = line.strip().decode()
        if command == "go":
            for user, channel in zip(users, ids, strict=True):
                await fake.user_message(user, "what do you have?", channel_id=channel, mention=True)
        elif command == "report":
            print(json.dumps(report(fake)), flush=True)
        elif command == "quit":
            break
    await fake.close()


def report(fake: FakeDiscord) -> dict[str, Any]:
    first: dict[str, float] = {}
    final: dict[str, float] = {}
    methods: dict[str, int] = {}
    for call in fake.calls:
        route = re.sub(r"\d{6,}", "{id}", f"{call.method} {call.path}")
        methods[route] = methods.get(route, 0) + 1
        m = re.fullmatch(r"/channels/(\d+)/messages(/\d+)?", call.path)
        if call.status != 200 or m is None or call.method not in ("POST", "PATCH"):
            continue
        channel = m[1]
        if call.method == "POST":
            first.setdefault(channel, call.at)
        if (call.body or {}).get("components"):
            final.setdefault(channel, call.at)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "first": first,
        "final": final,
        "methods": methods,
        "rate_limited": fake.rate_limited,
        "global_limited": fake.global_limited,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


# --- the bot side ------------------------------------------------------------------------------


async def run(channels: int, tokens: int, token_delay: float, rate: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--channels",
        str(channels),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdin is not None and proc.stdout is not None
    api, gateway, token = json.loads((await proc.stdout.readline()).decode().split(" ", 1)[1])
    words = [f"token{i}" for i in range(tokens)]
    text = " ".join(words)

    def reply(inbound: object) -> list[Any]:
        final = ReplyMessage(text, (Button("More", payload="more"),))
        return [*(Token(w if i == 0 else " " + w) for i, w in enumerate(words)), Final((final,))]

    backend = ScriptBackend(reply, token_delay=token_delay)
    store = await MemoryStore.open()
    engine = Engine(bot="bench", backend=backend, backend_name="bench", store=store)
    options = DiscordOptions(
        api_base_url=api,
        gateway_url=gateway,
        guild_ready_timeout=5,
        sync_commands=False,
        global_rate=rate,
    )
    adapter = DiscordAdapter(
        name="bench", token=token, engine=engine, options=options, admins=frozenset()
    )
    await adapter.start()
    await adapter.wait_ready(30)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    # bounded: the floor (stream + N/50 s) three times over, plus a minute
    deadline = started + 60 + 3 * (tokens * token_delay + channels / 50)
    while time.monotonic() < deadline:
        if len(backend.inbounds) >= channels and not (engine.active_turns or engine.queued_turns):
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
        (data["first"][chat] - t0) * 1000
        for chat, t0 in backend.first_token_at.items()
        if chat in data["first"]
    ]
    lost = channels - len(data["final"])
    start = min(backend.first_token_at.values(), default=started)
    last_final = max(data["final"].values(), default=float("nan")) - start
    floor = tokens * token_delay + channels / 50
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(
        f"--- {channels} channels, {tokens} tokens every {token_delay * 1000:.0f} ms, "
        f"global_rate {rate} ---"
    )
    print(f"turns {len(backend.inbounds)}, wall {wall:.1f} s")
    print(
        f"bot CPU {cpu:.1f} s, bot peak RSS {after.ru_maxrss / 1024:.0f} MB, "
        f"fake server CPU {data['cpu']:.1f} s"
    )
    print(
        f"answers lost: {lost}; 429s: {data['rate_limited']} "
        f"({data['global_limited']} global); calls: {data['methods']}"
    )
    print(
        f"last final answer {last_final:.1f} s after the first token; floor {floor:.1f} s "
        f"(stream {tokens * token_delay:.1f} s + {channels}/50 s): {last_final / floor:.2f} x"
    )
    print(
        f"first token -> first visible text: p50 {pct(delays, 0.5):.0f} ms, "
        f"p95 {pct(delays, 0.95):.0f} ms, max {max(delays or [0]):.0f} ms ({len(delays)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--rate", type=int, default=DiscordOptions().global_rate)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.channels))
        return
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.channels, args.tokens, args.token_delay, args.rate))


if __name__ == "__main__":
    main()
