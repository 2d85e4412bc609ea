"""Several replicas of the real ``chatbridge run`` on one Redis: throughput, latency, failover.

For 1, 2 and 3 replicas (subprocesses, ``python -m chatbridge.bots.cli run``), a fake Telegram
(in this process) posts one message from each of ``--users`` private chats through a
round-robin webhook proxy, all at once; the ShopAI emulator streams each answer (40 tokens,
``--token-delay`` apart). Latency = a message's POST to the first Bot API call carrying its
complete answer; throughput = messages / (first POST to last complete answer). The bot-wide
Telegram limit is switched off in the fake and the bots (``bot_rate = 0``) so the figures are
the bridge's, not Telegram's 30 messages/s.

Failover: three replicas, the load again, then the replica holding the most partitions is
SIGKILLed: the time until every one of its partitions is leased by another replica, and until
the last answer arrives. Prints, asserts nothing.

Bounded: each load must finish within 60 s and the whole run within ``--budget`` seconds
(170 by default: under 3 minutes); about 100-130 s on a quiet 2-core machine.

    python bench/replicas_cluster.py [--users 150] [--lease 3.0] [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

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

from chatbridge.emulators.shopai import start_shopai_emulator  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402

TOKEN = "777001:AAH-bench-token-0123456789abcdef"
SECRET = "bench-webhook-secret"
END = "The most affordable choice"
TOPICS = ["headphones for music", "a laptop for work", "a phone for travel"]


async def leases(url: str) -> dict[int, str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        out = {}
        for p in range(16):
            value = await client.get(f"chatbridge:lease:p:{p}")
            if value:
                out[p] = str(value).split(" ")[0]
        return out
    finally:
        await client.aclose()


class Cluster:
    def __init__(self, tmp: Path, n: int, redis_url: str, shopai_url: str, lease: float) -> None:
        self.tmp = tmp
        self.n = n
        self.redis_url = redis_url
        self.shopai_url = shopai_url
        self.lease = lease
        self.bridges: list[Bridge] = []
        self.http_ports: list[int] = []

    async def start(self, fake: FakeTelegram, proxy_url: str, hook_ports: list[int]) -> None:
        for i in range(self.n):
            workdir = self.tmp / f"n{self.n}-r{i}"
            workdir.mkdir()
            http_port = free_port()
            telegram = f"""[[bots]]
name = "shoppers"
platform = "telegram"
backend = "ai"
token = "{TOKEN}"
api_base_url = "{fake.url}/bot"
file_base_url = "{fake.url}/file/bot"
use_drafts = false
bot_rate = 0
mode = "webhook"
webhook_port = {hook_ports[i]}
webhook_url = "{proxy_url}/telegram"
webhook_secret_token = "{SECRET}"
"""
            backend = f"""[backends.ai]
