"""Benchmark: how soon the message after a /cancel is answered (prints figures, asserts nothing).

A ShopAI answer streams slowly (``--token-delay`` s per token, about 60 tokens); the user
cancels it after its first tokens and sends the next message at once. Two behaviours of the
backend, alternated run by run against the strict emulators of v0.1 and v0.2:

- ``close``: what the backend does now: the cancelled answer's connection is closed, the
  strict server stops generating, and the next message reconnects;
- ``keep``: the earlier behaviour (the connection is kept): the next message waits until the
  server has finished generating the cancelled answer.

Reported per behaviour and version: the next message's time to its final answer (median and
max of ``--runs``) and the tokens the server generated for nothing after the cancel.

    python bench/cancel_next_turn.py                 # 5 runs each, 0.02 s per token
    python bench/cancel_next_turn.py --runs 3 --token-delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings  # noqa: E402
from chatbridge.core.engine import Engine  # noqa: E402
from chatbridge.core.store.memory import MemoryStore  # noqa: E402
from chatbridge.core.types import ConversationKey, Inbound, ReplyMessage  # noqa: E402
from chatbridge.emulators.shopai import start_shopai_emulator  # noqa: E402

KEY = ConversationKey(bot="bench", platform="bench", chat_id="c", user_id="u")
Version = Literal["v0.1", "v0.2"]
VERSIONS: tuple[Version, ...] = ("v0.1", "v0.2")


class _Surface:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished = False

    async def begin(self) -> None:
        return None

    async def append(self, text: str) -> None:
        self.started.set()

    async def replace(self, text: str) -> None:
        self.started.set()

    async def notice(self, text: str) -> None:
        return None

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self.finished = True

    async def fail(self, text: str) -> None:
        return None


class _KeepingBackend(ShopAIBackend):
    """The earlier behaviour: a cancelled answer's connection stays open."""

    async def _stop_answer(self, chat: Any, conn: Any) -> None:
        return None


async def one_run(version: Version, behaviour: str, token_delay: float) -> tuple[float, int]:
    emulator = await start_shopai_emulator(version=version, token_delay=token_delay)
    settings = ShopAISettings.from_dict(
        {"base_url": emulator.url, "license_key": "test-license", "answer_timeout": 30.0}
    )
    backend_type = ShopAIBackend if behaviour == "close" else _KeepingBackend
    backend = backend_type(settings, name="bench")
    store = await MemoryStore.open()
    engine = Engine(bot="bench", backend=backend, backend_name="bench", store=store)
    try:
        await engine.handle(Inbound(KEY, text="hello"), _Surface())  # session and connection
        first = _Surface()
        running = engine.submit(Inbound(KEY, text="a laptop for work"), first)
        await first.started.wait()
        await engine.cancel(KEY)
        await running
        tokens_at_cancel = emulator.stats.tokens_sent
        began = time.perf_counter()
        second = _Surface()
        await engine.handle(Inbound(KEY, text="headphones for music"), second)
        seconds = time.perf_counter() - began
        assert second.finished, "the next message was not answered"
        # tokens of the next answer itself are not "for nothing": count the cancelled one's
        wasted = emulator.stats.tokens_sent - tokens_at_cancel - _answer_tokens(emulator)
        return seconds, max(0, wasted)
    finally:
        await engine.aclose(1.0)
        await backend.aclose()
        await store.close()
        await emulator.stop()


def _answer_tokens(emulator: Any) -> int:
    from chatbridge.emulators.shopai_catalog import compose_answer, split_tokens

    return len(split_tokens(compose_answer("headphones for music")))


async def main(runs: int, token_delay: float) -> None:
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for _ in range(runs):
        for version in VERSIONS:
            for behaviour in ("close", "keep"):  # alternated, run by run
                result = await one_run(version, behaviour, token_delay)
                results.setdefault((version, behaviour), []).append(result)
    print(f"next message after /cancel; {runs} runs; {token_delay} s per token")
    for (name, behaviour), rows in sorted(results.items()):
        seconds = [s for s, _ in rows]
        wasted = [w for _, w in rows]
        print(
            f"{name} {behaviour:5}: answered in median {statistics.median(seconds):.3f} s "
            f"(max {max(seconds):.3f} s); tokens generated after the cancel "
            f"median {statistics.median(wasted):.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--token-delay", type=float, default=0.02)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.token_delay))
