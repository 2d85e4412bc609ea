"""Pacing and counting Discord platform calls, inside discord.py's own HTTP session.

discord.py makes its REST requests itself (and retries 429s and 5xx itself) and exposes no
hook for them, but it accepts an aiohttp ``TraceConfig`` (``Client(http_trace=...)``), whose
``on_request_start`` aiohttp awaits before each request goes out. There every request waits
for a permit of the bot's :class:`core.pacer.Pacer` (Discord's global 50 requests a second per
token; interaction endpoints are exempt, as on Discord), and every answer is counted for the
metrics, with no wrapper around each call site.

discord.py reads each route's bucket from the answers' ``X-RateLimit-*`` headers and waits by
it, but for its own process only. With several replicas of one bot (shards on two replicas,
turns of one channel run by either), each would spend a channel's whole bucket: given shared
``routes`` (:class:`core.budget.SharedRouteBuckets`, in Redis), every request first takes a
place in its route's bucket as all the replicas counted it, and every answer's headers are
recorded there. Interaction endpoints are left out: an interaction's token is used by the one
replica running its turn.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace

import aiohttp

from chatbridge.adapters.discord_adapter.options import DiscordOptions
from chatbridge.core.budget import RouteBuckets
from chatbridge.core.pacer import URGENT, Pacer, Window
from chatbridge.core.protocols import PlatformMetrics

# POST .../channels/{id}/messages and interaction follow-ups POST .../webhooks/{app}/{token}
_SEND = re.compile(r"/channels/\d+/messages$|/webhooks/\d+/[^/]+$")
# PATCH .../channels/{id}/messages/{id} and .../webhooks/{app}/{token}/messages/{id|@original}
_EDIT = re.compile(r"/channels/\d+/messages/\d+$|/webhooks/\d+/[^/]+/messages/[^/]+$")


# interaction callbacks and follow-ups are not bound by the global limit
_EXEMPT = re.compile(r"/api/v\d+/(interactions|webhooks)/")
# a route as discord.py keys it: the method and the path with its ids left out; the scope
# (Discord's "major parameter") is the channel or guild the route acts on
_API = re.compile(r"^.*?/api/v\d+")
_SCOPE = re.compile(r"^/(?:channels|guilds)/(\d+)")
_ID = re.compile(r"/\d{5,}(?=/|$)")


def discord_pacer(options: DiscordOptions) -> Pacer:
    """The REST budget of one bot token (channels' own limits are discord.py's buckets)."""
    rate = options.global_rate
    # streaming edits may use four fifths: finals and first messages always find room
    return Pacer(Window(rate, 1.0, stream_limit=max(1, rate * 4 // 5)) if rate > 0 else None)


def platform_trace(
    bot: str,
    metrics: PlatformMetrics | None,
    pacer: Pacer | None = None,
    routes: RouteBuckets | None = None,
) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    if routes is not None:
        _share_routes(trace, routes)  # before the global permit: none is held while waiting
    if pacer is not None:
        _pace(trace, pacer)
    if metrics is not None:
        _count(trace, bot, metrics)
    return trace


def route_of(method: str, path: str) -> tuple[str, str]:
    """``(route, scope)`` of a REST request, e.g. ``("POST /channels/{id}/messages",
    "<channel id>")``."""
    path = _API.sub("", path, count=1)
    scope = _SCOPE.match(path)
    return f"{method} {_ID.sub('/{id}', path)}", scope[1] if scope else ""


def _share_routes(trace: aiohttp.TraceConfig, routes: RouteBuckets) -> None:
    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if _EXEMPT.search(params.url.path):
            return
        context.route = route_of(params.method, params.url.path)
        await routes.take(*context.route)

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        taken: tuple[str, str] | None = getattr(context, "route", None)
        headers = params.response.headers
        bucket = headers.get("X-RateLimit-Bucket")
        if taken is None or bucket is None or headers.get("X-RateLimit-Global"):
            return
        try:
            limit = int(headers["X-RateLimit-Limit"])
            remaining = int(headers["X-RateLimit-Remaining"])
            reset_after = float(headers["X-RateLimit-Reset-After"])
        except (KeyError, ValueError):
            return
        route, scope = taken
        await routes.learn(route, scope, bucket, limit, remaining, reset_after)

    trace.on_request_start.append(on_request_start)
    trace.on_request_end.append(on_request_end)


def _pace(trace: aiohttp.TraceConfig, pacer: Pacer) -> None:
    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if _EXEMPT.search(params.url.path):
            return
        # a streaming call arrives holding the stream's permit; anything else waits as urgent
        permit: AbstractAsyncContextManager[None] = pacer.spend(None, URGENT)
        await permit.__aenter__()
        context.permit = permit

    async def on_request_done(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        permit = getattr(context, "permit", None)
        if permit is not None:
            context.permit = None
            await permit.__aexit__(None, None, None)

    trace.on_request_start.append(on_request_start)
    trace.on_request_end.append(on_request_done)
    trace.on_request_exception.append(on_request_done)


def _count(trace: aiohttp.TraceConfig, bot: str, metrics: PlatformMetrics) -> None:
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
