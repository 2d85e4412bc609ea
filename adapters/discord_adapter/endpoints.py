"""Where discord.py sends REST calls and opens the gateway: process-wide, so claimed per bot.

discord.py keeps the REST base (``discord.http.Route.BASE``) and the gateway URL
(``DiscordWebSocket.DEFAULT_GATEWAY``) as class attributes: every client in the process uses
them. A REST proxy (nirn-proxy) or gateway proxy is therefore a per-process choice; bots that
ask for different endpoints in one process are refused with a clear error instead of
silently talking to the wrong server.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import discord
import discord.gateway
import discord.http
import yarl

__all__ = ["EndpointConflict", "claim", "release"]

_DEFAULT_API = discord.http.Route.BASE
_DEFAULT_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

# bot name -> (api base, gateway url) of every running Discord bot in this process
_claims: dict[str, tuple[str, str]] = {}


class EndpointConflict(RuntimeError):
    """Two Discord bots in one process asked for different REST or gateway endpoints."""


def _shown(url: str) -> str:
    """The URL without credentials (a proxy URL may carry user:password@)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def claim(bot: str, api_base_url: str | None, gateway_url: str | None) -> None:
    """Point discord.py at the bot's endpoints, or raise if another running bot uses others."""
    wanted = (api_base_url or _DEFAULT_API, gateway_url or str(_DEFAULT_GATEWAY))
    for other, endpoints in _claims.items():
        if other != bot and endpoints != wanted:
            raise EndpointConflict(
                f"Discord bot {bot!r} wants api_base_url={_shown(wanted[0])} "
                f"gateway_url={_shown(wanted[1])}, but bot {other!r} in this process uses "
                f"{_shown(endpoints[0])} and {_shown(endpoints[1])}. "
                "discord.py shares these settings process-wide: give every Discord bot of one "
                "process the same api_base_url and gateway_url, or run them in separate "
                "processes."
            )
    _claims[bot] = wanted
    discord.http.Route.BASE = wanted[0]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(wanted[1])


def release(bot: str) -> None:
    """The bot stopped; when no Discord bot is left, restore discord.py's defaults."""
    _claims.pop(bot, None)
    if not _claims:
        discord.http.Route.BASE = _DEFAULT_API
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _DEFAULT_GATEWAY
