"""Benchmark: the cost of one turn, chatbridge against a bare python-telegram-bot bot.

One run, side by side, against the same servers: the fake Bot API (tests/fakes/telegram_api.py)
and the LoopOS emulator run in this (driver) process; each bot runs in its own subprocess, so
its CPU time and RSS are its own (the fakes are not counted):

- ``bare``: the floor. A minimal PTB bot (run_polling, default HTTPX transport) that posts each
  text to the LoopOS server's ``/chat`` with one shared ``httpx.AsyncClient`` and sends each
  reply message's text back. Like chatbridge (bots/extras.py) it does not load the optional
  packages PTB and httpx pick up when installed (tornado, cryptography, aiolimiter, click,
  pygments: 13 MiB on this machine), as on a clean install; ``--bare-extras`` lets it.
- ``bridge``: chatbridge as an operator runs it (a TOML file, ``chatbridge run``'s code path:
  config, logging at INFO, the runner, the Telegram adapter, the engine, the LoopOS backend, a
  SQLite store file or, ``--store memory``, the memory store), pacing off (``chat_rate = 0``
  and ``bot_rate = 0``) so only code is compared.
- ``paced``: the same with the default pacing (``chat_rate`` 1/s with bursts of 3, 30/s for the
  bot) against a fake that enforces Telegram's limits; the user reads each answer for
  ``--think`` seconds (default 1) before the next message, fewer turns.
- ``baseline`` (``--baseline DIR``): another checkout's bridge, alongside.

One private chat per bot; the user sends the next message as soon as the last reply message of the
previous turn arrived (the submission workflow in a loop: product, storage, condition, a yes/no
answer, restart; 7 reply messages per 5 turns, most with buttons); the bots take turns, each in
every place of a round in turn. Latency = the update made available to getUpdates -> the
turn's last sendMessage received by the fake. CPU = the bot process's user+sys time over the
measured turns (after a warm-up cycle), per turn. RSS = the bot process's peak (VmHWM, from
/proc) and its RSS at the end. Prints figures; asserts nothing. About 90 s.

    python bench/turn_cost.py [--turns 300] [--paced-turns 20] [--think 1.0]
                              [--only bare,bridge,paced] [--store sqlite|memory]
                              [--profile PATH.prof]  # cProfile of the measured turns (bare: .bare)
                              [--steps PATH.txt]  # event-loop steps per turn (bench/loop_steps.py)
                              [--baseline DIR]  # another checkout, run alongside
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from percentiles import pct

ROOT = Path(__file__).resolve().parents[1]
# the code under test: this checkout, or (for the "baseline" bot) another one
CODE = os.environ.get("TURN_COST_CODE", str(ROOT))
sys.path.insert(0, CODE)

SCRIPT = ["Quero vender um iPhone 12", "128 GB", "Bom", "Não", "recomeçar"]
CORE_URL = "https://core.example/"
SUBMISSION_URL = "https://submission.example/"
# --baseline: another checkout (e.g. `git archive <commit> | tar -x -C DIR`), run as the
# "baseline" bot next to "bridge", so before and after meet the same machine load
BASELINE: str | None = None

# one chat per bot: calls stay apart
USERS = {"bare": 4201, "bridge": 4202, "paced": 4203, "baseline": 4204}
TOKENS = {
    "bare": "700001:bare-bench-token-0123456789abcdef",
    "bridge": "700002:bridge-bench-token-0123456789abcdef",
    "paced": "700003:paced-bench-token-0123456789abcdef",
    "baseline": "700004:baseline-bench-token-0123456789abcdef",
}


# --- the bare bot (subprocess) -------------------------------------------------------------------


def run_bare(api: str, loopos: str, token: str, extras: bool) -> None:
    """The floor: what a developer writes first with PTB and httpx."""
    _profile_signals()  # before the event loop exists
    if not extras:
        # as on a clean install of python-telegram-bot and httpx (what the issue measured):
        # the optional packages this machine has (tornado, cryptography, aiolimiter, click,
        # pygments) stay out, as they do in chatbridge (bots/extras.py)
        # loaded from its file: importing the chatbridge package would weigh on the floor
        import importlib.util

        spec = importlib.util.spec_from_file_location("extras", Path(CODE) / "bots" / "extras.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.skip_unused_extras()
    import logging
    import uuid

    import httpx
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("bare")
    sessions: dict[int, str] = {}
    client = httpx.AsyncClient(base_url=loopos, timeout=120)

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        if msg is None or msg.text is None or update.effective_user is None:
            return
        lang = update.effective_user.language_code or ""
        session = sessions.setdefault(msg.chat_id, str(uuid.uuid4()))
        payload: dict[str, Any] = {
            "language": "en-US" if lang.startswith("en") else "PT-PT",
            "messages": [{"role": "user", "text": msg.text}],
            "conversation": True,
            "session_id": session,
            "loopos_core_base_url": CORE_URL,
            "loopos_submission_base_url": SUBMISSION_URL,
            "session_extra_data": {},
        }
        response = await client.post("/chat", json=payload)
        response.raise_for_status()
        for reply in response.json():
            if reply.get("role", "assistant") == "assistant" and reply.get("text"):
                await msg.reply_text(reply["text"], do_quote=False)
        log.info("answered chat %s", msg.chat_id)

    app = (
        Application.builder()
        .token(token)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, on_text))
    app.run_polling(timeout=10, allowed_updates=["message"], close_loop=False)


# --- chatbridge (subprocess) ---------------------------------------------------------------------


def run_bridge(config_path: str) -> None:
    """What ``chatbridge run --config FILE`` does (bots/cli.py); pacing is in the file."""
    _profile_signals()  # before the event loop exists
    from chatbridge.bots import runner
    from chatbridge.bots.cli import _setup_logging
    from chatbridge.bots.config import load_config

    config = load_config(config_path)
    _setup_logging(config.logging.level, config.logging.format, config.secrets())
    asyncio.run(runner.run_app(runner.App(config)))


def _profile_signals() -> Any:
    """SIGUSR1 starts cProfile and/or the loop-step counter, SIGUSR2 stops them and writes
    $TURN_COST_PROFILE / $TURN_COST_STEPS (the latter per $TURN_COST_TURNS turns)."""
    path = os.environ.get("TURN_COST_PROFILE")
    steps_path = os.environ.get("TURN_COST_STEPS")
    if not path and not steps_path:
        return None
    import cProfile

    profiler = cProfile.Profile() if path else None
    steps = None
    if steps_path:
        sys.path.insert(0, str(ROOT / "bench"))
        from loop_steps import install

        steps = install()

    def begin(*_: object) -> None:
        if steps is not None:
            steps.start()
        if profiler is not None:
            profiler.enable()

    def end(*_: object) -> None:
        if profiler is not None and path:
            profiler.disable()
            profiler.dump_stats(path)
        if steps is not None and steps_path:
            steps.stop()
            turns = int(os.environ.get("TURN_COST_TURNS", "1"))
            Path(steps_path).write_text(steps.report(turns) + "\n", encoding="utf-8")
            # what the process holds: its modules (for RSS work, diffed against the bare bot's)
            modules = "\n".join(sorted(sys.modules)) + "\n"
            Path(steps_path + ".modules").write_text(modules, encoding="utf-8")

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, end)
    return steps


def write_config(path: Path, api: str, loopos: str, token: str, paced: bool, store: str) -> None:
    # pacing off: no per-chat bucket (``chat_rate = 0``, as the issue asks) and no bot-wide
    # window either (one chat's turns in a row outrun 30 messages a second)
    pacing_line = "" if paced else "chat_rate = 0\nbot_rate = 0\n"
    store_url = "memory://" if store == "memory" else f"sqlite:///{path.parent / 'bench.db'}"
    path.write_text(
        f"""
