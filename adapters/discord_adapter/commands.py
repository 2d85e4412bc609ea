"""Slash commands: ``/reset``, ``/lang``, ``/condition``, ``/listing`` for everyone;
``/admin ...`` for bot admins.

Admins are the configured user ids, or members with Manage Server in the guild where the
command runs. Every answer is ephemeral (only the caller sees it); refusals are logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.images import ImageRejected, check_size, load_image
from chatbridge.core.item_services import (
    CONDITION_FAILED,
    CONDITION_OPTIONS,
    CONDITION_PROMPT,
    CONDITION_UNSUPPORTED,
    LISTING_FAILED,
    LISTING_UNSUPPORTED,
    condition_text,
    listing_text,
)

if TYPE_CHECKING:
    from chatbridge.adapters.discord_adapter.adapter import DiscordAdapter

__all__ = ["build_tree"]

log = logging.getLogger(__name__)

REFUSED = "Only the bot's admins (or members with Manage Server) can use this command."
MAX_LIST = 20


def build_tree(client: discord.Client, adapter: DiscordAdapter) -> app_commands.CommandTree[Any]:
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)
    engine = adapter.engine

    async def admin_ok(interaction: discord.Interaction[Any], what: str) -> bool:
        user = interaction.user
        allowed = user.id in adapter.admins or (
            interaction.guild is not None and interaction.permissions.manage_guild
        )
        if not allowed:
            log.warning(
                "bot %s: refused /admin %s for user %s in channel %s",
                adapter.name,
                what,
                user.id,
                interaction.channel_id,
            )
            await interaction.response.send_message(REFUSED, ephemeral=True)
        return allowed

    @tree.command(name="reset", description="Forget this conversation and start over")
    async def reset(interaction: discord.Interaction[Any]) -> None:
        key = adapter.key_for(interaction.channel, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        existed = await engine.reset(key)
        text = "Done: your conversation was reset." if existed else "Nothing to reset yet."
        await interaction.followup.send(text, ephemeral=True)

    @tree.command(name="lang", description="Talk to the assistant in another language")
    @app_commands.describe(language="A language code such as en, pt-PT or fr")
    async def lang(interaction: discord.Interaction[Any], language: str) -> None:
        language = language.strip()
        if not 2 <= len(language) <= 16:
            await interaction.response.send_message(
                "Please give a language code such as en, pt-PT or fr.", ephemeral=True
            )
            return
        key = adapter.key_for(interaction.channel, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await engine.set_language(key, language)
        except BackendError as exc:
            await interaction.followup.send(engine.texts.for_failure(exc.failure), ephemeral=True)
            return
        await interaction.followup.send(
            f"Language set to {language}; a new conversation was started.", ephemeral=True
        )

    _add_item_commands(tree, adapter)

    admin = app_commands.Group(name="admin", description="Bot administration")

    @admin.command(name="reset", description="Reset every conversation of one user")
    @app_commands.describe(user="Whose conversations to reset")
    async def admin_reset(interaction: discord.Interaction[Any], user: discord.User) -> None:
        if not await admin_ok(interaction, "reset"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await engine.reset_user(str(user.id))
        log.info("bot %s: admin %s reset %d conversations of %s", adapter.name,
                 interaction.user.id, count, user.id)  # fmt: skip
        await interaction.followup.send(
            f"Reset {count} conversation(s) of {user.mention}.",
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @admin.command(name="reset-all", description="Reset every conversation of this bot")
    async def admin_reset_all(interaction: discord.Interaction[Any]) -> None:
        if not await admin_ok(interaction, "reset-all"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await engine.reset_all()
        log.info("bot %s: admin %s reset all %d conversations", adapter.name,
                 interaction.user.id, count)  # fmt: skip
        await interaction.followup.send(f"Reset {count} conversation(s).", ephemeral=True)

    @admin.command(name="sessions", description="List the most recent conversations")
    async def admin_sessions(interaction: discord.Interaction[Any]) -> None:
        if not await admin_ok(interaction, "sessions"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        total = await engine.count_sessions()
        records = await engine.list_sessions(MAX_LIST)
        lines = [f"{total} conversation(s); most recent first:"]
        for r in records:
            where = f"<#{r.key.thread_id or r.key.chat_id}>"
            when = discord.utils.format_dt(r.last_active, "R")
            lines.append(f"- <@{r.key.user_id}> in {where}: {r.turn_count} turn(s), {when}")
        text = "\n".join(lines)
        if len(text) > 2000:
            text = text[:1990].rsplit("\n", 1)[0] + "\n…"
        await interaction.followup.send(
            text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    tree.add_command(admin)
    return tree


def _add_item_commands(tree: app_commands.CommandTree[Any], adapter: DiscordAdapter) -> None:
    """The decision and listing services, as on Telegram (backends without them say so)."""
    engine = adapter.engine

    @tree.command(name="condition", description="Describe an item: the AI grades its condition")
    @app_commands.describe(item="The item and its state, e.g. iPhone 12, light scratches")
    async def condition(interaction: discord.Interaction[Any], item: str) -> None:
        await interaction.response.defer(thinking=True)
        language = str(interaction.locale)
        try:
            decision = await engine.decide(CONDITION_PROMPT, CONDITION_OPTIONS, item, language)
            text = condition_text(decision)
        except NotSupported:
            text = CONDITION_UNSUPPORTED
        except Exception as exc:
            log.warning("bot %s: condition failed: %s", adapter.name, type(exc).__name__)
            text = CONDITION_FAILED
        await interaction.followup.send(text, allowed_mentions=discord.AllowedMentions.none())

    @tree.command(name="listing", description="Photo + short description: a listing draft")
    @app_commands.describe(photo="A photo of the item", description="What it is, in a few words")
    async def listing(
        interaction: discord.Interaction[Any], photo: discord.Attachment, description: str
    ) -> None:
        await interaction.response.defer(thinking=True)
        limit = adapter.options.max_image_bytes
        try:
            check_size(photo.size, limit)
            image = load_image(await photo.read(), limit)
            draft = await engine.describe_listing((image,), description, str(interaction.locale))
            text = listing_text(draft)
        except ImageRejected as exc:
            text = exc.reason
        except NotSupported:
            text = LISTING_UNSUPPORTED
        except Exception as exc:
            log.warning("bot %s: listing failed: %s", adapter.name, type(exc).__name__)
            text = LISTING_FAILED
        await interaction.followup.send(text, allowed_mentions=discord.AllowedMentions.none())
