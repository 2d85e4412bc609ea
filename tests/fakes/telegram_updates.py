"""The per-token state of the fake Telegram server, and helpers that push user updates."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.fakes.telegram_html import plain_entities

if TYPE_CHECKING:
    from tests.fakes.telegram_api import FakeTelegram


class FakeBot:
    """One bot token's state on the fake server, plus helpers to push user updates."""

    def __init__(self, server: FakeTelegram, token: str, username: str) -> None:
        self.server = server
        self.token = token
        self.username = username
        self.id = int(token.split(":", 1)[0])
        self.updates: list[dict[str, Any]] = []
        self.update_ids = itertools.count(1)
        self.message_ids = itertools.count(1000)
        self.new_update = asyncio.Event()
        self.chats: dict[int, dict[str, Any]] = {}
        self.migrated: dict[int, int] = {}  # group id -> its supergroup's id
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.commands: list[dict[str, Any]] = []  # the default menu (no language_code)
        self.menus: dict[str, list[dict[str, Any]]] = {}  # language_code ("" = default) -> menu
        self.webhook_statuses: list[int] = []
        self.webhook_backlog: list[dict[str, Any]] = []  # not yet answered 2xx, in order
        self.redelivery_interval = 0.2
        self._redelivery: asyncio.Task[None] | None = None

    @property
    def user(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.username,
            "username": self.username,
        }

    # --- chats and users -------------------------------------------------------------------

    @staticmethod
    def make_user(
        user_id: int,
        first_name: str = "User",
        language_code: str = "en",
        username: str | None = None,
    ) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }
        if username:
            user["username"] = username
        return user

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self.chats[chat["id"]] = chat
        return chat

    def group_chat(self, chat_id: int, title: str = "Group", forum: bool = False) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": title}
        if forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        return chat

    def migrate(self, chat_id: int, new_id: int) -> dict[str, Any]:
        """The group becomes a supergroup with a new id (Telegram answers the old one with
        ``migrate_to_chat_id``)."""
        chat = self.group_chat(new_id, self.chats[chat_id].get("title", "Group"))
        self.migrated[chat_id] = new_id
        return chat

    # --- pushing updates -------------------------------------------------------------------

    def _message(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        thread_id: int | None,
        reply_to: dict[str, Any] | None,
        media_group_id: str | None,
    ) -> dict[str, Any]:
        self.chats.setdefault(chat["id"], chat)
        msg: dict[str, Any] = {
            "message_id": next(self.message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": user,
        }
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        if media_group_id is not None:
            msg["media_group_id"] = media_group_id
        return msg

    async def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self.update_ids), **update}
        if self.webhook_url is not None:
            if self.webhook_backlog:  # in order: behind the updates not yet accepted
                self.webhook_backlog.append(update)
                return update
            status = await self._try_webhook(update)
            self.webhook_statuses.append(status)
            if not 200 <= status < 300:
                self._keep_for_redelivery(update)
        else:
            self.updates.append(update)
            self.new_update.set()
        return update

    async def _try_webhook(self, update: dict[str, Any]) -> int:
        try:
            return await self.post_webhook(update, self.webhook_secret)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0  # nobody listening: as Telegram, keep it and try again later

    def _keep_for_redelivery(self, update: dict[str, Any]) -> None:
        """Telegram redelivers a webhook update until the bot answers 2xx."""
        self.webhook_backlog.append(update)
        if self._redelivery is None or self._redelivery.done():
            self._redelivery = asyncio.create_task(self._redeliver())

    async def stop_redelivery(self) -> None:
        task, self._redelivery = self._redelivery, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _redeliver(self) -> None:
        while self.webhook_backlog:
            await asyncio.sleep(self.redelivery_interval)
            if self.webhook_url is None:
                continue
            while self.webhook_backlog:
                status = await self._try_webhook(self.webhook_backlog[0])
                self.webhook_statuses.append(status)
                if not 200 <= status < 300:
                    break
                self.webhook_backlog.pop(0)

    async def post_webhook(self, update: dict[str, Any], secret: str | None) -> int:
        """POST one update to the registered webhook with ``secret`` as the secret token."""
        assert self.webhook_url is not None, "no webhook registered"
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
        async with self.server.client().post(
            self.webhook_url, json=update, headers=headers
        ) as resp:
            await resp.read()
            return resp.status

    async def push_text(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        text: str,
        *,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        msg = self._message(chat, user, thread_id, reply_to, None)
        msg["text"] = text
        entities = plain_entities(text)
        if entities:
            msg["entities"] = entities
        await self.push_update({"message": msg})
        return msg

    def add_file(
        self, data: bytes, *, size: int | None = None, suffix: str = "jpg"
    ) -> dict[str, Any]:
        return self.server.add_file(data, size=size, suffix=suffix)

    async def push_photo(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        data: bytes,
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        file_size: int | None = None,
        thread_id: int | None = None,
        push: bool = True,
    ) -> dict[str, Any]:
        """A photo in two sizes: a small thumbnail first, ``data`` as the largest (last)."""
        thumb = self.add_file(b"THUMB" + data[:16])
        big = self.add_file(data, size=file_size)
        msg = self._message(chat, user, thread_id, None, media_group_id)
        msg["photo"] = [
            {**thumb, "width": 90, "height": 90},
            {**big, "width": 1280, "height": 960},
        ]
        self._caption(msg, caption)
        if push:
            await self.push_update({"message": msg})
        return msg

    async def push_document(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        data: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        media_group_id: str | None = None,
        file_size: int | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        doc = self.add_file(data, size=file_size, suffix=file_name.rsplit(".", 1)[-1])
        msg = self._message(chat, user, thread_id, None, media_group_id)
        msg["document"] = {**doc, "file_name": file_name, "mime_type": mime_type}
        self._caption(msg, caption)
        await self.push_update({"message": msg})
        return msg

    async def push_album(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        images: list[bytes],
        *,
        caption: str | None = None,
        thread_id: int | None = None,
        gap: float = 0.0,
    ) -> list[dict[str, Any]]:
        """2-10 photos sharing a media_group_id; the caption rides on the first one."""
        group_id = str(next(self.server.ids))
        msgs = []
        for i, data in enumerate(images):
            msgs.append(
                await self.push_photo(
                    chat,
                    user,
                    data,
                    media_group_id=group_id,
                    caption=caption if i == 0 else None,
                    thread_id=thread_id,
                )
            )
            if gap:
                await asyncio.sleep(gap)
        return msgs

    async def push_callback(self, user: dict[str, Any], message: dict[str, Any], data: str) -> str:
        """The user presses an inline button carrying ``data`` on a bot ``message``."""
        query_id = str(next(self.server.ids))
        await self.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "chat_instance": "ci",
                    "data": data,
                    "message": message,
                }
            }
        )
        return query_id

    @staticmethod
    def _caption(msg: dict[str, Any], caption: str | None) -> None:
        if caption:
            msg["caption"] = caption
            entities = plain_entities(caption)
            if entities:
                msg["caption_entities"] = entities

    # --- reading the bot's side --------------------------------------------------------------

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat, oldest first, in their current (edited) state."""
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id]
