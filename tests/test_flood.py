"""FloodControl: sliding window per user, on a fake clock (no sleeping)."""

from __future__ import annotations

import time

import pytest

from chatbridge.core.flood import FloodControl
from chatbridge.core.types import ConversationKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(user: str = "u1", chat: str = "c1", bot: str = "sellers") -> ConversationKey:
    return ConversationKey(bot=bot, platform="telegram", chat_id=chat, user_id=user)


def test_allows_up_to_the_limit_then_says_when() -> None:
    clock = Clock()
    flood = FloodControl(3, clock=clock)
    for _ in range(3):  # turns at t=0, 1, 2
        assert flood.check(key()) is None
        clock.now += 1
    clock.now += 7  # t=10
    assert flood.check(key()) == pytest.approx(50.0)
    clock.now += 49.5  # t=59.5
    assert flood.check(key()) == pytest.approx(0.5)
    clock.now += 0.5  # t=60: the t=0 turn leaves the window
    assert flood.check(key()) is None
    assert flood.check(key()) == pytest.approx(1.0)  # next to leave: t=1


def test_sliding_not_fixed_window() -> None:
    clock = Clock()
    flood = FloodControl(2, clock=clock)
    assert flood.check(key()) is None  # t=0
    clock.now += 40
    assert flood.check(key()) is None  # t=40
    clock.now += 30  # t=70: the t=0 turn left, the t=40 one stays
    assert flood.check(key()) is None
    wait = flood.check(key())  # window holds t=40 and t=70
    assert wait == pytest.approx(30.0)


def test_refused_messages_do_not_extend_the_wait() -> None:
    clock = Clock()
    flood = FloodControl(1, clock=clock)
    assert flood.check(key()) is None
    for _ in range(20):
        clock.now += 1
        assert flood.check(key()) is not None
    clock.now = 1000.0 + 60
    assert flood.check(key()) is None


def test_per_user_across_chats_and_separate_per_bot_and_user() -> None:
    clock = Clock()
    flood = FloodControl(2, clock=clock)
    assert flood.check(key(chat="group")) is None
    assert flood.check(key(chat="private")) is None
    assert flood.check(key(chat="third")) is not None  # same user, any chat
    assert flood.check(key(user="u2")) is None  # another user
    assert flood.check(key(bot="shoppers")) is None  # same user id on another bot


def test_zero_disables() -> None:
    flood = FloodControl(0)
    assert not flood.enabled
    assert all(flood.check(key()) is None for _ in range(1000))


def test_reset_and_idle_users_are_forgotten() -> None:
    clock = Clock()
    flood = FloodControl(1, clock=clock)
    assert flood.check(key()) is None
    assert flood.check(key()) is not None
    flood.reset(key())
    assert flood.check(key()) is None

    for i in range(1500):
        flood.check(key(user=f"idle{i}"))
    clock.now += 61
    for _ in range(1024):  # a sweep runs every 1024 checks
        flood.check(key(user="active"))
    assert len(flood) <= 2


def test_custom_bucket_and_real_clock() -> None:
    flood = FloodControl(2, window=0.2, bucket=lambda k: "everyone")
    assert flood.check("a") is None
    assert flood.check("b") is None
    wait = flood.check("c")
    assert wait is not None and 0 < wait <= 0.2
    time.sleep(wait + 0.01)
    assert flood.check("d") is None
