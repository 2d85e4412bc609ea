"""A fake Discord API (REST under /api/v10 + the gateway WebSocket) on 127.0.0.1.

discord.py 2.7.x talks to it unmodified once ``discord.http.Route.BASE`` points at
:attr:`FakeDiscord.api_base_url` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at
:attr:`FakeDiscord.gateway_url` (the adapter does that from its ``api_base_url`` /
``gateway_url`` options, so tests only configure it).

What it does, as Discord does it:
- login: ``GET /users/@me``, ``GET /oauth2/applications/@me``; gateway HELLO -> IDENTIFY ->
  READY (guilds unavailable) -> GUILD_CREATE per guild (channels, members, roles);
  heartbeat -> ACK; RESUME is answered with INVALID_SESSION so the client re-identifies.
- REST: channel messages (create/edit/get), typing, DM channels, threads, application
  commands (global + guild PUT), interaction callbacks (``?with_response=1`` -> 200 JSON),
  followups and ``@original`` edits; attachments served under ``/attachments``.
- limits: content <= 2000, components (5 rows x 5 buttons, 25 total, label <= 80,
  custom_id 1..100, url <= 512) -> 400 ``Invalid Form Body``.
- rate limits, with Discord's 429s (``Via``, ``Retry-After``, ``X-RateLimit-*``, JSON body):
  the global limit of ``global_limit`` (50) requests a second per bot token across every REST
  route except interaction endpoints (``/interactions/...``, ``/webhooks/{app}/{token}``),
  answered with ``"global": true`` and ``X-RateLimit-Global: true``; the per-route bucket of
  message creates/edits (``message_bucket``: 5 per 5 s per channel, a fixed window as
  Discord's, announced in ``X-RateLimit-*`` headers on every answer so discord.py waits for it
  itself); and, for tests, ``edit_interval`` between edits in one channel.
- every REST call is recorded (:attr:`calls`); :meth:`wait_call` awaits one.
- catching up: history pages (``after``/``before``, ``limit``), active threads of a guild
  (``GET /guilds/{id}/threads/active``), threads users open (:meth:`new_thread`).

What each REST route does is :mod:`tests.fakes.discord_routes`; what fake users do,
:mod:`tests.fakes.discord_actions`.

Every JSON answer carries exactly ``Content-Type: application/json`` (discord.py compares the
header verbatim; aiohttp's ``json_response`` would add ``; charset=utf-8``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_actions import UserActions
from tests.fakes.discord_payloads import (
    BASIC_PERMISSIONS,
    DISCORD_EPOCH_MS,
    JSON,
    MANAGE_GUILD,
    MESSAGE_CONTENT,
    FakeUser,
    RestCall,
    _json,
    _now_iso,
    check_message_payload,
)
from tests.fakes.discord_routes import RestRoutes
from tests.fakes.flood_limits import DiscordLimits

__all__ = ["FakeDiscord", "FakeUser", "RestCall", "check_message_payload"]


class FakeDiscord(UserActions, RestRoutes):
    """The fake server. ``async with FakeDiscord() as fake:`` starts and stops it."""

    def __init__(
        self,
        *,
        edit_interval: float = 0.0,
        attachment_delay: float = 0.0,
        message_delay: float = 0.0,
        message_content_allowed: bool = True,
        token: str = "discord-secret-token-for-tests",  # a canary of tests/conftest.py
        global_limit: int = 50,
        global_period: float = 1.0,
        message_bucket: tuple[int, float] | None = (5, 5.0),
    ) -> None:
        # global_limit 0 = off; tests stretch global_period to reach it by counting
        self.limits = DiscordLimits(global_limit, global_period, message_bucket)
        self.edit_interval = edit_interval  # min seconds between edits in one channel, 0 = off
        self.attachment_delay = attachment_delay  # seconds before an attachment download answers
        self.message_delay = message_delay  # seconds before a channel message create/edit answers
        # False: the application has not enabled the privileged Message Content intent, so
        # an IDENTIFY asking for it is closed with 4014 as Discord does
        self.message_content_allowed = message_content_allowed
        self.token = token
        self.calls: list[RestCall] = []
        self.gateway_events: list[JSON] = []  # every DISPATCH sent (t, d)
        self.identify_count = 0
        self.identify_payloads: list[JSON] = []  # the "d" of every IDENTIFY (token removed)
        self.rate_limited = 0  # how many 429s were answered
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._cond = asyncio.Condition()
        self._sockets: set[web.WebSocketResponse] = set()
        self._shards: dict[web.WebSocketResponse, tuple[int, int]] = {}  # IDENTIFY shard
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.bot_user = FakeUser(self.snowflake(), "chatbridge-bot", bot=True)
        self.owner = FakeUser(self.snowflake(), "owner")
        self.application_id = self.snowflake()  # differs from the bot user's id, as on Discord
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, JSON] = {}
        self.channels: dict[int, JSON] = {}
        self.messages: dict[int, JSON] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.attachments: dict[int, tuple[str, bytes, str]] = {}
        self.commands: dict[int | None, list[JSON]] = {}  # guild id (None = global) -> commands
        self.interactions: dict[int, JSON] = {}  # id -> {token, original, kind, ...}
        self._last_edit: dict[int, float] = {}  # channel id -> monotonic time of last edit
        # One guild with two text channels is enough for most tests.
        self.guild_id = self.add_guild("shop")
        self.channel_id = self.add_channel(self.guild_id, "general")
        self.other_channel_id = self.add_channel(self.guild_id, "support")

    @property
    def global_limited(self) -> int:
        """Global 429s answered."""
        return self.limits.global_limited

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gw", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.http_base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gw"

    # ----------------------------------------------------------------- world building

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) & 0x3FFFFF)

    def add_user(self, name: str, *, admin: bool = False) -> FakeUser:
        """A human who is a member of every guild (with Manage Server when ``admin``)."""
        user = FakeUser(self.snowflake(), name)
        self.users[user.id] = user
        for guild in self.guilds.values():
            guild["members"].append(self._member(user, guild, admin=admin))
        return user

    def add_guild(self, name: str) -> int:
        gid = self.snowflake()
        everyone = {"id": str(gid), "name": "@everyone", "permissions": str(BASIC_PERMISSIONS)}
        admins = {"id": str(self.snowflake()), "name": "shop-admins"}
        admins["permissions"] = str(BASIC_PERMISSIONS | MANAGE_GUILD)
        guild: JSON = {
            "id": str(gid),
            "name": name,
            "owner_id": str(self.owner.id),
            "icon": None,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {**r, "color": 0, "hoist": False, "position": i, "managed": False}
                | {"mentionable": False, "flags": 0}
                for i, r in enumerate([everyone, admins])
            ],
            "channels": [],
            "threads": [],
            "members": [],
            "member_count": 0,
            "unavailable": False,
            "large": False,
            "joined_at": _now_iso(),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }
        self.guilds[gid] = guild
        guild["members"].append(self._member(self.bot_user, guild))
        return gid

    def add_channel(self, guild_id: int, name: str) -> int:
        cid = self.snowflake()
        guild = self.guilds[guild_id]
        channel = {
            "id": str(cid),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        guild["channels"].append(channel)
        self.channels[cid] = channel
        return cid

    def _member(self, user: FakeUser, guild: JSON, *, admin: bool = False) -> JSON:
        guild["member_count"] += 1
        return {
            "user": user.payload(),
            "roles": [guild["roles"][1]["id"]] if admin else [],
            "joined_at": _now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "_admin": admin,
        }

    def _member_of(self, guild_id: int, user: FakeUser) -> JSON:
        for m in self.guilds[guild_id]["members"]:
            if m["user"]["id"] == str(user.id):
                perms = BASIC_PERMISSIONS | (MANAGE_GUILD if m["_admin"] else 0)
                return {k: v for k, v in m.items() if k != "_admin"} | {"permissions": str(perms)}
        raise KeyError(f"{user.name} is not a member of guild {guild_id}")

    def _guild_payload(self, gid: int) -> JSON:
        guild = self.guilds[gid]
        members = [{k: v for k, v in m.items() if k != "_admin"} for m in guild["members"]]
        return {**guild, "members": members}

    def dm_channel_id(self, user: FakeUser) -> int:
        if user.id not in self.dm_channels:
            cid = self.snowflake()
            self.dm_channels[user.id] = cid
            self.channels[cid] = {"id": str(cid), "type": 1, "last_message_id": None}
            self.channels[cid]["recipients"] = [user.payload()]
        return self.dm_channels[user.id]

    # ----------------------------------------------------------------- observing

    async def _record(self, call: RestCall) -> None:
        async with self._cond:
            self.calls.append(call)
            self._cond.notify_all()

    async def wait_call(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        where: Callable[[RestCall], bool] | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> RestCall:
        """The first recorded call (index >= ``since``) matching; waits for it if needed.

        ``path`` is a regular expression matched against the whole path (no /api/v10).
        """

        def find() -> RestCall | None:
            for call in self.calls[since:]:
                if call.match(method, path) and (where is None or where(call)):
                    return call
            return None

        async with asyncio.timeout(timeout), self._cond:
            while (found := find()) is None:
                await self._cond.wait()
            return found

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked after every REST call)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                async with self._cond:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), 0.05)

    def gateway_event_at(self, event: str) -> float:
        """When the last ``event`` was dispatched (monotonic clock, as :attr:`RestCall.at`)."""
        return max(e["at"] for e in self.gateway_events if e["t"] == event)

    def find_calls(self, method: str | None = None, path: str | None = None) -> list[RestCall]:
        return [c for c in self.calls if c.match(method, path)]

    def bot_messages(self, channel_id: int) -> list[JSON]:
        """The bot's messages in a channel, oldest first, in their current (edited) state."""
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == str(channel_id) and m["author"]["id"] == str(self.bot_user.id)
        ]

    @property
    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of every identified gateway connection still open."""
        return sorted(shard for ws, shard in self._shards.items() if not ws.closed)

    async def wait_identified(self, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.identify_count >= count, timeout)

    # ----------------------------------------------------------------- injecting events

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a DISPATCH event to every identified gateway connection of the shard that
        carries it (a guild's: ``(guild_id >> 22) % shard_count``; DMs: shard 0)."""
        self.gateway_events.append({"t": event, "d": data, "at": time.monotonic()})
        frame = json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data})
        guild = data.get("guild_id") if isinstance(data, dict) else None
        for ws in list(self._sockets):
            if not ws.closed and self._carries(ws, int(guild) if guild else None):
                await ws.send_str(frame)

    def _carries(self, ws: web.WebSocketResponse, guild_id: int | None) -> bool:
        shard_id, shard_count = self._shards.get(ws, (0, 1))
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % shard_count == shard_id

    # ----------------------------------------------------------------- HTTP handlers

    async def _attachment(self, request: web.Request) -> web.Response:
        _name, data, ctype = self.attachments[int(request.match_info["id"])]
        if self.attachment_delay:
            await asyncio.sleep(self.attachment_delay)
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.content_type == "application/json":
            body = await request.json()
        elif request.content_type.startswith("multipart/"):
            form = await request.post()
            raw = form.get("payload_json")
            body = json.loads(str(raw)) if raw is not None else None
        call = RestCall(request.method, path, dict(request.query), body)
        message_route = re.fullmatch(r"/channels/(\d+)/messages(/\d+)?", path)
        if self.message_delay and message_route:
            await asyncio.sleep(self.message_delay)
        bucket = (
            int(message_route[1]) if message_route and call.method in ("POST", "PATCH") else None
        )
        refusal = self.limits.global_429(path, call.at) or self.limits.bucket_429(bucket, call.at)
        try:
            if refusal is not None:
                self.rate_limited += 1
                response = _json(refusal[0], 429, refusal[1])
            else:
                response = await self._route(request, call)
        except KeyError as exc:
            response = _json({"code": 10003, "message": f"Unknown {exc}"}, 404)
        if bucket is not None and refusal is None:
            response.headers.update(self.limits.bucket_headers(bucket, call.at))
        call.status = response.status
        await self._record(call)
        return response

    # ----------------------------------------------------------------- gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                op = msg.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    if msg["d"].get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    self.identify_payloads.append(
                        {k: v for k, v in msg["d"].items() if k != "token"}
                    )
                    intents = int(msg["d"].get("intents") or 0)
                    if intents & MESSAGE_CONTENT and not self.message_content_allowed:
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    self.identify_count += 1
                    shard = msg["d"].get("shard") or [0, 1]
                    self._shards[ws] = (int(shard[0]), int(shard[1]))
                    await self._ready(ws)
                elif op == 6:  # no resumable sessions here: start over
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
        finally:
            self._sockets.discard(ws)
            self._shards.pop(ws, None)
            async with self._cond:
                self._cond.notify_all()
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        ready = {
            "v": 10,
            "user": self.bot_user.payload() | {"verified": True, "mfa_enabled": False},
            "guilds": [
                {"id": str(g), "unavailable": True} for g in self.guilds if self._carries(ws, g)
            ],
            "session_id": f"session-{self.identify_count}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
        for gid in [g for g in self.guilds if self._carries(ws, g)]:
            frame = {"op": 0, "t": "GUILD_CREATE", "s": next(self._seq)}
            frame["d"] = self._guild_payload(gid)
            await ws.send_str(json.dumps(frame))
        self._sockets.add(ws)
        async with self._cond:
            self._cond.notify_all()
