"""A process imports what its configuration uses, and no more.

A LoopOS-only Telegram bot must not load the ShopAI backend (websockets, python-socketio,
engine.io, requests, redis), the Discord adapter, the Redis store or tenacity: about
35 MiB of a process that needs none of it. Nor aiohttp (the Bot API goes through
core/http11.py; about 10 MiB with its helpers) or prometheus_client (no [http]
listener, nothing shows the metrics). Checked in a fresh interpreter that starts the real
app against the fake Bot API and the LoopOS emulator, answers one message, and then lists
what it has imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from chatbridge.emulators.loopos import LoopOSEmulator
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parent.parent
TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"

# Top-level packages (and chatbridge modules) a LoopOS-only Telegram bot has no use for.
UNUSED = (
    "chatbridge.core.backends.shopai.backend",
    "chatbridge.core.backends.shopai.ws_v01",
    "chatbridge.core.backends.shopai.sio_v02",
    "chatbridge.core.store.redis",
    "chatbridge.adapters.discord_adapter.adapter",
    "websockets",
    "socketio",
    "engineio",
    # the configuration is read with msgspec (core/settings.py); pydantic costs ~7 MiB
    "pydantic",
    "pydantic_core",
    "typing_inspection",
    "annotated_types",
    "requests",
    "redis",
    "discord",
    "tenacity",
    # aiohttp and its helpers: webhook mode, the [http] listener, Discord and ShopAI need it;
    # the Bot API goes through core/http11.py
    "aiohttp",
    "attr",
    "attrs",
    "yarl",
    "multidict",
    "propcache",
    "frozenlist",
    "aiosignal",
    "aiohappyeyeballs",
    "chatbridge.adapters.telegram.webhook",
    "chatbridge.bots.http",
    # httpx's own connection machinery: the LoopOS backend's httpx client runs on
    # core/http11.py (core/http11_httpx.py), the Bot API too
    "httpcore",
    "anyio",
    "h11",
    # the admin commands (and argparse): `chatbridge sessions ...`, not a running bot
    "chatbridge.bots.admin_cli",
    "argparse",
    # the metrics' text format: only the [http] listener shows it (core/metrics.py)
    "prometheus_client",
    "wsgiref",
    # grapheme clusters: only a text longer than one message is cut with them
    "regex",
    # optional features of python-telegram-bot and httpx (bots/extras.py), when installed
    "tornado",
    "cryptography",
    "aiolimiter",
    "click",
    "pygments",
    "trio",
)

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from chatbridge.bots.config import parse_config
    from chatbridge.bots.runner import App

    UNUSED = tuple(json.loads(sys.argv[2]))

    def loaded():
        return sorted(
            name for name in sys.modules
            if any(name == u or name.startswith(u + ".") for u in UNUSED)
        )

    async def main():
        app = App(parse_config(json.loads(sys.argv[1])))
        await app.start()
        try:
            print("STARTED", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            print(json.dumps(loaded()), flush=True)
        finally:
            await app.stop()

    asyncio.run(main())
    """
)


async def run_child(
    config: dict[str, object], fake: FakeTelegram, user_id: int | None
) -> list[str]:
    """Start the app in a fresh interpreter, answer one message (when ``user_id`` is given),
    and return the unused modules it has loaded."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(config),
        json.dumps(UNUSED),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"STARTED"
        if user_id is not None:
            bot = fake.bots[TOKEN]
            user = bot.make_user(user_id, "Ana")
            await bot.push_text(bot.private_chat(user), user, "Quero vender um iPhone 12")
            await fake.wait_calls("sendMessage", 1, chat_id=user_id, timeout=30)
        proc.stdin.write(b"check\n")
        await proc.stdin.drain()
        loaded: list[str] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)
    return loaded


def config(tmp_path: Path, fake: FakeTelegram, backend: dict[str, Any]) -> dict[str, object]:
    return {
        "store": {"url": f"sqlite:///{tmp_path / 'lean.db'}"},
        "backends": {"ai": backend},
        "bots": [
            {
                "name": "lean",
                "platform": "telegram",
                "backend": "ai",
                "token": TOKEN,
                "api_base_url": f"{fake.url}/bot",
                "poll_timeout": 1,
            }
        ],
    }


async def test_a_loopos_telegram_bot_loads_no_shopai_discord_or_redis_code(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    async with FakeTelegram(interval=0) as fake:
        fake.add_bot(TOKEN, "lean_bot")
        backend = {
            "type": "loopos",
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
        }
        loaded = await run_child(config(tmp_path, fake, backend), fake, 501)
    assert loaded == []


async def test_a_shopai_telegram_bot_does_load_the_shopai_client(tmp_path: Path) -> None:
    # the same check sees what it should: a ShopAI bot imports its clients when the backend
    # is built (no connection is made before a user writes, so no server is needed)
    async with FakeTelegram(interval=0) as fake:
        fake.add_bot(TOKEN, "lean_bot")
        backend = {"type": "shopai", "base_url": "http://127.0.0.1:9", "license_key": "lk-x"}
        loaded = await run_child(config(tmp_path, fake, backend), fake, None)
    assert "chatbridge.core.backends.shopai.backend" in loaded
    assert "websockets" in loaded
    assert "chatbridge.adapters.discord_adapter.adapter" not in loaded
