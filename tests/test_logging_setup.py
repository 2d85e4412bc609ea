"""configure_logging: context tags, plain/JSON lines, and secret redaction everywhere."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import traceback
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from chatbridge.bots.logging_setup import CHATTY_LOGGERS, MASK, Redactor, configure_logging
from chatbridge.core.logctx import current_context, log_context
from chatbridge.core.secrets import scrub_record

TG_TOKEN = "123456789:AAHfakeTelegramTokenForTests_xyz-987"
LICENSE = "lic-SECRET-0123456789abcdef"
DISCORD = "MTAfake.discord.token-abcdefghijklmnop"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    for name, lvl in chatty.items():
        logging.getLogger(name).setLevel(lvl)
    logging.captureWarnings(False)


def setup(fmt: str = "plain", level: str = "DEBUG") -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, fmt, [TG_TOKEN, LICENSE, DISCORD], stream=out)  # type: ignore[arg-type]
    return out


def test_plain_lines_carry_context() -> None:
    out = setup()
    log = logging.getLogger("chatbridge.core.engine")
    log.info("outside")
    with log_context(bot="sellers", conversation="sellers:42:7"):
        log.info("in conversation")
        with log_context(turn=3):
            log.info("in turn %d", 3)
        log.info("turn over")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("INFO chatbridge.core.engine outside")
    assert "[" not in lines[0]
    assert "[bot=sellers conv=sellers:42:7] in conversation" in lines[1]
    assert "[bot=sellers conv=sellers:42:7 turn=3] in turn 3" in lines[2]
    assert "[bot=sellers conv=sellers:42:7] turn over" in lines[3]
    assert current_context() == {"bot": None, "conversation": None, "turn": None}


async def test_context_follows_tasks_and_stays_apart() -> None:
    out = setup("json")
    log = logging.getLogger("chatbridge.core.engine")

    async def turn(bot: str, n: int) -> None:
        with log_context(bot=bot, conversation=f"{bot}:c", turn=n):
            await asyncio.sleep(0.01)
            # A task started inside the turn inherits its context.
            await asyncio.create_task(asyncio.sleep(0))
            log.info("done %s", n)

    await asyncio.gather(turn("a", 1), turn("b", 2))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    by_turn = {r["turn"]: r for r in records}
    assert by_turn["1"]["bot"] == "a" and by_turn["1"]["msg"] == "done 1"
    assert by_turn["2"]["bot"] == "b" and by_turn["2"]["conversation"] == "b:c"


def test_json_lines() -> None:
    out = setup("json")
    with log_context(bot="shoppers", conversation="shoppers:1:2", turn="9"):
        logging.getLogger("x").warning("café ✓ %s", "ok")
    logging.getLogger("y").error("plain")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "x"
    assert first["msg"] == "café ✓ ok"
    assert (first["bot"], first["conversation"], first["turn"]) == (
        "shoppers",
        "shoppers:1:2",
        "9",
    )
    assert first["ts"].endswith("Z")
    assert "bot" not in second


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_secrets_never_reach_the_output(fmt: str) -> None:
    out = setup(fmt)
    log = logging.getLogger("chatbridge.adapters.telegram")
    log.info("token in message " + TG_TOKEN)
    log.info("token in args %s / %r", LICENSE, {"auth": f"Bot {DISCORD}"})
    log.info("url https://api.telegram.org/bot%s/getUpdates", TG_TOKEN)
    # A token we were never told about still goes, when it sits in a Telegram URL.
    log.info("GET https://api.telegram.org/file/bot999:ZZunknownToken_1/photos/a.jpg")
    try:
        raise RuntimeError(f"bad license {LICENSE}")
    except RuntimeError:
        log.exception("backend failed for %s", "key")
    log.warning("stack", stack_info=True, extra={"note": LICENSE})
    try:
        raise ValueError("x " + TG_TOKEN)
    except ValueError as exc:
        log.error("traceback text:\n%s", "".join(traceback.format_exception(exc)))
    text = out.getvalue()
    for secret in (TG_TOKEN, LICENSE, DISCORD, "ZZunknownToken_1", "AAHfake", "SECRET-01"):
        assert secret not in text
    assert text.count(MASK) >= 7
    assert "/bot***/getUpdates" in text
    assert "/file/bot***/photos/a.jpg" in text
    assert "RuntimeError: bad license ***" in text.replace("\\n", "\n")


async def test_real_httpx_request_logs_are_redacted() -> None:
    # httpx logs "HTTP Request: GET <url>" at INFO/DEBUG: the Telegram token is in that URL.
    async def get_me(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/bot{token}/getMe", get_me)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out = setup("plain", level="DEBUG")
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/bot{TG_TOKEN}/getMe")
            assert r.status_code == 200
    finally:
        await runner.cleanup()
    text = out.getvalue()
    assert "HTTP Request: GET" in text  # the line exists...
    assert TG_TOKEN not in text  # ...without the token
    assert "/bot***/getMe" in text


def test_chatty_libraries_quiet_unless_debug() -> None:
    out = setup("plain", level="INFO")
    logging.getLogger("httpx").info("HTTP Request: GET http://x")
    logging.getLogger("httpx").warning("httpx problem")
    text = out.getvalue()
    assert "HTTP Request" not in text and "httpx problem" in text


def test_reconfiguring_replaces_the_handler() -> None:
    first = setup()
    second = setup("json")
    logging.getLogger("z").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_redactor_longest_first_and_short_values_ignored() -> None:
    redact = Redactor(["abcdef", "abcdef-longer-secret", "en", ""])
    assert redact("x abcdef-longer-secret y abcdef z en") == "x *** y *** z en"
    redact.add("late-secret-1")
    assert redact("late-secret-1") == MASK


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="format"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        configure_logging("LOUD", "plain", stream=io.StringIO())


def test_a_record_changed_after_it_was_scrubbed_is_scrubbed_again() -> None:
    # records are scrubbed when made and again by the handler; the second pass is skipped
    # only when nothing changed in between
    redactor = Redactor([LICENSE])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (LICENSE,), None)
    scrub_record(record, redactor)
    assert record.getMessage() == f"key {MASK}"
    record.msg = f"later {LICENSE}"  # someone edited the message after the factory ran
    scrub_record(record, redactor)
    assert record.getMessage() == f"later {MASK}"
    late = "registered-after-the-record-was-made"
    record.msg = f"both {late}"
    scrub_record(record, redactor)
    redactor.add(late)  # a secret learnt between the two passes
    scrub_record(record, redactor)
    assert record.getMessage() == f"both {MASK}"


def test_telegram_url_tokens_masked_even_when_unregistered() -> None:
    redact = Redactor()
    url = "https://api.telegram.org/bot987654:AAunregistered_token-x/getMe"
    assert redact(url) == f"https://api.telegram.org/bot{MASK}/getMe"
    assert redact("a robot said /bot without a token") == "a robot said /bot without a token"
