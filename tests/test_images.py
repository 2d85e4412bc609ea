"""core.images: images are checked by their magic bytes; a refusal is a plain exception."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from chatbridge.core.images import ImageRejected, load_image


@contextlib.contextmanager
def _typing_indicator() -> Iterator[None]:
    yield  # like the adapters' "typing…" context managers


def test_image_rejected_can_be_raised_inside_a_context_manager() -> None:
    # contextlib sets __traceback__ on the exception on its way out, which a frozen-dataclass
    # exception refused: the user's plain-language reason became an internal error.
    with pytest.raises(ImageRejected) as caught, _typing_indicator():
        raise ImageRejected("photo_empty")
    assert caught.value.key == "photo_empty"
    assert str(caught.value) == "photo_empty"


def test_empty_file_is_rejected_in_plain_words() -> None:
    with pytest.raises(ImageRejected, match="empty"):
        load_image(b"")
