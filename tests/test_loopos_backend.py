"""LoopOSBackend against the LoopOS emulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from backend_contract import TINY_PNG, BackendContract, collect, inbound, key

from chatbridge.core.backends.loopos import (
    Decision,
    LoopOSBackend,
    LoopOSError,
    LoopOSSettings,
    loopos_language,
)
from chatbridge.core.engine import Engine
from chatbridge.core.protocols import Backend, ListingDescriber
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import (
    Failure,
    FailureKind,
    FailureReason,
    Final,
    Image,
    ListingRequest,
    ReplyMessage,
)
from chatbridge.emulators.loopos import LoopOSEmulator

CORE = "https://core.example/"
SUBMISSION = "https://submission.example/"
PHOTO = Image(TINY_PNG, "image/png")


def settings(url: str, **overrides: Any) -> LoopOSSettings:
    values: dict[str, Any] = {
        "base_url": url,
        "core_base_url": CORE,
        "submission_base_url": SUBMISSION,
        "context": "Circular economy marketplace",
        "timeout": 5.0,
        "retry": {"attempts": 3, "base_delay": 0.01},
    }
    values.update(overrides)
    return LoopOSSettings.from_dict(values)


@pytest.fixture
async def backend(loopos: LoopOSEmulator) -> AsyncIterator[LoopOSBackend]:
    b = LoopOSBackend(settings(loopos.url), name="sellers-ai")
    try:
        yield b
    finally:
        await b.aclose()


class TestLoopOSContract(BackendContract):
    first_text = "Quero vender um iPhone 12"
    second_text = "128 GB"
    image_text = "Quero vender um iPhone 12"

    @pytest.fixture
    async def backend_factory(self, loopos: LoopOSEmulator) -> AsyncIterator[Backend]:
        b = LoopOSBackend(settings(loopos.url))
        try:
            yield b
        finally:
            await b.aclose()


async def one_turn(backend: LoopOSBackend, ref: str, text: str = "", **kw: Any) -> Final | Failure:
    events = await collect(backend, ref, inbound(text, **kw))
    BackendContract.assert_turn_shape(events)
    last = events[-1]
    assert isinstance(last, Final | Failure)
    return last


def reply_text(event: Final | Failure) -> str:
    assert isinstance(event, Final), event
    return "\n".join(m.text for m in event.messages)


def button_payloads(event: Final | Failure) -> list[str]:
    assert isinstance(event, Final), event
    return [b.payload or "" for m in event.messages for b in m.buttons]


# --- fields -----------------------------------------------------------------------------------


async def test_every_documented_field_is_sent(loopos: LoopOSEmulator) -> None:
    b = LoopOSBackend(
        settings(
            loopos.url,
            session_extra_data={"channel": "telegram"},
            agent_specific={"flow": "c2c"},
            headers={"X-Api-Key": "k"},
        )
    )
    try:
        ref = await b.open(key(), "pt")
        await one_turn(b, ref, "Quero vender um iPhone 12", images=(PHOTO,), language="en-GB")
        await one_turn(b, ref, "ignored", button="128 GB")
    finally:
        await b.aclose()
    first, second = loopos.requests_to("/chat")
    assert first == {
        "language": "en-US",  # every English is the documents' "en-US"
        "messages": [{"role": "user", "text": "Quero vender um iPhone 12"}],
        "images": ["data:image/png;base64," + base64.b64encode(TINY_PNG).decode()],
        "conversation": True,
        "session_id": ref,
        "loopos_core_context": "Circular economy marketplace",
        "loopos_core_base_url": CORE,
        "loopos_submission_base_url": SUBMISSION,
        "session_extra_data": {"channel": "telegram"},
        "agent_specific": {"flow": "c2c"},
    }
    # a pressed button sends its payload as the user's text; no user language -> configured
    assert second["messages"] == [{"role": "user", "text": "128 GB"}]
    assert second["language"] == "PT-PT" and second["images"] == []


def test_language_mapping_and_settings() -> None:
    assert loopos_language(None, "PT-PT") == "PT-PT"
    assert loopos_language("pt-BR", "en-US") == "PT-PT"
    assert loopos_language("en", "PT-PT") == "en-US"
    assert loopos_language("en_gb", "PT-PT") == "en-US"
    assert loopos_language("es-419", "PT-PT") == "es-419"
    assert loopos_language("DE", "PT-PT") == "de"
    s = settings("http://127.0.0.1:1", headers={"Authorization": "Bearer secret"})
    assert "secret" not in repr(s) and s.retry.attempts == 3
    with pytest.raises(ValueError):
        settings("ftp://nope")
    with pytest.raises(ValueError):
        settings("http://x", unknown_key=1)


async def test_open_is_offline_uuid(loopos: LoopOSEmulator, backend: LoopOSBackend) -> None:
    refs = {await backend.open(key(str(i)), None) for i in range(20)}
    assert len(refs) == 20 and all(len(r) == 36 for r in refs)
    assert loopos.requests == []
    assert isinstance(backend, Backend) and isinstance(backend, ListingDescriber)


# --- the workflow -----------------------------------------------------------------------------


async def test_whole_workflow_with_buttons_and_photo(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    ref = await backend.open(key(), None)
    start = await one_turn(backend, ref, "Quero vender um iPhone 12")
    assert "iPhone 12" in reply_text(start)
    assert button_payloads(start) == ["64 GB", "128 GB", "256 GB"]
    assert "64 GB" not in reply_text(start)  # labels are buttons, not body text

    condition = await one_turn(backend, ref, button="128 GB")
    assert button_payloads(condition) == ["Como novo", "Bom", "Razoável"]
    created = await one_turn(backend, ref, button="Bom")
    assert "LoopOS Core" in reply_text(created) and "O ecrã tem riscos?" in reply_text(created)
    photo_q = await one_turn(backend, ref, button="Não")
    assert "Envie uma fotografia do item" in reply_text(photo_q)
    asked_again = await one_turn(backend, ref, "já enviei")
    assert "Envie uma fotografia do item" in reply_text(asked_again)

    done = await one_turn(backend, ref, "", images=(PHOTO,))
    text = reply_text(done)
    assert "Submissão concluída" in text and "Apple iPhone 12 128 GB" in text and "€" in text
    assert isinstance(done, Final)
    summary: ReplyMessage = done.messages[0]
    assert len(summary.body) > 1 and summary.links[0].url.startswith(SUBMISSION)
    assert len(loopos.requests_to("/chat")) == 6


async def test_english_session(backend: LoopOSBackend) -> None:
    ref = await backend.open(key(), "en")
    reply = await one_turn(backend, ref, "I want to sell my PS5", language="en")
    assert "Great!" in reply_text(reply) and button_payloads(reply) == ["Standard", "Digital"]


# --- faults over real HTTP --------------------------------------------------------------------


async def test_5xx_then_success_is_retried(loopos: LoopOSEmulator, backend: LoopOSBackend) -> None:
    loopos.faults.status_5xx = 2
    ref = await backend.open(key(), None)
    reply = await one_turn(backend, ref, "Quero vender um iPhone 12")
    assert "iPhone 12" in reply_text(reply)
    assert len(loopos.requests_to("/chat")) == 3


async def test_persistent_5xx_is_unavailable_after_three_tries(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    loopos.faults.status_5xx = 100
    loopos.faults.status_code = 500
    ref = await backend.open(key(), None)
    failure = await one_turn(backend, ref, "Quero vender um iPhone 12")
    assert isinstance(failure, Failure)
    assert failure.kind is FailureKind.UNAVAILABLE and failure.retryable
    assert len(loopos.requests_to("/chat")) == 3


async def test_422_is_validation_and_not_retried(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    loopos.faults.status_422 = 5
    ref = await backend.open(key(), None)
    failure = await one_turn(backend, ref, "Quero vender um iPhone 12")
    assert isinstance(failure, Failure)
    assert failure.kind is FailureKind.VALIDATION and not failure.retryable
    assert failure.reason is FailureReason.REJECTED
    assert failure.fields == {"status": 422, "fields": "text"}
    assert "emulated validation failure" in failure.detail  # the server's words: logs only
    assert len(loopos.requests_to("/chat")) == 1


@pytest.mark.parametrize("mode", ["invalid_json", "wrong_shape"])
async def test_malformed_reply(loopos: LoopOSEmulator, backend: LoopOSBackend, mode: str) -> None:
    loopos.faults.update({"malformed": 1, "malformed_mode": mode})
    ref = await backend.open(key(), None)
    failure = await one_turn(backend, ref, "Quero vender um iPhone 12")
    assert isinstance(failure, Failure) and failure.kind is FailureKind.MALFORMED
    assert len(loopos.requests_to("/chat")) == 1
    # the next turn works again
    assert "iPhone 12" in reply_text(await one_turn(backend, ref, "Quero vender um iPhone 12"))


async def test_slow_reply_beyond_timeout_is_timeout(loopos: LoopOSEmulator) -> None:
    b = LoopOSBackend(settings(loopos.url, timeout=0.2))
    loopos.faults.slow_seconds = 1.0
    try:
        ref = await b.open(key(), None)
        started = time.monotonic()
        failure = await one_turn(b, ref, "Quero vender um iPhone 12")
        elapsed = time.monotonic() - started
    finally:
        await b.aclose()
    assert isinstance(failure, Failure)
    assert failure.kind is FailureKind.TIMEOUT and failure.retryable
    assert len(loopos.requests_to("/chat")) == 3
    assert 0.6 <= elapsed < 2.0


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    b = LoopOSBackend(settings(f"http://127.0.0.1:{port}"))
    try:
        failure = await one_turn(b, await b.open(key(), None), "olá")
    finally:
        await b.aclose()
    assert isinstance(failure, Failure)
    assert failure.kind is FailureKind.UNAVAILABLE and failure.retryable


@pytest.mark.parametrize("limit", [3, 40])  # 40: several httpx clients (shards)
async def test_concurrency_is_bounded(loopos: LoopOSEmulator, limit: int) -> None:
    b = LoopOSBackend(settings(loopos.url, max_concurrency=limit, timeout=3.0))
    loopos.faults.slow_seconds = 0.05
    try:

        async def session(i: int) -> Final | Failure:
            ref = await b.open(key(str(i)), None)
            return await one_turn(b, ref, "Quero vender um iPhone 12", k=key(str(i)))

        results = await asyncio.gather(*(session(i) for i in range(2 * limit)))
    finally:
        await b.aclose()
    assert all(isinstance(r, Final) for r in results)
    assert loopos.peak_in_flight == limit  # the bound is reached, never exceeded
    assert len(loopos.sessions) == 2 * limit


async def test_logs_carry_no_request_body(
    backend: LoopOSBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ref = await backend.open(key(), None)
    await one_turn(backend, ref, "Quero vender um iPhone 12", images=(PHOTO,))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /chat -> 200" in logged
    assert "base64" not in logged and "Quero vender" not in logged


async def test_usable_again_after_aclose(backend: LoopOSBackend) -> None:
    ref = await backend.open(key(), None)
    await backend.aclose()
    assert isinstance(await one_turn(backend, ref, "Quero vender um iPhone 12"), Final)


# --- typed services ---------------------------------------------------------------------------


async def test_decide(loopos: LoopOSEmulator, backend: LoopOSBackend) -> None:
    options = ["Excellent", "Good", "Fair", "Poor"]
    decision = await backend.decide("What condition?", options, "iPhone 12 with scratches", "en")
    assert decision == Decision("Good", "The item shows signs of use.", {})
    assert loopos.requests_to("/loopos_ai_decision")[0]["language"] == "en-US"
    loopos.faults.update({"malformed": 1, "malformed_mode": "wrong_shape"})
    with pytest.raises(LoopOSError) as info:
        await backend.decide("What condition?", options, "", None)
    assert info.value.failure.kind is FailureKind.MALFORMED
    with pytest.raises(LoopOSError) as info:
        await backend.decide("What condition?", [], "", None)
    assert info.value.failure.kind is FailureKind.VALIDATION


async def test_describe_listing(loopos: LoopOSEmulator, backend: LoopOSBackend) -> None:
    draft = await backend.describe_listing(
        [PHOTO], ListingRequest("iPhone 12 em bom estado"), "pt-PT"
    )
    assert draft.title == "Apple iPhone 12" and draft.price == 380.0 and draft.currency == "EUR"
    assert float(draft.details["value_out_min"]) < 380.0 < float(draft.details["value_out_max"])
    sent = loopos.requests_to("/loopos_ai_c2c_descriptor")[0]
    assert sent["agent_specific"]["user_description"] == "iPhone 12 em bom estado"
    assert sent["images"][0].startswith("data:image/png;base64,")

    with pytest.raises(LoopOSError) as info:
        await backend.describe_listing([], ListingRequest("x"), None)
    assert info.value.failure.kind is FailureKind.BAD_INPUT
    with pytest.raises(LoopOSError) as info:  # not an image: the server refuses, no retry
        await backend.describe_listing(
            [Image(b"not a png", "image/png")], ListingRequest("x"), None
        )
    assert info.value.failure.kind is FailureKind.VALIDATION
    assert len(loopos.requests_to("/loopos_ai_c2c_descriptor")) == 2


async def test_listing_facts_the_seller_names_reach_the_descriptor(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    # The guide's example 3 sends category, product and brand apart from the description;
    # a seller names them with labels, in English or Portuguese, through the engine.
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=MemoryStore())
    text = "iPhone em excelente estado; marca: Apple, produto: iPhone 12 Pro; categoria: Telemóveis"
    await engine.describe_listing([PHOTO], text, "pt-PT")
    sent = loopos.requests_to("/loopos_ai_c2c_descriptor")[-1]["agent_specific"]
    assert sent == {
        "category_name": "Telemóveis",
        "product_name": "iPhone 12 Pro",
        "brand_name": "Apple",
        "user_description": "iPhone em excelente estado",
    }
    await engine.describe_listing([PHOTO], "blue denim jacket, size M", "en-US")
    sent = loopos.requests_to("/loopos_ai_c2c_descriptor")[-1]["agent_specific"]
    assert sent["user_description"] == "blue denim jacket, size M"  # nothing labelled
    assert sent["brand_name"] == sent["product_name"] == sent["category_name"] == ""
