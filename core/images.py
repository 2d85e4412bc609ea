"""Checking user photos before they reach a backend (shared by every adapter).

The MIME type is read from the file's own magic bytes, never trusted from the platform: a
``.jpg`` name or an ``image/png`` header on a PDF must not reach the AI as an image.
"""

from __future__ import annotations

from chatbridge.core.types import Image

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image MIME type from the first bytes, or None when it is not a supported image."""
    for magic, mime in _SIGNATURES:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class ImageRejected(Exception):
    """The user's file cannot be sent: ``key`` names why, as a key of the catalogues
    (core/locales), and ``fields`` fill its placeholders; adapters say it in the user's
    language (:meth:`core.texts.Catalogue.rejection`). Never a sentence.

    A plain exception, not a frozen dataclass: Python sets ``__traceback__`` and
    ``__context__`` on exceptions it raises, which a frozen instance refuses (TypeError).
    """

    def __init__(self, key: str, **fields: object) -> None:
        super().__init__(f"{key} {fields}" if fields else key)  # for logs
        self.key = key
        self.fields = fields


def human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} B"  # a unit symbol, the same in every language


def check_size(size: int | None, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
    """Refuse a file by its announced size before downloading it."""
    if size is not None and size > max_bytes:
        raise ImageRejected("photo_too_large", size=human_size(size), limit=human_size(max_bytes))


def load_image(data: bytes, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Image:
    """Validate downloaded bytes as a photo: size first, then real content type."""
    check_size(len(data), max_bytes)
    if not data:
        raise ImageRejected("photo_empty")
    mime = sniff_image_type(data)
    if mime is None:
        raise ImageRejected("not_a_photo")
    return Image(data=data, mime_type=mime)
