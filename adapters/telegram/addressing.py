"""Who and where a Telegram message is: its conversation, where the answer goes, whether a
group message is meant for this bot, and which command it carries.

Pure functions of the message (and the bot's own name and id), shared by messages and button
presses, so both agree on a conversation's key and on how answers quote.
"""

from __future__ import annotations

from telegram import Message
from telegram.constants import ChatType, MessageEntityType

from chatbridge.adapters.telegram.api import Target
from chatbridge.core.types import ConversationKey, Inbound


def conversation_key(bot: str, msg: Message, user_id: int) -> ConversationKey:
    """One conversation per user per chat (and per forum topic)."""
    thread = str(msg.message_thread_id) if msg.is_topic_message else None
    return ConversationKey(bot, "telegram", str(msg.chat.id), str(user_id), thread)


def reply_target(msg: Message, *, quote: bool) -> Target:
    """Where an answer to ``msg`` goes; in groups it quotes the message when ``quote``."""
    private = msg.chat.type == ChatType.PRIVATE
    return Target(
        chat_id=msg.chat.id,
        thread_id=msg.message_thread_id if msg.is_topic_message else None,
        reply_to=msg.message_id if quote and not private else None,
        private=private,
    )


def stored_target(inbound: Inbound) -> Target:
    """Where to answer a journaled message after a restart, without the message itself: a
    private chat's id is its user's id; in groups the answer quotes a typed message."""
    key = inbound.key
    private = key.chat_id == key.user_id
    quote = not private and inbound.button_payload is None and inbound.message_id
    return Target(
        chat_id=int(key.chat_id),
        thread_id=int(key.thread_id) if key.thread_id else None,
        reply_to=int(inbound.message_id) if quote and inbound.message_id else None,
        private=private,
    )


def command_of(text: str, msg: Message, username: str) -> tuple[str, str] | None:
    """(command, args) when ``text`` starts with a command; ("", "") when that command is
    addressed to another bot (``/start@other_bot``)."""
    entities = msg.entities if msg.text else msg.caption_entities
    if not entities or entities[0].type != MessageEntityType.BOT_COMMAND:
        return None
    if entities[0].offset != 0:
        return None
    word = text[1 : entities[0].length]
    name, _, target = word.partition("@")
    if target and target.lower() != username.lower():
        return ("", "")
    return name.lower(), text[entities[0].length :].strip()


def addressed(msg: Message, text: str, *, every_message: bool, bot_id: int, username: str) -> bool:
    """In groups: a mention of the bot or a reply to it (or anything, ``every_message``)."""
    if every_message:
        return True
    reply = msg.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == bot_id:
        return True
    return bool(username) and f"@{username.lower()}" in text.lower()


def strip_mention(text: str, username: str) -> str:
    """The text without the first ``@username`` (the backend gets what the user asked)."""
    lowered = text.lower()
    mention = f"@{username.lower()}"
    i = lowered.find(mention)
    if i < 0:
        return text
    return (text[:i] + text[i + len(mention) :]).strip()