[store]
url = "{store_url}"

[limits]
turns_per_minute = 0

[logging]
level = "INFO"

[backends.loopos]
type = "loopos"
base_url = "{loopos}"
core_base_url = "{CORE_URL}"
submission_base_url = "{SUBMISSION_URL}"

[[bots]]
name = "bench"
platform = "telegram"
backend = "loopos"
token = "{token}"
api_base_url = "{api}/bot"
poll_timeout = 10
{pacing_line}""",
        encoding="utf-8",
    )


# --- the driver ----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) / 1024  # MiB
    return out


def expected_messages(turns: int) -> list[int]:
    """Reply messages per turn, from the emulator's own (deterministic) workflow."""
    from chatbridge.emulators.loopos_workflow import Workflow

    workflow = Workflow("count", SUBMISSION_URL)
    return [len(workflow.step(SCRIPT[i % len(SCRIPT)], [], "en-US")) for i in range(turns)]


@dataclass
class Settings:
    turns: int = 300
    paced_turns: int = 20
    think: float = 1.0  # seconds the user of "paced" reads a reply before answering
    store: str = "sqlite"
    bare_extras: bool = False  # let the bare bot import PTB's and httpx's optional extras
    profile: str | None = None  # cProfile path of the bridge (bare: PATH.bare)
    steps: str | None = None  # loop-step report path of the bridge (bare: PATH.bare)

    def instrumented(self, kind: str) -> bool:
        return bool(self.profile or self.steps) and kind in ("bridge", "bare")


