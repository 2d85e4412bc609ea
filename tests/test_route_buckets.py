"""Discord's per-route buckets shared by replicas (core.budget.SharedRouteBuckets, applied in
discord.py's HTTP session by adapters/discord_adapter/tracing.py), against a real
redis-server and the fake Discord, which enforces each channel's message bucket as Discord
does (a fixed window, announced in ``X-RateLimit-*`` on every answer).

Two real discord.py HTTP clients (what two replicas run) post into one channel at once: with
the shared buckets the fake answers no 429; without them (each client honouring the headers
for itself only, as discord.py does) it answers several."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from crash_harness import Bridge
from replica_harness import (
    REDIS_SERVER,
    all_ready,
    free_port,
    redis_server,
    replica_config,
    until,
)

pytest.importorskip("redis")
pytest.importorskip("discord")

import discord.http
import redis.asyncio as aioredis

from chatbridge.adapters.discord_adapter import endpoints
from chatbridge.adapters.discord_adapter.tracing import platform_trace, route_of
from chatbridge.core.budget import SharedRouteBuckets
from chatbridge.core.store.redis_coordination import conversation_member
from chatbridge.core.types import ConversationKey
from chatbridge.emulators.shopai import start_shopai_emulator
from tests.fakes.discord_api import FakeDiscord, FakeUser

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server not installed (apt-get install redis-server)"
)

BUCKET = (5, 0.5)  # Discord's 5 per 5 s per channel, ten times faster
END = "The most affordable choice"  # the last sentence of every full ShopAI answer


@pytest.fixture
async def clients(shared_redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(shared_redis_url, decode_responses=True) for _ in range(2)]
    await made[0].flushdb()
    yield made
    for client in made:
        await client.aclose()


async def post_from_two_replicas(
    fake: FakeDiscord, routes: list[SharedRouteBuckets | None], each: int
) -> None:
    endpoints.claim("route-test", fake.api_base_url, fake.gateway_url)
    https = [
        discord.http.HTTPClient(
            asyncio.get_running_loop(), http_trace=platform_trace("b", None, None, r)
        )
        for r in routes
    ]
    try:
        for http in https:
            await http.static_login(fake.token)

        async def post(http: discord.http.HTTPClient, n: int) -> None:
            params = discord.http.handle_message_parameters(content=f"answer {n}")
            with params:
                await http.send_message(fake.channel_id, params=params)

        await asyncio.gather(*(post(http, n) for http in https for n in range(each)))
    finally:
        for http in https:
            await http.close()
        endpoints.release("route-test")


async def test_two_replicas_posting_into_one_channel_share_its_bucket(
    clients: list[aioredis.Redis],
) -> None:
    async with FakeDiscord(global_limit=0, message_bucket=BUCKET) as fake:
        routes = [SharedRouteBuckets(c, "dc:test") for c in clients]
        await post_from_two_replicas(fake, list(routes), each=8)
        created = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
        assert sum(1 for c in created if c.status == 200) == 16
        assert fake.rate_limited == 0
        assert sum(r.waits for r in routes) > 0  # the bucket was reached, and waited for


async def test_without_sharing_the_two_replicas_overrun_the_bucket(
    clients: list[aioredis.Redis],
) -> None:
    # the same load, each client on its own (discord.py's buckets are per process): the fake
    # refuses calls, so the test above would see them
    async with FakeDiscord(global_limit=0, message_bucket=BUCKET) as fake:
        await post_from_two_replicas(fake, [None, None], each=8)
        assert fake.rate_limited > 0


async def test_a_bucket_spent_by_one_replica_makes_the_other_wait(
    clients: list[aioredis.Redis],
) -> None:
    one, two = (SharedRouteBuckets(c, "dc:test") for c in clients)
    route, channel = route_of("POST", "/api/v10/channels/123456789012345/messages")
    await two.take(route, channel)  # nothing known yet: goes
    assert two.waits == 0
    # an answer to replica one: 2 calls per window, 1 left, the window ends in 0.3 s
    await one.learn(route, channel, "bucket-a", 2, 1, 0.3)
    await two.take(route, channel)  # the last place
    assert two.waits == 0
    await two.take(route, channel)  # spent: waits for the reset, then opens a new window
    assert two.waits >= 1
    # the edit route turns out to use the same bucket: it shares the window counted so far
    # (one place taken above); an answer announcing more left does not undo a place taken
    edit, _ = route_of("PATCH", "/api/v10/channels/123456789012345/messages/99999999999")
    await one.learn(edit, channel, "bucket-a", 2, 2, 0.3)
    await one.take(edit, channel)  # the window's last place
    assert one.waits == 0
    await one.take(edit, "555555555555555")  # another channel: a state of its own
    assert one.waits == 0
    await one.take(route, channel)  # the create route: the same bucket, spent
    assert one.waits == 1


async def test_redis_out_of_reach_lets_calls_through(tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(f"unix://{tmp_path / 'missing.sock'}")
    routes = SharedRouteBuckets(client, "dc:test")
    try:
        await routes.take("POST /channels/{id}/messages", "1")  # discord.py's own buckets apply
        await routes.learn("POST /channels/{id}/messages", "1", "b", 5, 4, 1.0)
        assert routes.waits == 0
    finally:
        await client.aclose()


def test_routes_are_keyed_as_discord_keys_buckets() -> None:
    assert route_of("POST", "/api/v10/channels/123456789012345/messages") == (
        "POST /channels/{id}/messages",
        "123456789012345",
    )
    assert route_of("PATCH", "/api/v10/channels/123456789012345/messages/987654321098765") == (
        "PATCH /channels/{id}/messages/{id}",
        "123456789012345",
    )
    assert route_of("GET", "/api/v10/guilds/42424242424242/members") == (
        "GET /guilds/{id}/members",
        "42424242424242",
    )
    assert route_of("GET", "/api/v10/users/@me") == ("GET /users/@me", "")


# --- two real replicas ------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_two_real_replicas_answering_in_one_channel_get_no_429(tmp_path: Path) -> None:
    """Two replicas of ``chatbridge run``, one Discord shard each; every user writes in one
    channel (its guild on shard 0: replica r0 receives every message), and each replica runs
    the turns of the conversations whose partitions it holds: both stream answers into the
    one channel, whose bucket the fake enforces. Shared through Redis, no call is refused."""
    shopai = await start_shopai_emulator(version="v0.1", token_delay=0.01)
    with redis_server(tmp_path) as url:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        async with FakeDiscord(global_limit=0, message_bucket=(5, 1.0)) as fake:
            gid = fake.add_guild("g")
            while (gid >> 22) % 2 != 0:  # a guild on shard 0
                await asyncio.sleep(0.002)
                gid = fake.add_guild("g")
            channel = fake.add_channel(gid, "shop")
            bridges: list[Bridge] = []
            ports: list[int] = []
            try:
                for i in range(2):
                    workdir = tmp_path / f"r{i}"
                    workdir.mkdir()
                    ports.append(free_port())
                    config = replica_config(
                        workdir / "bridge.toml",
                        redis_url=url,
                        backend=f"""[backends.ai]
