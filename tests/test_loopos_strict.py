"""LoopOS through the real client against the strict emulator: issue 11's LoopOS defects."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from backend_contract import TINY_PNG, BackendContract, collect, inbound, key
from engine_doubles import RecordingSurface
from test_loopos_backend import one_turn, reply_text, settings

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSError
from chatbridge.core.deadline import turn_deadline
from chatbridge.core.engine import Engine
from chatbridge.core.protocols import Backend
from chatbridge.core.store import MemoryStore
from chatbridge.core.types import Failure, FailureKind, FailureReason, Final, Image, ListingRequest
from chatbridge.emulators.loopos import LoopOSEmulator, LoopOSStrict, start_loopos_emulator

PHOTO = Image(TINY_PNG, "image/png")


@pytest.fixture
async def backend(loopos: LoopOSEmulator) -> AsyncIterator[LoopOSBackend]:
    b = LoopOSBackend(settings(loopos.url))
    try:
        yield b
    finally:
        await b.aclose()


# --- defect 7: language codes --------------------------------------------------------------


@pytest.mark.parametrize("tag", ["de", "es-419"])
async def test_a_language_the_server_refuses_falls_back_once(
    loopos: LoopOSEmulator, backend: LoopOSBackend, tag: str
) -> None:
    ref = await backend.open(key(), tag)
    first = await one_turn(backend, ref, "Quero vender um iPhone 12", language=tag)
    assert isinstance(first, Final), first
    second = await one_turn(backend, ref, "128 GB", language=tag)
    assert isinstance(second, Final), second
    languages = [body["language"] for body in loopos.requests_to("/chat")]
    assert languages == [loopos_code(tag), "PT-PT", "PT-PT"], "refused once, then not sent"
    # the typed services share the fallback
    decision = await backend.decide("What condition?", ["Good", "Poor"], "scratches", tag)
    assert decision.decision in ("Good", "Poor")
    assert loopos.requests_to("/loopos_ai_decision")[-1]["language"] == "PT-PT"


def loopos_code(tag: str) -> str:
    return {"de": "de", "es-419": "es-419"}[tag]


@pytest.mark.parametrize(("tag", "code"), [("pt-BR", "PT-PT"), ("en-GB", "en-US"), (None, "PT-PT")])
async def test_documented_codes_are_sent_as_documented(
    loopos: LoopOSEmulator, backend: LoopOSBackend, tag: str | None, code: str
) -> None:
    ref = await backend.open(key(), tag)
    assert isinstance(
        await one_turn(backend, ref, "Quero vender um iPhone 12", language=tag), Final
    )
    assert [body["language"] for body in loopos.requests_to("/chat")] == [code]


async def test_a_refused_configured_language_is_reported_plainly(
    loopos: LoopOSEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    b = LoopOSBackend(settings(loopos.url, language="fr-FR"))
    assert any("not one the documents use" in r.getMessage() for r in caplog.records)
    try:
        ref = await b.open(key(), None)
        failure = await one_turn(b, ref, "Quero vender um iPhone 12")
        assert isinstance(failure, Failure) and failure.kind is FailureKind.VALIDATION
        assert len(loopos.requests_to("/chat")) == 1, "no loop on the configured language"
    finally:
        await b.aclose()


# --- defect 8: retries respect the turn's time ------------------------------------------------


def slow_backend(loopos: LoopOSEmulator) -> LoopOSBackend:
    loopos.faults.slow_seconds = 0.5
    return LoopOSBackend(
        settings(
            loopos.url,
            timeout=0.3,
            retry={"attempts": 3, "base_delay": 0.1},
            deadline_reserve=0.05,
        )
    )


async def test_retries_stop_before_the_turn_deadline(loopos: LoopOSEmulator) -> None:
    b = slow_backend(loopos)
    try:
        ref = await b.open(key(), None)
        with turn_deadline(0.9):  # 0.3 + 0.1 + 0.3 fits; a third try (+0.2 +0.3) does not
            events = await collect(b, ref, inbound("Quero vender um iPhone 12"))
        BackendContract.assert_turn_shape(events)
        failure = events[-1]
        assert isinstance(failure, Failure) and failure.kind is FailureKind.TIMEOUT
        assert len(loopos.requests_to("/chat")) < 3
        # without a deadline (a service called on its own) all three tries are made
        loopos.requests.clear()
        loopos.paths.clear()
        assert isinstance(await one_turn(b, ref, "Quero vender um iPhone 12"), Failure)
        assert len(loopos.requests_to("/chat")) == 3
    finally:
        await b.aclose()


async def test_the_engine_gives_the_backend_its_deadline(loopos: LoopOSEmulator) -> None:
    b = slow_backend(loopos)
    store = await MemoryStore.open()
    engine = Engine(bot="sell", backend=b, backend_name="loopos", store=store, turn_timeout=1.0)
    try:
        surface = RecordingSurface()
        result = await engine.handle(inbound("Quero vender um iPhone 12"), surface)
        assert result.failure is not None
        assert len(loopos.requests_to("/chat")) < 3
        assert surface.of("fail"), "the user is told"
    finally:
        await engine.aclose()
        await b.aclose()


# --- defect 10, LoopOS parts --------------------------------------------------------------


async def test_a_decision_outside_the_options_is_refused(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    loopos.faults.off_options = 1
    with pytest.raises(LoopOSError) as info:
        await backend.decide("What condition?", ["Good", "Poor"], "like new")
    assert info.value.failure.kind is FailureKind.MALFORMED
    decision = await backend.decide("What condition?", ["Good", "Poor"], "condition: good")
    assert decision.decision == "Good"


async def test_photos_are_capped_per_turn_not_only_per_photo(loopos: LoopOSEmulator) -> None:
    b = LoopOSBackend(settings(loopos.url, max_request_image_bytes=len(TINY_PNG) * 2))
    try:
        ref = await b.open(key(), None)
        three = (PHOTO, PHOTO, PHOTO)
        failure = await one_turn(b, ref, "Quero vender um iPhone 12", images=three)
        assert isinstance(failure, Failure) and failure.kind is FailureKind.BAD_INPUT
        assert failure.reason is FailureReason.PHOTOS_TOO_LARGE
        n = len(TINY_PNG)
        assert failure.fields == {"total": f"{3 * n} B", "limit": f"{2 * n} B"}
        assert loopos.requests == [], "nothing was sent"
        with pytest.raises(LoopOSError):
            await b.describe_listing(three, ListingRequest("iPhone"), None)
        ok = await one_turn(b, ref, "Quero vender um iPhone 12", images=(PHOTO, PHOTO))
        assert isinstance(ok, Final)
    finally:
        await b.aclose()


def test_plain_http_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    LoopOSBackend(settings("http://loopos.example"))
    assert any("HTTPS" in r.getMessage() for r in caplog.records)
    caplog.clear()
    LoopOSBackend(settings("https://loopos.example"))
    LoopOSBackend(settings("http://127.0.0.1:8001"))  # a local emulator
    assert not caplog.records


# --- the emulator's readings of {text, html}, for core/html's tests -------------------------


async def raw_chat(url: str, text: str, session: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/chat",
            json={
                "language": "en-US",
                "messages": [{"role": "user", "text": text}],
                "session_id": session,
                "loopos_core_base_url": "https://core.example/",
                "loopos_submission_base_url": "https://submission.example/",
            },
        )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def test_html_apart_and_several_messages() -> None:
    emulator = await start_loopos_emulator(
        strict=LoopOSStrict(html_apart=True, several_messages=True)
    )
    try:
        first = await raw_chat(emulator.url, "I want to sell an iPhone 12", "s1")
        assert len(first) >= 2
        for message in first:
            if "html" in message:
                assert html.escape(message["text"]) not in message["html"], message
        assert any("<button" in m.get("html", "") for m in first)
        # and the real client still reads every message of such an answer
        b = LoopOSBackend(settings(emulator.url))
        try:
            ref = await b.open(key(), "en")
            final = await one_turn(b, ref, "I want to sell an iPhone 12", language="en")
            assert isinstance(final, Final) and len(final.messages) >= 2
            assert reply_text(final)
        finally:
            await b.aclose()
    finally:
        await emulator.stop()


async def test_lenient_emulator_takes_any_language() -> None:
    emulator = await start_loopos_emulator(strict=False)
    try:
        b = LoopOSBackend(settings(emulator.url))
        try:
            ref = await b.open(key(), "de")
            assert isinstance(
                await one_turn(b, ref, "Quero vender um iPhone 12", language="de"), Final
            )
            assert [r["language"] for r in emulator.requests_to("/chat")] == ["de"]
        finally:
            await b.aclose()
    finally:
        await emulator.stop()


class TestLoopOSStrictShapesContract(BackendContract):
    """The contract over a server answering with html apart and several messages."""

    first_text = "Quero vender um iPhone 12"
    second_text = "128 GB"
    image_text = "Quero vender um iPhone 12"

    @pytest.fixture
    async def backend_factory(self) -> AsyncIterator[Backend]:
        emulator = await start_loopos_emulator(
            strict=LoopOSStrict(html_apart=True, several_messages=True)
        )
        b = LoopOSBackend(settings(emulator.url))
        try:
            yield b
        finally:
            await b.aclose()
            await emulator.stop()
