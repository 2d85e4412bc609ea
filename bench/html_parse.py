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
import functools
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
from chatbridge.core.html import BUTTON_CLASSES, parse_reply_html  # noqa: E402
from chatbridge.emulators.loopos_workflow import Workflow  # noqa: E402
from chatbridge.emulators.shopai_catalog import compose_answer  # noqa: E402

BEFORE = "a96f630"
Items = list[tuple[str, str]]
Step = Callable[[Items], None]  # main before the neutral rich text

_OLD_TYPES = """
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
"""


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
    module.__dict__["BUTTON_CLASSES"] = BUTTON_CLASSES
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


def per_answer_us(step: Callable[[Items], None], items: Items, repeat: int) -> float:
    timer = timeit.Timer(functools.partial(step, items))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e6 / len(items)


def now_steps() -> dict[str, Step]:
    def read(items: Items) -> None:
        for text, markup in items:
            parse_reply_html(markup, text)

    def telegram(items: Items) -> None:
        for text, markup in items:
            render_body(parse_reply_html(markup, text).body)

    def discord(items: Items) -> None:
        for text, markup in items:
            render_markdown(parse_reply_html(markup, text).body)

    return {"read (core)": read, "read + Telegram render": telegram,
            "read + Discord render": discord}  # fmt: skip


def before_steps(rev: str) -> dict[str, Step] | None:
    try:
        importlib.import_module("bs4")
        core = _old_module(rev, "core/html.py", "old_html")
        tg = _old_module(rev, "adapters/telegram/html.py", "old_tg")
        dc = _old_module(rev, "adapters/discord_adapter/render.py", "old_dc")
    except (ImportError, subprocess.CalledProcessError) as exc:
        print(f"(no 'before' column: {exc})")
        return None

    def read(items: Items) -> None:
        for text, markup in items:
            core.parse_reply_html(markup, text)

    def telegram(items: Items) -> None:
        for text, markup in items:
            core.parse_reply_html(markup, text)
            tg.sanitize(markup)  # the adapter read the html again to render it

    def discord(items: Items) -> None:
        for text, markup in items:
            core.parse_reply_html(markup, text)
            dc.html_to_markdown(markup)

    return {"read (core)": read, "read + Telegram render": telegram,
            "read + Discord render": discord}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    samples = answers()
    by_kind: dict[str, Items] = {}
    for kind, text, markup in samples:
        by_kind.setdefault(kind, []).append((text, markup))
    now = now_steps()
    before = before_steps(args.before)

    print(f"{len(samples)} answers; microseconds per answer (min of {args.repeat} runs)\n")
    print("| answers | step | before (BeautifulSoup) | now (lexbor) | ratio |")
    print("|---|---|---|---|---|")
    for kind, items in by_kind.items():
        label = f"{kind} ({len(items)}, ~{sum(len(m) for _, m in items) // len(items)} B)"
        for step, now_fn in now.items():
            now_us = per_answer_us(now_fn, items, args.repeat)
            if before is None:
                print(f"| {label} | {step} | – | {now_us:.0f} | – |")
                continue
            old_fn = before[step]
            old_us = per_answer_us(old_fn, items, args.repeat)
            ratio = old_us / now_us
            print(f"| {label} | {step} | {old_us:.0f} | {now_us:.0f} | {ratio:.1f}× |")
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
    items = [(text, markup) for _, text, markup in samples]
    print("\n| parser | parse only, µs per answer |\n|---|---|")
    for name, parse in candidates.items():

        def run(items: Items, parse: Callable[[str], Any] = parse) -> None:
            for _, markup in items:
                parse(markup)

        print(f"| {name} | {per_answer_us(run, items, repeat):.0f} |")


if __name__ == "__main__":
    main()
