"""The bot-wide pacer: windows counted from grant to answer, urgent before streaming."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from chatbridge.core.pacer import STREAM, URGENT, Lane, Limit, Pacer, TokenBucket, Window


def test_a_call_in_flight_fills_the_window_until_its_answer() -> None:
    window = Window(2, 1.0)
    window.take(0.0)
    window.take(0.0)
    # both still in flight: nothing can go, however long we wait, until an answer comes
    assert window.ready_at(100.0, URGENT) == float("inf")
    window.done(5.0)
    # one answer: a call may go a full period after that answer, not after the grant
    assert window.ready_at(5.5, URGENT) == 6.0
    assert window.ready_at(6.0, URGENT) == 6.0


def test_streaming_calls_keep_headroom_and_the_sustained_pace() -> None:
    window = Window(20, 60.0, stream_limit=16)
    for _ in range(16):
        window.take(0.0)
        window.done(0.0)
    assert window.ready_at(1.0, URGENT) == 1.0  # urgent: 4 slots left
    assert window.ready_at(1.0, STREAM) == 60.0  # streaming: its share is used up
    fresh = Window(20, 60.0, stream_limit=16)
    fresh.take(0.0)
    fresh.done(0.0)
    assert fresh.ready_at(0.5, STREAM) == 3.0  # spread at 20 a minute: one per 3 s
    assert fresh.ready_at(0.5, URGENT) == 0.5


def test_a_call_that_never_went_gives_its_place_back() -> None:
    window = Window(1, 10.0)
    window.take(0.0)
    window.give_back()
    assert window.ready_at(0.0, URGENT) == 0.0


async def test_urgent_calls_go_before_queued_streaming_ones() -> None:
    pacer = Pacer(Window(1, 0.01))
    order: list[str] = []
    first = pacer.permit(None, URGENT)
    await first.__aenter__()  # holds the only slot

    async def call(name: str, priority: int) -> None:
        async with pacer.spend(None, priority):
            order.append(name)

    tasks = [
        asyncio.create_task(call("edit-1", STREAM)),
        asyncio.create_task(call("edit-2", STREAM)),
    ]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(call("final", URGENT)))
    await asyncio.sleep(0)
    assert pacer.queued == 3 and order == []
    await first.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    assert order == ["final", "edit-1", "edit-2"]


async def test_a_cancelled_waiter_costs_nothing_and_blocks_no_one() -> None:
    pacer = Pacer(Window(1, 0.01))
    holder = pacer.permit(None, URGENT)
    await holder.__aenter__()
    waiting = asyncio.create_task(pacer.permit(None, STREAM).__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await holder.__aexit__(None, None, None)
    async with asyncio.timeout(5):  # the next call is not stuck behind the cancelled one
        async with pacer.spend(None, URGENT):
            pass


async def test_a_held_permit_is_spent_by_the_call_inside_and_nesting_does_not_deadlock() -> None:
    windows: list[Limit] = []

    def chat(group: bool) -> list[Limit]:
        windows.append(Window(5, 60.0))
        return windows[-1:]

    pacer = Pacer(Window(10, 60.0), chat)
    lane = Lane(7)
    async with pacer.permit(lane, STREAM):
        async with pacer.spend(lane):  # uses the permit: no second wait
            pass
        async with asyncio.timeout(5), pacer.spend(lane):  # a second call: its own permit
            pass
    assert pacer.bot is not None and pacer.bot.count(0.0) == 2
    assert windows[0].count(0.0) == 2


async def test_calls_in_one_lane_go_one_at_a_time() -> None:
    pacer = Pacer(None, lambda group: [Window(100, 1.0)])
    active = 0
    most = 0

    async def call() -> None:
        nonlocal active, most
        async with pacer.spend(Lane("chat")):
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.001)
            active -= 1

    await asyncio.gather(*(call() for _ in range(10)))
    assert most == 1


def test_windows_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Window(0, 1.0)


def test_telegram_budget_from_options() -> None:
    from chatbridge.adapters.telegram.api import telegram_pacer
    from chatbridge.adapters.telegram.options import TelegramOptions

    pacer = telegram_pacer(TelegramOptions())
    assert pacer.bot is not None and (pacer.bot.limit, pacer.bot.period) == (30, 1.0)
    chat, group = pacer._chat_windows(False), pacer._chat_windows(True)
    bucket = chat[0]
    assert isinstance(bucket, TokenBucket) and (bucket.rate, bucket.burst) == (1.0, 3)
    assert isinstance(group[1], Window) and (group[1].limit, group[1].period) == (20, 60.0)
    # a quick reply (or a button press) right after an answer is not held back by the burst
    for _ in range(2):
        bucket.take(0.0)
        bucket.done(0.0)
    assert bucket.ready_at(0.1, URGENT) == 0.1
    bucket.take(0.1)
    bucket.done(0.1)
    # past the burst: one a second, not a whole burst's period later
    assert bucket.ready_at(0.2, URGENT) == pytest.approx(1.0)
    off = telegram_pacer(TelegramOptions(chat_rate=0, bot_rate=0, group_rate=0))
    assert off.bot is None and off._chat_windows(True) == []


def test_draft_budget_holds_streaming_drafts_but_never_a_first_one() -> None:
    from chatbridge.adapters.telegram.api import draft_pacer
    from chatbridge.adapters.telegram.options import TelegramOptions

    pacer = draft_pacer(TelegramOptions(draft_rate=2))
    assert pacer is not None and pacer.bot is not None
    window = pacer.bot
    for _ in range(5):  # five first drafts at once: none waits
        assert window.ready_at(0.0, URGENT) == 0.0
        window.take(0.0)
        window.done(0.0)
    assert window.ready_at(0.5, STREAM) == 1.0  # streaming updates wait for the budget
    assert draft_pacer(TelegramOptions(draft_rate=0)) is None


def test_token_bucket_streams_keep_one_message_for_the_final() -> None:
    bucket = TokenBucket(1.0, 3, stream_burst=2)
    for _ in range(2):
        bucket.take(0.0)
        bucket.done(0.0)
    assert bucket.ready_at(0.0, STREAM) == pytest.approx(1.0)  # its share is used
    assert bucket.ready_at(0.0, URGENT) == 0.0  # the final still goes at once
    bucket.take(0.0)  # a call answered, still holding its permit: a nested call counts it
    assert bucket.ready_at(5.0, URGENT) == 5.0
    bucket.take(5.0)
    bucket.take(5.0)
    assert bucket.ready_at(5.0, URGENT) == pytest.approx(6.0)


def test_a_budget_without_urgent_limit_still_spreads_its_streaming_calls() -> None:
    # the draft budget: urgent calls (a chat's first draft) never wait, streaming ones are
    # spread at their own rate instead of a whole second's worth going at once
    window = Window(1_000_000, 1.0, stream_limit=200, stream_spacing=1 / 200)
    window.take(0.0)
    assert window.ready_at(0.001, STREAM) == pytest.approx(0.005)
    assert window.ready_at(0.001, URGENT) == 0.001
