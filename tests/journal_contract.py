"""The Journal contract: every journal implementation runs these tests.

Subclass :class:`JournalContract` as ``Test<Impl>Journal`` and provide an async ``journal``
fixture yielding a fresh, empty journal (its store closed afterwards).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from chatbridge.core.html import parse_reply_html
from chatbridge.core.protocols import Journal
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Image,
    Inbound,
    ReplyMessage,
    TurnState,
)

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def key(user: str = "u1", chat: str = "c1", bot: str = "sellers") -> ConversationKey:
    return ConversationKey(bot=bot, platform="telegram", chat_id=chat, user_id=user)


def inbound(text: str = "hello", msg: str | None = "m1", **kw: Any) -> Inbound:
    return Inbound(key=kw.pop("k", key()), text=text, message_id=msg, **kw)


class JournalContract:
    """Behaviour every ``core.protocols.Journal`` must show."""

    journal: Any

    def test_is_a_journal(self, journal: Journal) -> None:
        assert isinstance(journal, Journal)

    async def test_record_returns_received_entry_with_the_inbound(self, journal: Journal) -> None:
        full = Inbound(
            key=ConversationKey("sellers", "discord", "c9", "u9", "thread-ü"),
            text="olá ✓ 👨‍👩‍👧",
            images=(Image(b"\x89PNG\r\n\x00\xff", "image/png"), Image(b"jpeg", "image/jpeg")),
            button_payload="Sim",
            language="pt-PT",
            message_id="123456789012345678",
        )
        entry = await journal.record(full, "src-1")
        assert entry is not None
        assert entry.state is TurnState.RECEIVED and entry.inbound == full
        assert entry.source == "src-1" and entry.answer is None
        (stored,) = await journal.unfinished("sellers")
        assert stored.inbound == full  # images, thread, button and language survive
        assert stored.seq == entry.seq and stored.state is TurnState.RECEIVED
        assert stored.received_at.utcoffset() == timedelta(0)

    async def test_recording_a_source_twice_is_a_no_op(self, journal: Journal) -> None:
        first = await journal.record(inbound("a"), "u:1")
        assert first is not None
        assert await journal.record(inbound("a again"), "u:1") is None
        (only,) = await journal.unfinished("sellers")
        assert only.inbound.text == "a"

    async def test_sources_are_per_bot(self, journal: Journal) -> None:
        assert await journal.record(inbound(k=key(bot="a")), "u:1") is not None
        assert await journal.record(inbound(k=key(bot="b")), "u:1") is not None

    async def test_seq_is_arrival_order_and_unfinished_lists_by_it(self, journal: Journal) -> None:
        seqs = []
        for i in range(6):
            entry = await journal.record(inbound(f"t{i}", k=key(user=f"u{i % 2}")), f"s{i}")
            assert entry is not None
            seqs.append(entry.seq)
        assert seqs == sorted(seqs) and len(set(seqs)) == 6
        listed = await journal.unfinished("sellers")
        assert [e.inbound.text for e in listed] == [f"t{i}" for i in range(6)]

    async def test_concurrent_records_get_distinct_seqs(self, journal: Journal) -> None:
        entries = await asyncio.gather(
            *(journal.record(inbound(f"t{i}"), f"s{i}") for i in range(20))
        )
        assert len({e.seq for e in entries if e is not None}) == 20

    async def test_unfinished_is_per_bot(self, journal: Journal) -> None:
        await journal.record(inbound(k=key(bot="a")), "1")
        await journal.record(inbound(k=key(bot="b")), "2")
        assert [e.source for e in await journal.unfinished("a")] == ["1"]
        assert await journal.unfinished("nobody") == []

    async def test_states_move_and_finished_ones_leave_unfinished(self, journal: Journal) -> None:
        entries = []
        for i in range(5):
            entry = await journal.record(inbound(f"t{i}"), f"s{i}")
            assert entry is not None
            entries.append(entry)
        bot = "sellers"
        await journal.advance(bot, entries[0].seq, TurnState.SENT)
        await journal.answer(bot, entries[1].seq, [ReplyMessage("ok")])
        await journal.advance(bot, entries[2].seq, TurnState.DELIVERED)
        await journal.advance(bot, entries[3].seq, TurnState.REFUSED)
        await journal.advance(bot, entries[4].seq, TurnState.FAILED_NOTIFIED)
        listed = await journal.unfinished(bot)
        assert [(e.inbound.text, e.state) for e in listed] == [
            ("t0", TurnState.SENT),
            ("t1", TurnState.ANSWERED),
        ]
        assert listed[1].updated_at >= listed[1].received_at

    async def test_answer_round_trips(self, journal: Journal) -> None:
        entry = await journal.record(inbound(), "s")
        assert entry is not None
        answer = (
            parse_reply_html(
                '<p>Olá <b>✓</b> <a href="https://shop.example/p?id=1">Loja</a></p>'
                "<ul><li><code>x</code></li></ul><pre>  y</pre>",
                "Olá <b>",
            ),
            ReplyMessage(
                "Escolhe",
                buttons=(
                    Button("Sim", payload="yes", id="abc123"),
                    Button("Site", url="https://x.example/"),
                ),
            ),
            ReplyMessage("second"),
        )
        await journal.answer("sellers", entry.seq, answer)
        (stored,) = await journal.unfinished("sellers")
        assert stored.state is TurnState.ANSWERED and stored.answer == answer

    async def test_advance_unknown_entry_is_harmless(self, journal: Journal) -> None:
        await journal.advance("sellers", 999_999, TurnState.DELIVERED)
        await journal.answer("sellers", 999_999, [ReplyMessage("x")])
        assert await journal.unfinished("sellers") == []

    async def test_last_messages_per_chat(self, journal: Journal) -> None:
        await journal.record(inbound(msg="100", k=key(chat="c1")), "a")
        await journal.record(inbound(msg="105", k=key(chat="c1", user="u2")), "b")
        await journal.record(inbound(msg="7", k=key(chat="c2")), "c")
        await journal.record(inbound(msg=None, k=key(chat="c3")), "d")
        await journal.record(inbound(msg="9", k=key(chat="c9", bot="other")), "e")
        assert await journal.last_messages("sellers", LONG_AGO) == {"c1": "105", "c2": "7"}
        future = datetime.now(UTC) + timedelta(hours=1)
        assert await journal.last_messages("sellers", future) == {}

    async def test_prune_forgets_only_old_finished_entries(self, journal: Journal) -> None:
        done = await journal.record(inbound("done"), "s1")
        open_ = await journal.record(inbound("open"), "s2")
        assert done is not None and open_ is not None
        await journal.advance("sellers", done.seq, TurnState.DELIVERED)
        assert await journal.prune(timedelta(hours=1)) == 0  # finished, but recent
        await asyncio.sleep(0.01)
        assert await journal.prune(timedelta(0)) == 1
        assert [e.source for e in await journal.unfinished("sellers")] == ["s2"]
        # a pruned source may be recorded again (the platform forgot it long ago too)
        assert await journal.record(inbound("done"), "s1") is not None
        assert await journal.record(inbound("open"), "s2") is None
