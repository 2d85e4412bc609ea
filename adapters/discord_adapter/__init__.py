"""Discord adapter (discord.py 2.x): DMs, guild channels, threads, streaming, buttons, slash
commands. Named ``discord_adapter`` so it never shadows the ``discord`` library.

Only the options model is imported eagerly: configuration loading needs it, and it must work
on an install without the ``discord`` extra (``chatbridge demo`` after ``pip install .``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatbridge.adapters.discord_adapter.options import DiscordOptions

if TYPE_CHECKING:
    from chatbridge.adapters.discord_adapter.adapter import DiscordAdapter
    from chatbridge.adapters.discord_adapter.endpoints import EndpointConflict
    from chatbridge.adapters.discord_adapter.render import render_markdown, split_markdown

__all__ = [
    "DiscordAdapter",
    "DiscordOptions",
    "EndpointConflict",
    "render_markdown",
    "split_markdown",
]

_LAZY = {
    "DiscordAdapter": "chatbridge.adapters.discord_adapter.adapter",
    "EndpointConflict": "chatbridge.adapters.discord_adapter.endpoints",
    "render_markdown": "chatbridge.adapters.discord_adapter.render",
    "split_markdown": "chatbridge.adapters.discord_adapter.render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
