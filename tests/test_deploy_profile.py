"""deploy/docker-compose.replicas.yml, run: the profile's services as local processes.

A real redis-server with the compose command, the bridge services as real ``chatbridge run``
processes with the image's command and the compose environment (replicas.env.example as the
operator's replicas.env), and the real nginx with deploy/nginx-replicas.conf in front of their
Telegram webhooks; tests/compose_profile.py says what is rewritten (service hostnames, ports,
base URLs, paths) and what of the compose file cannot be honoured here. Then real traffic:

- Telegram sellers write to the LoopOS bot through nginx, interleaved, several messages each:
  each gets every answer of its submission workflow in order (the answers depend on the order,
  so a turn run out of order, or on a session the replicas did not share, shows), and a user
  the file does not admit is refused;
- the Discord bot's two shards are held one by each replica, and each shard's guild channel
  gets its answer;
- one bridge is SIGKILLed with a webhook POST in flight to it and turns of its partitions
  queued: nginx retries that POST on the survivor (Telegram sees only 200s), the survivor takes
  over every partition and every message ends in its answer (or, for a LoopOS call cut off
  mid-flight, the plain "send it again" notice of the recovery rules), and the surviving
  shard still answers;
- ``restart: unless-stopped``: the killed replica is started again; it takes its shard back
  and answers the message written there while it was down, and the partitions are shared
  out again;
- ``docker compose restart redis``: the sellers' messages that arrive while Redis is down
  wait for it (no 200 before they are journaled), then are answered where each workflow was
  (sessions kept); ``docker compose down`` (SIGTERM) stops every replica cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from compose_profile import (
    DEPLOY,
    NGINX,
    Platforms,
    Ports,
    Running,
    env_example,
    logs_in,
    profile_services,
    replica_env,
    run_profile,
    wait_bridge_healthy,
)
from replica_harness import REDIS_SERVER, all_ready, metrics, partition_holders, until

from chatbridge.bots.config import TelegramBotConfig, load_config
from chatbridge.core.backends.loopos import loopos_language
from chatbridge.core.store.redis_coordination import partition_of
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import ConversationKey
from chatbridge.emulators.loopos import LoopOSEmulator, start_loopos_emulator
from chatbridge.emulators.loopos_workflow import CATALOG, CONDITION, Workflow
from chatbridge.emulators.shopai import start_shopai_emulator
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeBot, FakeTelegram
from tests.test_replicas_e2e import last_sentence

pytest.importorskip("redis")
pytest.importorskip("discord")
pytest.importorskip("telegram")
pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
    pytest.mark.skipif(NGINX is None, reason="nginx not installed"),
]

LANGUAGE = "pt"  # the sellers write in Portuguese, the LoopOS backend's language
SELLERS = 6  # one per catalogue product: every seller's answers differ from the others'
FIRST_ID = 5000  # Telegram user ids from here; STRANGER is not admitted by the file
STRANGER = 4999
ITEM_ID = re.compile(r"LC-[0-9A-F]{8}")  # LoopOS derives it from its session id
SUBMISSION_URL = "https://submission.example/"  # the file's submission_base_url (not fetched)


# --- Telegram sellers ----------------------------------------------------------------------


def seller_texts(i: int) -> list[str]:
    """Seller ``i``'s messages: a product, its variant, its condition, "Yes" to the check, and
    "Yes" again (after the photo is asked for, or resent after the "send it again" notice)."""
    product = CATALOG[i % len(CATALOG)]
    variant = product.variant.choices[i % len(product.variant.choices)]
    condition = CONDITION.choices[i % len(CONDITION.choices)]
    return [f"Quero vender um {product.name}", variant.pt, condition.pt, "Sim", "Sim"]


def norm(text: str) -> str:
    return ITEM_ID.sub("LC-?", text).strip()


def expected_answers(texts: list[str]) -> list[list[str]]:
    """What LoopOS answers each message with, in this order (the workflow replayed)."""
    flow = Workflow("replay", SUBMISSION_URL)
    language = loopos_language(LANGUAGE, "PT-PT")
    return [[norm(r["text"]) for r in flow.step(t, [], language)] for t in texts]


def one_id_per_partition(bot: str, partitions: int) -> list[int]:
    """Telegram user ids whose private chats fall in partitions 0, 1, ... (one each)."""
    found: dict[int, int] = {}
    uid = FIRST_ID
    while len(found) < partitions:
        key = ConversationKey(bot, "telegram", str(uid), str(uid))
        found.setdefault(partition_of(key, partitions), uid)
        uid += 1
    return [found[p] for p in range(partitions)]


@dataclass
class Sellers:
    bot: FakeBot
    ids: list[int]
    texts: list[list[str]]
    expected: list[list[list[str]]]  # seller -> message -> the answer's messages

    @property
    def users(self) -> list[dict[str, object]]:
        return [FakeBot.make_user(uid, f"Seller{k}", LANGUAGE) for k, uid in enumerate(self.ids)]

    def seen_once(self, k: int) -> list[str]:
        """Seller ``k``'s chat, a repeat of an earlier message left out (at-least-once delivery
        after a kill may send an answer again; one seller's answers all differ)."""
        texts = [norm(m.get("text", "")) for m in self.bot.chat_messages(self.ids[k])]
        return [t for n, t in enumerate(texts) if t not in texts[:n]]

    def first_three(self, k: int) -> list[str]:
        return [line for answer in self.expected[k][:3] for line in answer]

    async def send(self, k: int, j: int) -> None:
        user = self.users[k]
        await self.bot.push_text(self.bot.private_chat(user), user, self.texts[k][j])


