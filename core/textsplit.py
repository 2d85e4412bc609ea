"""Cutting long text into messages: the one splitter every platform uses.

A user sees characters, not code points: a family emoji is seven code points joined by
zero-width joiners, a flag two regional indicators, a keycap three code points. A cut between
them shows broken glyphs on both sides, so every cut here falls on a grapheme-cluster boundary
(Unicode UAX #29, the ``regex`` module's ``\\X``). Platform renderers that cut their own markup
(Telegram HTML, Discord Markdown) use :func:`grapheme_boundary` and :func:`atoms` for the same
guarantee.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

__all__ = ["atoms", "grapheme_boundary", "split_text", "utf16_len"]


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def grapheme_boundary(text: str, cut: int) -> int:
    """The last grapheme-cluster boundary at or before ``cut`` (``cut`` itself if none > 0)."""
    if cut <= 0 or cut >= len(text):
        return max(0, min(cut, len(text)))
    # A line break always ends a cluster (UAX #29 GB4/GB5): start scanning after the last one,
    # so the scan is short and regional-indicator pairs are counted from a true boundary.
    start = text.rfind("\n", 0, cut) + 1
    best = start
    for match in atoms("").finditer(text, start):
        if match.end() > cut:
            break
        best = match.end()
    return best if best > 0 else cut


@functools.cache
def atoms(pattern: str) -> regex.Pattern[str]:
    """A pattern matching ``pattern`` (markup that must stay whole) or else one grapheme;
    ``""``: one grapheme. Compiled on first use: only text longer than a message needs it,
    and the ``regex`` module costs a process about 1.4 MiB."""
    import regex

    return regex.compile(f"{pattern}|\\X" if pattern else r"\X", regex.DOTALL)


def split_text(text: str, max_len: int, length: Callable[[str], int] = len) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_len`` (as measured by ``length``).

    Prefers paragraph, then line, then word boundaries in the last part of each piece, so
    words are not cut unless a single word is longer than a whole message; never cuts inside
    a grapheme cluster.
    """
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    pieces: list[str] = []
    rest = text
    while length(rest) > max_len:
        cut = _longest_prefix(rest, max_len, length)
        window_start = cut // 2  # only accept boundaries in the second half: pieces stay large
        best = -1
        hard = False
        for sep in ("\n\n", "\n", " "):
            pos = rest.rfind(sep, window_start, cut)
            if pos > 0:
                best = pos + len(sep)
                break
        if best <= 0:
            best, hard = grapheme_boundary(rest, cut), True
        pieces.append(rest[:best].rstrip() or rest[:best])
        rest = rest[best:] if hard else rest[best:].lstrip("\n ")
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _longest_prefix(text: str, max_len: int, length: Callable[[str], int]) -> int:
    """Largest ``n`` with ``length(text[:n]) <= max_len`` (binary search; ``length`` monotone)."""
    if length is len:
        return min(len(text), max_len)
    lo, hi = 0, min(len(text), max_len)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(text[:mid]) <= max_len:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, 1)