@dataclass
class Bot:
    """One bot under test: its process, its chat on the fake, its figures."""

    kind: str
    proc: asyncio.subprocess.Process
    fake_bot: Any
    user: dict[str, Any]
    chat: dict[str, Any]
    log_path: Path
    instrumented: bool
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu0: float = 0.0
    lines0: int = 0
    calls0: int = 0  # Bot API calls before the measured turns


async def start_bot(kind: str, fake: Any, loopos_url: str, tmp: Path, cfg: Settings) -> Bot:
    token = TOKENS[kind]
    fake_bot = fake.add_bot(token, f"{kind}_bench_bot")
    code = BASELINE if kind == "baseline" and BASELINE else str(ROOT)
    env = {**os.environ, "PYTHONPATH": code, "TURN_COST_CODE": code}
    suffix = "" if kind != "bare" else ".bare"
    if cfg.instrumented(kind):
        env["TURN_COST_TURNS"] = str(cfg.turns)
        if cfg.profile:
            env["TURN_COST_PROFILE"] = cfg.profile + suffix
        if cfg.steps:
            env["TURN_COST_STEPS"] = cfg.steps + suffix
    if kind == "bare":
        args = ["--bare", "--api", fake.url, "--loopos", loopos_url, "--token", token]
        if cfg.bare_extras:
            args.append("--bare-extras")
    else:
        config = tmp / kind / "bench.toml"
        config.parent.mkdir()
        write_config(config, fake.url, loopos_url, token, kind == "paced", cfg.store)
        args = ["--bridge", str(config)]
    log_path = tmp / f"{kind}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *args, env=env, stdout=log_file, stderr=log_file
        )
    await fake.wait_for(lambda c: c.token == token and c.method == "getUpdates", timeout=60)
    user = fake_bot.make_user(USERS[kind], "Ana")
    chat = fake_bot.private_chat(user)
    return Bot(kind, proc, fake_bot, user, chat, log_path, cfg.instrumented(kind))


async def one_turn(bot: Bot, fake: Any, i: int, count: int, measured: bool) -> None:
    start = asyncio.get_running_loop().time()
    await bot.fake_bot.push_text(bot.chat, bot.user, SCRIPT[i % len(SCRIPT)])
    bot.sent += count
    calls = await fake.wait_calls("sendMessage", bot.sent, chat_id=USERS[bot.kind], timeout=30)
    if measured:
        bot.latencies.append((calls[-1].time - start) * 1000)


