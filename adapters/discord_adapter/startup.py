"""Why a Discord bot could not log in, phrased for the operator (see bots/runner.py's retry)."""

from __future__ import annotations

import aiohttp
import discord

from chatbridge.core.errors import StartupFailed
from chatbridge.core.secrets import safe_error


def startup_failure(name: str, exc: Exception) -> StartupFailed:
    """A bad token is final; network faults and Discord's 5xx are worth retrying."""
    message = f"Discord bot {name} could not log in: {safe_error(exc)}"
    if isinstance(exc, discord.LoginFailure):
        return StartupFailed(
            message, retryable=False, hint="check the bot's token (Developer Portal -> Bot)"
        )
    if isinstance(exc, OSError | aiohttp.ClientError | TimeoutError | discord.DiscordServerError):
        return StartupFailed(
            message,
            retryable=True,
            hint="check the network and the bot's api_base_url (is Discord reachable?)",
        )
    return StartupFailed(message, retryable=False, hint="see Discord's answer above")
