"""What fake users do on the fake Discord: messages, attachments, button presses and slash
commands, each delivered to the bot as a gateway event (mixed into :class:`FakeDiscord`)."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_payloads import BASIC_PERMISSIONS, JSON, FakeUser, _now_iso


class UserActions:
    """Needs the server state below, which :class:`tests.fakes.discord_api.FakeDiscord` owns."""

    attachments: dict[int, tuple[str, bytes, str]]
    channels: dict[int, JSON]
    messages: dict[int, JSON]
    interactions: dict[int, JSON]
    commands: dict[int | None, list[JSON]]
    bot_user: FakeUser
    application_id: int
    channel_id: int

    @property
    def http_base(self) -> str:
        raise NotImplementedError

    def snowflake(self) -> int:
        raise NotImplementedError

    def dm_channel_id(self, user: FakeUser) -> int:
        raise NotImplementedError

    def _member_of(self, guild_id: int, user: FakeUser) -> JSON:
        raise NotImplementedError

    async def dispatch(self, event: str, data: JSON) -> None:
        raise NotImplementedError

    def add_attachment(self, filename: str, data: bytes, content_type: str) -> JSON:
        aid = self.snowflake()
        self.attachments[aid] = (filename, data, content_type)
        url = f"{self.http_base}/attachments/{aid}/{filename}"
        return {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    async def user_message(
        self,
        user: FakeUser,
        content: str,
        *,
        channel_id: int | None = None,
        mention: bool = False,
        attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    ) -> JSON:
        """``user`` writes in a guild channel (or thread); MESSAGE_CREATE is dispatched."""
        cid = channel_id or self.channel_id
        channel = self.channels[cid]
        if mention:
            content = f"<@{self.bot_user.id}> {content}"
        msg = self._message(cid, user, content, attachments=attachments)
        msg["guild_id"] = channel["guild_id"]
        member = self._member_of(int(channel["guild_id"]), user)
        msg["member"] = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        if mention:
            msg["mentions"] = [self.bot_user.payload()]
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def dm_message(
        self,
        user: FakeUser,
        content: str,
        *,
        attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    ) -> JSON:
        """``user`` writes to the bot in a DM."""
        msg = self._message(self.dm_channel_id(user), user, content, attachments=attachments)
        msg["channel_type"] = 1
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    def bot_message(
        self, channel_id: int, content: str, components: list[JSON] | None = None
    ) -> JSON:
        """A message the bot sent earlier (e.g. before a restart), without any REST call."""
        return self._message(channel_id, self.bot_user, content, components=components)

    def _message(
        self,
        channel_id: int,
        author: FakeUser,
        content: str,
        *,
        attachments: list[tuple[str, bytes, str]] | tuple[()] = (),
        components: list[JSON] | None = None,
        flags: int = 0,
    ) -> JSON:
        mid = self.snowflake()
        msg: JSON = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author.payload(),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [self.add_attachment(*a) for a in attachments],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": flags,
            "components": components or [],
        }
        channel = self.channels.get(channel_id, {})
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        if channel:
            channel["last_message_id"] = str(mid)  # as Discord keeps it on the channel
        self.messages[mid] = msg
        return msg

    def _interaction_base(self, user: FakeUser, channel_id: int, itype: int) -> JSON:
        iid = self.snowflake()
        token = f"itoken-{iid}"
        channel = self.channels[channel_id]
        data: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": {k: v for k, v in channel.items() if k != "recipients"},
            "locale": "en-US",
            "app_permissions": str(BASIC_PERMISSIONS),
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if "guild_id" in channel:
            data["guild_id"] = channel["guild_id"]
            data["guild_locale"] = "en-US"
            data["member"] = self._member_of(int(channel["guild_id"]), user)
            data["context"] = 0
        else:
            data["user"] = user.payload()
            data["context"] = 1
        self.interactions[iid] = {"token": token, "channel_id": channel_id, "original": None}
        return data

    async def press_button(self, user: FakeUser, message_id: int | str, custom_id: str) -> int:
        """``user`` presses the button ``custom_id`` on a message; returns the interaction id."""
        msg = self.messages[int(message_id)]
        data = self._interaction_base(user, int(msg["channel_id"]), 3)
        data["data"] = {"custom_id": custom_id, "component_type": 2}
        data["message"] = msg
        self.interactions[int(data["id"])]["original"] = int(message_id)
        await self.dispatch("INTERACTION_CREATE", data)
        return int(data["id"])

    async def slash_command(
        self,
        user: FakeUser,
        name: str,
        *,
        channel_id: int | None = None,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> int:
        """``user`` runs ``/name [subcommand] option:value``; returns the interaction id.

        A :class:`FakeUser` option value becomes a USER option with its ``resolved`` entry; a
        ``(filename, data, content_type)`` tuple an ATTACHMENT option (uploaded to the fake).
        """
        cid = channel_id or self.channel_id
        data = self._interaction_base(user, cid, 2)
        registered = [c for cmds in self.commands.values() for c in cmds if c["name"] == name]
        opts: list[JSON] = []
        resolved: JSON = {"users": {}, "attachments": {}}
        for key, value in (options or {}).items():
            if isinstance(value, FakeUser):
                opts.append({"name": key, "type": 6, "value": str(value.id)})
                resolved["users"][str(value.id)] = value.payload()
            elif isinstance(value, tuple):
                attachment = self.add_attachment(*value)
                opts.append({"name": key, "type": 11, "value": attachment["id"]})
                resolved["attachments"][attachment["id"]] = attachment
            elif isinstance(value, bool):
                opts.append({"name": key, "type": 5, "value": value})
            elif isinstance(value, int):
                opts.append({"name": key, "type": 4, "value": value})
            else:
                opts.append({"name": key, "type": 3, "value": value})
        if subcommand is not None:
            opts = [{"name": subcommand, "type": 1, "options": opts}]
        data["data"] = {
            "id": registered[0]["id"] if registered else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": opts,
            "resolved": resolved,
        }
        await self.dispatch("INTERACTION_CREATE", data)
        return int(data["id"])