async def run_turns(
    bots: list[Bot], fake: Any, turns: int, think: float = 0.0
) -> list[dict[str, Any]]:
    """A warm-up cycle, then ``turns`` turns; several bots take turns alternately, so a
    machine busy with other work slows them alike. ``think``: seconds between a turn's last
    reply and the user's next message."""
    counts = expected_messages(len(SCRIPT) + turns)
    for i, count in enumerate(counts):
        if i == len(SCRIPT):  # after one warm-up cycle
            for bot in bots:
                bot.cpu0 = proc_cpu(bot.proc.pid)
                bot.lines0 = _lines(bot.log_path)
                bot.calls0 = sum(1 for c in fake.calls if c.token == TOKENS[bot.kind])
                if bot.instrumented:
                    bot.proc.send_signal(signal.SIGUSR1)
        # each bot takes each place in the round in turn (with three bots, a fixed middle
        # place measured 5-10 % more CPU: the bot that runs right after another one)
        order = bots[i % len(bots) :] + bots[: i % len(bots)]
        for bot in order:
            if think:
                await asyncio.sleep(think)
            await one_turn(bot, fake, i, count, i >= len(SCRIPT))
    results = []
    for bot in bots:
        cpu = proc_cpu(bot.proc.pid) - bot.cpu0
        lines = _lines(bot.log_path) - bot.lines0
        if bot.instrumented:
            bot.proc.send_signal(signal.SIGUSR2)
            await asyncio.sleep(1.0)
        mem = proc_mem(bot.proc.pid)
        token = TOKENS[bot.kind]
        refused = [c for c in fake.calls if c.token == token and not c.ok]
        calls = [c.method for c in fake.calls if c.token == token][bot.calls0 :]
        # getUpdates is the long poll: counted apart from what a turn sends
        polls = sum(1 for m in calls if m == "getUpdates")
        results.append(
            {
                "kind": bot.kind,
                "turns": turns,
                "p50": pct(bot.latencies, 0.5),
                "p95": pct(bot.latencies, 0.95),
                "p99": pct(bot.latencies, 0.99),
                "max": max(bot.latencies),
                "cpu_ms": cpu / turns * 1000,
                "rss": mem.get("VmHWM", float("nan")),
                "rss_now": mem.get("VmRSS", float("nan")),
                "log_lines": lines / turns,
                "errors": len(refused),
                "calls": (len(calls) - polls) / turns,
                "polls": polls / turns,
            }
        )
    return results


async def stop_bot(bot: Bot) -> None:
    with contextlib.suppress(ProcessLookupError):
        bot.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(bot.proc.wait(), 20)
    except TimeoutError:
        bot.proc.kill()
        await bot.proc.wait()


async def measure(
    kinds: list[str], fake: Any, loopos_url: str, tmp: Path, cfg: Settings, paced: bool = False
) -> list[dict[str, Any]]:
    bots: list[Bot] = []
    try:
        for kind in kinds:
            bots.append(await start_bot(kind, fake, loopos_url, tmp, cfg))
        if paced:
            return await run_turns(bots, fake, cfg.paced_turns, cfg.think)
        return await run_turns(bots, fake, cfg.turns)
    finally:
        for bot in bots:
            await stop_bot(bot)


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


async def drive(kinds: list[str], cfg: Settings) -> None:
    from chatbridge.emulators.loopos import start_loopos_emulator
    from tests.fakes.telegram_api import FakeTelegram

    fake = await FakeTelegram(interval=0.0, bot_limit=0).start()  # limits on for "paced"
    loopos = await start_loopos_emulator()
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="turn-cost-") as tmp:
            side_by_side = [k for k in kinds if k != "paced"]
            if side_by_side:
                fake.interval = 0.0
                for r in await measure(side_by_side, fake, loopos.url, Path(tmp), cfg):
                    results[r["kind"]] = r
            if "paced" in kinds:
                fake.interval = 1.0  # Telegram's per-chat and bot-wide limits, enforced
                fake.limits.bot_limit = 30
                for r in await measure(["paced"], fake, loopos.url, Path(tmp), cfg, paced=True):
                    results[r["kind"]] = r
    finally:
        await loopos.stop()
        await fake.stop()
    report(results, cfg, time.monotonic() - started)


