"""Discord adapter (discord.py 2.x): DMs, guild channels, threads, streaming, buttons, slash
commands. Named ``discord_adapter`` so it never shadows the ``discord`` library."""

from adapters.discord_adapter.adapter import DiscordAdapter
from adapters.discord_adapter.endpoints import EndpointConflict
from adapters.discord_adapter.options import DiscordOptions
from adapters.discord_adapter.render import html_to_markdown, split_markdown

__all__ = [
    "DiscordAdapter",
    "DiscordOptions",
    "EndpointConflict",
    "html_to_markdown",
    "split_markdown",
]
