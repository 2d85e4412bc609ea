"""Backends say *why* a turn failed; the engine says it in the user's language.

Every failure a backend can report reaches the user through the real engine against the
LoopOS and ShopAI emulators, and reads as the catalogue's text in English and in European
Portuguese (operator overrides included). The backends' modules hold no sentence for a user:
an AST scan of ``core/backends`` fails on one.
"""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Mapping
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_contract import TINY_PNG
from engine_doubles import RecordingSurface

from chatbridge.core.backends import loopos as loopos_module
from chatbridge.core.backends import loopos_refusals
from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSError, LoopOSSettings
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.engine import Engine
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.texts import Catalogue, UserTexts
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    FailureReason,
    Image,
    Inbound,
)
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator

CATALOGUES = {"en": en.TEXTS, "pt-PT": pt_pt.TEXTS}
LANGUAGES = tuple(CATALOGUES)
PHOTO = Image(TINY_PNG, "image/png")
BACKENDS = Path(loopos_module.__file__).parent


def said(language: str, key: str, **fields: object) -> str:
    """What the catalogue of ``language`` says for ``key``."""
    return CATALOGUES[language][key].format(**fields)


async def one_turn(engine: Engine, user: str, language: str, **inbound: Any) -> RecordingSurface:
    surface = RecordingSurface()
    key = ConversationKey(engine.bot, "test", f"c-{user}", user)
    await engine.handle(Inbound(key=key, language=language, **inbound), surface)
    return surface


def failed_with(surface: RecordingSurface) -> str:
    (text,) = surface.of("fail")
    assert not surface.of("finish")
    return text


# --- LoopOS --------------------------------------------------------------------------------


def loopos_settings(url: str, **overrides: Any) -> LoopOSSettings:
    values: dict[str, Any] = {
        "base_url": url,
        "core_base_url": "https://core.example/",
        "submission_base_url": "https://submission.example/",
        "timeout": 5.0,
        "retry": {"attempts": 2, "base_delay": 0.01},
        "deadline_reserve": 0.0,
    }
    values.update(overrides)
    return LoopOSSettings.from_dict(values)


@pytest.fixture
async def loopos_engine(loopos: LoopOSEmulator) -> AsyncIterator[Engine]:
    backend = LoopOSBackend(
        loopos_settings(loopos.url, max_request_image_bytes=len(TINY_PNG) * 2), name="sellers"
    )
    store = await MemoryStore.open()
    engine = Engine(bot="sellers", backend=backend, backend_name="sellers", store=store)
    try:
        yield engine
    finally:
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()


@pytest.mark.parametrize("language", LANGUAGES)
async def test_loopos_failures_read_in_the_users_language(
    loopos: LoopOSEmulator, loopos_engine: Engine, language: str
) -> None:
    text = "Quero vender um iPhone 12"
    loopos.faults.status_422 = 1  # FastAPI's body, refusing messages.0.text
    shown = failed_with(await one_turn(loopos_engine, "a", language, text=text))
    assert shown == said(language, "rejected", fields="text")
    assert "emulated validation failure" not in shown, "the server's English stays in the logs"

    loopos.faults.status_5xx = 5
    shown = failed_with(await one_turn(loopos_engine, "b", language, text=text))
    assert shown == said(language, "unavailable")
    loopos.faults.reset()

    loopos.faults.malformed = 5
    shown = failed_with(await one_turn(loopos_engine, "c", language, text=text))
    assert shown == said(language, "malformed")
    loopos.faults.reset()

    photos = (PHOTO, PHOTO, PHOTO)  # one more than fits in a request
    shown = failed_with(await one_turn(loopos_engine, "d", language, text=text, images=photos))
    n = len(TINY_PNG)
    assert shown == said(language, "photos_too_large", total=f"{3 * n} B", limit=f"{2 * n} B")

    # and a turn that works still works, in the same conversations
    surface = await one_turn(loopos_engine, "a", language, text=text)
    assert surface.of("finish") and not surface.of("fail")