type = "shopai"
base_url = "{shopai.url}"
license_key = "test-license"
""",
                        discord=f"""[[bots]]
name = "shoppers"
platform = "discord"
backend = "ai"
token = "{fake.token}"
api_base_url = "{fake.api_base_url}"
gateway_url = "{fake.gateway_url}"
channels = [{channel}]
guild_ready_timeout = 0.05
shard_id = {i}
shard_count = 2
""",
                        http_port=ports[-1],
                        lease=3.0,
                    )
                    bridge = Bridge(config, {"CHATBRIDGE_REPLICA": f"r{i}"}, workdir)
                    await bridge.start()
                    bridges.append(bridge)
                await fake.wait_identified(2, timeout=40)

                async def balanced() -> bool:
                    if not await all_ready(ports):
                        return False
                    holders = [await client.get(f"chatbridge:lease:p:{p}") for p in range(8)]
                    names = [str(h).split(" ")[0] for h in holders if h]
                    return len(names) == 8 and names.count("r0") == names.count("r1") == 4

                await until(balanced, "two replicas holding four partitions each", bridges, 60)
                # three users whose conversations run on each replica
                mine: dict[str, list[FakeUser]] = {"r0": [], "r1": []}
                while min(len(users) for users in mine.values()) < 3:
                    user = fake.add_user(f"u{sum(len(u) for u in mine.values())}")
                    key = ConversationKey("shoppers", "discord", str(channel), str(user.id))
                    part = zlib.crc32(conversation_member(key).encode()) % 8
                    holder = str(await client.get(f"chatbridge:lease:p:{part}")).split(" ")[0]
                    mine[holder].append(user)
                users = mine["r0"][:3] + mine["r1"][:3]
                for n, user in enumerate(users):
                    await fake.user_message(user, f"m{n} headphones for music", channel_id=channel)

                async def answered() -> bool:
                    done = [m for m in fake.bot_messages(channel) if END in m.get("content", "")]
                    return len(done) >= len(users)

                await until(answered, "every user's answer", bridges, 60)
            finally:
                for bridge in bridges:
                    await bridge.stop()
                await client.aclose()
                await shopai.stop()
            ran = [len(re.findall(r"turn \d+ ok", bridge.logs())) for bridge in bridges]
            assert all(n >= 3 for n in ran), ran  # both replicas answered in the channel
            assert fake.rate_limited == 0
