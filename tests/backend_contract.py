"""A reusable contract suite for :class:`core.protocols.Backend`.

Subclass :class:`BackendContract` in a ``Test*`` class and provide the ``backend_factory``
fixture: it yields a Backend connected to its emulator (and cleans up after). Override the
class attributes when the backend needs other inputs. The class itself is not collected
(its name does not start with ``Test``).

    class TestLoopOSContract(BackendContract):
        @pytest.fixture
        async def backend_factory(self) -> AsyncIterator[Backend]:
            ...
            yield backend
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from chatbridge.core.protocols import Backend
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Failure,
    Final,
    Image,
    Inbound,
    Notice,
    ReplyMessage,
    Snapshot,
    Token,
)

__all__ = ["TINY_PNG", "BackendContract", "collect", "inbound", "key"]


def _tiny_png() -> bytes:
    from PIL import Image as PILImage  # dev dependency, tests only

    buf = io.BytesIO()
    PILImage.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


TINY_PNG: bytes = _tiny_png()


def key(user: str = "u1", chat: str = "c1", bot: str = "contract") -> ConversationKey:
    return ConversationKey(bot=bot, platform="test", chat_id=chat, user_id=user)


def inbound(
    text: str = "",
    *,
    k: ConversationKey | None = None,
    images: tuple[Image, ...] = (),
    button: str | None = None,
    language: str | None = None,
) -> Inbound:
    return Inbound(
        key=k or key(), text=text, images=images, button_payload=button, language=language
    )


async def collect(backend: Backend, session_ref: str, turn: Inbound) -> list[Event]:
    return [event async for event in backend.turn(session_ref, turn)]


def final_text(events: list[Event]) -> str:
    last = events[-1]
    assert isinstance(last, Final), f"expected a Final, got {last!r}"
    return "\n".join(m.text for m in last.messages)


class BackendContract:
    """What every Backend promises the engine."""

    first_text: str = "hello"  # a first message the backend answers normally
    second_text: str = "something else"  # a follow-up that moves the conversation on
    image_text: str = "here is a photo"
    language: str | None = None
    deterministic: bool = True  # same input in a fresh session -> same first answer

    @pytest.fixture
    async def backend_factory(self) -> AsyncIterator[Backend]:
        raise NotImplementedError("subclasses provide a backend connected to its emulator")
        yield  # pragma: no cover

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def assert_turn_shape(events: list[Event]) -> None:
        assert events, "a turn yields at least its terminal event"
        for event in events:
            assert isinstance(event, Token | Snapshot | Final | Notice | Failure), event
        terminal = [e for e in events if isinstance(e, Final | Failure)]
        assert len(terminal) == 1, f"exactly one Final or Failure, got {terminal!r}"
        assert events[-1] is terminal[0], "the Final/Failure is the last event"

    # --- the contract -----------------------------------------------------------------------

    async def test_is_a_backend(self, backend_factory: Backend) -> None:
        assert isinstance(backend_factory, Backend)
        assert isinstance(backend_factory.name, str) and backend_factory.name

    async def test_open_returns_non_empty_str(self, backend_factory: Backend) -> None:
        ref = await backend_factory.open(key(), self.language)
        assert isinstance(ref, str) and ref
        other = await backend_factory.open(key("u2"), self.language)
        assert other != ref, "each session has its own reference"

    async def test_text_turn_ends_in_one_final(self, backend_factory: Backend) -> None:
        ref = await backend_factory.open(key(), self.language)
        events = await collect(backend_factory, ref, inbound(self.first_text))
        self.assert_turn_shape(events)
        last = events[-1]
        assert isinstance(last, Final), f"a healthy emulator answers: {last!r}"
        assert last.messages and all(isinstance(m, ReplyMessage) for m in last.messages)
        assert any(m.text or m.buttons for m in last.messages)

    async def test_two_sessions_are_independent(self, backend_factory: Backend) -> None:
        a = await backend_factory.open(key("ua"), self.language)
        b = await backend_factory.open(key("ub"), self.language)
        first_a = await collect(backend_factory, a, inbound(self.first_text, k=key("ua")))
        second_a = await collect(backend_factory, a, inbound(self.second_text, k=key("ua")))
        first_b = await collect(backend_factory, b, inbound(self.first_text, k=key("ub")))
        for events in (first_a, second_a, first_b):
            self.assert_turn_shape(events)
            assert isinstance(events[-1], Final)
        if self.deterministic:
            # b did not see a's second turn: its first answer is a's first answer
            assert final_text(first_b) == final_text(first_a)

    async def test_close_and_aclose_are_idempotent(self, backend_factory: Backend) -> None:
        ref = await backend_factory.open(key(), self.language)
        await collect(backend_factory, ref, inbound(self.first_text))
        await backend_factory.close(ref)
        await backend_factory.close(ref)
        await backend_factory.close("never-opened")
        await backend_factory.aclose()
        await backend_factory.aclose()

    async def test_image_turn(self, backend_factory: Backend) -> None:
        ref = await backend_factory.open(key(), self.language)
        photo = Image(TINY_PNG, "image/png")
        events = await collect(backend_factory, ref, inbound(self.image_text, images=(photo,)))
        self.assert_turn_shape(events)
        assert isinstance(events[-1], Final), events[-1]