def sessions_seen(loopos: LoopOSEmulator) -> dict[str, list[str]]:
    """LoopOS session id -> the user texts it received, in arrival order."""
    out: dict[str, list[str]] = {}
    for body in loopos.requests_to("/chat"):
        users = [m["text"] for m in body.get("messages", []) if m.get("role") == "user"]
        out.setdefault(str(body.get("session_id")), []).append(users[-1] if users else "")
    return out


def unread_requests(port: int) -> int:
    """Connections to 127.0.0.1:``port`` holding bytes its process has not read (a frozen
    process's listening socket still completes connections and takes their data)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        unread = int(fields[4].split(":")[1], 16)
        count += local_port == port and fields[3] == "01" and unread > 0
    return count


# --- Discord -------------------------------------------------------------------------------


async def guild_per_shard(fake: FakeDiscord, count: int) -> dict[int, int]:
    """Shard -> a guild channel of that shard (Discord routes a guild by (id >> 22) % count)."""
    by_shard: dict[int, int] = {}
    while len(by_shard) < count:
        gid = fake.add_guild(f"g{len(fake.guilds)}")
        if (gid >> 22) % count not in by_shard:
            by_shard[(gid >> 22) % count] = fake.add_channel(gid, "shop")
        await asyncio.sleep(0.002)  # the next snowflake's millisecond: another shard, maybe
    return by_shard


def answered_in(fake: FakeDiscord, channel: int, question: str) -> bool:
    return any(last_sentence(question) in m.get("content", "") for m in fake.bot_messages(channel))


# --- the profile ---------------------------------------------------------------------------


@dataclass
class World:
    loopos: LoopOSEmulator
    telegram: FakeTelegram
    sellers_bot: FakeBot
    discord: FakeDiscord
    channels: dict[int, int]  # Discord shard -> a guild channel of it
    shopai_url: str


@contextlib.asynccontextmanager
async def world(example: dict[str, str], shard_count: int) -> AsyncIterator[World]:
    """The emulators and fakes, with the example's tokens and license key: the values an
    operator fills in reach them unchanged."""
    loopos = await start_loopos_emulator()
    shopai = await start_shopai_emulator(license_key=example["SHOPAI_LICENSE_KEY"])
    try:
        async with (
            FakeTelegram() as telegram,
            FakeDiscord(token=example["DISCORD_BOT_TOKEN"]) as discord,
        ):
            channels = await guild_per_shard(discord, shard_count)
            bot = telegram.add_bot(example["TELEGRAM_BOT_TOKEN"], "sellers_bot")
            yield World(loopos, telegram, bot, discord, channels, shopai.url)
    finally:
        await shopai.stop()
        await loopos.stop()


async def wait_until_serving(running: Running, world: World, shard_count: int) -> None:
    """Every bridge healthy (the image's HEALTHCHECK), ready (``/readyz``: in the cluster),
    the partitions shared out evenly and every Discord shard connected."""
    everyone = list(running.bridges.values())
    for name, bridge in running.bridges.items():
        await wait_bridge_healthy(bridge, running.image, name)
    http_ports = [running.ports.of[n][8080] for n in running.bridges]
    await until(lambda: all_ready(http_ports), "every replica ready", everyone, 40)
    for name, port in zip(running.bridges, http_ports, strict=True):
        # the compose file's CHATBRIDGE_REPLICA names each replica's metrics
        assert f'replica="{name}"' in await metrics(port)
    await until(lambda: shared_out(running), "the partitions shared out evenly", everyone, 30)
    every_shard = [(s, shard_count) for s in range(shard_count)]
    await world.discord.wait_until(lambda: world.discord.connected_shards == every_shard, 30)


async def shared_out(running: Running) -> bool:
    """Every partition held, each replica holding its even share."""
    partitions = partitions_of(running)
    share = partitions // len(running.bridges)
    held = list((await partition_holders(running.redis_url, partitions)).values())
    return len(held) == partitions and all(held.count(n) == share for n in running.bridges)


def partitions_of(running: Running) -> int:
    first = next(iter(running.bridges.values()))
    return load_config(first.config, first.env).replicas.partitions


async def test_the_replicas_profile_runs_and_loses_nothing_when_a_replica_is_killed(
    tmp_path: Path,
) -> None:
    services = profile_services("replicas")
    names = [n for n in services if n.startswith("bridge")]
    assert len(names) >= 2, "the profile runs several replicas"
    example = env_example()
    env = replica_env(services[names[0]])
    shard_count = int(env["DISCORD_SHARD_COUNT"])
    deployed = load_config(DEPLOY / "config.replicas.toml", env)
    (telegram_bot,) = [b for b in deployed.bots if isinstance(b, TelegramBotConfig)]
    # one admitted candidate seller per partition: who sells is picked once the partitions
    # are shared out (some on the replica that will be killed, some on the other)
    candidates = one_id_per_partition(telegram_bot.name, deployed.replicas.partitions)
    async with world(example, shard_count) as w:
        platforms = Platforms(
            telegram_api=f"{w.telegram.url}/bot",
            discord_api=w.discord.api_base_url,
            discord_gateway=w.discord.gateway_url,
            loopos=w.loopos.url,
            shopai=w.shopai_url,
            allowed_users=candidates,
        )
        ports = Ports.allocate(services)
        async with run_profile(services, ports, tmp_path, platforms) as running:
            first = running.bridges[names[0]]
            config = load_config(first.config, first.env)  # what the replica runs
            (sellers_bot,) = [b for b in config.bots if isinstance(b, TelegramBotConfig)]
            assert sellers_bot.allowed_users == [*telegram_bot.allowed_users, *candidates]
            await wait_until_serving(running, w, shard_count)
            await drive(running, w, candidates, names[0], names[1], shard_count)


async def drive(
    running: Running,
    w: World,
    candidates: list[int],
    doomed: str,
    survivor: str,
    shard_count: int,
) -> None:
    everyone = list(running.bridges.values())
    holders = await partition_holders(running.redis_url, partitions_of(running))
    on_doomed = [u for p, u in enumerate(candidates) if holders[p] == doomed][: SELLERS // 2]
    others = [u for p, u in enumerate(candidates) if holders[p] != doomed]
    ids = on_doomed + others[: SELLERS - len(on_doomed)]
    texts = [seller_texts(k) for k in range(SELLERS)]
    tbot = w.sellers_bot
    sellers = Sellers(tbot, ids, texts, [expected_answers(t) for t in texts])
    assert all(e[0][0].startswith("Ótimo!") for e in sellers.expected)  # the replay understood

    # --- Telegram through nginx: interleaved sellers, every answer in order ------------------
    stranger = tbot.make_user(STRANGER, "Stranger", LANGUAGE)
    await tbot.push_text(tbot.private_chat(stranger), stranger, texts[0][0])
    for j in range(3):  # every seller's first message, then every second one, ...
        for k in range(SELLERS):
            await sellers.send(k, j)
    await until(
        lambda: all(
            len(sellers.seen_once(k)) >= len(sellers.first_three(k)) for k in range(SELLERS)
        ),
        "every seller's first three answers",
        everyone,
        40,
    )
    for k in range(SELLERS):
        assert sellers.seen_once(k) == sellers.first_three(k), f"seller {k}"
    await until(lambda: bool(tbot.chat_messages(STRANGER)), "the stranger's answer", everyone, 20)
    refused = Catalogue().text("refused", LANGUAGE)
    assert [m["text"] for m in tbot.chat_messages(STRANGER)] == [refused]

    # --- Discord: each replica holds one shard; each shard's guild is answered ---------------
    shoppers = [w.discord.add_user(f"shopper{s}") for s in range(shard_count)]
    questions = {s: f"headphones for music, shard {s}" for s in range(shard_count)}
    for s, user in enumerate(shoppers):
        await w.discord.user_message(user, questions[s], channel_id=w.channels[s], mention=True)
    await until(
        lambda: all(answered_in(w.discord, w.channels[s], q) for s, q in questions.items()),
        "an answer in each shard's guild",
        everyone,
        40,
    )

    # --- SIGKILL one replica with a webhook in flight to it ----------------------------------
    await kill_mid_webhook(running, sellers, len(on_doomed), doomed)
    alive = [running.bridges[survivor]]
    # the dead replica's shard went with it: the one left connected is the survivor's
    survivor_shard = int(running.bridges[survivor].env["DISCORD_SHARD_ID"])
    await w.discord.wait_until(
        lambda: w.discord.connected_shards == [(survivor_shard, shard_count)], 20
    )
    late = f"a laptop for work, after the kill, shard {survivor_shard}"
    channel = w.channels[survivor_shard]
    await w.discord.user_message(shoppers[survivor_shard], late, channel_id=channel, mention=True)
    resend = norm(Catalogue().text("resend_after_restart", LANGUAGE))

    def finished(k: int) -> bool:
        tail = sellers.seen_once(k)[len(sellers.first_three(k)) :]
        return bool(tail) and tail[0] in (*sellers.expected[k][3], resend)

    await until(lambda: all(finished(k) for k in range(SELLERS)), "every last answer", alive, 40)
    await until(lambda: answered_in(w.discord, channel, late), "the late answer", alive, 40)
    partitions = partitions_of(running)

    async def taken_over() -> bool:
        held = await partition_holders(running.redis_url, partitions)
        return len(held) == partitions and set(held.values()) == {survivor}

    await until(taken_over, "the survivor holding every partition", alive, 30)
    check_what_each_side_saw(running, w, sellers, resend, doomed, survivor)

    # --- restart: unless-stopped: Docker starts the killed replica again ---------------------
    # a shopper writes in the dead replica's shard meanwhile: nobody receives it (Discord does
    # not redeliver); the restarted replica reads the channel back and answers it
    doomed_shard = int(running.bridges[doomed].env["DISCORD_SHARD_ID"])
    missed = f"a phone for travel, while shard {doomed_shard} was down"
    missed_in = w.channels[doomed_shard]
    await w.discord.user_message(shoppers[doomed_shard], missed, channel_id=missed_in, mention=True)
    await restart_as_compose_does(running, doomed)
    every_shard = [(s, shard_count) for s in range(shard_count)]
    await w.discord.wait_until(lambda: w.discord.connected_shards == every_shard, 30)
    await until(lambda: answered_in(w.discord, missed_in, missed), "the missed one", everyone, 40)
    await until(lambda: shared_out(running), "the partitions shared again", everyone, 30)
    await restart_redis(running, w, sellers, resend)
    # stopped as ``docker compose down`` does (SIGTERM, STOPSIGNAL): cleanly, within the
    # stop_grace_period
    for name, bridge in running.bridges.items():
        assert await bridge.stop() == 0, f"{name}\n{bridge.logs()[-3000:]}"


async def restart_redis(running: Running, w: World, sellers: Sellers, resend: str) -> None:
    """``docker compose restart redis`` (SIGTERM, start): the sellers' messages that arrive
    meanwhile wait for it (no 200 yet), then are journaled and answered; the sessions made
    before it are still there (the LoopOS workflow goes on where it was)."""
    assert running.redis is not None
    everyone = list(running.bridges.values())
    await running.redis.stop()
    sends = [asyncio.create_task(sellers.send(k, 4)) for k in range(SELLERS)]

    def waiting() -> int:
        return sum(b.logs().count("waits for it") for b in everyone)

    await until(lambda: waiting() >= SELLERS, "every message waiting for Redis", everyone, 20)
    assert not any(s.done() for s in sends)  # no 200 for a message not journaled
    # what LoopOS got before (m3 cut off by the kill, maybe): read while nothing can run
    seen = {texts[0]: texts for texts in sessions_seen(w.loopos).values()}
    expected = []
    for k, sent in enumerate(sellers.texts):
        before = seen[sent[0]]
        assert before in (sent[:3], sent[:4]), k
        expected.append(expected_answers([*before, sent[4]])[-1])
    await running.redis.start()
    await asyncio.wait_for(asyncio.gather(*sends), 30)

    def answered(k: int) -> bool:
        return sellers.seen_once(k)[len(sellers.first_three(k)) + 1 :] == expected[k]

    await until(lambda: all(answered(k) for k in range(SELLERS)), "the answers", everyone, 40)


async def restart_as_compose_does(running: Running, name: str) -> None:
    """``restart: unless-stopped``: a replica that died (SIGKILL: exit 137) is started again,
    same container, same command; then it passes its healthcheck."""
    assert running.services[name]["restart"] == "unless-stopped"
    bridge = running.bridges[name]
    await bridge.start()
    await wait_bridge_healthy(bridge, running.image, name)


async def kill_mid_webhook(running: Running, sellers: Sellers, first: int, doomed: str) -> None:
    """Sellers ``:first`` (whose partitions ``doomed`` holds) send their last message; then
    ``doomed`` is frozen (SIGSTOP) and the others send theirs until nginx has sent one to it
    (unread in its socket); then it is SIGKILLed and the rest are sent."""
    bridge = running.bridges[doomed]
    assert bridge.proc is not None
    hook = running.ports.of[doomed][8443]
    for k in range(first):
        await sellers.send(k, 3)
    os.kill(bridge.proc.pid, signal.SIGSTOP)
    k, stuck = first, None
    while stuck is None:
        assert k < SELLERS, "nginx sent no webhook to the frozen replica"
        task = asyncio.create_task(sellers.send(k, 3))
        k += 1

        def answered_or_sent_to_frozen(task: asyncio.Task[None] = task) -> bool:
            # answered: it went to the survivor; else nginx sent it to the frozen replica,
            # whose socket holds it unread
            return task.done() or unread_requests(hook) > 0

        await until(answered_or_sent_to_frozen, "the webhook answered or stuck", [bridge], 20)
        if task.done():
            task.result()
        else:
            stuck = task
    await bridge.kill()
    await asyncio.wait_for(stuck, 30)  # nginx retried the POST it had sent on the survivor
    for rest in range(k, SELLERS):
        await sellers.send(rest, 3)


def check_what_each_side_saw(
    running: Running, w: World, sellers: Sellers, resend: str, doomed: str, survivor: str
) -> None:
    for k in range(SELLERS):
        got = sellers.seen_once(k)
        first_three = sellers.first_three(k)
        assert got in (first_three + sellers.expected[k][3], [*first_three, resend]), k
    # LoopOS got each seller's messages once, in order, on one session shared by the replicas
    # (the stranger never reached it); a call cut off by the kill is not asked again
    seen = {texts[0]: texts for texts in sessions_seen(w.loopos).values()}
    assert len(seen) == SELLERS
    for k, sent in enumerate(sellers.texts):
        answered = sellers.seen_once(k)[-1] != resend
        got = seen[sent[0]]
        assert got == sent[:4] if answered else got in (sent[:4], sent[:3]), k
    assert set(sellers.bot.webhook_statuses) == {200}  # Telegram never saw the dead replica
    assert running.nginx is not None
    access = (running.nginx / "access.log").read_text().splitlines()
    posts = [line for line in access if line.startswith("POST /telegram ")]
    assert len(posts) == len(sellers.bot.webhook_statuses)
    assert all(p.split(" ")[2] == "200" for p in posts), posts
    dead, live = running.ports.address(doomed, 8443), running.ports.address(survivor, 8443)
    upstreams = {p.split(" ")[3] for p in posts}  # one upstream: '"127.0.0.1:port"'
    assert {f'"{dead}"', f'"{live}"'} <= upstreams  # round robin: both took webhooks
    # the POST the dead replica had taken in: sent there, then again to the survivor
    # (later ones may meet it refused once its fail_timeout is over: retried the same way)
    retried = [p for p in posts if f'"{dead}, {live}"' in p]
    assert retried, logs_in(running.nginx)[-3000:]
    assert w.telegram.count_429 == 0 and w.discord.global_limited == 0
    assert running.bridges[doomed].proc is not None
    assert running.bridges[doomed].proc.returncode == -signal.SIGKILL
