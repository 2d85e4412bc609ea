"""The Discord adapter end to end: real discord.py against the fake Discord API on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord.http
import pytest
from discord_harness import (
    FAST_BUCKET,
    LONG_PAYLOAD,
    ScriptBackend,
    final_message,
    options,
    start_bot,
    stop_bot,
)

from chatbridge.adapters.discord_adapter import DiscordAdapter, EndpointConflict
from chatbridge.adapters.discord_adapter.adapter import EMPTY, EXPIRED, NOT_FOR_YOU
from chatbridge.core.engine import Engine
from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import Button, Event, Final, Inbound, ReplyMessage, Token
from tests.fakes.discord_api import FakeDiscord, check_message_payload

pytestmark = pytest.mark.timeout(30)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as f:
        yield f


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(str(tmp_path / "sessions.db"))
    try:
        yield s
    finally:
        await s.close()


def components(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message["components"] for c in row["components"]]


async def test_streamed_answer_in_a_guild_channel(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend(token_delay=0.03)
    backend.reply = lambda inbound: ReplyMessage(
        text="Here are three lovely blue sneakers in your size, all in stock today",
        buttons=(Button("Blue", payload=LONG_PAYLOAD),),
    )
    adapter, engine = await start_bot(fake, backend, store)
    try:
        alice = fake.add_user("alice")
        user_msg = await fake.user_message(alice, "blue sneakers?", mention=True)
        final = await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter, engine)

    assert final["content"] == (
        "Here are three lovely blue sneakers in your size, all in stock today"
    )
    # the mention is not part of what the backend reads
    assert backend.turns[0][1].text == "blue sneakers?"
    assert backend.turns[0][1].key.chat_id == str(fake.channel_id)
    posts = fake.find_calls("POST", rf"/channels/{fake.channel_id}/messages")
    edits = fake.find_calls("PATCH", rf"/channels/{fake.channel_id}/messages/\d+")
    assert len(posts) == 1, "one message, then edits"
    assert str(posts[0].body["message_reference"]["message_id"]) == user_msg["id"]
    assert posts[0].body["allowed_mentions"]["parse"] == []
    text_edits = [e for e in edits if "content" in e.body]
    assert len(text_edits) >= 1, "the answer was streamed by edits"
    contents = [posts[0].body["content"]] + [e.body["content"] for e in text_edits]
    assert len(set(contents)) == len(contents), "never an edit with unchanged text"
    assert all(len(c) < len(final["content"]) for c in contents[:-1])
    # the buttons rode on the edit that wrote the final text: no extra edit for them
    assert edits[-1].body["components"] and edits[-1].body["content"] == final["content"]
    assert len(edits) == len(text_edits)


async def test_typing_shows_while_the_answer_is_slow_to_start(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend(token_delay=0.8)  # the first token comes after the typing grace
    adapter, engine = await start_bot(fake, backend, store)
    try:
        alice = fake.add_user("alice")
        await fake.user_message(alice, "anything blue?", mention=True)
        await final_message(fake, fake.channel_id, timeout=10)
    finally:
        await stop_bot(adapter, engine)
    typing = fake.find_calls("POST", rf"/channels/{fake.channel_id}/typing")
    first = fake.find_calls("POST", rf"/channels/{fake.channel_id}/messages")[0]
    assert typing and typing[0].at < first.at


async def test_streamed_answer_in_a_dm(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend(token_delay=0.02)
    adapter, engine = await start_bot(fake, backend, store)
    try:
        bob = fake.add_user("bob")
        await fake.dm_message(bob, "hello shop")
        dm = fake.dm_channel_id(bob)
        final = await final_message(fake, dm)
    finally:
        await stop_bot(adapter, engine)
    assert final["content"] == "You said: hello shop"
    key = backend.turns[0][1].key
    assert (key.chat_id, key.user_id, key.thread_id) == (str(dm), str(bob.id), None)
    labels = [c.get("label") for c in components(final)]
    assert labels == ["Blue", "Red", "Shop"]
    link = components(final)[2]
    assert link["style"] == 5 and link["url"] == "https://shop.example/item/1"


async def test_listens_only_where_addressed(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store, channels=[fake.other_channel_id])
    try:
        carol = fake.add_user("carol")
        await fake.user_message(carol, "just chatting")  # not mentioned, not listed
        await fake.user_message(carol, "in the listed one", channel_id=fake.other_channel_id)
        await final_message(fake, fake.other_channel_id)
        await fake.user_message(carol, "", mention=True)  # a bare mention gets a hint
        await fake.wait_until(
            lambda: any(m["content"] == EMPTY for m in fake.bot_messages(fake.channel_id))
        )
    finally:
        await stop_bot(adapter, engine)
    assert [t[1].text for t in backend.turns] == ["in the listed one"]


async def test_button_press_round_trips_after_restart(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    dave = fake.add_user("dave")
    try:
        await fake.user_message(dave, "shoes", mention=True)
        answer = await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter, engine)

    blue = components(answer)[0]
    assert blue["label"] == "Blue" and len(blue["custom_id"]) <= 100
    assert str(dave.id) in blue["custom_id"]

    # A new process: new client, new engine, the same store.
    backend2 = ScriptBackend()
    adapter2, engine2 = await start_bot(fake, backend2, store)
    try:
        since = len(fake.calls)
        await fake.press_button(dave, answer["id"], blue["custom_id"])
        ack = await fake.wait_call("POST", r"/interactions/\d+/[^/]+/callback", since=since)
        assert ack.body["type"] == 7  # acknowledged by updating the message...
        assert all(c["disabled"] for c in components(ack.body["data"]) if c["style"] != 5)
        assert [c for c in components(ack.body["data"]) if c["style"] == 5], "links stay"
        await fake.wait_until(lambda: len(fake.bot_messages(fake.channel_id)) >= 2)
        reply = await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter2, engine2)
    assert ack.at - fake.gateway_event_at("INTERACTION_CREATE") < 3.0
    session, inbound = backend2.turns[0]
    assert inbound.button_payload == LONG_PAYLOAD  # the full payload, not the 80-char label
    assert session == backend.turns[0][0], "the same backend session continues"
    assert reply["content"] == f"You said: {LONG_PAYLOAD}".strip()
    assert all(c["disabled"] for c in components(fake.messages[int(answer["id"])])[:2])


async def test_button_of_someone_else_gets_an_ephemeral_notice(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    try:
        erin, frank = fake.add_user("erin"), fake.add_user("frank")
        await fake.user_message(erin, "hats", mention=True)
        answer = await final_message(fake, fake.channel_id)
        since = len(fake.calls)
        await fake.press_button(frank, answer["id"], components(answer)[1]["custom_id"])
        ack = await fake.wait_call("POST", r"/interactions/\d+/[^/]+/callback", since=since)
        await asyncio.sleep(0.1)
    finally:
        await stop_bot(adapter, engine)
    assert ack.body["type"] == 4
    assert ack.body["data"]["flags"] == 64 and ack.body["data"]["content"] == NOT_FOR_YOU
    assert len(backend.turns) == 1, "frank's press reached no backend"
    assert not any(c.get("disabled") for c in components(fake.messages[int(answer["id"])]))


async def test_rate_limit_429_is_recovered_without_loss(store: SQLiteStore) -> None:
    async with FakeDiscord(message_bucket=FAST_BUCKET, edit_interval=0.3) as fake:
        backend = ScriptBackend(token_delay=0.01)
        words = " ".join(f"word{i}" for i in range(60))
        backend.reply = lambda inbound: ReplyMessage(text=words)
        adapter, engine = await start_bot(fake, backend, store, stream_interval=0.02)
        try:
            ivy = fake.add_user("ivy")
            await fake.user_message(ivy, "long answer please", mention=True)
            await fake.wait_until(
                lambda: any(m["content"] == words for m in fake.bot_messages(fake.channel_id)),
                timeout=10,
            )
        finally:
            await stop_bot(adapter, engine)
        assert fake.rate_limited >= 1, "the fake did answer 429"
        statuses = [c.status for c in fake.find_calls("PATCH")]
        assert 429 in statuses and statuses[-1] == 200
        assert [m["content"] for m in fake.bot_messages(fake.channel_id)] == [words]


async def test_long_answers_split_at_2000_without_breaking_markdown(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    code = "\n".join(f"line_{i} = {i}" for i in range(250))
    text = "**Big answer** " + "lorem ipsum " * 120 + "\n```python\n" + code + "\n```\nThe end."
    backend = ScriptBackend(token_delay=0.0)
    backend.reply = lambda inbound: ReplyMessage(
        text=text, buttons=(Button("More", payload="more"),)
    )
    adapter, engine = await start_bot(fake, backend, store)
    try:
        jo = fake.add_user("jo")
        await fake.user_message(jo, "everything", mention=True)
        await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter, engine)
    msgs = fake.bot_messages(fake.channel_id)
    assert len(msgs) >= 3
    assert all(len(m["content"]) <= 2000 for m in msgs)
    assert not [c for c in fake.calls if c.status == 400]
    for m in msgs:
        assert m["content"].count("```") % 2 == 0, "every piece closes its code block"
    assert msgs[-1]["content"].endswith("The end.") and msgs[-1]["components"]
    assert not any(m["components"] for m in msgs[:-1])
    joined = "".join(m["content"] for m in msgs)
    assert all(f"line_{i} = {i}" in joined for i in range(250))


async def test_component_limits(fake: FakeDiscord, store: SQLiteStore) -> None:
    many = tuple(
        Button(f"Option {i} " + "x" * 100, payload=f"p{i} " + "y" * 300) for i in range(30)
    )
    backend = ScriptBackend()
    backend.reply = lambda inbound: ReplyMessage(text="Pick one", buttons=many)
    adapter, engine = await start_bot(fake, backend, store)
    try:
        kim = fake.add_user("kim")
        await fake.user_message(kim, "options", mention=True)
        answer = await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter, engine)
    assert check_message_payload(answer) is None
    assert len(answer["components"]) <= 5
    assert all(len(row["components"]) <= 5 for row in answer["components"])
    comps = components(answer)
    assert len(comps) == 25
    assert all(len(c["label"]) <= 80 and c["label"].endswith("…") for c in comps)
    assert all(1 <= len(c["custom_id"]) <= 100 for c in comps)
    assert "Option 29" in answer["content"], "buttons past 25 are listed in the text"
    assert not [c for c in fake.calls if c.status == 400]


async def test_images_are_passed_and_non_images_refused(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store, max_image_bytes=1000)
    try:
        lea = fake.add_user("lea")
        await fake.dm_message(lea, "is this nice?", attachments=[("shoe.png", PNG, "image/png")])
        dm = fake.dm_channel_id(lea)
        await final_message(fake, dm)
        await fake.dm_message(lea, "", attachments=[("list.pdf", b"%PDF-1.4 ...", "image/png")])
        await fake.wait_until(lambda: len(fake.bot_messages(dm)) == 2)
        await fake.dm_message(lea, "", attachments=[("big.png", PNG * 100, "image/png")])
        await fake.wait_until(lambda: len(fake.bot_messages(dm)) == 3)
    finally:
        await stop_bot(adapter, engine)
    assert len(backend.turns) == 1
    image = backend.turns[0][1].images[0]
    assert image.mime_type == "image/png" and image.data == PNG
    refusal, too_big = (m["content"] for m in fake.bot_messages(dm)[1:])
    assert "not a photo" in refusal
    assert "too large" in too_big


async def test_messages_of_one_user_keep_their_order(
    store: SQLiteStore,
) -> None:
    # The first message's photo downloads slowly; the text messages after it must wait.
    async with FakeDiscord(message_bucket=FAST_BUCKET, attachment_delay=0.3) as fake:
        backend = ScriptBackend()
        backend.reply = lambda inbound: ReplyMessage(text=f"ok {inbound.text}")
        adapter, engine = await start_bot(fake, backend, store)
        try:
            max_ = fake.add_user("max")
            await fake.dm_message(max_, "one", attachments=[("a.png", PNG, "image/png")])
            await fake.dm_message(max_, "two")
            await fake.dm_message(max_, "three")
            dm = fake.dm_channel_id(max_)
            await fake.wait_until(lambda: len(fake.bot_messages(dm)) == 3)
        finally:
            await stop_bot(adapter, engine)
    assert [t[1].text for t in backend.turns] == ["one", "two", "three"]
    assert [m["content"] for m in fake.bot_messages(dm)] == ["ok one", "ok two", "ok three"]


async def test_thread_per_conversation(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store, threads=True)
    try:
        nia = fake.add_user("nia")
        await fake.user_message(nia, "new question", mention=True)
        created = await fake.wait_call("POST", r"/channels/\d+/messages/\d+/threads")
        thread_id = int(
            next(e["d"]["id"] for e in fake.gateway_events if e["t"] == "THREAD_CREATE")
        )
        await final_message(fake, thread_id)
        # follow-ups in the bot's thread need no mention
        await fake.user_message(nia, "and another", channel_id=thread_id)
        await fake.wait_until(lambda: len(fake.bot_messages(thread_id)) == 2)
    finally:
        await stop_bot(adapter, engine)
    assert created.body["name"] == "new question"
    keys = [t[1].key for t in backend.turns]
    assert keys[0] == keys[1]
    assert (keys[0].chat_id, keys[0].thread_id) == (str(fake.channel_id), str(thread_id))
    assert not fake.bot_messages(fake.channel_id), "the answer went into the thread"


async def test_conflicting_endpoints_are_refused(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    other = DiscordAdapter(
        name="other",
        token=fake.token,
        engine=Engine(bot="other", backend=backend, backend_name="script", store=store),
        options=options(fake, api_base_url="http://127.0.0.1:9/api/v10"),
        admins=frozenset(),
    )
    try:
        with pytest.raises(EndpointConflict, match="same api_base_url"):
            await other.start()
        assert fake.api_base_url == discord.http.Route.BASE
    finally:
        await stop_bot(adapter, engine)
    assert discord.http.Route.BASE == "https://discord.com/api/v10", "defaults restored"
    assert not adapter.connected


async def test_stop_lets_a_turn_in_progress_deliver_its_answer(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend(token_delay=0.05)
    backend.reply = lambda inbound: ReplyMessage(text="one two three four five six")
    adapter, engine = await start_bot(fake, backend, store)
    olaf = fake.add_user("olaf")
    await fake.dm_message(olaf, "quick")
    await fake.wait_until(lambda: bool(backend.turns))
    await stop_bot(adapter, engine)  # mid-stream
    contents = [m["content"] for m in fake.bot_messages(fake.dm_channel_id(olaf))]
    assert contents == ["one two three four five six"]


async def test_without_message_content_intent_only_mentions_and_dms(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(
        fake, backend, store, channels=[fake.channel_id], message_content_intent=False
    )
    try:
        pia = fake.add_user("pia")
        await fake.user_message(pia, "")  # what a listed channel delivers without the intent
        await fake.user_message(pia, "hi", mention=True)
        await final_message(fake, fake.channel_id)
        await fake.dm_message(pia, "dm")
        await final_message(fake, fake.dm_channel_id(pia))
    finally:
        await stop_bot(adapter, engine)
    assert [t[1].text for t in backend.turns] == ["hi", "dm"]
    assert len(fake.bot_messages(fake.channel_id)) == 1, "no hint answered the empty message"


def test_conflict_message_hides_proxy_credentials() -> None:
    from chatbridge.adapters.discord_adapter import endpoints

    endpoints.claim("a", "https://user:secret@proxy.example/api/v10", None)
    try:
        with pytest.raises(EndpointConflict) as info:
            endpoints.claim("b", None, None)
        assert "secret" not in str(info.value) and "proxy.example" in str(info.value)
    finally:
        endpoints.release("a")
    assert discord.http.Route.BASE == "https://discord.com/api/v10"


async def test_answer_ending_while_a_message_is_in_flight(store: SQLiteStore) -> None:
    # The Final arrives while the first streamed message is still being posted: the streaming
    # helper stops its preview then. The post must neither be duplicated nor stall discord.py.
    async with FakeDiscord(message_bucket=FAST_BUCKET, message_delay=0.5) as fake:
        backend = ScriptBackend(token_delay=0.05)
        backend.reply = lambda inbound: ReplyMessage(text="alpha beta gamma delta")
        adapter, engine = await start_bot(fake, backend, store)
        try:
            rita = fake.add_user("rita")
            started = asyncio.get_running_loop().time()
            await fake.dm_message(rita, "go")
            dm = fake.dm_channel_id(rita)
            await fake.wait_until(
                lambda: [m["content"] for m in fake.bot_messages(dm)] == ["alpha beta gamma delta"]
            )
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.3)  # nothing else arrives later
        finally:
            await stop_bot(adapter, engine)
        assert [m["content"] for m in fake.bot_messages(dm)] == ["alpha beta gamma delta"]
        assert elapsed < 3.0
        posts = fake.find_calls("POST", rf"/channels/{dm}/messages")
        assert [p.body["content"] for p in posts] == ["alpha"], "the preview post was reused"


async def test_missing_privileged_intent_is_reported_clearly(store: SQLiteStore) -> None:
    async with FakeDiscord(message_bucket=FAST_BUCKET, message_content_allowed=False) as fake:
        engine = Engine(bot="shop", backend=ScriptBackend(), backend_name="script", store=store)
        adapter = DiscordAdapter(
            name="shop",
            token=fake.token,
            engine=engine,
            options=options(fake),
            admins=frozenset(),
        )
        await adapter.start()
        try:
            with pytest.raises(RuntimeError, match="Message Content intent"):
                await adapter.wait_ready(5)
            assert not adapter.connected
        finally:
            await stop_bot(adapter, engine)
        # the documented fallback works with the same application
        adapter, engine = await start_bot(
            fake, ScriptBackend(), store, message_content_intent=False
        )
        try:
            assert adapter.connected
        finally:
            await stop_bot(adapter, engine)


async def test_one_shard_of_a_split_bot(fake: FakeDiscord, store: SQLiteStore) -> None:
    adapter, engine = await start_bot(fake, ScriptBackend(), store, shard_id=1, shard_count=3)
    try:
        assert adapter.connected
    finally:
        await stop_bot(adapter, engine)
    assert fake.identify_payloads[-1]["shard"] == [1, 3]
    with pytest.raises(ValueError, match="below shard_count"):
        options(fake, shard_id=3, shard_count=3)
    with pytest.raises(ValueError, match="go together"):
        options(fake, shard_id=0)


async def test_unknown_button_id_gets_an_expired_notice(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    try:
        sara = fake.add_user("sara")
        custom_id = f"cb:{sara.id}:NotInTheStore1"
        button = {"type": 2, "style": 1, "label": "Old", "custom_id": custom_id}
        row = {"type": 1, "components": [button]}
        old = fake.bot_message(fake.channel_id, "an answer from long ago", [row])
        since = len(fake.calls)
        await fake.press_button(sara, old["id"], custom_id)
        notice = await fake.wait_call("POST", r"/webhooks/\d+/[^/]+", since=since)
    finally:
        await stop_bot(adapter, engine)
    assert notice.body["content"] == EXPIRED and notice.body["flags"] == 64
    assert not backend.turns


async def test_buttons_for_an_answer_already_on_screen_take_one_edit(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    # The stream has shown the whole text before the Final arrives: the components then come
    # in one edit of their own, which does not send the text again.
    backend = ScriptBackend(token_delay=0.0)
    text = "All of it, already shown"

    async def turn(session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        yield Token(text)
        await asyncio.sleep(0.3)  # the preview writes the text meanwhile
        yield Final((ReplyMessage(text=text, buttons=(Button("Yes", payload="yes"),)),))

    backend.turn = turn
    adapter, engine = await start_bot(fake, backend, store)
    try:
        tom = fake.add_user("tom")
        await fake.dm_message(tom, "hi")
        final = await final_message(fake, fake.dm_channel_id(tom))
    finally:
        await stop_bot(adapter, engine)
    calls = [c for c in fake.calls if c.path.startswith(f"/channels/{fake.dm_channel_id(tom)}/m")]
    assert [c.method for c in calls] == ["POST", "PATCH"]
    assert "content" not in calls[1].body and calls[1].body["components"]
    assert final["content"] == text