def report(results: dict[str, dict[str, Any]], cfg: Settings, wall: float) -> None:
    print(f"--- one private chat per bot, turns in a row; store {cfg.store}; wall {wall:.0f} s")
    print(
        f"{'':8} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'CPU ms/turn':>11} "
        f"{'peak RSS MiB':>12} {'RSS at end':>10} {'log lines/turn':>14} {'refused calls':>13} "
        f"{'API calls/turn':>14} {'polls/turn':>10}"
    )
    for r in results.values():
        print(
            f"{r['kind']:8} {r['turns']:>5} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['p99']:>7.1f} "
            f"{r['max']:>7.1f} "
            f"{r['cpu_ms']:>11.2f} {r['rss']:>12.1f} {r['rss_now']:>10.1f} "
            f"{r['log_lines']:>14.1f} {r['errors']:>13} {r['calls']:>14.2f} {r['polls']:>10.2f}"
        )
    if "paced" in results:
        print(
            f"(paced: default chat_rate/chat_burst against a fake enforcing Telegram's limits; "
            f"the user answers {cfg.think:g} s after each turn's last reply)"
        )
    bare, bridge = results.get("bare"), results.get("bridge")
    if bare and bridge:
        print(
            f"bridge - bare: p50 {bridge['p50'] - bare['p50']:+.1f} ms, "
            f"p95 {bridge['p95'] - bare['p95']:+.1f} ms, "
            f"p99 {bridge['p99'] - bare['p99']:+.1f} ms; "
            f"CPU x{bridge['cpu_ms'] / bare['cpu_ms']:.2f}; "
            f"peak RSS +{bridge['rss'] - bare['rss']:.1f} MiB "
            f"(targets: p99 <= +2 ms, CPU <= x1.2, bridge RSS <= 55 MiB)"
        )
    base = results.get("baseline")
    if base and bridge:
        print(
            f"bridge against the baseline checkout: p50 {bridge['p50'] - base['p50']:+.1f} ms, "
            f"p99 {bridge['p99'] - base['p99']:+.1f} ms, "
            f"CPU x{bridge['cpu_ms'] / base['cpu_ms']:.2f}, "
            f"RSS {bridge['rss'] - base['rss']:+.1f} MiB"
        )
        if bare:
            print(
                f"baseline - bare: p50 {base['p50'] - bare['p50']:+.1f} ms, "
                f"p99 {base['p99'] - bare['p99']:+.1f} ms; "
                f"CPU x{base['cpu_ms'] / bare['cpu_ms']:.2f}"
            )
    if cfg.steps:
        for kind, suffix in (("bare", ".bare"), ("bridge", "")):
            path = Path(cfg.steps + suffix)
            if kind in results and path.exists():
                print(f"--- event loop of {kind}, measured turns ({path}):")
                print(path.read_text(encoding="utf-8"))
    if cfg.profile and "bridge" in results:
        import pstats

        print(f"--- cProfile of the bridge's measured turns ({cfg.profile}), by own time:")
        stats = pstats.Stats(cfg.profile)
        stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--paced-turns", type=int, default=20)
    parser.add_argument("--think", type=float, default=1.0, help="paced: seconds before answering")
    parser.add_argument("--only", default="bare,bridge,paced")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--baseline", default=None, help="another checkout, run as 'baseline'")
    parser.add_argument("--profile", default=None, help="write a cProfile of the bridge here")
    parser.add_argument("--steps", default=None, help="write loop-step counts of the bridge here")
    parser.add_argument(
        "--bare-extras",
        action="store_true",
        help="let the bare bot load the optional packages PTB and httpx find installed",
    )
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bridge", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--loopos", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        run_bare(args.api, args.loopos, args.token, args.bare_extras)
        return
    if args.bridge:
        run_bridge(args.bridge)
        return
    global BASELINE
    BASELINE = args.baseline
    kinds = [k for k in args.only.split(",") if k in TOKENS]
    if BASELINE and "baseline" not in kinds:
        kinds.append("baseline")
    cfg = Settings(
        turns=args.turns,
        paced_turns=args.paced_turns,
        think=args.think,
        store=args.store,
        bare_extras=args.bare_extras,
        profile=args.profile,
        steps=args.steps,
    )
    asyncio.run(drive(kinds, cfg))


if __name__ == "__main__":
    main()
