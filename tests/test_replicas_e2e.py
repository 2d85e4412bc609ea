"""Three replicas of the real ``chatbridge run`` on one real Redis, against one fake Telegram.

- Webhook mode behind a round-robin proxy: many users' interleaved messages land on any
  replica; one replica is SIGKILLed mid-load; every user still ends with every answer, each
  conversation reached the backend in the order it was written (the ShopAI emulator's history
  per session), no two turns of one conversation overlapped (the emulator drops a message
  that arrives mid-answer), and the bot-wide limit held across the replicas together (the
  fake Telegram answered no 429).
- Polling mode: exactly one replica polls (the leader lease); when it is SIGKILLed another
  takes over and the messages written meanwhile are answered.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from crash_harness import Bridge
from replica_harness import REDIS_SERVER, free_port, replica_config, round_robin

from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer
from tests.fakes.telegram_api import FakeTelegram

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]

TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # listed in conftest's canaries
SECRET = "replica-webhook-secret"
ENV = {"SHOPAI_LICENSE_KEY": "test-license", "TELEGRAM_BOT_TOKEN": TOKEN}
TOPICS = ["headphones for music", "a laptop for work", "a phone for travel"]
END = "The most affordable choice"  # the last sentence of every full answer
EXTRA = ""
TAG = re.compile(r"^u(\d+) m(\d+) ")


@pytest.fixture
async def shopai() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.1", token_delay=0.01)
    try:
        yield emulator
    finally:
        await emulator.stop()


def shopai_backend(shopai: ShopAIEmulator) -> str:
    return f"""[backends.ai]
type = "shopai"
base_url = "{shopai.url}"
license_key = "${{SHOPAI_LICENSE_KEY}}"
"""


def telegram_bot(fake: FakeTelegram, mode: str) -> str:
    return f"""[[bots]]
