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
from discord.app_commands import locale_str

from chatbridge.adapters.discord_adapter.operations import interaction_facts
from chatbridge.core.access import Verdict
from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.images import ImageRejected, check_size, load_image
from chatbridge.core.item_services import (
    CONDITION_OPTIONS,
    CONDITION_PROMPT,
    condition_text,
    listing_text,
    service_failure_text,
)
from chatbridge.core.locales.en import TEXTS as EN

if TYPE_CHECKING:
    from chatbridge.adapters.discord_adapter.adapter import DiscordAdapter

__all__ = ["build_tree"]

log = logging.getLogger(__name__)

REFUSED = EN["admin_only"]  # the English text; users read it in their language
MAX_LIST = 20


def _menu(key: str) -> locale_str:
    """A slash command or parameter description: English by default, and translated for every
    Discord locale we have a catalogue for by ``CatalogueTranslator`` at sync time."""
    return locale_str(EN[key], key=key)


def _t(
    adapter: DiscordAdapter, interaction: discord.Interaction[Any], key: str, **f: object
) -> str:
    """``key`` from the bot's catalogue in the user's Discord language."""
    return adapter.engine.texts.catalogue.text(key, str(interaction.locale), **f)


async def _admitted(adapter: DiscordAdapter, interaction: discord.Interaction[Any]) -> bool:
    """The bot's access policy (core/access.py) for a slash command; refuses politely."""
    verdict, refusal = adapter.access.check(interaction_facts(interaction))
    if verdict is Verdict.ALLOW:
        return True
    text = refusal or _t(adapter, interaction, "refused")
    await interaction.response.send_message(text, ephemeral=True)
    return False


def _add_lang(tree: app_commands.CommandTree[Any], adapter: DiscordAdapter) -> None:
    @tree.command(name="lang", description=_menu("menu_lang"))
    @app_commands.describe(language=_menu("menu_lang_language"))
    async def lang(interaction: discord.Interaction[Any], language: str) -> None:
        if not await _admitted(adapter, interaction):
            return  # a session is opened at the backend: only for who may talk to the bot
        language = language.strip()
        if not 2 <= len(language) <= 16:
            await interaction.response.send_message(
                _t(adapter, interaction, "lang_invalid"), ephemeral=True
            )
            return
        key = adapter.key_for(interaction.channel, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await adapter.engine.set_language(key, language)
        except BackendError as exc:
            text = adapter.engine.texts.for_failure(exc.failure, str(interaction.locale))
            await interaction.followup.send(text, ephemeral=True)
            return
        await interaction.followup.send(
            _t(adapter, interaction, "lang_set", code=language), ephemeral=True
        )


def _add_cancel(tree: app_commands.CommandTree[Any], adapter: DiscordAdapter) -> None:
    @tree.command(name="cancel", description=_menu("menu_cancel"))
    async def cancel(interaction: discord.Interaction[Any]) -> None:
        key = adapter.key_for(interaction.channel, interaction.user.id)
        # the cancelled turn tells the user itself, on its own message
        cancelled = await adapter.engine.cancel(key)
        text = _t(adapter, interaction, "cancelled" if cancelled else "nothing_to_cancel")
        await interaction.response.send_message(text, ephemeral=True)


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
            await interaction.response.send_message(
                _t(adapter, interaction, "admin_only"), ephemeral=True
            )
        return allowed

    @tree.command(name="reset", description=_menu("menu_reset"))
    async def reset(interaction: discord.Interaction[Any]) -> None:
        key = adapter.key_for(interaction.channel, interaction.user.id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        existed = await engine.reset(key)
        text = _t(adapter, interaction, "reset_done" if existed else "reset_nothing")
        await interaction.followup.send(text, ephemeral=True)

    _add_cancel(tree, adapter)

    _add_lang(tree, adapter)

    _add_item_commands(tree, adapter)

    admin = app_commands.Group(name="admin", description=_menu("menu_admin"))

    @admin.command(name="reset", description=_menu("menu_admin_reset"))
    @app_commands.describe(user=_menu("menu_admin_reset_user"))
    async def admin_reset(interaction: discord.Interaction[Any], user: discord.User) -> None:
        if not await admin_ok(interaction, "reset"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await engine.reset_user(str(user.id))
        log.info("bot %s: admin %s reset %d conversations of %s", adapter.name,
                 interaction.user.id, count, user.id)  # fmt: skip
        await interaction.followup.send(
            _t(adapter, interaction, "admin_reset_user", count=count, user=user.mention),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @admin.command(name="reset-all", description=_menu("menu_admin_reset_all"))
    async def admin_reset_all(interaction: discord.Interaction[Any]) -> None:
        if not await admin_ok(interaction, "reset-all"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await engine.reset_all()
        log.info("bot %s: admin %s reset all %d conversations", adapter.name,
                 interaction.user.id, count)  # fmt: skip
        await interaction.followup.send(
            _t(adapter, interaction, "admin_reset_all", count=count), ephemeral=True
        )

    @admin.command(name="sessions", description=_menu("menu_admin_sessions"))
    async def admin_sessions(interaction: discord.Interaction[Any]) -> None:
        if not await admin_ok(interaction, "sessions"):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        total = await engine.count_sessions()
        records = await engine.list_sessions(MAX_LIST)
        lines = [_t(adapter, interaction, "admin_sessions", count=total)]
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
    """The decision and listing services, as on Telegram (backends without them say so).
    Both reach the backend: only for who may talk to the bot."""
    engine = adapter.engine

    @tree.command(name="condition", description=_menu("menu_condition"))
    @app_commands.describe(item=_menu("menu_condition_item"))
    async def condition(interaction: discord.Interaction[Any], item: str) -> None:
        if not await _admitted(adapter, interaction):
            return
        await interaction.response.defer(thinking=True)
        language = str(interaction.locale)
        try:
            decision = await engine.decide(CONDITION_PROMPT, CONDITION_OPTIONS, item, language)
            text = condition_text(decision, adapter.engine.texts.catalogue, language)
        except NotSupported:
            text = _t(adapter, interaction, "condition_unsupported")
        except Exception as exc:
            log.warning("bot %s: condition failed: %s", adapter.name, type(exc).__name__)
            text = service_failure_text(exc, engine.texts, language, "condition_failed")
        await interaction.followup.send(text, allowed_mentions=discord.AllowedMentions.none())

    @tree.command(name="listing", description=_menu("menu_listing"))
    @app_commands.describe(
        photo=_menu("menu_listing_photo"), description=_menu("menu_listing_description")
    )
    async def listing(
        interaction: discord.Interaction[Any], photo: discord.Attachment, description: str
    ) -> None:
        if not await _admitted(adapter, interaction):
            return
        await interaction.response.defer(thinking=True)
        limit = adapter.options.max_image_bytes
        language = str(interaction.locale)
        try:
            check_size(photo.size, limit)
            image = load_image(await photo.read(), limit)
            draft = await engine.describe_listing((image,), description, language)
            text = listing_text(draft, adapter.engine.texts.catalogue, str(interaction.locale))
        except ImageRejected as exc:
            text = engine.texts.catalogue.rejection(exc, language)
        except NotSupported:
            text = _t(adapter, interaction, "listing_unsupported")
        except Exception as exc:
            log.warning("bot %s: listing failed: %s", adapter.name, type(exc).__name__)
            text = service_failure_text(exc, engine.texts, language, "listing_failed")
        await interaction.followup.send(text, allowed_mentions=discord.AllowedMentions.none())
