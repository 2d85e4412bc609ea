"""What the operator-facing parts of a Discord bot need from discord.py: why a login failed
(bots/runner.py retries), the neutral facts core/access.py decides on, and the translator that
gives slash commands their descriptions in each user's language."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
from discord import app_commands

from chatbridge.core.access import Facts
from chatbridge.core.errors import StartupFailed
from chatbridge.core.secrets import safe_error
from chatbridge.core.texts import Catalogue, locale_for


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


def access_facts(message: discord.Message, addressed: bool) -> Facts:
    """Who wrote ``message`` and where, for the access policy."""
    channel = message.channel
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    roles = getattr(message.author, "roles", None) or ()  # a Member in guilds, a User in DMs
    return Facts(
        user=str(message.author.id),
        chat=str(channel.id),
        guild=str(message.guild.id) if message.guild is not None else None,
        channel=str(parent or channel.id),
        roles=frozenset(str(role.id) for role in roles),
        group=message.guild is not None,
        mentioned=addressed,
    )


def interaction_facts(interaction: discord.Interaction[Any]) -> Facts:
    """Who ran a slash command and where, for the access policy (always addressed)."""
    channel = interaction.channel
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    roles = getattr(interaction.user, "roles", None) or ()
    return Facts(
        user=str(interaction.user.id),
        chat=str(interaction.channel_id),
        guild=str(interaction.guild_id) if interaction.guild_id is not None else None,
        channel=str(parent or interaction.channel_id),
        roles=frozenset(str(role.id) for role in roles),
        group=interaction.guild_id is not None,
        mentioned=True,
        language=str(interaction.locale),
    )


class CatalogueTranslator(app_commands.Translator):
    """Slash command texts declared as ``locale_str(english, key="menu_reset")`` are sent to
    Discord with a translation for every Discord locale we have a catalogue for (``pt-BR``,
    Discord's only Portuguese, reads the pt-PT catalogue)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContext[Any, Any],
    ) -> str | None:
        key = string.extras.get("key")
        if key is None or not locale_for(locale.value, ""):
            return None  # Discord shows the default text
        return self.catalogue.text(key, locale.value)
