"""Access control: allow-lists per bot, group policy, a polite localised refusal, counted;
the backend never sees a refused message; admins always pass."""

from __future__ import annotations

import asyncio

from chatbridge.adapters.discord_adapter import DiscordAdapter
from chatbridge.bots.config import parse_config
from chatbridge.core.access import AccessGate, AccessPolicy, Facts, Verdict
from chatbridge.core.engine import Engine
from chatbridge.core.metrics import Metrics
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.texts import Catalogue
from tests.discord_harness import ScriptBackend as DiscordScript
from tests.discord_harness import options as discord_options
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_harness import ADMIN, Harness

REFUSED_EN = "Sorry, this assistant is private."
REFUSED_PT = "Lamento, este assistente é privado."


def test_policy_admits_by_any_list_and_admins_always() -> None:
    policy = AccessPolicy.build(
        allowed_users=[1], allowed_chats=[-100], allowed_roles=[7], admins=[99]
    )
    assert policy.decide(Facts(user="1")) is Verdict.ALLOW
    assert policy.decide(Facts(user="2")) is Verdict.REFUSE
    assert policy.decide(Facts(user="2", chat="-100", group=True, mentioned=True)) is Verdict.ALLOW
    assert policy.decide(Facts(user="3", roles=frozenset({"7"}))) is Verdict.ALLOW
    assert policy.decide(Facts(user="99")) is Verdict.ALLOW
    # groups: only what the policy answers reaches the lists at all
    assert policy.decide(Facts(user="1", group=True, mentioned=False)) is Verdict.IGNORE
    off = AccessPolicy.build(group_policy="off", admins=[99])
    assert off.decide(Facts(user="1", group=True, mentioned=True)) is Verdict.IGNORE
    assert off.decide(Facts(user="99", group=True, mentioned=True)) is Verdict.ALLOW
    every = AccessPolicy.build(group_policy="all")
    assert every.decide(Facts(user="1", group=True, mentioned=False)) is Verdict.ALLOW
    assert AccessPolicy().open and not policy.open


def test_a_refused_user_is_told_once_in_a_while_but_always_counted() -> None:
    now = [0.0]
    counted: list[tuple[str, str]] = []
    gate = AccessGate(
        "sellers",
        "telegram",
        AccessPolicy.build(allowed_users=[1]),
        Catalogue("en", {"en": {"refused": "Members only."}}),
        on_refused=lambda bot, platform: counted.append((bot, platform)),
        clock=lambda: now[0],
    )
    assert gate.check(Facts(user="2", chat="2")) == (Verdict.REFUSE, "Members only.")
    assert gate.check(Facts(user="2", chat="2")) == (Verdict.REFUSE, None)
    now[0] = 601.0
    verdict, text = gate.check(Facts(user="2", chat="2", language="pt-BR"))
    assert verdict is Verdict.REFUSE and text is not None and text.startswith(REFUSED_PT)
    assert counted == [("sellers", "telegram")] * 3


def test_the_configuration_builds_the_policy_and_groups_follow_group_reply() -> None:
    backends = {
        "ai": {
            "type": "loopos",
            "base_url": "http://x/",
            "core_base_url": "http://x/",
            "submission_base_url": "http://x/",
        }
    }
    config = parse_config(
        {
            "backends": backends,
            "bots": [
                {
                    "name": "t",
                    "platform": "telegram",
                    "backend": "ai",
                    "token": "1:x",
                    "allowed_users": [5],
                    "allowed_chats": [-100],
                    "group_reply": "all",
                },
                {
                    "name": "d",
                    "platform": "discord",
                    "backend": "ai",
                    "token": "y",
                    "allowed_roles": [42],
                    "group_policy": "off",
                },
            ],
        }
    )
    telegram, discord = config.bots
    assert telegram.effective_group_policy == "all"  # type: ignore[union-attr]
    assert discord.effective_group_policy == "off"  # type: ignore[union-attr]


