"""Counting Discord platform calls for the metrics, from discord.py's own HTTP session.

discord.py retries 429s itself and exposes no hook for them, but it accepts an aiohttp
``TraceConfig`` (``Client(http_trace=...)``): every REST response passes through it, so
messages sent, edits and rate limits are counted where they happen, with no wrapper around
each call site.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import aiohttp

from chatbridge.core.protocols import PlatformMetrics

# POST .../channels/{id}/messages and interaction follow-ups POST .../webhooks/{app}/{token}
_SEND = re.compile(r"/channels/\d+/messages$|/webhooks/\d+/[^/]+$")
# PATCH .../channels/{id}/messages/{id} and .../webhooks/{app}/{token}/messages/{id|@original}
_EDIT = re.compile(r"/channels/\d+/messages/\d+$|/webhooks/\d+/[^/]+/messages/[^/]+$")


def platform_trace(bot: str, metrics: PlatformMetrics) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        status = params.response.status
        if status == 429:
            metrics.rate_limited(bot, "discord")
            return
        if status >= 400:
            return
        path = params.url.path
        if params.method == "POST" and _SEND.search(path):
            metrics.message_sent(bot, "discord")
        elif params.method == "PATCH" and _EDIT.search(path):
            metrics.message_edited(bot, "discord")

    trace.on_request_end.append(on_request_end)
    return trace
