"""The Bot API methods of the fake Telegram: what each one checks and does to the server's
state, with Telegram's own errors (mixed into :class:`tests.fakes.telegram_api.FakeTelegram`,
which receives the requests, records every :class:`Call` and enforces the flood limits)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.telegram_html import EntityParseError, parse_html, strip_message, utf16_len
from tests.fakes.telegram_updates import FakeBot

MAX_TEXT = 4096
MAX_FILE_DOWNLOAD = 20 * 1024 * 1024


# Telegram's words for an edit that changes nothing (text, entities and keyboard alike)
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


def _check_migrated(bot: FakeBot, chat_id: Any) -> None:
    """A group upgraded to a supergroup answers every call with the supergroup's new id."""
    new_id = bot.migrated.get(chat_id) if isinstance(chat_id, int) else None
    if new_id is not None:
        raise ApiError(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            {"migrate_to_chat_id": new_id},
        )


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    """One request the server received."""

    method: str
    params: dict[str, Any]
    time: float  # loop.time() at arrival
    token: str
    status: int = 200
    result: Any = None
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


class BotMethods:
    """Needs the server state below, which :class:`tests.fakes.telegram_api.FakeTelegram`
    owns."""

    files: dict[str, tuple[bytes, int, str]]
    ids: itertools.count[int]
    _closing: asyncio.Event

    def _pace(
        self, bot: FakeBot, chat: dict[str, Any], now: float, bucket: str, count: int = 1
    ) -> None:
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------------

    @staticmethod
    def _render(params: dict[str, Any], key: str = "text") -> tuple[str, list[dict[str, Any]]]:
        raw = params.get(key)
        if raw is None or raw == "":
            raise ApiError(400, f"Bad Request: message {key} is empty")
        raw = str(raw)
        if params.get("parse_mode") == "HTML":
            try:
                text, entities = parse_html(raw)
            except EntityParseError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        else:
            text, entities = raw, list(params.get("entities") or [])
        text, entities = strip_message(text, entities)
        if not text:
            raise ApiError(400, f"Bad Request: message {key} is empty")
        limit = MAX_TEXT if key == "text" else 1024
        if utf16_len(text) > limit:
            what = "message is too long" if key == "text" else "message caption is too long"
            raise ApiError(400, f"Bad Request: {what}")
        return text, entities

    @staticmethod
    def _check_markup(markup: Any) -> dict[str, Any] | None:
        if not markup:
            return None
        if isinstance(markup, str):
            markup = json.loads(markup)
        rows = markup.get("inline_keyboard")
        if rows is None:
            return dict(markup)
        if sum(len(r) for r in rows) > 100:
            raise ApiError(400, "Bad Request: reply markup is too long")
        for row in rows:
            if len(row) > 8:
                raise ApiError(400, "Bad Request: BUTTONS_TOO_MUCH")
            for button in row:
                if not str(button.get("text", "")).strip():
                    raise ApiError(400, "Bad Request: BUTTON_TEXT_EMPTY")
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode("utf-8"))
                    if not 1 <= size <= 64:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                elif "url" in button:
                    if not str(button["url"]).startswith(("http://", "https://", "tg://")):
                        raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
                else:
                    raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
        return dict(markup)

    @staticmethod
    def _chat(bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        _check_migrated(bot, chat_id)
        chat = bot.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    # --- methods --------------------------------------------------------------------------------

    async def _m_getMe(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return {
            **bot.user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        if bot.webhook_url is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        deadline = asyncio.get_running_loop().time() + timeout
        while not bot.updates and not self._closing.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            bot.new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.new_update.wait(), remaining)
        return bot.updates[:limit]

    async def _m_deleteWebhook(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        bot.webhook_url = bot.webhook_secret = None
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _m_setWebhook(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        url = params.get("url") or ""
        if not url:
            return await self._m_deleteWebhook(bot, params, call)
        if not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: invalid URL")
        bot.webhook_url, bot.webhook_secret = url, params.get("secret_token")
        return True

    async def _m_getWebhookInfo(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return {
            "url": bot.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }

    async def _m_setMyCommands(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        commands = params.get("commands") or []
        for c in commands:
            name, desc = str(c.get("command", "")), str(c.get("description", ""))
            if not (
                1 <= len(name) <= 32
                and name.replace("_", "").isalnum()
                and name.islower()
                and 1 <= len(desc) <= 256
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        # "A two-letter ISO 639-1 language code"; empty: every user without a dedicated menu
        language = str(params.get("language_code") or "")
        if language and not (len(language) == 2 and language.isalpha() and language.islower()):
            raise ApiError(400, "Bad Request: invalid language code specified")
        bot.menus[language] = list(commands)
        if not language:
            bot.commands = list(commands)
        return True

    async def _m_getMyCommands(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return bot.menus.get(str(params.get("language_code") or ""), [])

    async def _m_sendChatAction(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        self._chat(bot, params)
        return True

    async def _m_sendMessage(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        text, entities = self._render(params)
        markup = self._check_markup(params.get("reply_markup"))
        self._pace(bot, chat, call.time, "msg")
        return self._store(bot, chat, params, {"text": text}, entities, markup)

    async def _m_sendPhoto(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        extra: dict[str, Any] = {
            "photo": [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]
        }
        entities: list[dict[str, Any]] = []
        if params.get("caption"):
            extra["caption"], entities = self._render(params, "caption")
        markup = self._check_markup(params.get("reply_markup"))
        self._pace(bot, chat, call.time, "msg")
        return self._store(bot, chat, params, extra, entities, markup)

    async def _m_sendMediaGroup(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        media = params.get("media") or []
        if not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media in the album")
        self._pace(bot, chat, call.time, "msg", count=len(media))  # each item is a message
        group = str(next(self.ids))
        photo = [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]
        return [
            self._store(bot, chat, params, {"photo": photo, "media_group_id": group}, [], None)
            for _ in media
        ]

    def _store(
        self,
        bot: FakeBot,
        chat: dict[str, Any],
        params: dict[str, Any],
        extra: dict[str, Any],
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "message_id": next(bot.message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": bot.user,
            **extra,
        }
        if entities:
            msg["caption_entities" if "caption" in extra else "entities"] = entities
        if markup:
            msg["reply_markup"] = markup
        if params.get("message_thread_id"):
            msg["message_thread_id"] = params["message_thread_id"]
            msg["is_topic_message"] = True
        bot.messages[(chat["id"], msg["message_id"])] = msg
        return msg

    def _own_message(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        _check_migrated(bot, params.get("chat_id"))
        key = (params.get("chat_id"), params.get("message_id"))
        msg = bot.messages.get(key)  # type: ignore[arg-type]
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return msg

    async def _m_editMessageText(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        msg = self._own_message(bot, params)
        text, entities = self._render(params)
        markup = self._check_markup(params.get("reply_markup"))
        if (
            text == msg.get("text")
            and entities == msg.get("entities", [])
            and markup == msg.get("reply_markup")
        ):
            raise ApiError(400, NOT_MODIFIED)
        self._pace(bot, msg["chat"], call.time, "msg")
        msg.update(text=text, edit_date=int(time.time()))
        msg.pop("entities", None)
        msg.pop("reply_markup", None)
        if entities:
            msg["entities"] = entities
        if markup:
            msg["reply_markup"] = markup
        return msg

    async def _m_editMessageReplyMarkup(
        self, bot: FakeBot, params: dict[str, Any], call: Call
    ) -> Any:
        msg = self._own_message(bot, params)
        markup = self._check_markup(params.get("reply_markup"))
        if markup == msg.get("reply_markup"):
            raise ApiError(400, NOT_MODIFIED)
        self._pace(bot, msg["chat"], call.time, "msg")
        msg.pop("reply_markup", None)
        if markup:
            msg["reply_markup"] = markup
        return msg

    async def _m_sendMessageDraft(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        if chat["type"] != "private":
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        if not params.get("draft_id"):
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        if params.get("text"):
            self._render(params)
        self._pace(bot, chat, call.time, "draft")
        return True

    async def _m_answerCallbackQuery(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        if len(str(params.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _m_getFile(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        entry = self.files.get(str(params.get("file_id")))
        if entry is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        _, size, path = entry
        if size > MAX_FILE_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": params["file_id"],
            "file_unique_id": "u" + str(params["file_id"]),
            "file_size": size,
            "file_path": path,
        }