name = "shoppers"
platform = "telegram"
backend = "ai"
token = "${{TELEGRAM_BOT_TOKEN}}"
api_base_url = "{fake.url}/bot"
file_base_url = "{fake.url}/file/bot"
use_drafts = false
{mode}
"""


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, bridges: list[Bridge], timeout: float
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        logs = "\n".join(b.logs()[-3000:] for b in bridges)
        raise AssertionError(f"timed out waiting for {what}\n{logs}") from None


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            body = await resp.json()
            return resp.status == 200 and body["checks"].get("replica") is True
    except aiohttp.ClientError:
        return False


async def owned_partitions(port: int) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    match = re.search(r'^chatbridge_replica_partitions\{replica="[^"]+"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


async def balanced(ports: list[int]) -> bool:
    owned = await asyncio.gather(*(owned_partitions(p) for p in ports))
    return all(n >= 2 for n in owned)


async def start_replicas(
    tmp_path: Path, n: int, config: Callable[[int, Path, int], Path]
) -> tuple[list[Bridge], list[int]]:
    bridges, http_ports = [], []
    for i in range(n):
        workdir = tmp_path / f"r{i}"
        workdir.mkdir()
        port = free_port()
        bridge = Bridge(config(i, workdir, port), {**ENV, "CHATBRIDGE_REPLICA": f"r{i}"}, workdir)
        await bridge.start()
        bridges.append(bridge)
        http_ports.append(port)
    return bridges, http_ports


def last_sentence(question: str) -> str:
    return visible_text(compose_answer(question)).rsplit(". ", 1)[-1]


def answers(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m.get("text", "") for m in fake.bots[TOKEN].chat_messages(chat_id)]


def full_answers(fake: FakeTelegram, chat_id: int) -> int:
    return sum(1 for text in answers(fake, chat_id) if END in text)


def backend_order(shopai: ShopAIEmulator) -> dict[int, list[int]]:
    """Per user, the message numbers in the order the backend received them."""
    seen: dict[int, list[int]] = {}
    for chat in shopai.chats.values():
        for item in chat.history:
            match = TAG.match(item["content"]) if item["type"] == "user" else None
            if match:
                seen.setdefault(int(match[1]), []).append(int(match[2]))
    return seen


async def test_webhook_three_replicas_order_kept_nothing_lost_after_sigkill(
    tmp_path: Path, redis_url: str, shopai: ShopAIEmulator
) -> None:
    users_n, per_user = 15, 3
    ports = [free_port() for _ in range(3)]
    async with FakeTelegram() as fake, round_robin([f"http://127.0.0.1:{p}" for p in ports]) as lb:
        fb = fake.add_bot(TOKEN, "shop_bot")

        def config(i: int, workdir: Path, http_port: int) -> Path:
            mode = (
                f'mode = "webhook"\nwebhook_port = {ports[i]}\n'
                f'webhook_url = "{lb.url}/telegram"\nwebhook_secret_token = "{SECRET}"\n'
            )
            return replica_config(
                workdir / "bridge.toml",
                redis_url=redis_url,
                backend=shopai_backend(shopai),
                telegram=telegram_bot(fake, mode),
                http_port=http_port,
                extra=EXTRA,
            )

        bridges, http_ports = await start_replicas(tmp_path, 3, config)
        try:
            await until(lambda: all_ready(http_ports), "three ready replicas", bridges, timeout=40)
            # the first replica took every partition; the others' shares come back to them
            await until(lambda: balanced(http_ports), "partitions spread out", bridges, timeout=20)
            users = [fb.make_user(700 + i, f"U{i}") for i in range(users_n)]
            chats = [fb.private_chat(u) for u in users]
            for j in range(per_user):  # interleaved: every user's m0, then every m1, ...
                for i, (chat, user) in enumerate(zip(chats, users, strict=True)):
                    await fb.push_text(chat, user, f"u{i} m{j} {TOPICS[(i + j) % 3]}")
                if j == 0:
                    # mid-load: some answers are streaming, most are still to come
                    await until(
                        lambda: any(answers(fake, c["id"]) for c in chats),
                        "the first answers",
                        bridges,
                        timeout=30,
                    )
                    await bridges[0].kill()
            assert set(fb.webhook_statuses) == {200}
            await until(
                lambda: all(full_answers(fake, c["id"]) >= per_user for c in chats),
                "every user's every answer",
                bridges,
                timeout=60,
            )
        finally:
            for bridge in bridges[1:]:
                await bridge.stop()
        order = backend_order(shopai)
        reordered: list[str] = []
        for i in range(users_n):
            assert set(order[i]) == set(range(per_user))  # nothing lost
            # the answers reached the user in the order the questions were written (an answer
            # repeated after the kill, at-least-once, shows twice in a row)
            got = [t for t in answers(fake, chats[i]["id"]) if END in t]
            deduped = [t for k, t in enumerate(got) if k == 0 or t != got[k - 1]]
            expected = [last_sentence(f"u{i} m{j} {TOPICS[(i + j) % 3]}") for j in range(per_user)]
            if order[i] != sorted(order[i]) or any(
                e not in t for e, t in zip(expected, deduped, strict=True)
            ):
                reordered.append(f"user {i}: backend saw {order[i]}")
        assert shopai.stats.dropped_while_processing == 0  # never two turns at once
        assert fake.count_429 == 0, f"{fake.count_429} answers 429 across the replicas"
        assert sum(lb.forwarded[1:]) > 0 and lb.forwarded[0] > 0
        assert not reordered, "out of order after the SIGKILL: " + "; ".join(reordered)


async def all_ready(ports: list[int]) -> bool:
    return all(await asyncio.gather(*(ready(p) for p in ports)))


async def leader(redis_url: str) -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        value = await client.get("chatbridge:lease:leader:telegram-poll:shoppers")
    finally:
        await client.aclose()
    return None if value is None else str(value).split(" ")[0]


async def test_polling_one_leader_polls_and_another_takes_over_after_sigkill(
    tmp_path: Path, redis_url: str, shopai: ShopAIEmulator
) -> None:
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")

        def config(i: int, workdir: Path, http_port: int) -> Path:
            return replica_config(
                workdir / "bridge.toml",
                redis_url=redis_url,
                backend=shopai_backend(shopai),
                telegram=telegram_bot(fake, "poll_timeout = 1\n"),
                http_port=http_port,
            )

        bridges, http_ports = await start_replicas(tmp_path, 3, config)
        try:
            await until(lambda: all_ready(http_ports), "three ready replicas", bridges, 40)
            first = await leader(redis_url)
            assert first is not None
            users = [fb.make_user(800 + i, f"P{i}") for i in range(6)]
            chats = [fb.private_chat(u) for u in users]
            for i, (chat, user) in enumerate(zip(chats, users, strict=True)):
                await fb.push_text(chat, user, f"u{i} m0 {TOPICS[i % 3]}")
            await until(
                lambda: all(full_answers(fake, c["id"]) >= 1 for c in chats),
                "the first answers",
                bridges,
                60,
            )
            # exactly one replica polls
            leading = [b for b in bridges if "leads leader:telegram-poll" in b.logs()]
            assert len(leading) == 1
            dead = int(first.removeprefix("r"))
            await bridges[dead].kill()
            # written while nobody polls: Telegram keeps them for the next leader
            for i, (chat, user) in enumerate(zip(chats, users, strict=True)):
                await fb.push_text(chat, user, f"u{i} m1 {TOPICS[(i + 1) % 3]}")

            async def new_leader() -> bool:
                return (await leader(redis_url)) not in (None, first)

            await until(new_leader, "a new leader", bridges, 30)
            await until(
                lambda: all(full_answers(fake, c["id"]) >= 2 for c in chats),
                "the answers after the leader died",
                bridges,
                60,
            )
        finally:
            for bridge in bridges:
                if bridge.proc is not None and bridge.proc.returncode is None:
                    await bridge.stop()
        order = backend_order(shopai)
        assert all(order[i] == [0, 1] for i in range(len(users)))
        assert fake.count_429 == 0


async def test_discord_two_shards_on_two_replicas_answer_every_guild(
    tmp_path: Path, redis_url: str, shopai: ShopAIEmulator
) -> None:
    from tests.fakes.discord_api import FakeDiscord

    # Discord's global limit, made small enough for two shards' answers to reach it together
    async with FakeDiscord(global_limit=8) as fake:
        # a guild on each shard: Discord routes a guild's events by (guild_id >> 22) % count
        by_shard: dict[int, int] = {}
        while len(by_shard) < 2:
            gid = fake.add_guild(f"g{len(fake.guilds)}")
            by_shard.setdefault((gid >> 22) % 2, gid)
            await asyncio.sleep(0.002)  # the next snowflake's millisecond
        channels = [fake.add_channel(by_shard[s], f"shop{s}") for s in (0, 1)]
        env = {**ENV, "DISCORD_BOT_TOKEN": fake.token}

        def config(i: int, workdir: Path, http_port: int) -> Path:
            discord = f"""[[bots]]
