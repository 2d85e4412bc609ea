"""The one splitter: cuts fall on grapheme-cluster boundaries (family emoji, flags, keycaps)."""

from __future__ import annotations

import pytest

from chatbridge.adapters.discord_adapter.render import split_markdown
from chatbridge.adapters.telegram.html import escape, split_html, to_text
from chatbridge.core.textsplit import grapheme_boundary, split_text, utf16_len

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👨‍👩‍👧‍👦, 11 UTF-16 units
FLAG = "\U0001f1f5\U0001f1f9"  # 🇵🇹
KEYCAP = "1\ufe0f\u20e3"  # 1️⃣
SKIN = "\U0001f44d\U0001f3fd"  # 👍🏽
ACCENT = "e\u0301"  # é as e + combining acute
CLUSTERS = [FAMILY, FLAG, KEYCAP, SKIN, ACCENT]


def test_grapheme_boundary_never_lands_inside_a_cluster() -> None:
    for cluster in CLUSTERS:
        text = "ab" + cluster + "cd"
        for cut in range(len(text) + 1):
            b = grapheme_boundary(text, cut)
            assert b <= cut
            assert b in (0, 1, 2, 2 + len(cluster), 3 + len(cluster), 4 + len(cluster)), (
                cluster,
                cut,
                b,
            )


def test_regional_indicators_pair_from_the_start_of_their_run() -> None:
    flags = FLAG * 5  # five flags: 10 regional indicators, paired 1-2, 3-4, ...
    for cut in range(2, len(flags) + 1):  # (below 2 no boundary exists: the cut stays)
        assert grapheme_boundary(flags, cut) % 2 == 0


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("limit", [5, 7, 12, 13, 30])
def test_split_text_keeps_every_cluster_whole(cluster: str, limit: int) -> None:
    text = cluster * 40
    pieces = split_text(text, max(limit, utf16_len(cluster)), utf16_len)
    assert "".join(pieces) == text
    for piece in pieces:
        assert len(piece) % len(cluster) == 0 and piece == cluster * (len(piece) // len(cluster))


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_telegram_html_split_keeps_every_cluster_whole(cluster: str) -> None:
    text = "<b>" + escape(cluster * 300) + "</b>"
    pieces = split_html(text, 100)
    assert len(pieces) > 1
    joined = "".join(to_text(p) for p in pieces)
    assert joined == cluster * 300
    for piece in pieces:
        body = to_text(piece)
        assert body == cluster * (len(body) // len(cluster))


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_discord_markdown_split_keeps_every_cluster_whole(cluster: str) -> None:
    text = cluster * 300
    pieces = split_markdown(text, 100)
    assert len(pieces) > 1
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece == cluster * (len(piece) // len(cluster))
