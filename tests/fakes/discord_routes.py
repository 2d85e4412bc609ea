"""The REST routes of the fake Discord: what each endpoint does to the server's state
(mixed into :class:`tests.fakes.discord_api.FakeDiscord`, which owns that state, receives the
requests, applies the rate limits and records every call)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord_payloads import (
    JSON,
    FakeUser,
    RestCall,
    _form_error,
    _json,
    _now_iso,
    check_message_payload,
    history_page,
)


class RestRoutes:
    """Needs the server state below, which :class:`tests.fakes.discord_api.FakeDiscord` owns."""

    token: str
    channels: dict[int, JSON]
    messages: dict[int, JSON]
    guilds: dict[int, JSON]
    users: dict[int, FakeUser]
    commands: dict[int | None, list[JSON]]
    interactions: dict[int, JSON]
    bot_user: FakeUser
    owner: FakeUser
    application_id: int
    edit_interval: float
    rate_limited: int
    _last_edit: dict[int, float]

    def snowflake(self) -> int:
        raise NotImplementedError

    def dm_channel_id(self, user: FakeUser) -> int:
        raise NotImplementedError

    async def dispatch(self, event: str, data: JSON) -> None:
        raise NotImplementedError

    _message: Callable[..., JSON]  # tests.fakes.discord_actions.UserActions._message

    async def _route(self, request: web.Request, call: RestCall) -> web.Response:
        m, p, body = call.method, call.path, call.body or {}
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        if p.startswith(("/users/@me", "/oauth2/")) and not authorized:
            return _json({"code": 0, "message": "401: Unauthorized"}, 401)
        if (m, p) == ("GET", "/users/@me"):
            return _json(self.bot_user.payload() | {"verified": True, "mfa_enabled": False})
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            return _json(self._application())
        if (m, p) == ("POST", "/users/@me/channels"):
            user = self.users[int(body["recipient_id"])]
            return _json(self.channels[self.dm_channel_id(user)])
        if mt := re.fullmatch(r"/applications/(\d+)/(?:guilds/(\d+)/)?commands", p):
            return self._put_commands(m, mt, body)
        if p.startswith("/channels/") and (found := self._channel_route(call)) is not None:
            return found
        if (mt := re.fullmatch(r"/channels/(\d+)/(?:messages/(\d+)/)?threads", p)) and m == "POST":
            return await self._create_thread(int(mt[1]), body)
        if (mt := re.fullmatch(r"/guilds/(\d+)/threads/active", p)) and m == "GET":
            return self._active_threads(int(mt[1]))
        if mt := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._callback(int(mt[1]), mt[2], body)
        if mt := re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/(@original|\d+))?", p):
            return self._webhook(m, mt[2], mt[3], body)
        return _json({"code": 0, "message": f"404: Not Found ({m} {p})"}, 404)

    def _channel_route(self, call: RestCall) -> web.Response | None:
        m, p, body = call.method, call.path, call.body or {}
        if re.fullmatch(r"/channels/(\d+)/typing", p):
            return web.Response(status=204)
        if (mt := re.fullmatch(r"/channels/(\d+)/messages", p)) and m == "POST":
            return self._create_message(int(mt[1]), body)
        if (mt := re.fullmatch(r"/channels/(\d+)/messages", p)) and m == "GET":
            return self._history(int(mt[1]), call.query)
        if (mt := re.fullmatch(r"/channels/(\d+)", p)) and m == "GET":
            return _json(self.channels[int(mt[1])])
        if mt := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            if m == "PATCH":
                return self._edit_message(int(mt[1]), int(mt[2]), body)
            if m == "GET":
                return _json(self.messages[int(mt[2])])
        return None

    def _application(self) -> JSON:
        return {
            "id": str(self.application_id),
            "name": "chatbridge",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner.payload(),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
        }

    def _put_commands(self, method: str, mt: re.Match[str], body: Any) -> web.Response:
        guild_id = int(mt[2]) if mt[2] else None
        if method == "GET":
            return _json(self.commands.get(guild_id, []))
        if method != "PUT":
            return _json({"code": 0, "message": "405"}, 405)
        out = []
        for cmd in body:
            out.append(
                {
                    "type": 1,
                    "description": "",
                    "options": [],
                    **cmd,
                    "id": str(self.snowflake()),
                    "application_id": mt[1],
                    "version": str(self.snowflake()),
                }
                | ({"guild_id": str(guild_id)} if guild_id else {})
            )
        self.commands[guild_id] = out
        return _json(out)

    def _create_message(self, channel_id: int, body: JSON, flags: int = 0) -> web.Response:
        if channel_id not in self.channels:
            return _json({"code": 10003, "message": "Unknown Channel"}, 404)
        if (error := check_message_payload(body)) is not None:
            return _form_error("content", error)
        if not body.get("content") and not body.get("components") and not body.get("embeds"):
            return _json({"code": 50006, "message": "Cannot send an empty message"}, 400)
        msg = self._message(
            channel_id,
            self.bot_user,
            body.get("content") or "",
            components=body.get("components"),
            flags=flags | int(body.get("flags") or 0),
        )
        return _json(msg)

    def _history(self, channel_id: int, query: dict[str, str]) -> web.Response:
        if channel_id not in self.channels:
            return _json({"code": 10003, "message": "Unknown Channel"}, 404)
        return history_page(self.messages.values(), channel_id, query)

    def _rate_limit(self, channel_id: int) -> web.Response | None:
        """429 when this channel's messages are edited faster than ``edit_interval``."""
        if self.edit_interval <= 0:
            return None
        now = time.monotonic()
        wait = self._last_edit.get(channel_id, -1e9) + self.edit_interval - now
        if wait <= 0:
            self._last_edit[channel_id] = now
            return None
        self.rate_limited += 1
        retry = round(wait + 0.01, 3)
        headers = {
            "Retry-After": str(max(1, int(retry + 0.999))),
            "X-RateLimit-Limit": "1",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
            "X-RateLimit-Reset-After": f"{retry:.3f}",
            "X-RateLimit-Bucket": f"edit-{channel_id}",
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        }
        body = {"message": "You are being rate limited.", "retry_after": retry, "global": False}
        return _json(body, 429, headers)

    def _edit_message(self, channel_id: int, message_id: int, body: JSON) -> web.Response:
        msg = self.messages.get(message_id)
        if msg is None:  # deleted (by a moderator, the user, ...)
            return _json({"code": 10008, "message": "Unknown Message"}, 404)
        if msg["channel_id"] != str(channel_id) or msg["author"]["id"] != str(self.bot_user.id):
            return _json({"code": 50005, "message": "Cannot edit a message by another user"}, 403)
        if (limited := self._rate_limit(channel_id)) is not None:
            return limited
        return self._apply_edit(msg, body)

    def _apply_edit(self, msg: JSON, body: JSON) -> web.Response:
        if (error := check_message_payload(body)) is not None:
            return _form_error("content", error)
        for key in ("content", "components", "embeds", "flags"):
            if key in body and body[key] is not None:
                msg[key] = body[key]
        msg["edited_timestamp"] = _now_iso()
        return _json(msg)

    def new_thread(
        self, channel_id: int, name: str, owner_id: int, auto_archive_minutes: int = 1440
    ) -> JSON:
        """A public thread under a guild channel, active (listed in GUILD_CREATE and in
        ``GET /guilds/{id}/threads/active``)."""
        parent = self.channels[channel_id]
        tid = self.snowflake()
        thread: JSON = {
            "id": str(tid),
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": str(channel_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive_minutes,
                "archive_timestamp": _now_iso(),
                "locked": False,
            },
        }
        self.channels[tid] = thread
        self.guilds[int(parent["guild_id"])]["threads"].append(thread)
        return thread

    async def _create_thread(self, channel_id: int, body: JSON) -> web.Response:
        thread = self.new_thread(
            channel_id,
            body.get("name") or "thread",
            self.bot_user.id,
            body.get("auto_archive_duration", 1440),
        )
        await self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return _json(thread, 201)

    def _active_threads(self, guild_id: int) -> web.Response:
        """GET /guilds/{id}/threads/active: the guild's threads not archived."""
        threads = [
            t for t in self.guilds[guild_id]["threads"] if not t["thread_metadata"]["archived"]
        ]
        return _json({"threads": threads, "members": []})

    def _callback(self, iid: int, token: str, body: JSON) -> web.Response:
        inter = self.interactions.get(iid)
        if inter is None or inter["token"] != token:
            return _json({"code": 10062, "message": "Unknown interaction"}, 404)
        if inter.get("responded"):
            return _json(
                {"code": 40060, "message": "Interaction has already been acknowledged."}, 400
            )
        rtype = int(body["type"])
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags") or 0) & 64)
        inter["responded"] = rtype
        resource: JSON = {"type": rtype}
        if rtype == 4:  # a new message answering the interaction
            response = self._create_message(inter["channel_id"], data)
            if response.status != 200:
                inter["responded"] = None
                return response
            msg = json.loads(response.body)  # type: ignore[arg-type]
            inter["original"] = int(msg["id"])
            inter["ephemeral"] = ephemeral
            resource["message"] = msg
        elif rtype == 5:  # "thinking…": an empty message the followup/@original edit fills
            flags = 64 if ephemeral else 0
            msg = self._message(inter["channel_id"], self.bot_user, "", flags=flags)
            inter["original"] = int(msg["id"])
            inter["ephemeral"] = ephemeral
            resource["message"] = msg
        elif rtype == 7:  # update the message that carried the component
            response = self._apply_edit(self.messages[inter["original"]], data)
            if response.status != 200:
                inter["responded"] = None
                return response
            resource["message"] = self.messages[inter["original"]]
        answer = {
            "interaction": {
                "id": str(iid),
                "type": 3,
                "response_message_id": str(inter["original"]) if inter["original"] else None,
                "response_message_loading": rtype == 5,
                "response_message_ephemeral": ephemeral,
            },
            "resource": resource,
        }
        return _json(answer)

    def _webhook(self, method: str, token: str, which: str | None, body: JSON) -> web.Response:
        inter = next((i for i in self.interactions.values() if i["token"] == token), None)
        if inter is None:
            return _json({"code": 10015, "message": "Unknown Webhook"}, 404)
        if method == "POST" and which is None:  # followup message
            return self._create_message(inter["channel_id"], body)
        target = inter["original"] if which == "@original" else int(which or 0)
        if target is None or target not in self.messages:
            return _json({"code": 10008, "message": "Unknown Message"}, 404)
        if method == "PATCH":
            return self._apply_edit(self.messages[target], body)
        if method == "GET":
            return _json(self.messages[target])
        return _json({"code": 0, "message": "405"}, 405)
