"""Catching up after downtime: Discord's gateway never redelivers a message sent while the
bot was away, so on every (re)connection the bot reads the history of each channel (or DM)
where a conversation was recorded recently, after the last message it recorded there, and
takes those messages as if they had just arrived (the same filters; the journal skips any it
holds).

History is read page by page (100 messages a page, ``after`` the newest one read), oldest
first, up to ``limit`` messages per channel; past that the rest stays unread and a warning
says so (the next catch-up starts after the last one taken). The active threads of those
channels are read the same way, after the same message (Discord's ids grow with time across
channels, so "after the last recorded message" holds inside a thread too), which also finds
threads opened while the bot was away. A channel's messages and its threads' are taken
together in the order they were posted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from chatbridge.core.protocols import TurnSubmitter

log = logging.getLogger(__name__)

#: Channels with a conversation recorded this recently are read back.
WINDOW = timedelta(days=1)
#: Missed messages read back per channel and per thread, unless configured otherwise.
DEFAULT_LIMIT = 1000


async def catch_up(
    client: discord.Client,
    engine: TurnSubmitter,
    bot: str,
    take: Callable[[discord.Message], Awaitable[None]],
    *,
    limit: int = DEFAULT_LIMIT,
) -> int:
    """Take the messages posted after the last recorded one in each recent channel and in
    its active threads; returns how many were handed to ``take``."""
    last = await engine.last_seen(datetime.now(UTC) - WINDOW)
    recent: list[tuple[Any, int]] = []  # (channel or DM, the last message id recorded there)
    for chat_id, message_id in last.items():
        if not (chat_id.isdigit() and message_id.isdigit()):
            continue
        channel = await _channel(client, bot, int(chat_id))
        if channel is not None:
            recent.append((channel, int(message_id)))
    threads = await _active_threads(bot, [channel for channel, _ in recent])
    me = client.user.id if client.user is not None else None
    taken = 0
    for channel, after in recent:
        # a forum has no messages of its own, only posts (threads)
        readable = isinstance(channel, discord.abc.Messageable)
        missed = await _missed(bot, channel, after, limit, me) if readable else []
        for thread in threads.get(channel.id, []):
            if thread.last_message_id is None or thread.last_message_id > after:
                missed += await _missed(bot, thread, after, limit, me)
        missed.sort(key=lambda m: m.id)  # as posted, the channel's and its threads' together
        for message in missed:
            await take(message)
        taken += len(missed)
    if taken:
        log.info("Discord bot %s: read %d messages posted while it was away", bot, taken)
    return taken


async def _channel(client: discord.Client, bot: str, channel_id: int) -> Any:
    """The channel, forum or DM with this id, if the bot can still reach it."""
    channel: Any = client.get_channel(channel_id)
    try:
        if channel is None:
            channel = await client.fetch_channel(channel_id)
    except discord.HTTPException as exc:
        log.warning("Discord bot %s: channel %s is out of reach: %s", bot, channel_id, exc)
        return None
    return channel


async def _active_threads(bot: str, channels: list[Any]) -> dict[int, list[Any]]:
    """The active threads of these channels, by parent channel id (one request per guild)."""
    guilds = {c.guild.id: c.guild for c in channels if getattr(c, "guild", None) is not None}
    ids = {c.id for c in channels}
    found: dict[int, list[Any]] = defaultdict(list)
    for guild in guilds.values():
        try:
            threads = await guild.active_threads()
        except discord.HTTPException as exc:
            log.warning("Discord bot %s: no active threads of guild %s: %s", bot, guild.id, exc)
            continue
        for thread in threads:
            if thread.parent_id in ids:
                found[thread.parent_id].append(thread)
    return found


async def _missed(
    bot: str, channel: Any, after: int, limit: int, me: int | None
) -> list[discord.Message]:
    """Up to ``limit`` messages of others after ``after``, oldest first (discord.py pages
    with ``after`` = the newest id of the previous page; the bot's own answers are skipped)."""
    missed: list[discord.Message] = []
    try:
        async for message in channel.history(
            after=discord.Object(id=after), oldest_first=True, limit=None
        ):
            if message.author.id == me:
                continue
            if len(missed) == limit:
                log.warning(
                    "Discord bot %s: more than %d messages were posted in channel %s while "
                    "it was away; answering the first %d (catch_up_limit)",
                    bot,
                    limit,
                    channel.id,
                    limit,
                )
                break
            missed.append(message)
    except discord.HTTPException as exc:
        log.warning("Discord bot %s: no history for channel %s: %s", bot, channel.id, exc)
    return missed
