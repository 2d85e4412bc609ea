"""The photos of a Telegram message (or album): checked, then downloaded through the Bot API.

Refusals carry a catalogue key (core/locales): the adapter tells the user in their language."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError

from chatbridge.core.images import ImageRejected, check_size, load_image
from chatbridge.core.types import Image

_OTHER_MEDIA = (
    "video",
    "voice",
    "audio",
    "sticker",
    "animation",
    "video_note",
    "location",
    "contact",
    "poll",
)


async def message_images(bot: Bot, msgs: Sequence[Message], limit: int) -> list[Image]:
    """Every photo of the messages, checked; raises :class:`ImageRejected` for the user."""
    refs: list[tuple[str, int | None]] = []
    for m in msgs:
        if m.photo:
            largest = max(m.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
            refs.append((largest.file_id, largest.file_size))
        elif m.document is not None:
            mime = m.document.mime_type or ""
            if not mime.startswith("image/"):
                raise ImageRejected("not_a_photo")
            refs.append((m.document.file_id, m.document.file_size))
        elif any(getattr(m, kind, None) for kind in _OTHER_MEDIA):
            raise ImageRejected("unsupported_media")
    for _, size in refs:
        check_size(size, limit)  # before downloading anything
    return list(await asyncio.gather(*(_download(bot, f, limit) for f, _ in refs)))


async def listing_images(bot: Bot, msgs: Sequence[Message], limit: int) -> list[Image]:
    """The message's photos, else those of the message it replies to (for /listing)."""
    images = await message_images(bot, msgs, limit)
    reply = msgs[0].reply_to_message
    if not images and reply is not None:
        images = await message_images(bot, [reply], limit)
    return images


async def _download(bot: Bot, file_id: str, limit: int) -> Image:
    try:
        file = await bot.get_file(file_id)
        check_size(file.file_size, limit)
        data = bytes(await file.download_as_bytearray())
    except BadRequest as exc:
        if "too big" in str(exc).lower():
            check_size(limit + 1, limit)
        raise ImageRejected("download_failed") from None
    except TelegramError:
        raise ImageRejected("download_failed") from None
    return load_image(data, limit)
