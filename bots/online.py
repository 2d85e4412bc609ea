"""``chatbridge check-config --online``: contact every platform, backend and the store.

Each check is bounded in time and says, in one line, what answered and what did not:
Telegram ``getMe``, Discord ``GET /users/@me`` (the login call), LoopOS reachability, ShopAI
``/init_session`` with the configured license key, and the store's ping. Nothing is changed
anywhere: no webhook is set, no message sent, a SQLite file is never created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from chatbridge.bots.config import (
    Config,
    DiscordBotConfig,
    LoopOSBackendConfig,
    ShopAIBackendConfig,
    TelegramBotConfig,
    mask_url_password,
)
from chatbridge.bots.preflight import Problem
from chatbridge.core.errors import BackendError
from chatbridge.core.secrets import safe_error
from chatbridge.core.types import ConversationKey

DISCORD_API = "https://discord.com/api/v10"
TIMEOUT = 10.0

Report = Callable[[str], None]


async def online_problems(config: Config, report: Report = print) -> list[Problem]:
    """Contact everything the file names; ``report`` gets one line per success."""
    checks: list[Awaitable[Problem | None]] = []
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for i, bot in enumerate(config.bots):
            if isinstance(bot, TelegramBotConfig):
                checks.append(_telegram(http, i, bot, report))
            elif isinstance(bot, DiscordBotConfig):
                checks.append(_discord(http, i, bot, report))
        for name, backend in config.backends.items():
            if not any(bot.backend == name for bot in config.bots):
                continue
            if isinstance(backend, LoopOSBackendConfig):
                checks.append(_loopos(http, name, backend, report))
            else:
                checks.append(_shopai(name, backend, report))
        checks.append(_store(config, report))
        results = await asyncio.gather(*checks)
    return [p for p in results if p is not None]


async def _telegram(
    http: httpx.AsyncClient, i: int, bot: TelegramBotConfig, report: Report
) -> Problem | None:
    key = f"bots[{i}]"
    url = f"{bot.api_base_url}{bot.token.get_secret_value()}/getMe"
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        return Problem(key, f"Telegram Bot API not reachable at {_origin(url)}: {_kind(exc)}")
    if response.status_code in (401, 404):
        return Problem(f"{key}.token", "Telegram rejected the token (getMe: Unauthorized)")
    if response.status_code != 200:
        return Problem(key, f"Telegram getMe answered HTTP {response.status_code}")
    username = response.json().get("result", {}).get("username", "?")
    report(f"{key}: Telegram OK: bot {bot.name} is @{username}")
    return None


async def _discord(
    http: httpx.AsyncClient, i: int, bot: DiscordBotConfig, report: Report
) -> Problem | None:
    key = f"bots[{i}]"
    url = f"{bot.api_base_url or DISCORD_API}/users/@me"
    headers = {"Authorization": f"Bot {bot.token.get_secret_value()}"}
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Problem(key, f"Discord API not reachable at {_origin(url)}: {_kind(exc)}")
    if response.status_code == 401:
        return Problem(f"{key}.token", "Discord rejected the token (login: 401 Unauthorized)")
    if response.status_code != 200:
        return Problem(key, f"Discord login answered HTTP {response.status_code}")
    username = response.json().get("username", "?")
    report(f"{key}: Discord OK: bot {bot.name} logs in as {username}")
    return None


async def _loopos(
    http: httpx.AsyncClient, name: str, backend: LoopOSBackendConfig, report: Report
) -> Problem | None:
    key = f"backends.{name}.base_url"
    try:
        response = await http.get(backend.base_url, headers=backend.header_values())
    except httpx.HTTPError as exc:
        return Problem(key, f"LoopOS not reachable at {_origin(backend.base_url)}: {_kind(exc)}")
    if response.status_code >= 500:
        return Problem(key, f"LoopOS answers HTTP {response.status_code} (server error)")
    report(f"backends.{name}: LoopOS reachable at {_origin(backend.base_url)}")
    return None


async def _shopai(name: str, backend: ShopAIBackendConfig, report: Report) -> Problem | None:
    from chatbridge.core.backends.shopai import ShopAIBackend

    client = ShopAIBackend(backend, name=name)
    key = ConversationKey("check-config", "check", "0", "0")
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            ref = await client.open(key, backend.language)
        await client.close(ref)
    except BackendError as exc:
        where = "license_key" if exc.failure.kind == "auth" else "base_url"
        what = "rejected the license key" if where == "license_key" else exc.failure.detail
        return Problem(f"backends.{name}.{where}", f"ShopAI init_session failed: {what}")
    except Exception as exc:
        return Problem(f"backends.{name}.base_url", f"ShopAI not reachable: {safe_error(exc)}")
    finally:
        await client.aclose()
    report(f"backends.{name}: ShopAI init_session OK with the license key")
    return None


async def _store(config: Config, report: Report) -> Problem | None:
    from chatbridge.core.store import open_store, sqlite_path

    url = config.store.url
    shown = mask_url_password(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "sqlite"):
        path = sqlite_path(url)
        if path != ":memory:":
            absolute, exists = _resolve(path)
            if not exists:
                report(f"store: {absolute} does not exist yet; the first run creates it")
                return None
            url = f"sqlite:///{absolute}"
    try:
        async with asyncio.timeout(TIMEOUT):
            store = await open_store(url)
            try:
                ok = await store.ping()
            finally:
                await store.close()
    except Exception as exc:
        return Problem("store.url", f"the store at {shown} cannot be opened: {safe_error(exc)}")
    if not ok:
        return Problem("store.url", f"the store at {shown} does not answer")
    report(f"store: {shown} answers")
    return None


def _resolve(path: str) -> tuple[Path, bool]:
    absolute = Path(path).absolute()
    return absolute, absolute.exists()


def _origin(url: str) -> str:
    """Scheme, host and port only: a Telegram URL carries the token in its path."""
    parts = httpx.URL(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}"


def _kind(exc: Exception) -> str:
    return type(exc).__name__
