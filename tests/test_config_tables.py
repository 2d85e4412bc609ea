"""The configuration tables on msgspec (core/settings.py): every problem of a file at once,
named by key in the operator's words; secrets masked; LoopOS replies checked before use."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

from chatbridge.bots.config import (
    COMMON_CHECKS,
    ConfigError,
    DiscordBotConfig,
    TelegramBotConfig,
    _BotCommon,
    parse_config,
)
from chatbridge.core.backends.loopos import Decision, LoopOSBackend, LoopOSError, LoopOSSettings
from chatbridge.core.settings import MASKED, Invalid, Secret, dump
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    Final,
    Image,
    Inbound,
    ListingRequest,
)

LOOPOS = {
    "type": "loopos",
    "base_url": "http://127.0.0.1:9",
    "core_base_url": "https://core.example/",
    "submission_base_url": "https://submission.example/",
}
TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # a canary of tests/conftest.py
TELEGRAM = {"name": "t", "platform": "telegram", "backend": "l", "token": TOKEN}


def errors(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "bridge.toml", env or {})
    return str(info.value).splitlines()


def test_the_bot_tables_repeat_the_common_keys_unchanged() -> None:
    # a msgspec Struct has one base with fields, so Telegram's and Discord's tables repeat
    # _BotCommon's keys: the copies must not drift
    common = {f.name: f for f in msgspec.structs.fields(_BotCommon)}
    for model in (TelegramBotConfig, DiscordBotConfig):
        fields = {f.name: f for f in msgspec.structs.fields(model)}
        for name, field in common.items():
            assert fields[name] == field, (model.__name__, name)
        assert {k: model.key_checks[k] for k in COMMON_CHECKS} == COMMON_CHECKS


def test_every_problem_of_one_table_is_named_by_its_key() -> None:
    backend = {
        **LOOPOS,
        "base_url": "ftp://nope",
        "core_base_url": "core.example",
        "timeout": 0,
        "max_concurrency": "lots",
        "retry": {"attempts": 0, "jitter": 1},
        "headers": {"X-Key": 1},
        "bse_url": "x",
    }
    lines = errors({"backends": {"l": backend}, "bots": [TELEGRAM]})
    assert lines == [
        "bridge.toml: backends.l.base_url: must be an http:// or https:// URL",
        "bridge.toml: backends.l.core_base_url: must be an http:// or https:// URL",
        "bridge.toml: backends.l.timeout: must be greater than 0",
        "bridge.toml: backends.l.retry.attempts: must be at least 1",
        "bridge.toml: backends.l.retry.jitter: unknown key (check its spelling against the "
        "README's configuration reference)",
        "bridge.toml: backends.l.headers.X-Key: must be a string (got a whole number)",
        "bridge.toml: backends.l.max_concurrency: must be a whole number (got a string)",
        "bridge.toml: backends.l.bse_url: unknown key (check its spelling against the README's "
        "configuration reference)",
    ]


def test_msgspec_words_become_the_operators() -> None:
    lines = errors(
        {
            "store": "sqlite:///x.db",
            "backends": {"l": LOOPOS},
            "bots": [
                {**TELEGRAM, "name": "has space", "mode": "push", "admins": ["x"]},
                {**TELEGRAM, "poll_timeout": 99, "use_drafts": "maybe", "api_base_url": "x"},
                {"platform": "console"},
            ],
            "limits": {"turns_per_minute": 1.5, "turn_timeout": -1},
            "logging": {"level": "TRACE"},
            "extra": 1,
        }
    )
    assert lines == [
        "bridge.toml: store: must be a table (got a string)",
        "bridge.toml: bots[0].mode: must be one of 'polling', 'webhook' (got 'push')",
        "bridge.toml: bots[0].name: must match the pattern '^[A-Za-z0-9_.-]{1,64}$'",
        "bridge.toml: bots[0].admins[0]: must be a whole number (got a string)",
        "bridge.toml: bots[1].api_base_url: must be an http(s) URL, e.g. "
        "https://api.telegram.org/bot",
        "bridge.toml: bots[1].poll_timeout: must be at most 50",
        "bridge.toml: bots[1].use_drafts: must be true or false (got a string)",
        "bridge.toml: bots[2].name: required key is missing",
        "bridge.toml: bots[2].backend: required key is missing",
        "bridge.toml: logging.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' "
        "(got 'TRACE')",
        "bridge.toml: limits.turns_per_minute: must be a whole number (got a number with a "
        "fraction)",
        "bridge.toml: limits.turn_timeout: must be greater than 0",
        "bridge.toml: extra: unknown key (check its spelling against the README's "
        "configuration reference)",
    ]
    jargon = ("`", "$.", "$[", "Expected", "Object", "Invalid enum")
    assert not [line for line in lines if any(word in line for word in jargon)]


def test_whole_tables_and_lists_of_the_wrong_kind() -> None:
    assert errors({"backends": [], "bots": {}}) == [
        "bridge.toml: backends: must be a table (got a list)",
        "bridge.toml: bots: must be a list of [[bots]] tables (got a table)",
    ]
    assert errors({"backends": {"l": "x"}, "bots": ["x"]}) == [
        "bridge.toml: backends.l: must be a table (got a string)",
        "bridge.toml: bots[0]: must be a table (got a string)",
    ]
    assert errors({"backends": {"l": LOOPOS}, "bots": []}) == [
        "bridge.toml: bots: at least one [[bots]] table is required"
    ]


def test_numbers_and_switches_may_come_from_environment_variables() -> None:
    bot = {**TELEGRAM, "webhook_port": "${PORT}", "use_drafts": "${DRAFTS}", "chat_rate": "0.5"}
    env = {"PORT": "8444", "DRAFTS": "false"}
    config = parse_config({"backends": {"l": LOOPOS}, "bots": [bot]}, "bridge.toml", env)
    (telegram,) = config.bots
    assert isinstance(telegram, TelegramBotConfig)
    assert (telegram.webhook_port, telegram.use_drafts, telegram.chat_rate) == (8444, False, 0.5)
    assert errors({"backends": {"l": LOOPOS}, "bots": [bot]}, {"PORT": "80x", "DRAFTS": "0"}) == [
        "bridge.toml: bots[0].webhook_port: must be a whole number (got a string)"
    ]


def test_secrets_never_show() -> None:
    secret = Secret("lk-very-secret")
    assert repr(secret) == f"Secret('{MASKED}')" and str(secret) == MASKED
    assert secret == Secret("lk-very-secret") and secret != Secret("other")
    headers = {"Authorization": "Bearer lk-very-secret"}
    bot = {**TELEGRAM, "webhook_secret_token": "hook-secret-value"}
    config = parse_config(
        {"backends": {"l": {**LOOPOS, "headers": headers}}, "bots": [bot]}, "bridge.toml", {}
    )
    shown = json.dumps(config.redacted()) + repr(config) + str(config)
    for value in ("lk-very-secret", "hook-secret-value", TOKEN):
        assert value not in shown
    assert sorted(config.secrets()) == sorted([TOKEN, "hook-secret-value", "Bearer lk-very-secret"])
    redacted = config.redacted()
    assert redacted["backends"]["l"]["headers"] == {"Authorization": MASKED}
    assert redacted["bots"][0]["token"] == redacted["bots"][0]["webhook_secret_token"] == MASKED
    assert dump(config.backends["l"])["headers"] == {"Authorization": MASKED}


def test_checks_run_when_a_table_is_built_in_code_too() -> None:
    with pytest.raises(Invalid, match="core_base_url: must be an http:// or https:// URL"):
        LoopOSSettings(
            base_url="http://127.0.0.1:9", core_base_url="core", submission_base_url="https://s/"
        )
    settings = LoopOSSettings.from_dict({**LOOPOS, "base_url": " http://127.0.0.1:9 "})
    assert settings.base_url == "http://127.0.0.1:9"  # as the operator meant it
    with pytest.raises(Invalid) as info:
        LoopOSSettings.from_dict({"type": "loopos"})
    assert [p.key for p in info.value.problems] == [
        "base_url",
        "core_base_url",
        "submission_base_url",
    ]


# --- LoopOS replies: checked before use ---------------------------------------------------------


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[dict[str, Any], str]]:
    """A local HTTP server answering each path with the JSON put in the dict."""
    replies: dict[str, Any] = {}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(replies[request.path])

    app = web.Application()
    app.router.add_post("/{name}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield replies, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def backend_at(url: str) -> LoopOSBackend:
    return LoopOSBackend(
        LoopOSSettings.from_dict({**LOOPOS, "base_url": url, "retry": {"attempts": 1}})
    )


async def one_turn(backend: LoopOSBackend) -> Final | Failure:
    key = ConversationKey("t", "telegram", "1", "1")
    inbound = Inbound(key=key, text="hi", message_id="1")
    events = [e async for e in backend.turn(await backend.open(key, None), inbound)]
    assert len(events) == 1 and isinstance(events[0], Final | Failure)
    return events[0]


async def test_chat_replies_ignore_unknown_keys_and_refuse_wrong_shapes(
    scripted: tuple[dict[str, Any], str],
) -> None:
    replies, url = scripted
    backend = backend_at(url)
    try:
        replies["/chat"] = [{"role": "assistant", "text": "Olá", "mood": "cheerful"}]
        final = await one_turn(backend)
        assert isinstance(final, Final) and [m.text for m in final.messages] == ["Olá"]
        replies["/chat"] = {"messages": [{"text": "wrapped"}]}
        final = await one_turn(backend)
        assert isinstance(final, Final) and [m.text for m in final.messages] == ["wrapped"]
        for wrong in ([{"text": 5}], {"reply": "x"}, "just text", [["text"]]):
            replies["/chat"] = wrong
            failure = await one_turn(backend)
            assert isinstance(failure, Failure) and failure.kind is FailureKind.MALFORMED, wrong
    finally:
        await backend.aclose()


async def test_a_decision_keeps_the_extra_keys_of_its_reply(
    scripted: tuple[dict[str, Any], str],
) -> None:
    replies, url = scripted
    backend = backend_at(url)
    try:
        replies["/loopos_ai_decision"] = {"decision": "good", "confidence": 0.9}
        decision = await backend.decide("Condition?", ["Good", "Poor"])
        assert decision == Decision("Good", "", {"confidence": 0.9})
        replies["/loopos_ai_decision"] = {"reasoning": "no decision"}
        with pytest.raises(LoopOSError) as info:
            await backend.decide("Condition?", ["Good", "Poor"])
        assert info.value.failure.kind is FailureKind.MALFORMED
        replies["/loopos_ai_c2c_descriptor"] = {
            "marketplace_posting_title": "iPhone 12",
            "value_out_average": "380.5",  # a number sent as text is read, as before
        }
        image = Image(b"\x89PNG\r\n\x1a\n" + b"0" * 16, "image/png")
        draft = await backend.describe_listing([image], ListingRequest("x"), None)
        assert draft.title == "iPhone 12" and draft.price == 380.5
    finally:
        await backend.aclose()
