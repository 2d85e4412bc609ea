"""The SessionStore contract: every store implementation runs these tests.

Subclass :class:`SessionStoreContract` as ``Test<Impl>Contract`` and provide an async ``store``
fixture yielding a fresh, empty store (closing it afterwards; ``close`` must be idempotent).
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatbridge.core.protocols import SessionStore
from chatbridge.core.types import ConversationKey, SessionRecord

URL_SAFE = set(string.ascii_letters + string.digits + "-_")
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def key(
    user: str = "u1",
    chat: str = "c1",
    bot: str = "sellers",
    thread: str | None = None,
    platform: str = "telegram",
) -> ConversationKey:
    return ConversationKey(bot=bot, platform=platform, chat_id=chat, user_id=user, thread_id=thread)


def record(
    k: ConversationKey,
    *,
    ref: str = "ref-1",
    minutes: int = 0,
    backend: str = "sellers-ai",
    language: str | None = "pt-PT",
    turns: int = 0,
) -> SessionRecord:
    """A record last active ``minutes`` after T0 (larger = more recent)."""
    return SessionRecord(
        key=k,
        backend=backend,
        session_ref=ref,
        language=language,
        created_at=T0,
        last_active=T0 + timedelta(minutes=minutes),
        turn_count=turns,
    )


def refs(records: Sequence[SessionRecord]) -> list[str]:
    return [r.session_ref for r in records]


class SessionStoreContract:
    """Behaviour every ``core.protocols.SessionStore`` must show."""

    store: Any  # provided as a fixture by subclasses

    def test_is_a_session_store(self, store: SessionStore) -> None:
        assert isinstance(store, SessionStore)

    # --- get / put ----------------------------------------------------------------------------

    async def test_get_unknown_is_none(self, store: SessionStore) -> None:
        assert await store.get(key()) is None

    async def test_put_get_roundtrip_keeps_every_field(self, store: SessionStore) -> None:
        rec = SessionRecord(
            key=key(thread="topic-7", platform="discord"),
            backend="shop",
            session_ref="tok-ünïcødé-✓",
            language=None,
            created_at=datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
            last_active=datetime(2025, 3, 4, 6, 0, 0, 1, tzinfo=UTC),
            turn_count=42,
        )
        await store.put(rec)
        got = await store.get(rec.key)
        assert got == rec
        assert got is not None and got.created_at.utcoffset() == timedelta(0)

    async def test_times_come_back_in_utc(self, store: SessionStore) -> None:
        from datetime import timezone

        lisbon_summer = timezone(timedelta(hours=1))
        local = datetime(2026, 6, 1, 13, 0, tzinfo=lisbon_summer)
        await store.put(SessionRecord(key(), "b", "r", None, created_at=local, last_active=local))
        got = await store.get(key())
        assert got is not None
        assert got.created_at == local  # same instant
        assert got.created_at.utcoffset() == timedelta(0)
        assert got.created_at.hour == 12

    async def test_put_replaces_existing(self, store: SessionStore) -> None:
        await store.put(record(key(), ref="old", turns=3))
        await store.put(record(key(), ref="new", turns=0, language="en"))
        got = await store.get(key())
        assert got is not None
        assert (got.session_ref, got.turn_count, got.language) == ("new", 0, "en")
        assert await store.count() == 1

    async def test_put_new_writes_only_where_no_other_session_is_stored(
        self, store: SessionStore
    ) -> None:
        mine = record(key(), ref="mine", turns=0, language="en")
        assert await store.put_new(mine) == mine  # none stored: written
        got = await store.get(key())
        assert got is not None and (got.session_ref, got.language) == ("mine", "en")
        # another replica opened one meanwhile: kept, and returned as stored
        await store.delete(key())
        await store.put(record(key(), ref="theirs", turns=2))
        kept = await store.put_new(record(key(), ref="late"))
        assert (kept.session_ref, kept.turn_count) == ("theirs", 2)
        got = await store.get(key())
        assert got is not None and got.session_ref == "theirs"
        assert await store.count() == 1

    async def test_put_new_replaces_only_the_session_it_names(self, store: SessionStore) -> None:
        await store.put(record(key(), ref="expired", turns=4))
        renewed = record(key(), ref="renewed", turns=4)
        assert await store.put_new(renewed, replacing="expired") == renewed
        # a second replica replacing the same expired session finds the first one's
        kept = await store.put_new(record(key(), ref="twice"), replacing="expired")
        assert kept.session_ref == "renewed"
        got = await store.get(key())
        assert got is not None and got.session_ref == "renewed"
        assert [r.session_ref for r in await store.list()] == ["renewed"]

    async def test_concurrent_put_new_keep_one_session(self, store: SessionStore) -> None:
        got = await asyncio.gather(*(store.put_new(record(key(), ref=f"r{i}")) for i in range(8)))
        stored = await store.get(key())
        assert stored is not None
        assert {r.session_ref for r in got} == {stored.session_ref}

    async def test_sessions_are_per_user_per_chat_per_thread(self, store: SessionStore) -> None:
        keys = [
            key(),
            key(user="u2"),
            key(chat="c2"),
            key(thread="t1"),
            key(bot="shoppers"),
            key(platform="discord"),
        ]
        for i, k in enumerate(keys):
            await store.put(record(k, ref=f"r{i}"))
        for i, k in enumerate(keys):
            got = await store.get(k)
            assert got is not None and got.session_ref == f"r{i}"
            assert got.key == k
        assert await store.count() == len(keys)

    # --- touch --------------------------------------------------------------------------------

    async def test_touch_increments_and_updates_last_active(self, store: SessionStore) -> None:
        await store.put(record(key(), turns=2))
        before = datetime.now(UTC)
        await store.touch(key())
        await store.touch(key())
        got = await store.get(key())
        assert got is not None
        assert got.turn_count == 4
        assert got.last_active >= before - timedelta(seconds=1)
        assert got.last_active <= datetime.now(UTC) + timedelta(seconds=1)
        assert got.created_at == T0  # untouched

    async def test_touch_unknown_key_creates_nothing(self, store: SessionStore) -> None:
        await store.touch(key())
        assert await store.get(key()) is None
        assert await store.count() == 0

    async def test_concurrent_touches_are_all_counted(self, store: SessionStore) -> None:
        await store.put(record(key()))
        await asyncio.gather(*(store.touch(key()) for _ in range(40)))
        got = await store.get(key())
        assert got is not None and got.turn_count == 40

    async def test_touch_moves_session_to_the_front(self, store: SessionStore) -> None:
        await store.put(record(key(user="a"), ref="a", minutes=1))
        await store.put(record(key(user="b"), ref="b", minutes=2))
        await store.touch(key(user="a"))  # now: far later than T0
        assert refs(await store.list()) == ["a", "b"]

    # --- delete -------------------------------------------------------------------------------

    async def test_delete(self, store: SessionStore) -> None:
        await store.put(record(key()))
        await store.put(record(key(user="u2"), ref="other"))
        assert await store.delete(key()) is True
        assert await store.get(key()) is None
        assert await store.delete(key()) is False
        assert refs(await store.list()) == ["other"]

    async def test_delete_all_by_bot_and_everything(self, store: SessionStore) -> None:
        for i in range(3):
            await store.put(record(key(user=f"s{i}", bot="sellers")))
        for i in range(2):
            await store.put(record(key(user=f"p{i}", bot="shoppers")))
        assert await store.delete_all("nobody") == 0
        assert await store.delete_all("sellers") == 3
        assert await store.count("sellers") == 0
        assert await store.count("shoppers") == 2
        assert await store.delete_all() == 2
        assert await store.count() == 0
        assert await store.delete_all() == 0

    # --- list / count -------------------------------------------------------------------------

    async def test_list_most_recent_first_with_limit(self, store: SessionStore) -> None:
        for minutes in (5, 1, 9, 3, 7):
            await store.put(record(key(user=f"u{minutes}"), ref=f"m{minutes}", minutes=minutes))
        assert refs(await store.list()) == ["m9", "m7", "m5", "m3", "m1"]
        assert refs(await store.list(limit=2)) == ["m9", "m7"]
        assert await store.list(limit=0) == []

    async def test_list_filters_by_bot_and_user(self, store: SessionStore) -> None:
        await store.put(record(key(user="alice", chat="g1", bot="sellers"), ref="a1", minutes=1))
        await store.put(record(key(user="alice", chat="g2", bot="sellers"), ref="a2", minutes=4))
        await store.put(record(key(user="bob", chat="g1", bot="sellers"), ref="b1", minutes=3))
        await store.put(record(key(user="alice", chat="d", bot="shoppers"), ref="a3", minutes=2))
        assert refs(await store.list(bot="sellers")) == ["a2", "b1", "a1"]
        assert refs(await store.list(user_id="alice")) == ["a2", "a3", "a1"]
        assert refs(await store.list(bot="sellers", user_id="alice")) == ["a2", "a1"]
        assert refs(await store.list(bot="sellers", user_id="alice", limit=1)) == ["a2"]
        assert await store.list(bot="nobody") == []
        assert await store.list(user_id="carol") == []

    async def test_count(self, store: SessionStore) -> None:
        assert await store.count() == 0
        await store.put(record(key(user="1", bot="sellers")))
        await store.put(record(key(user="2", bot="sellers")))
        await store.put(record(key(user="3", bot="shoppers")))
        assert await store.count() == 3
        assert await store.count("sellers") == 2
        assert await store.count("shoppers") == 1
        assert await store.count("nobody") == 0

    # --- button short ids ---------------------------------------------------------------------

    async def test_short_id_is_deterministic_short_and_url_safe(self, store: SessionStore) -> None:
        payloads = [
            "Sim",
            "Quero vender um iPhone 12 — 128 GB, cor azul, com caixa e carregador original",
            "✓ ünïcødé 🙂",
            "x" * 5000,
            "",
        ]
        ids = []
        for payload in payloads:
            first = await store.short_id(payload)
            assert await store.short_id(payload) == first
            assert 1 <= len(first) <= 16
            assert first.isascii() and set(first) <= URL_SAFE
            assert await store.resolve(first) == payload
            ids.append(first)
        assert len(set(ids)) == len(ids)

    async def test_short_id_same_payload_same_id_across_stores(self, store: SessionStore) -> None:
        # Deterministic means derived from the payload, not from an insertion counter: a
        # payload gets the same id whatever was issued before it.
        await store.short_id("something else first")
        from chatbridge.core.store._common import short_id_candidates

        assert await store.short_id("Sim") == short_id_candidates("Sim")[0]

    async def test_concurrent_short_ids_agree(self, store: SessionStore) -> None:
        ids = await asyncio.gather(*(store.short_id(f"p{i % 5}") for i in range(50)))
        assert len(set(ids)) == 5
        for i, short in enumerate(ids):
            assert await store.resolve(short) == f"p{i % 5}"

    async def test_short_ids_in_one_batch_match_single_ids(self, store: SessionStore) -> None:
        assert await store.short_ids([]) == []
        before = await store.short_id("Já tinha id")
        payloads = ["Sim", "Não", "Sim", "Já tinha id", "x" * 3000, "🙂"]
        ids = await store.short_ids(payloads)
        assert len(ids) == len(payloads)
        assert ids[0] == ids[2] and ids[3] == before  # same payload, same id
        assert len(set(ids)) == 5
        for payload, short in zip(payloads, ids, strict=True):
            assert await store.resolve(short) == payload
            assert await store.short_id(payload) == short

    async def test_short_ids_batch_keeps_ids_alive(self, store: Any) -> None:
        kept, dropped = await store.short_ids(["kept", "dropped"])
        await asyncio.sleep(0.2)
        assert await store.short_ids(["kept"]) == [kept]  # re-issued in a batch
        assert await store.prune(timedelta(milliseconds=100)) == 1
        assert await store.resolve(kept) == "kept"
        assert await store.resolve(dropped) is None

    async def test_resolve_unknown_is_none(self, store: SessionStore) -> None:
        assert await store.resolve("nope") is None
        assert await store.resolve("") is None
        assert await store.resolve("A" * 16) is None

    async def test_prune_forgets_old_ids_only(self, store: Any) -> None:
        old = await store.short_id("old payload")
        await asyncio.sleep(0.2)
        fresh = await store.short_id("fresh payload")
        # Cutoff 100 ms ago: between the two issues, with 100 ms margin on each side.
        assert await store.prune(timedelta(milliseconds=100)) == 1
        assert await store.resolve(old) is None
        assert await store.resolve(fresh) == "fresh payload"
        assert await store.prune() == 0  # default TTL (days): nothing that old
        # A pruned payload issued again gets its old id back (derived from the payload).
        assert await store.short_id("old payload") == old
        assert await store.resolve(old) == "old payload"

    async def test_reissue_keeps_id_alive(self, store: Any) -> None:
        kept = await store.short_id("kept")
        dropped = await store.short_id("dropped")
        await asyncio.sleep(0.2)
        assert await store.short_id("kept") == kept  # re-issued: alive for another TTL
        assert await store.prune(timedelta(milliseconds=100)) == 1
        assert await store.resolve(kept) == "kept"
        assert await store.resolve(dropped) is None

    # --- lifecycle ----------------------------------------------------------------------------

    async def test_ping_and_close(self, store: SessionStore) -> None:
        assert await store.ping() is True
        await store.close()
        assert await store.ping() is False
        await store.close()  # idempotent

    async def test_use_after_close_raises(self, store: SessionStore) -> None:
        await store.close()
        with pytest.raises(Exception):  # noqa: B017 - which error is implementation-specific
            await store.get(key())
