"""Catching up after downtime: Discord's gateway never redelivers a message sent while the
bot was away, so on every (re)connection the bot reads the history of each channel where a
conversation was recorded recently, after the last message it recorded there, and takes those
messages as if they had just arrived (the same filters; the journal skips any it holds).

Follow-ups inside threads are not read back (only the channel or DM a conversation is
recorded under): a thread's replies come after the gateway is back, or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from chatbridge.core.protocols import TurnSubmitter

log = logging.getLogger(__name__)

#: Channels with a conversation recorded this recently are read back.
WINDOW = timedelta(days=1)
#: At most this many missed messages per channel (one page of Discord's history).
PAGE = 100


async def catch_up(
    client: discord.Client,
    engine: TurnSubmitter,
    bot: str,
    take: Callable[[discord.Message], Awaitable[None]],
) -> int:
    """Take the messages posted after the last recorded one in each recent channel; returns
    how many were handed to ``take``."""
    last = await engine.last_seen(datetime.now(UTC) - WINDOW)
    taken = 0
    for chat_id, message_id in last.items():
        if not (chat_id.isdigit() and message_id.isdigit()):
            continue
        channel: Any = client.get_channel(int(chat_id))
        try:
            if channel is None:
                channel = await client.fetch_channel(int(chat_id))
            if not isinstance(channel, discord.abc.Messageable):
                continue
            missed = [
                m
                async for m in channel.history(
                    after=discord.Object(id=int(message_id)), oldest_first=True, limit=PAGE
                )
            ]
        except discord.HTTPException as exc:
            log.warning("Discord bot %s: no history for channel %s: %s", bot, chat_id, exc)
            continue
        for message in missed:
            await take(message)
        taken += len(missed)
    if taken:
        log.info("Discord bot %s: read %d messages posted while it was away", bot, taken)
    return taken