@pytest.mark.parametrize("language", LANGUAGES)
async def test_loopos_timeout_reads_in_the_users_language(
    loopos: LoopOSEmulator, language: str
) -> None:
    backend = LoopOSBackend(
        loopos_settings(loopos.url, timeout=0.2, retry={"attempts": 1}), name="sellers"
    )
    store = await MemoryStore.open()
    engine = Engine(bot="sellers", backend=backend, backend_name="sellers", store=store)
    loopos.faults.slow_seconds = 1.0
    try:
        shown = failed_with(await one_turn(engine, "t", language, text="Olá"))
        assert shown == said(language, "timeout")
    finally:
        loopos.faults.reset()
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_listing_without_a_photo_is_explained(loopos_engine: Engine, language: str) -> None:
    with pytest.raises(LoopOSError) as info:
        await loopos_engine.describe_listing((), "blue jacket", language)
    assert info.value.failure.reason is FailureReason.NEEDS_PHOTO
    shown = loopos_engine.texts.for_failure(info.value.failure, language)
    assert shown == said(language, "needs_photo")


def _response(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
    request = httpx.Request("POST", "http://loopos.test/chat")
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize("language", LANGUAGES)
def test_loopos_http_refusals_are_kinds_with_their_parameters(language: str) -> None:
    """The statuses the emulator has no switch for (the document names none of them)."""
    texts = UserTexts()
    refusal = loopos_refusals.refusal
    busy = refusal("/chat", _response(429, {}, {"Retry-After": "30"}))
    assert (busy.kind, busy.reason, busy.retryable) == (
        FailureKind.UNAVAILABLE,
        FailureReason.BUSY,
        True,
    )
    assert busy.fields == {"status": 429, "seconds": 30}
    assert texts.for_failure(busy, language) == said(language, "busy", seconds=30)
    no_wait = refusal("/chat", _response(429, {}))
    assert texts.for_failure(no_wait, language) == said(language, "unavailable")
    large = refusal("/chat", _response(413, {}))
    assert large.reason is FailureReason.TOO_LARGE and large.fields == {"status": 413}
    assert texts.for_failure(large, language) == said(language, "too_large")
    auth = refusal("/chat", _response(401, {}))
    assert auth.kind is FailureKind.AUTH and auth.fields == {"status": 401}
    assert texts.for_failure(auth, language) == said(language, "auth")
    plain = refusal("/chat", _response(422, {"detail": "not today"}))  # no field named
    assert plain.kind is FailureKind.VALIDATION and plain.reason is None
    assert texts.for_failure(plain, language) == said(language, "validation")
    two = refusal(
        "/chat",
        _response(
            422,
            {
                "detail": [
                    {"loc": ["body", "language"], "msg": "bad"},
                    {"loc": ["body", "images", 0], "msg": "bad"},
                    {"loc": ["body", "language"], "msg": "worse"},
                ]
            },
        ),
    )
    assert two.fields == {"status": 422, "fields": "language, images"}
    shown = texts.for_failure(two, language)
    assert shown == said(language, "rejected", fields="language, images")
    assert "bad" not in shown


# --- ShopAI --------------------------------------------------------------------------------


def shop_settings(url: str, **overrides: Any) -> ShopAISettings:
    values: dict[str, Any] = {
        "base_url": url,
        "license_key": "test-license",
        "heartbeat_interval": 0.5,
        "answer_timeout": 3.0,
        "reconnect_backoff": 0.02,
        "reconnect_attempts": 2,
    }
    values.update(overrides)
    return ShopAISettings.from_dict(values)


async def shop_engine(
    url: str, catalogue: Catalogue | None = None, **overrides: Any
) -> tuple[Engine, ShopAIBackend, MemoryStore]:
    backend = ShopAIBackend(shop_settings(url, **overrides), name="shop")
    store = await MemoryStore.open()
    texts = UserTexts(catalogue) if catalogue is not None else None
    engine = Engine(bot="shop", backend=backend, backend_name="shop", store=store, texts=texts)
    return engine, backend, store


async def close_all(engine: Engine, backend: ShopAIBackend, store: MemoryStore) -> None:
    await engine.aclose(1.0)
    await backend.aclose()
    await store.close()


@pytest.fixture(params=["v0.1", "v0.2"])
async def shop(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version=request.param, token_delay=0.001)
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.mark.parametrize("language", LANGUAGES)
async def test_shopai_failures_read_in_the_users_language(
    shop: ShopAIEmulator, language: str
) -> None:
    engine, backend, store = await shop_engine(shop.url)
    try:
        shown = failed_with(await one_turn(engine, "long", language, text="a" * 600))
        assert shown == said(language, "too_long", length=600, limit=512)

        shown = failed_with(await one_turn(engine, "photo", language, text="", images=(PHOTO,)))
        assert shown == said(language, "text_only")

        surface = await one_turn(engine, "both", language, text="a phone", images=(PHOTO,))
        assert surface.of("notice") == [said(language, "photos_dropped")]
        assert surface.of("finish") and not surface.of("fail")

        shop.faults.error_frame = True
        shown = failed_with(await one_turn(engine, "error", language, text="a phone"))
        assert shown == said(language, "not_answered")
        shop.faults.error_frame = False

        first = await one_turn(engine, "expired", language, text="a phone")
        assert first.of("finish")
        await backend.close(await _ref(engine, "expired"))  # the next turn reconnects
        shop.faults.refuse_token = True  # every token issued so far is refused
        again = await one_turn(engine, "expired", language, text="a laptop")
        assert again.of("notice") == [said(language, "restarted")]
        assert again.of("finish") and not again.of("fail")
        shop.faults.refuse_token = False
    finally:
        await close_all(engine, backend, store)


async def _ref(engine: Engine, user: str) -> str:
    record = await engine.store.get(ConversationKey(engine.bot, "test", f"c-{user}", user))
    assert record is not None
    return record.session_ref


@pytest.mark.parametrize("language", LANGUAGES)
async def test_shopai_license_refused_and_timeouts(shop: ShopAIEmulator, language: str) -> None:
    engine, backend, store = await shop_engine(shop.url, license_key="wrong-secret-key")
    try:
        shown = failed_with(await one_turn(engine, "lic", language, text="hello"))
        assert shown == said(language, "auth")
        assert "license" not in shown.lower() and "licença" not in shown.lower()
    finally:
        await close_all(engine, backend, store)
    engine, backend, store = await shop_engine(shop.url, answer_timeout=0.3)
    shop.faults.slow_tokens = True
    shop.faults.slow_token_delay = 1.0
    try:
        shown = failed_with(await one_turn(engine, "slow", language, text="a phone"))
        assert shown == said(language, "timeout")
    finally:
        shop.faults.slow_tokens = False
        await close_all(engine, backend, store)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_shopai_out_of_reach_reads_unavailable(language: str) -> None:
    emulator = await start_shopai_emulator(version="v0.2")
    url = emulator.url
    await emulator.stop()  # nothing listens there any more
    engine, backend, store = await shop_engine(url, request_timeout=1.0)
    try:
        shown = failed_with(await one_turn(engine, "gone", language, text="hello"))
        assert shown == said(language, "unavailable")
    finally:
        await close_all(engine, backend, store)


async def test_operator_overrides_reword_failure_reasons(shop: ShopAIEmulator) -> None:
    catalogue = Catalogue(
        "en",
        {
            "en": {"too_long": "At most {limit} characters, please."},
            "pt-PT": {
                "text_only": "Escreva, não fotografe.",
                "photos_dropped": "Fotografias ignoradas.",
            },
        },
    )
    engine, backend, store = await shop_engine(shop.url, catalogue)
    try:
        shown = failed_with(await one_turn(engine, "a", "en", text="a" * 600))
        assert shown == "At most 512 characters, please."
        shown = failed_with(await one_turn(engine, "b", "pt-PT", text="a" * 600))
        assert shown == said("pt-PT", "too_long", length=600, limit=512)
        shown = failed_with(await one_turn(engine, "c", "pt-PT", text="", images=(PHOTO,)))
        assert shown == "Escreva, não fotografe."
        surface = await one_turn(engine, "d", "pt-PT", text="a phone", images=(PHOTO,))
        assert surface.of("notice") == ["Fotografias ignoradas."]
        surface = await one_turn(engine, "e", "en", text="a phone", images=(PHOTO,))
        assert surface.of("notice") == [en.TEXTS["photos_dropped"]]
    finally:
        await close_all(engine, backend, store)


# --- no sentence for a user in a backend -----------------------------------------------------

# What a sentence for a user reads like: addressed to them, polite, or apologising.
_TO_THE_USER = (" you", "you ", "your ", "please", "sorry", "try again")
_REASONED = {"Failure", "Notice", "BackendError", "LoopOSError", "ImageRejected"}
_LOGGING = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _logged(tree: ast.AST) -> set[int]:
    """String constants inside logging calls: words for the operator, not the user."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOGGING
        ):
            found.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Constant))
    return found


def prose_in(source: str) -> list[str]:
    """Every place in a backend module's source that could hand a user a sentence."""
    tree = ast.parse(source)
    skip = _docstrings(tree) | _logged(tree)
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            lowered = f" {node.value.lower()} "
            if any(marker in lowered for marker in _TO_THE_USER):
                problems.append(f"line {node.lineno}: a sentence for a user: {node.value[:60]!r}")
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            if name not in _REASONED:
                continue
            for keyword in node.keywords:
                if keyword.arg in ("user_text", "text", "message"):
                    problems.append(f"line {node.lineno}: {name}({keyword.arg}=...)")
                if keyword.arg == "reason" and not (
                    isinstance(keyword.value, ast.Attribute)
                    and isinstance(keyword.value.value, ast.Name)
                    and keyword.value.value.id == "FailureReason"
                ):
                    problems.append(f"line {node.lineno}: reason is not a FailureReason")
            if name == "ImageRejected" and not (
                node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).isidentifier()
            ):
                problems.append(f"line {node.lineno}: ImageRejected without a catalogue key")
            if name == "Notice" and not (
                node.args
                and isinstance(node.args[0], ast.Attribute)
                and isinstance(node.args[0].value, ast.Name)
                and node.args[0].value.id == "NoticeReason"
            ):
                problems.append(f"line {node.lineno}: a Notice without a NoticeReason")
    return problems


