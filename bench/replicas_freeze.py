"""One replica of three frozen (SIGSTOP) under load, then woken (SIGCONT): what a stalled
replica that wakes past its leases still does. Prints, asserts nothing.

Three replicas of the real ``chatbridge run`` (webhook mode behind a round-robin proxy, one
real redis-server, ``lease`` 1.5 s) answer ``--users`` users writing 3 messages each,
interleaved, through the ShopAI emulator; once the first answers stream, the replica holding
the most partitions is frozen for ``--freeze`` seconds. Per run:

- lost: users without every answer 60 s later;
- reordered: conversations whose messages reached the backend out of order;
- twice: messages the backend received twice (fencing cannot stop a message already on its
  way to the backend when its replica froze);
- split: conversations whose messages went to more than one backend session (a session
  opened by the frozen replica written over the holder's);
- 429: answers 429 from the fake Telegram (a woken replica sending what its shared budget
  allowed before it froze);
- leases lost: partitions a replica found taken from it (the frozen one's, on waking).

Bounded: ``--runs`` runs (3 by default), each load within 60 s, the whole within
``--budget`` seconds (170 by default).

    python bench/replicas_freeze.py [--runs 3] [--users 15] [--freeze 3.0] [--lease 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import redis.asyncio as aioredis  # noqa: E402
from crash_harness import Bridge  # noqa: E402
from replica_harness import (  # noqa: E402
    all_ready,
    free_port,
    redis_server,
    replica_config,
    round_robin,
)

from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402

TOKEN = "777001:AAH-bench-token-0123456789abcdef"
SECRET = "bench-webhook-secret"
END = "The most affordable choice"
TOPICS = ["headphones for music", "a laptop for work", "a phone for travel"]
TAG = re.compile(r"^u(\d+) m(\d+) ")
PER_USER = 3


def config(
    workdir: Path,
    redis_url: str,
    shopai: str,
    fake: str,
    lb: str,
    port: int,
    http_port: int,
    lease: float,
) -> Path:
    return replica_config(
        workdir / "bridge.toml",
        redis_url=redis_url,
        backend=f"""[backends.ai]
type = "shopai"
base_url = "{shopai}"
license_key = "${{SHOPAI_LICENSE_KEY}}"
""",
        telegram=f"""[[bots]]
name = "shoppers"
platform = "telegram"
backend = "ai"
token = "${{TELEGRAM_BOT_TOKEN}}"
api_base_url = "{fake}/bot"
file_base_url = "{fake}/file/bot"
use_drafts = false
mode = "webhook"
webhook_port = {port}
webhook_url = "{lb}/telegram"
webhook_secret_token = "{SECRET}"
""",
        http_port=http_port,
        lease=lease,
    )


async def busiest(redis_url: str, partitions: int = 8) -> str | None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        holders = [await client.get(f"chatbridge:lease:p:{p}") for p in range(partitions)]
    finally:
        await client.aclose()
    names = [str(h).rsplit(" ", 1)[0] for h in holders if h]
    return max(set(names), key=names.count) if names else None


def backend_view(shopai: ShopAIEmulator) -> tuple[dict[int, list[int]], dict[int, set[str]]]:
    """Per user: message numbers in the order the backend got them, and the sessions."""
    order: dict[int, list[int]] = {}
    sessions: dict[int, set[str]] = {}
    for chat_id, chat in shopai.chats.items():
        for item in chat.history:
            match = TAG.match(item["content"]) if item["type"] == "user" else None
            if match:
                order.setdefault(int(match[1]), []).append(int(match[2]))
                sessions.setdefault(int(match[1]), set()).add(str(chat_id))
    return order, sessions


async def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, int]:
    shopai = await start_shopai_emulator(version="v0.1", token_delay=0.01)
    ports = [free_port() for _ in range(3)]
    upstreams = [f"http://127.0.0.1:{p}" for p in ports]
    with redis_server(tmp) as redis_url:
        async with FakeTelegram() as fake, round_robin(upstreams) as lb:
            fb = fake.add_bot(TOKEN, "shop_bot")
            bridges: list[Bridge] = []
            http_ports = [free_port() for _ in ports]
            try:
                for i, port in enumerate(ports):
                    workdir = tmp / f"r{i}"
                    workdir.mkdir()
                    cfg = config(
                        workdir,
                        redis_url,
                        shopai.url,
                        fake.url,
                        lb.url,
                        port,
                        http_ports[i],
                        args.lease,
                    )
                    env = {
                        "SHOPAI_LICENSE_KEY": "test-license",
                        "TELEGRAM_BOT_TOKEN": TOKEN,
                        "CHATBRIDGE_REPLICA": f"r{i}",
                    }
                    bridges.append(Bridge(cfg, env, workdir))
                    await bridges[-1].start()
                try:
                    async with asyncio.timeout(40):
                        while not await all_ready(http_ports):
                            await asyncio.sleep(0.1)
                except TimeoutError:
                    print("replicas not ready:\n" + bridges[0].logs()[-2000:], file=sys.stderr)
                    raise
                await asyncio.sleep(3 * args.lease)  # partitions spread out
                users = [fb.make_user(700 + i, f"U{i}") for i in range(args.users)]
                chats = [fb.private_chat(u) for u in users]

                def full(chat: dict[str, Any]) -> int:
                    texts = [m.get("text", "") for m in fb.chat_messages(chat["id"])]
                    return sum(1 for t in texts if END in t)

                for j in range(PER_USER):
                    for i, (chat, user) in enumerate(zip(chats, users, strict=True)):
                        await fb.push_text(chat, user, f"u{i} m{j} {TOPICS[(i + j) % 3]}")
                    if j == 0:
                        async with asyncio.timeout(30):
                            while not any(fb.chat_messages(c["id"]) for c in chats):
                                await asyncio.sleep(0.05)
                        name = await busiest(redis_url)
                        victim = bridges[int(name[1:])] if name else bridges[0]
                        assert victim.proc is not None
                        victim.proc.send_signal(signal.SIGSTOP)
                        await asyncio.sleep(args.freeze)
                        victim.proc.send_signal(signal.SIGCONT)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not all(full(c) >= PER_USER for c in chats):
                    await asyncio.sleep(0.1)
                lost = sum(1 for c in chats if full(c) < PER_USER)
                # partitions the replicas found lost: their own lease lapsed under them
                dropped = sum(b.logs().count(" lost partition ") for b in bridges)
            finally:
                for bridge in bridges:
                    await bridge.stop()
                await shopai.stop()
            order, sessions = backend_view(shopai)
            return {
                "lost": lost,
                "reordered": sum(1 for seen in order.values() if seen != sorted(seen)),
                "twice": sum(len(seen) - len(set(seen)) for seen in order.values()),
                "split": sum(1 for s in sessions.values() if len(s) > 1),
                "429": fake.count_429,
                "leases lost": dropped,
            }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=15)
    parser.add_argument("--freeze", type=float, default=3.0)
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    args = parser.parse_args()
    totals: dict[str, int] = {}
    started = time.monotonic()
    runs = 0
    async with asyncio.timeout(args.budget):
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="freeze") as tmp:
                got = await one_run(args, Path(tmp))
            runs += 1
            print(f"run {run + 1}: " + ", ".join(f"{k} {v}" for k, v in got.items()), flush=True)
            for k, v in got.items():
                totals[k] = totals.get(k, 0) + v
    took = time.monotonic() - started
    print(
        f"{runs} runs ({args.users} users x {PER_USER} messages, lease {args.lease} s, "
        f"one replica of three frozen {args.freeze} s), {took:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
    )


if __name__ == "__main__":
    asyncio.run(main())
