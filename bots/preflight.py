"""The pre-flight of ``chatbridge check-config``: every problem of a configuration at once.

Three layers, each phrased for the operator and naming the key:

- :func:`static_problems`: what the file itself gets wrong (empty or duplicate tokens, an
  unsupported store URL, two listeners on one port, a webhook Telegram cannot reach, bots
  open to everyone). Errors here also stop ``chatbridge run``.
- :func:`environment_problems`: what this installation lacks (a platform's or Redis's extra).
- :func:`online_problems` (``--online``): each platform, backend and the store, contacted.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from chatbridge.adapters.telegram.options import DEFAULT_API_BASE_URL
from chatbridge.bots.config import (
    Config,
    ConsoleBotConfig,
    DiscordBotConfig,
    LoopOSBackendConfig,
    TelegramBotConfig,
)

STORE_SCHEMES = ("sqlite", "memory", "redis", "rediss", "unix")
TELEGRAM_WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram delivers webhooks to
TELEGRAM_TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{30,}$")
DISCORD_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}$")
EXTRAS = {"telegram": ("telegram", "telegram"), "discord": ("discord", "discord")}


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _warn(key: str, message: str) -> Problem:
    return Problem(key, message, error=False)


def static_problems(config: Config) -> list[Problem]:
    """Everything wrong with the file itself (errors first, then warnings)."""
    found = [
        *_references(config),
        *_tokens(config),
        *_store(config),
        *_ports(config),
        *_webhooks(config),
        *_access(config),
        *_discord(config),
    ]
    return sorted(found, key=lambda p: not p.error)


def _references(config: Config) -> Iterator[Problem]:
    names: dict[str, int] = {}
    for i, bot in enumerate(config.bots):
        if bot.name in names:
            yield Problem(f"bots[{i}].name", f"{bot.name!r} is also bots[{names[bot.name]}]'s name")
        names.setdefault(bot.name, i)
        if bot.backend not in config.backends:
            known = ", ".join(sorted(config.backends)) or "none"
            yield Problem(
                f"bots[{i}].backend", f"no backend named {bot.backend!r} (defined: {known})"
            )


def _tokens(config: Config) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, bot in enumerate(config.bots):
        if isinstance(bot, ConsoleBotConfig):
            continue
        token = bot.token.get_secret_value().strip()
        key = f"bots[{i}].token"
        if not token:
            where = "BotFather's /token" if bot.platform == "telegram" else "the Developer Portal"
            yield Problem(key, f"empty; set it to the bot's token from {where}")
            continue
        if token in seen:
            yield Problem(
                key,
                f"the same token as bots[{seen[token]}]: one bot cannot run twice (Telegram "
                "answers the second poller with 409 Conflict; Discord drops a session)",
            )
        seen.setdefault(token, i)
        if isinstance(bot, TelegramBotConfig) and not TELEGRAM_TOKEN.match(token):
            yield _warn(key, "does not look like a Telegram token (digits:35 characters)")
        if isinstance(bot, DiscordBotConfig) and not DISCORD_TOKEN.match(token):
            yield _warn(key, "does not look like a Discord bot token (three dot-separated parts)")


def _store(config: Config) -> Iterator[Problem]:
    from chatbridge.core.store import StoreURLError, sqlite_path

    url = config.store.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme and scheme not in STORE_SCHEMES:
        yield Problem(
            "store.url",
            f"{scheme}:// is not supported; use sqlite:///path.db, redis://host:6379/0 "
            "or memory://",
        )
    elif scheme in ("", "sqlite"):
        try:
            sqlite_path(url)
        except StoreURLError as exc:
            yield Problem("store.url", str(exc))
    elif scheme == "memory":
        yield _warn("store.url", "memory:// forgets every conversation at each restart")


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _overlap(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a == b or a in wildcard or b in wildcard


def _ports(config: Config) -> Iterator[Problem]:
    taken: list[tuple[str, int, str]] = []  # host, port, who
    if config.http.listen:
        host, port = _host_port(config.http.listen)
        taken.append((host, port, "http.listen"))
    for i, bot in enumerate(config.bots):
        if not isinstance(bot, TelegramBotConfig) or bot.mode != "webhook":
            continue
        if bot.webhook_port == 0:
            continue  # any free port
        key = f"bots[{i}].webhook_port"
        for host, port, who in taken:
            if port == bot.webhook_port and _overlap(host, bot.webhook_listen):
                yield Problem(key, f"port {port} is already taken by {who}; give each its own")
        taken.append((bot.webhook_listen, bot.webhook_port, key))


def _is_loopback_or_private(host: str) -> bool:
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def _webhooks(config: Config) -> Iterator[Problem]:
    for i, bot in enumerate(config.bots):
        if not isinstance(bot, TelegramBotConfig) or bot.mode != "webhook":
            continue
        real_api = urlsplit(bot.api_base_url).hostname == urlsplit(DEFAULT_API_BASE_URL).hostname
        key = f"bots[{i}].webhook_url"
        if bot.webhook_url is None:
            if real_api:
                yield Problem(
                    key,
                    "not set: Telegram must be told the public https URL that reaches "
                    f"this listener (e.g. https://bot.example.com{bot.webhook_url_path})",
                )
            continue
        url = urlsplit(bot.webhook_url)
        if not real_api:
            continue  # a local Bot API server may post to any address
        if url.scheme != "https":
            yield Problem(key, "Telegram delivers webhooks over https only")
        if _is_loopback_or_private(url.hostname or ""):
            yield Problem(
                key, f"{url.hostname} is not reachable from Telegram's servers; use a public name"
            )
        if (url.port or 443) not in TELEGRAM_WEBHOOK_PORTS:
            yield Problem(key, "Telegram delivers webhooks to ports 443, 80, 88 or 8443 only")


def _access(config: Config) -> Iterator[Problem]:
    for i, bot in enumerate(config.bots):
        if isinstance(bot, ConsoleBotConfig):
            continue
        backend = config.backends.get(bot.backend)
        if not isinstance(backend, LoopOSBackendConfig):
            continue
        lists = [bot.allowed_users]
        if isinstance(bot, TelegramBotConfig):
            lists.append(bot.allowed_chats)
            hint = "allowed_users or allowed_chats"
        else:
            lists += [bot.allowed_guilds, bot.allowed_channels, bot.allowed_roles]
            hint = "allowed_users, allowed_guilds, allowed_channels or allowed_roles"
        if not any(lists):
            yield _warn(
                f"bots[{i}]",
                f"bot {bot.name} is open to everyone, and its LoopOS backend creates items: "
                f"set {hint}",
            )


def _discord(config: Config) -> Iterator[Problem]:
    first: dict[str, tuple[int, str | None]] = {}
    for i, bot in enumerate(config.bots):
        if not isinstance(bot, DiscordBotConfig):
            continue
        for key in ("api_base_url", "gateway_url"):
            value = getattr(bot, key)
            if key not in first:
                first[key] = (i, value)
            elif first[key][1] != value:
                yield Problem(
                    f"bots[{i}].{key}",
                    f"differs from bots[{first[key][0]}].{key}: discord.py uses one value per "
                    "process (run these bots in separate processes)",
                )
        if bot.effective_group_policy == "all" and not bot.message_content_intent:
            yield _warn(
                f"bots[{i}].group_policy",
                '"all" without message_content_intent: guild messages arrive empty',
            )


def environment_problems(config: Config) -> list[Problem]:
    """What this installation lacks to run the file."""
    found: list[Problem] = []
    for i, bot in enumerate(config.bots):
        if bot.platform in EXTRAS:
            module, extra = EXTRAS[bot.platform]
            if not _installed(module):
                found.append(
                    Problem(
                        f"bots[{i}].platform",
                        f"{bot.platform} support is not installed; install chatbridge with "
                        f"it: pip install '/path/to/checkout[{extra}]'",
                    )
                )
    scheme = config.store.url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix") and not _installed("redis"):
        found.append(
            Problem(
                "store.url",
                "Redis support is not installed; pip install '/path/to/checkout[redis]'",
            )
        )
    return found


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False