# Where the user's words used to be written inline: the backends, and the engine's half of a
# turn. Every sentence for a user lives in core/locales.
CORE = BACKENDS.parent
SCANNED = (
    *sorted(BACKENDS.rglob("*.py")),
    *(CORE / name for name in ("engine.py", "turns.py", "recovery.py", "item_services.py")),
    CORE / "images.py",
)


def test_backends_and_the_engine_hold_no_sentence_for_a_user() -> None:
    assert len(SCANNED) >= 10 and all(path.exists() for path in SCANNED)
    problems = [
        f"{path.relative_to(CORE)}: {problem}"
        for path in SCANNED
        for problem in prose_in(path.read_text("utf-8"))
    ]
    assert problems == []


def test_the_prose_scan_catches_what_backends_used_to_say() -> None:
    """The scan fails on the code this issue replaced (so the test above can fail)."""
    old = [
        'yield Failure(FailureKind.BAD_INPUT, "x", user_text="Please type your question.")',
        'yield Notice("The shopping assistant reads text only; your photos were not sent.")',
        'raise BackendError(Failure(FailureKind.AUTH, "x", reason="auth"))',
        'ERROR_TEXT = "The shopping assistant could not answer that message. Please try again."',
        'raise ImageRejected("That file is empty.", "photo_empty")',
    ]
    for line in old:
        assert prose_in(line), line
    assert not prose_in('log.info("ShopAI: please reconnect %s", x)')  # logs are the operator's
    assert not prose_in(
        'yield Failure(FailureKind.VALIDATION, "too long", reason=FailureReason.TOO_LONG)'
    )


def test_a_failure_has_no_room_for_a_sentence() -> None:
    """Kind, reason and structured fields; ``detail`` is for logs (see the engine's tests)."""
    names = {f.name for f in dataclass_fields(Failure)}
    assert names == {"kind", "detail", "retryable", "reason", "fields"}
