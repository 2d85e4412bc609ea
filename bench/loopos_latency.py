"""Turn latency of LoopOSBackend with many concurrent sessions against the emulator.

The emulator runs in a subprocess (its own event loop and CPU), so the figures are the client
side's: queueing behind the concurrency bound, HTTP on loopback, reply parsing. Each session
walks the whole submission workflow (product, two options, a yes/no answer, a photo).
``--transport`` picks the backend's HTTP client: ``http11`` (chatbridge's, as `chatbridge run`
builds the backend: httpx's API on core/http11.py) or ``httpx`` (httpx's own pool). Prints
figures, this process's CPU per turn among them; asserts nothing.

    python bench/loopos_latency.py --sessions 200 --max-concurrency 64 --server-delay 0.05
                                   [--transport http11|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from percentiles import pct  # noqa: E402

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings  # noqa: E402
from chatbridge.core.types import ConversationKey, Final, Image, Inbound  # noqa: E402

STEPS: list[tuple[str, bool]] = [
    ("Quero vender um iPhone 12", False),
    ("128 GB", False),
    ("Bom", False),
    ("Não", False),
    ("", True),  # the photo
]


def tiny_png() -> bytes:
    try:
        from PIL import Image as PILImage
    except ImportError:  # a 1x1 PNG, in case Pillow (a dev dependency) is missing
        import base64

        return base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        )
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 64), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


async def start_emulator() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatbridge.emulators.loopos", "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not match:
        proc.terminate()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, match.group(1)


async def run(args: argparse.Namespace) -> None:
    proc, url = await start_emulator()
    try:
        if args.server_delay:
            async with httpx.AsyncClient(base_url=url) as client:
                await client.post("/_emulator/faults", json={"slow_seconds": args.server_delay})
        backend = LoopOSBackend(
            LoopOSSettings(
                base_url=url,
                core_base_url="https://core.example/",
                submission_base_url="https://submission.example/",
                timeout=args.timeout,
                max_concurrency=args.max_concurrency,
            ),
        )
        if args.transport == "httpx":
            # httpx's own transport, an httpcore pool per shard client (what the backend used
            # before its default became chatbridge's client)
            backend._transport = None  # type: ignore[assignment]
        photo = Image(tiny_png(), "image/png")
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()

        async def session(i: int) -> None:
            key = ConversationKey("bench", "bench", str(i), str(i))
            ref = await backend.open(key, None)
            for text, with_photo in STEPS:
                inbound = Inbound(key=key, text=text, images=(photo,) if with_photo else ())
                started = time.perf_counter()
                outcome = "?"
                async for event in backend.turn(ref, inbound):
                    outcome = "ok" if isinstance(event, Final) else type(event).__name__
                    if not isinstance(event, Final):
                        outcome = f"{outcome}:{getattr(event, 'kind', '')}"
                latencies.append(time.perf_counter() - started)
                outcomes[outcome] += 1

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(session(i) for i in range(args.sessions)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await backend.aclose()
    finally:
        proc.terminate()
        await proc.wait()

    ms = [v * 1000 for v in latencies]
    print(
        f"sessions={args.sessions} turns={len(ms)} max_concurrency={args.max_concurrency} "
        f"server_delay={args.server_delay:.3f}s transport={args.transport}"
    )
    print(
        f"turn latency ms: p50={pct(ms, 0.50):.1f} p95={pct(ms, 0.95):.1f} "
        f"p99={pct(ms, 0.99):.1f} max={max(ms):.1f} mean={statistics.fmean(ms):.1f}"
    )
    print(f"wall={wall:.2f}s throughput={len(ms) / wall:.0f} turns/s outcomes={dict(outcomes)}")
    print(f"client CPU per turn: {cpu / len(ms) * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--server-delay", type=float, default=0.0, help="emulated LLM time (s)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--transport", choices=("http11", "httpx"), default="http11")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
