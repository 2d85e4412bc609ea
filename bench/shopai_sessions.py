"""Benchmark: many concurrent ShopAI sessions in one process (prints figures, asserts nothing).

The emulator runs in another process (``python -m chatbridge.emulators.shopai``) on loopback. This
process opens N sessions through :class:`ShopAIBackend`, streams one answer on each (all at
once; that first turn also opens the connections), streams a second answer on each over the
open connections, then leaves them idle with a short heartbeat interval and watches the
heartbeats. Reported:

- RSS per open idle session: (RSS with N idle connections - RSS before any) / N;
- heartbeat lateness (client: actual send time - scheduled time; server: gap between two
  heartbeats of one connection - the interval), p50/p99/max, while idle and while streaming;
- CPU seconds (this process, user+sys) per 1,000 tokens relayed, on the second turn (pure
  relay) and on the first (connection setup included).

    python bench/shopai_sessions.py                      # 2,000 sessions, v0.1 and v0.2
    python bench/shopai_sessions.py --sessions 500 --version v0.1 --idle 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from percentiles import pct  # noqa: E402

from chatbridge.bots.gctune import tune_gc  # noqa: E402
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAIMetrics, ShopAISettings  # noqa: E402
from chatbridge.core.backends.shopai.ws_v01 import HEARTBEAT_SHARE  # noqa: E402
from chatbridge.core.types import ConversationKey, Final, Inbound  # noqa: E402

QUESTIONS = ["I need a phone", "a laptop for work", "headphones for music", "a watch for running"]


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class GcClock:
    """Seconds spent in the cyclic garbage collector, and full (generation 2) collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.full += info["generation"] == 2

    def read(self) -> tuple[float, int]:
        return self.seconds, self.full


