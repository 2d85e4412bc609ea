"""What reading a backend's HTML answer costs per answer: before (BeautifulSoup) and now (lexbor).

`python bench/html_parse.py [--before REV] [--repeat 7]`

Answers are the emulators' own (typical LoopOS /chat messages: a question with buttons, a
submission summary with a list and a link; typical ShopAI answers: product lists with links).
"Before" is the code at ``--before`` (default: the last commit before the neutral rich text),
loaded from git: core/html.py read with BeautifulSoup, Telegram re-sanitised the HTML with nh3,
Discord converted it with BeautifulSoup + markdownify. "Now" is this checkout: one lexbor
parse into neutral rich text in core, and each adapter renders that. It needs
``pip install chatbridge[bench]`` (the old parsers) for the "before" column; prints, never
asserts.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import timeit
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbridge.adapters.discord_adapter.render import render_markdown  # noqa: E402
from chatbridge.adapters.telegram.html import render_body  # noqa: E402
from chatbridge.core.html import parse_reply_html  # noqa: E402
from chatbridge.emulators.loopos_workflow import Workflow  # noqa: E402
from chatbridge.emulators.shopai_catalog import compose_answer  # noqa: E402

BEFORE = "a96f630"  # main before the neutral rich text

_OLD_TYPES = '''
from dataclasses import dataclass
@dataclass(frozen=True)
class Button:
    label: str
    payload: str | None = None
    url: str | None = None
@dataclass(frozen=True)
class Link:
    label: str
    url: str
@dataclass(frozen=True)
class ReplyMessage:
    text: str
    buttons: tuple = ()
    links: tuple = ()
    html: str | None = None
'''


def _old_module(rev: str, path: str, name: str) -> types.ModuleType:
    """A module of revision ``rev``, its import of the neutral types swapped for their shape
    at that time (the current ReplyMessage has no ``html``)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from chatbridge.core.types import Button, Link, ReplyMessage", "")
    source = source.replace("from chatbridge.core.types import ReplyMessage", "")
    source = source.replace("from chatbridge.core.html import BUTTON_CLASSES", "")
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(_OLD_TYPES, name, "exec"), module.__dict__)
    module.__dict__["BUTTON_CLASSES"] = frozenset({"deep-chat-button", "deep-chat-suggestion-button"})
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def answers() -> list[tuple[str, str, str]]:
    """(kind, text, html) of typical answers."""
    out: list[tuple[str, str, str]] = []
    flow = Workflow("bench", "https://submission.example/")
    script = ["Quero vender um iPhone 12", "128 GB", "Azul", "Bom", "Sim", "Não", "Sim", "Sim"]
    for said in script:
        for reply in flow.step(said, [], "PT-PT"):
            if reply.get("html"):
                out.append(("loopos", reply["text"], reply["html"]))
    for question in ("I need a phone and a laptop", "headphones for music", "a cheap tablet"):
        markup = compose_answer(question)
        out.append(("shopai", "", markup))
    return out


def per_answer_us(fn: Callable[[], Any], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    samples = answers()
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for kind, text, markup in samples:
        by_kind.setdefault(kind, []).append((text, markup))

    old: tuple[types.ModuleType, types.ModuleType, types.ModuleType] | None = None
    try:
        importlib.import_module("bs4")
        old = (
            _old_module(args.before, "core/html.py", "old_html"),
            _old_module(args.before, "adapters/telegram/html.py", "old_tg"),
            _old_module(args.before, "adapters/discord_adapter/render.py", "old_dc"),
        )
    except (ImportError, subprocess.CalledProcessError) as exc:
        print(f"(no 'before' column: {exc})")

    print(f"{len(samples)} answers; microseconds per answer (min of {args.repeat} runs)\n")
    print("| answers | step | before (BeautifulSoup) | now (lexbor) | ratio |")
    print("|---|---|---|---|---|")
    for kind, items in by_kind.items():
        size = sum(len(m) for _, m in items) // len(items)

        def now_read(items: list[tuple[str, str]] = items) -> None:
            for text, markup in items:
                parse_reply_html(markup, text)

        def now_tg(items: list[tuple[str, str]] = items) -> None:
            for text, markup in items:
                render_body(parse_reply_html(markup, text).body)

        def now_dc(items: list[tuple[str, str]] = items) -> None:
            for text, markup in items:
                render_markdown(parse_reply_html(markup, text).body)

        rows: list[tuple[str, Callable[[], Any], Callable[[], Any] | None]] = [
            ("read (core)", now_read, None),
            ("read + Telegram render", now_tg, None),
            ("read + Discord render", now_dc, None),
        ]
        if old is not None:
            o_html, o_tg, o_dc = old

            def old_read(items: list[tuple[str, str]] = items) -> None:
                for text, markup in items:
                    o_html.parse_reply_html(markup, text)

            def old_tg(items: list[tuple[str, str]] = items) -> None:
                for text, markup in items:
                    o_html.parse_reply_html(markup, text)
                    o_tg.sanitize(markup)

            def old_dc(items: list[tuple[str, str]] = items) -> None:
                for text, markup in items:
                    o_html.parse_reply_html(markup, text)
                    o_dc.html_to_markdown(markup)

            rows = [(rows[0][0], now_read, old_read), (rows[1][0], now_tg, old_tg),
                    (rows[2][0], now_dc, old_dc)]  # fmt: skip
        for step, now_fn, old_fn in rows:
            now_us = per_answer_us(now_fn, args.repeat) / len(items)
            if old_fn is None:
                print(f"| {kind} ({len(items)}, ~{size} B) | {step} | – | {now_us:.0f} | – |")
                continue
            old_us = per_answer_us(old_fn, args.repeat) / len(items)
            print(
                f"| {kind} ({len(items)}, ~{size} B) | {step} | {old_us:.0f} | {now_us:.0f} "
                f"| {old_us / now_us:.1f}× |"
            )
    _parsers_alone(samples, args.repeat)


def _parsers_alone(samples: list[tuple[str, str, str]], repeat: int) -> None:
    """The parse alone, for choosing the parser (lxml was the other candidate)."""
    from selectolax.lexbor import LexborHTMLParser

    candidates: dict[str, Callable[[str], Any]] = {"lexbor (selectolax)": LexborHTMLParser}
    try:
        from bs4 import BeautifulSoup

        candidates["BeautifulSoup html.parser"] = lambda m: BeautifulSoup(m, "html.parser")
    except ImportError:
        pass
    try:
        import lxml.html

        candidates["lxml.html"] = lxml.html.fragments_fromstring
    except ImportError:
        pass
    print("\n| parser | parse only, µs per answer |\n|---|---|")
    for name, parse in candidates.items():

        def run(parse: Callable[[str], Any] = parse) -> None:
            for _, _, markup in samples:
                parse(markup)

        print(f"| {name} | {per_answer_us(run, repeat) / len(samples):.0f} |")


if __name__ == "__main__":
    main()
