"""Pure text rendering for Discord: rich text -> Markdown, Markdown-safe splitting, labels."""

from __future__ import annotations

import random
import re

import pytest

from chatbridge.adapters.discord_adapter.render import (
    cut_label,
    message_markdown,
    split_markdown,
)
from chatbridge.core.html import parse_reply_html
from chatbridge.core.types import ReplyMessage
from tests.fakes.discord_api import check_message_payload


def skeleton(text: str | list[str]) -> str:
    """The text without the markers splitting may add or move (fences, backticks, **, spaces)."""
    if isinstance(text, list):
        return "".join(skeleton(piece) for piece in text)
    text = re.sub(r"```[^\s`]*", "", text)
    return re.sub(r"[`*\s]", "", text)


def test_short_text_is_one_unchanged_piece() -> None:
    text = "Hello **there**\n```py\nx = 1\n```"
    assert split_markdown(text) == [text]
    assert split_markdown("") == [""]


def test_pieces_fit_and_prefer_paragraph_boundaries() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(6)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    pieces = split_markdown(text)
    assert len(pieces) > 1 and all(len(p) <= 2000 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces), "cut at paragraph starts"
    assert skeleton(pieces) == skeleton(text)


def test_code_fence_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(200))
    text = "Intro\n```python\n" + code + "\n```\nOutro"
    pieces = split_markdown(text, 1000)
    assert len(pieces) >= 3
    for piece in pieces:
        assert len(piece) <= 1000
        assert piece.count("```") % 2 == 0
    for piece in pieces[1:-1]:
        assert piece.startswith("```python\n")
    # indentation inside the code survives the cut
    assert all(
        line.startswith("    value_") for p in pieces for line in p.split("\n") if "value_" in line
    )
    assert skeleton(pieces) == skeleton(text)


def test_bold_and_inline_code_are_balanced_in_every_piece() -> None:
    text = "**" + "very bold words " * 200 + "** and `" + "code " * 300 + "` end"
    pieces = split_markdown(text, 500)
    for piece in pieces:
        assert len(piece) <= 500
        assert piece.count("**") % 2 == 0, piece
        assert piece.count("`") % 2 == 0, piece
    assert skeleton(pieces) == skeleton(text)


def test_never_splits_a_character() -> None:
    family = "👨\u200d👩\u200d👧"
    flag = "🇵🇹"
    text = (family + flag + "é\u0301") * 400  # no spaces: hard cuts
    pieces = split_markdown(text, 300)
    assert all(len(p) <= 300 for p in pieces)
    assert "".join(pieces) == text
    for piece in pieces:
        assert not piece.startswith(("\u200d", "\u0301", "\U0001f1f9"))
        assert not piece.endswith("\u200d")
        assert piece.count(family) * len(family) + piece.count(flag) * len(flag) <= len(piece)


@pytest.mark.parametrize("seed", range(25))
def test_random_markdown_keeps_limits_and_content(seed: int) -> None:
    rng = random.Random(seed)
    atoms = ["word", "**", "`", "\n", "\n\n", "```js\n", "\n```\n", "ünï", "🙂", "x" * 50, " "]
    text = "".join(rng.choice(atoms) + rng.choice([" ", ""]) for _ in range(rng.randint(0, 900)))
    max_len = rng.choice([100, 300, 2000])
    pieces = split_markdown(text, max_len)
    assert all(len(p) <= max_len for p in pieces)

    # "js" only ever comes from the fence atom (its reopeners move it around); no other atom
    # has a j or an s
    def letters(t: str) -> str:
        return re.sub(r"[`*\sjs]", "", t)

    assert letters("".join(pieces)) == letters(text)


def html_to_markdown(html: str) -> str:
    return message_markdown(parse_reply_html(html, ""))


def test_html_to_discord_markdown() -> None:
    html = (
        "<p>Hello <b>World</b>, <i>really</i> <strong>cheap</strong></p>"
        '<ul><li>one <a href="https://shop.example/a">A</a></li><li>two <code>c2</code></li></ul>'
        "<ol><li>first</li><li>second</li></ol>"
        "<pre><code>code here</code></pre>"
        '<a href="javascript:alert(1)">bad link</a>'
        "<script>alert(1)</script>"
        "<h2>Title</h2><table><tr><td>cell a</td><td>cell b</td></tr></table>"
        '<button>Buy</button><div class="deep-chat-button">Go</div><span>tail</span>'
    )
    md = html_to_markdown(html)
    assert "Hello **World**, *really* **cheap**" in md
    assert "- one [A](https://shop.example/a)" in md
    assert "- two `c2`" in md
    assert "1. first" in md and "2. second" in md
    assert "```\ncode here\n```" in md
    assert "bad link" in md and "javascript" not in md
    assert "alert" not in md
    assert "**Title**" in md and "cell a" in md and "cell b" in md
    assert "Buy" not in md and "Go" not in md, "buttons become components, not text"
    assert "tail" in md and "<" not in md


def test_link_labels_and_urls_cannot_break_out_of_the_link() -> None:
    md = html_to_markdown('<a href="https://s.example/a b)c">[x] <b>y</b></a> tail')
    assert md == "[\\[x\\] **y**](https://s.example/a%20b%29c) tail"


def test_touching_runs_of_different_styles_stay_apart() -> None:
    md = html_to_markdown("<p><b>Preço:</b><i>275</i>€ e <b>a</b> <i>b</i></p>")
    assert md == "**Preço:**\u200b*275*€ e **a** *b*"


def test_message_markdown_of_text_and_of_markup() -> None:
    assert message_markdown(ReplyMessage(text="plain *not bold*")) == "plain \\*not bold\\*"
    only_buttons = parse_reply_html("<button>A</button><button>B</button>", "Pick one")
    assert message_markdown(only_buttons) == "Pick one"
    rich = parse_reply_html("<p>Hi <b>there</b></p>", "Hi there")
    assert message_markdown(rich) == "Hi **there**"


def test_cut_label() -> None:
    assert cut_label("Short") == "Short"
    assert cut_label("  many   spaces\n") == "many spaces"
    long = cut_label("x" * 200)
    assert len(long) == 80 and long.endswith("…")
    assert cut_label("") == "…"
    emoji = cut_label("🙂" * 79 + "👨\u200d👩\u200d👧")
    assert len(emoji) <= 80 and "\u200d" not in emoji


def test_fake_enforces_discord_limits() -> None:
    button = {"type": 2, "style": 1, "label": "ok", "custom_id": "a"}
    row = {"type": 1, "components": [button] * 5}
    assert check_message_payload({"content": "x" * 2000, "components": [row] * 5}) is None
    assert check_message_payload({"content": "x" * 2001}) is not None
    assert check_message_payload({"components": [row] * 6}) is not None
    six = {"type": 1, "components": [button] * 6}
    assert check_message_payload({"components": [six]}) is not None
    assert check_message_payload({"components": [{"type": 1, "components": [
        {**button, "label": "l" * 81}]}]}) is not None  # fmt: skip
    assert check_message_payload({"components": [{"type": 1, "components": [
        {**button, "custom_id": "c" * 101}]}]}) is not None  # fmt: skip
    link = {"type": 2, "style": 5, "label": "go", "url": "https://x/" + "u" * 510}
    assert check_message_payload({"components": [{"type": 1, "components": [link]}]})