def summary(values: list[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"n={len(values)} p50={pct(values, 0.5) * 1000:.1f} ms "
        f"p99={pct(values, 0.99) * 1000:.1f} ms max={max(values) * 1000:.1f} ms"
    )


def start_emulator(
    version: str, token_delay: float, heartbeat: float
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatbridge.emulators.shopai",
            "--version",
            version,
            "--port",
            "0",
            "--token-delay",
            str(token_delay),
            # the strict server: it times a client out shortly after a missed heartbeat
            "--heartbeat-interval",
            str(heartbeat),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "shopai emulator v0.1 listening on http://127.0.0.1:PORT"
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def emulator_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/stats?gaps=1", timeout=30) as response:
        data: dict[str, Any] = json.load(response)
        return data


async def run_turns(backend: ShopAIBackend, refs: list[str], keys: list[ConversationKey]) -> int:
    async def one(i: int) -> bool:
        inbound = Inbound(key=keys[i], text=QUESTIONS[i % len(QUESTIONS)])
        final = False
        async for event in backend.turn(refs[i], inbound):
            final = isinstance(event, Final)
        return final

    results = await asyncio.gather(*(one(i) for i in range(len(refs))), return_exceptions=True)
    return sum(1 for r in results if r is True)


async def bench(
    version: str,
    sessions: int,
    heartbeat: float,
    idle: float,
    delay: float,
    profile: str | None = None,
    tune: bool = True,
) -> None:
    proc, url = start_emulator(version, delay, heartbeat)
    gc_clock = GcClock()
    lateness: list[float] = []
    metrics = ShopAIMetrics(on_heartbeat=lateness.append)
    settings = ShopAISettings(
        base_url=url,
        license_key="test-license",  # type: ignore[arg-type]
        heartbeat_interval=heartbeat,
        idle_timeout=3600,
        connect_timeout=60,
        request_timeout=60,
        answer_timeout=120,
        max_concurrent_inits=64,
    )
    backend = ShopAIBackend(settings, metrics=metrics)
    try:
        # warm up: imports, the aiohttp session, the version check, one connection
        warm_key = ConversationKey("bench", "bench", "warm", "warm")
        warm = await backend.open(warm_key, "en")
        await run_turns(backend, [warm], [warm_key])
        await backend.close(warm)
        if tune:
            tune_gc(many_connections=True)  # as `chatbridge run` does with a ShopAI backend
        gc.collect()
        rss0 = rss_bytes()

        keys = [ConversationKey("bench", "bench", str(i), str(i)) for i in range(sessions)]
        t0 = time.perf_counter()
        refs = list(await asyncio.gather(*(backend.open(k, "en") for k in keys)))
        t_open = time.perf_counter() - t0

        tokens0, cpu0, t0 = metrics.tokens, cpu_seconds(), time.perf_counter()
        gc0 = gc_clock.read()
        ok1 = await asyncio.wait_for(run_turns(backend, refs, keys), timeout=300)
        t_turn1, cpu1, tok1 = (
            time.perf_counter() - t0,
            cpu_seconds() - cpu0,
            metrics.tokens - tokens0,
        )
        gc1 = tuple(b - a for a, b in zip(gc0, gc_clock.read(), strict=True))
        late_connect = list(lateness)
        lateness.clear()

        tokens0, cpu0, t0 = metrics.tokens, cpu_seconds(), time.perf_counter()
        gc0 = gc_clock.read()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        ok2 = await asyncio.wait_for(run_turns(backend, refs, keys), timeout=300)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{version}")
        t_turn2, cpu2, tok2 = (
            time.perf_counter() - t0,
            cpu_seconds() - cpu0,
            metrics.tokens - tokens0,
        )
        gc2 = tuple(b - a for a, b in zip(gc0, gc_clock.read(), strict=True))
        late_stream = list(lateness)

        gc.collect()
        await asyncio.sleep(1.0)
        rss1 = rss_bytes()
        open_conns = backend.open_connections

        lateness.clear()
        stats_before = emulator_stats(url)
        await asyncio.sleep(idle)
        late_idle = list(lateness)
        stats_after = emulator_stats(url)
        interval = heartbeat * HEARTBEAT_SHARE  # what the client actually sends
        gaps = stats_after["heartbeat_gaps"][len(stats_before["heartbeat_gaps"]) :]
        server_late = [g - interval for g in gaps]

        print(f"\n== ShopAI {version}: {sessions} sessions, heartbeat every {heartbeat} s ==")
        print(f"open (init_session) x{sessions}: {t_open:.2f} s")
        print(
            f"turn 1 (connect + stream): {ok1}/{sessions} answered in {t_turn1:.2f} s, "
            f"{tok1} tokens, CPU {cpu1:.2f} s = {cpu1 / max(tok1, 1) * 1000:.3f} s/1k tokens "
            f"(garbage collector {gc1[0]:.2f} s, {gc1[1]:.0f} full collections)"
        )
        print(
            f"turn 2 (stream on open connections): {ok2}/{sessions} answered in {t_turn2:.2f} s, "
            f"{tok2} tokens, CPU {cpu2:.2f} s = {cpu2 / max(tok2, 1) * 1000:.3f} s/1k tokens "
            f"(garbage collector {gc2[0]:.2f} s, {gc2[1]:.0f} full collections)"
        )
        print(
            f"RSS: {rss0 / 2**20:.1f} MiB before, {rss1 / 2**20:.1f} MiB with {open_conns} "
            f"idle connections -> {(rss1 - rss0) / max(open_conns, 1) / 1024:.1f} KiB per session"
        )
        if version == "v0.1":
            print(f"heartbeat lateness, client, during connect+stream: {summary(late_connect)}")
            print(f"heartbeat lateness, client, during stream: {summary(late_stream)}")
            print(f"heartbeat lateness, client, idle {idle:.0f} s: {summary(late_idle)}")
            print(f"heartbeat gap - interval, server, idle: {summary(server_late)}")
            print(
                f"server heartbeat timeouts: {stats_after['heartbeat_timeouts']}, "
                f"open connections at the server: {stats_after['open_connections']}"
            )
        else:
            print("heartbeats: none in v0.2 (Engine.IO ping/pong keeps the connection)")
            print(f"open connections at the server: {stats_after['open_connections']}")
    finally:
        await backend.aclose()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--version", choices=["v0.1", "v0.2", "both"], default="both")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds watched while idle")
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--profile", default=None, help="cProfile turn 2 into PATH.<version>")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep CPython's collector settings (the runner tunes them: bots/gctune.py)",
    )
    args = parser.parse_args()
    limit = raise_nofile(args.sessions * 2 + 1024)  # the emulator child inherits it
    print(
        f"RLIMIT_NOFILE={limit}, python {sys.version.split()[0]}, pid {os.getpid()}, "
        f"{os.cpu_count()} CPUs, token delay {args.token_delay} s"
    )
    if args.version == "both":
        # one process per version: memory freed by the first run would flatter the second
        for version in ("v0.1", "v0.2"):
            argv = [a for a in sys.argv[1:] if a not in ("--version", "both")]
            subprocess.run([sys.executable, __file__, *argv, "--version", version], check=False)
        return
    asyncio.run(
        bench(
            args.version,
            args.sessions,
            args.heartbeat,
            args.idle,
            args.token_delay,
            args.profile,
            not args.default_gc,
        )
    )


if __name__ == "__main__":
    main()