async def test_telegram_stranger_is_refused_politely_in_their_language() -> None:
    metrics = Metrics()
    gate = AccessGate(
        "sellers",
        "telegram",
        AccessPolicy.build(allowed_users=[100], admins=[ADMIN]),
        on_refused=metrics.access_refused,
    )
    async with Harness(access=gate) as h:
        stranger_pt = h.fb.make_user(200, "Rui", language_code="pt")
        chat = h.fb.private_chat(stranger_pt)
        await h.fb.push_text(chat, stranger_pt, "Quero vender um casaco")
        call = await h.reply_in(chat["id"])
        assert str(call.params["text"]).startswith(REFUSED_PT)
        since = len(h.fake.calls)
        await h.fb.push_text(chat, stranger_pt, "/start")  # commands are refused too
        stranger_en = h.fb.make_user(201, "Sam", language_code="en-GB")
        chat_en = h.fb.private_chat(stranger_en)
        await h.fb.push_text(chat_en, stranger_en, "hello")
        call = await h.reply_in(chat_en["id"], since=since)
        assert str(call.params["text"]).startswith(REFUSED_EN)

        member = h.user(100)
        await h.fb.push_text(h.fb.private_chat(member), member, "hi")
        assert "You said: hi" in str((await h.reply_in(100, contains="You said")).params["text"])
        admin = h.user(ADMIN, "Op")
        await h.fb.push_text(h.fb.private_chat(admin), admin, "status?")
        await h.reply_in(ADMIN, contains="You said")
        await h.settled(2)
        # the stranger's second message got no second refusal, and no backend call at all
        assert [m for m in h.fake.calls if m.chat_id == 200 and m.method == "sendMessage"][1:] == []
        assert {i.key.user_id for i in h.backend.inbounds} == {"100", str(ADMIN)}  # type: ignore[attr-defined]
        refused = metrics.value(
            "chatbridge_access_refused_total", bot="sellers", platform="telegram"
        )
        assert refused == 3


async def test_telegram_group_policy_off_ignores_groups() -> None:
    gate = AccessGate("sellers", "telegram", AccessPolicy.build(group_policy="off", admins=[ADMIN]))
    async with Harness(access=gate) as h:
        group = h.fb.group_chat(-500)
        user = h.user(100)
        await h.fb.push_text(group, user, "@seller_bot hello")
        admin = h.user(ADMIN, "Op")
        await h.fb.push_text(group, admin, "@seller_bot hello")
        await h.reply_in(-500, contains="You said")
        await h.settled(1)
        assert [i.key.user_id for i in h.backend.inbounds] == [str(ADMIN)]  # type: ignore[attr-defined]


async def test_discord_roles_and_guilds_admit_strangers_are_refused() -> None:
    async with FakeDiscord() as fake:
        store = await MemoryStore.open()
        backend = DiscordScript()
        engine = Engine(bot="shop", backend=backend, backend_name="script", store=store)
        member = fake.add_user("member", admin=True)  # carries the guild's second role
        stranger = fake.add_user("stranger")
        role = int(fake.guilds[fake.guild_id]["roles"][1]["id"])
        gate = AccessGate("shop", "discord", AccessPolicy.build(allowed_roles=[role]))
        adapter = DiscordAdapter(
            name="shop",
            token=fake.token,
            engine=engine,
            options=discord_options(fake),
            admins=frozenset(),
            access=gate,
        )
        await adapter.start()
        await adapter.wait_ready(5)
        try:
            await fake.user_message(stranger, "hello", mention=True)
            await fake.wait_until(
                lambda: any(REFUSED_EN in m["content"] for m in fake.bot_messages(fake.channel_id))
            )
            await fake.user_message(member, "hello", mention=True)
            await fake.wait_until(lambda: len(backend.turns) == 1)
            await asyncio.sleep(0.2)
            assert [t[1].key.user_id for t in backend.turns] == [str(member.id)]
            # slash commands that open a backend session follow the same policy
            since = len(fake.calls)
            await fake.slash_command(stranger, "lang", options={"language": "pt-PT"})
            refusal = await fake.wait_call("POST", r"/interactions/.*/callback", since=since)
            assert refusal.body["data"]["flags"] == 64  # ephemeral
            assert refusal.body["data"]["content"].startswith(REFUSED_EN)
            assert [k.user_id for k in backend.opened] == [str(member.id)]
            since = len(fake.calls)
            await fake.slash_command(stranger, "condition", options={"item": "a lamp"})
            refusal = await fake.wait_call("POST", r"/interactions/.*/callback", since=since)
            assert refusal.body["data"]["content"].startswith(REFUSED_EN)
        finally:
            await adapter.stop()
            await engine.aclose(1.0)
            await store.close()