type = "shopai"
base_url = "{self.shopai_url}"
license_key = "test-license"
"""
            config = replica_config(
                workdir / "bridge.toml",
                redis_url=self.redis_url,
                backend=backend,
                telegram=telegram,
                http_port=http_port,
                lease=self.lease,
            )
            text = config.read_text().replace("partitions = 8", "partitions = 16")
            config.write_text(text + '\n[logging]\nlevel = "WARNING"\n')
            bridge = Bridge(config, {"CHATBRIDGE_REPLICA": f"r{i}"}, workdir)
            await bridge.start()
            self.bridges.append(bridge)
            self.http_ports.append(http_port)
        async with asyncio.timeout(60):
            while not await all_ready(self.http_ports):
                await asyncio.sleep(0.1)
        await asyncio.sleep(3 * self.lease)  # partitions spread out

    async def stop(self) -> None:
        for bridge in self.bridges:
            if bridge.proc is not None and bridge.proc.returncode is None:
                await bridge.stop()


async def load(fake: FakeTelegram, users: int, base: int) -> tuple[list[float], float, float]:
    fb = fake.bots[TOKEN]
    chats = []
    for i in range(users):
        user = fb.make_user(base + i, f"U{i}")
        chats.append((fb.private_chat(user), user))
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}

    async def push(i: int) -> None:
        chat, user = chats[i]
        sent[chat["id"]] = loop.time()
        await fb.push_text(chat, user, f"m {TOPICS[i % 3]}")

    first = loop.time()
    await asyncio.gather(*(push(i) for i in range(users)))
    answered: dict[int, float] = {}
    async with asyncio.timeout(60):
        while len(answered) < users:
            for call in fake.calls:
                cid = call.chat_id
                text = str(call.params.get("text", ""))
                if cid in sent and cid not in answered and call.ok and END in text:
                    answered[cid] = call.time
            await asyncio.sleep(0.05)
    latencies = [answered[c] - sent[c] for c in sent]
    last = max(answered.values())
    return latencies, users / (last - first), last


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95)]


async def run(n: int, args: argparse.Namespace, tmp: Path, redis_url: str) -> None:
    shopai = await start_shopai_emulator(version="v0.1", token_delay=args.token_delay)
    hook_ports = [free_port() for _ in range(n)]
    try:
        async with (
            FakeTelegram(bot_limit=0) as fake,
            round_robin([f"http://127.0.0.1:{p}" for p in hook_ports]) as lb,
        ):
            fake.add_bot(TOKEN, "bench_bot")
            cluster = Cluster(tmp, n, redis_url, shopai.url, args.lease)
            await cluster.start(fake, lb.url, hook_ports)
            try:
                await load(fake, 20, 10_000 * n)  # warm-up: sessions, connections
                pids = [b.proc.pid for b in cluster.bridges if b.proc is not None]
                cpu = cpu_seconds(pids)
                latencies, rate, _ = await load(fake, args.users, 10_000 * n + 1000)
                cpu = cpu_seconds(pids) - cpu
                # partitions a replica found taken from it (its own lease lapsed under load)
                lost = sum(b.logs().count(" lost partition ") for b in cluster.bridges)
                print(
                    f"{n} replica(s): {rate:6.1f} turns/s, latency p50 "
                    f"{statistics.median(latencies) * 1000:.0f} ms, p95 "
                    f"{p95(latencies) * 1000:.0f} ms (n={len(latencies)}, 429s {fake.count_429}); "
                    f"bridge CPU {cpu * 1000 / len(latencies):.1f} ms/turn; leases lost {lost}; "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                if n == 3:
                    await failover(cluster, fake, args, redis_url)
            finally:
                await cluster.stop()
    finally:
        await shopai.stop()


async def failover(
    cluster: Cluster, fake: FakeTelegram, args: argparse.Namespace, redis_url: str
) -> None:
    held = await leases(redis_url)
    counts = {name: list(held.values()).count(name) for name in set(held.values())}
    victim = max(counts, key=lambda name: counts[name])
    mine = [p for p, name in held.items() if name == victim]
    task = asyncio.create_task(load(fake, args.users, 90_000))
    await asyncio.sleep(0.3)  # mid-load
    loop = asyncio.get_running_loop()
    killed = loop.time()
    await cluster.bridges[int(victim.removeprefix("r"))].kill()
    while True:
        now = await leases(redis_url)
        if all(now.get(p) not in (None, victim) for p in mine):
            break
        await asyncio.sleep(0.02)
    taken = loop.time() - killed
    latencies, _, last = await task
    print(
        f"failover (lease {args.lease} s): {victim}'s {len(mine)} partitions taken over "
        f"{taken:.2f} s after SIGKILL; last answer {last - killed:.2f} s after it; "
        f"latency p95 under the kill {p95(latencies) * 1000:.0f} ms; 429s {fake.count_429}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--lease", type=float, default=3.0, help="[replicas] lease (default)")
    parser.add_argument("--token-delay", type=float, default=0.005)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            async with asyncio.timeout(args.budget):
                for n in args.replicas:
                    folder = tmp / f"redis{n}"
                    folder.mkdir()
                    with redis_server(folder) as url:
                        await run(n, args, tmp, url)
        except TimeoutError:
            print(f"stopped: the run took longer than --budget {args.budget:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