name = "shoppers"
platform = "discord"
backend = "ai"
token = "${{DISCORD_BOT_TOKEN}}"
api_base_url = "{fake.api_base_url}"
gateway_url = "{fake.gateway_url}"
channels = [{channels[0]}, {channels[1]}]
guild_ready_timeout = 0.05
shard_id = {i}
shard_count = 2
global_rate = 8
"""
            return replica_config(
                workdir / "bridge.toml",
                redis_url=redis_url,
                backend=shopai_backend(shopai),
                discord=discord,
                http_port=http_port,
                extra=EXTRA,
            )

        bridges, http_ports = [], []
        for i in range(2):
            workdir = tmp_path / f"r{i}"
            workdir.mkdir()
            port = free_port()
            bridge = Bridge(
                config(i, workdir, port), {**env, "CHATBRIDGE_REPLICA": f"r{i}"}, workdir
            )
            await bridge.start()
            bridges.append(bridge)
            http_ports.append(port)
        try:
            await fake.wait_identified(2, timeout=40)
            assert sorted(tuple(p["shard"]) for p in fake.identify_payloads) == [(0, 2), (1, 2)]
            await until(lambda: all_ready(http_ports), "two ready replicas", bridges, 40)
            users = [fake.add_user(f"d{i}") for i in range(4)]
            for j in range(2):
                for i, user in enumerate(users):
                    question = f"u{i} m{j} {TOPICS[(i + j) % 3]}"
                    await fake.user_message(user, question, channel_id=channels[i % 2])

            def answered() -> bool:
                return all(
                    sum(END in m.get("content", "") for m in fake.bot_messages(c)) >= 4
                    for c in channels
                )

            await until(answered, "answers in both shards' guilds", bridges, 60)
        finally:
            for bridge in bridges:
                await bridge.stop()
        order = backend_order(shopai)
        assert all(order[i] == [0, 1] for i in range(len(users)))
        assert fake.global_limited == 0  # the two replicas shared the bot's global budget
