"""The ``chatbridge`` command: demo, run, check-config, sessions."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import signal
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from chatbridge.bots.config import ConfigError, load_config, parse_config
from chatbridge.core.secrets import register_secret
from chatbridge.core.texts import LOCALES

log = logging.getLogger("chatbridge")


def _setup_logging(level: str, fmt: str = "plain", secrets: list[str] | None = None) -> None:
    from chatbridge.bots.logging_setup import configure_logging

    configure_logging(level=level, fmt=fmt, secrets=secrets or [])  # type: ignore[arg-type]


def _cmd_check_config(args: argparse.Namespace) -> int:
    from chatbridge.bots.preflight import environment_problems, static_problems

    config = load_config(args.file, check=False)
    register_secret(*config.secrets())  # nothing below may print them, whoever logs
    if not args.quiet:
        print(json.dumps(config.redacted(), indent=2, sort_keys=False))
    problems = static_problems(config) + environment_problems(config)
    if args.online:
        from chatbridge.bots.online import online_problems

        _setup_logging("WARNING", secrets=config.secrets())

        def report(line: str) -> None:
            print(f"{args.file}: {line}", file=sys.stderr)

        problems += asyncio.run(online_problems(config, report))
    errors = [p for p in problems if p.error]
    for problem in sorted(problems, key=lambda p: not p.error):
        level = "" if problem.error else "warning: "
        print(f"{args.file}: {level}{problem}", file=sys.stderr)
    summary = f"{len(config.bots)} bots, {len(config.backends)} backends"
    if errors:
        print(f"{args.file}: {len(errors)} problem(s) to fix ({summary})", file=sys.stderr)
        return 2
    checked = "checked online" if args.online else "not contacted (add --online)"
    print(f"{args.file}: OK ({summary}; {checked})", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from chatbridge.bots.runner import App, StartupError, run_app

    config = load_config(args.config)
    _setup_logging(config.logging.level, config.logging.format, config.secrets())
    app = App(config)
    try:
        asyncio.run(run_app(app))
    except StartupError as exc:
        # one line (redacted by the logging setup): what failed and what to do
        log.error("chatbridge stopped: %s", exc)
        return 1
    except Exception:
        log.critical("chatbridge stopped by an unexpected error", exc_info=True)
        return 1
    return 130 if app.stopped_by == signal.SIGINT else 0


# what each emulator calls the demo's locales
_DEMO_LANGUAGES = {
    "loopos": {"en": "en-US", "pt-PT": "PT-PT"},
    "shopai": {"en": "en", "pt-PT": "pt"},
}


async def _demo(args: argparse.Namespace) -> int:
    from chatbridge.bots.runner import App, run_app

    backend: dict[str, Any]
    stop_emulator: Any
    # --locale alone also asks the assistant for that language
    language = args.language or (
        _DEMO_LANGUAGES[args.backend][args.locale] if args.locale else None
    )
    if args.backend == "loopos":
        from chatbridge.emulators.loopos import start_loopos_emulator

        loopos = await start_loopos_emulator()
        stop_emulator = loopos.stop
        backend = {
            "type": "loopos",
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "language": language or "PT-PT",
            "context": "Circular economy marketplace (demo)",
        }
    else:
        from chatbridge.emulators.shopai import start_shopai_emulator

        shop = await start_shopai_emulator(version=args.shopai_version)
        stop_emulator = shop.stop
        backend = {
            "type": "shopai",
            "base_url": shop.url,
            "license_key": "test-license",
            "language": language or "en",
            "protocol": args.protocol,
        }
    with tempfile.TemporaryDirectory(prefix="chatbridge-demo-") as tmp:
        store_url = args.store or f"sqlite:///{Path(tmp) / 'demo.db'}"
        config = parse_config(
            {
                "store": {"url": store_url},
                "backends": {"demo-ai": backend},
                "bots": [
                    {
                        "name": "demo",
                        "platform": "console",
                        "backend": "demo-ai",
                        "language": args.language,
                        "locale": args.locale or "en",
                    }
                ],
            },
            file="<demo>",
        )
        app = App(config)
        try:
            await run_app(app)
        finally:
            await stop_emulator()
    return 130 if app.stopped_by == signal.SIGINT else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    return asyncio.run(_demo(args))


def _cmd_sessions(args: argparse.Namespace) -> int:
    from chatbridge.bots.admin_cli import SessionsError, run_sessions_command

    config = load_config(args.config)
    register_secret(*config.secrets())
    try:
        return asyncio.run(run_sessions_command(config, args))
    except SessionsError as exc:
        print(f"chatbridge sessions: {exc}", file=sys.stderr)
        return exc.code


def version() -> str:
    """The installed distribution's version, or the checkout's pyproject version."""
    try:
        return importlib.metadata.version("chatbridge")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatbridge",
        description="AI commerce assistants (LoopOS AI, ShopAI) in Telegram, Discord and the "
        "terminal.",
    )
    parser.add_argument("--version", action="version", version=f"chatbridge {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="chat in the terminal with a built-in backend emulator",
        description="Chat in this terminal with a built-in LoopOS or ShopAI emulator: no "
        "tokens, no network. Type a message; Ctrl-D ends.",
    )
    demo.add_argument(
        "--backend", choices=["loopos", "shopai"], default="loopos", help="which emulator"
    )
    demo.add_argument(
        "--protocol",
        choices=["auto", "websocket", "socketio"],
        default="auto",
        help="ShopAI protocol (default: ask the server)",
    )
    demo.add_argument(
        "--shopai-version",
        choices=["v0.1", "v0.2"],
        default="v0.2",
        help="which ShopAI API the emulator speaks",
    )
    demo.add_argument("--language", default=None, help="the user's language, e.g. PT-PT, en-US, en")
    demo.add_argument(
        "--locale",
        choices=list(LOCALES),
        default=None,
        help="what the console itself says, and (without --language) the assistant's language "
        "(default: en, or what --language names)",
    )
    demo.add_argument("--store", default=None, help="store URL (default: a temporary file)")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser(
        "run",
        help="run every bot a configuration file defines",
        description="Run every bot of the configuration file until SIGTERM or Ctrl-C (graceful: "
        "answers in progress get [limits] shutdown_grace seconds). A start that cannot succeed "
        "exits 1 with one line saying what failed; an unreachable platform is retried for "
        "[limits] startup_retry seconds first.",
    )
    run.add_argument("--config", required=True, help="TOML configuration file")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check-config",
        help="find every problem of a configuration file; print it with secrets masked",
        description="Validate a configuration file and report every problem at once (unset "
        "variables, unknown keys, empty or duplicate tokens, unsupported store URLs, port "
        "collisions, unreachable webhooks, missing platform support, bots open to everyone), "
        "then print the effective configuration with every secret masked. Exit code 2 when "
        "something must be fixed. --online also contacts each platform, backend and the store.",
    )
    check.add_argument("file", help="TOML configuration file")
    check.add_argument(
        "--online",
        action="store_true",
        help="also connect: Telegram getMe, Discord login, LoopOS, ShopAI init_session, store",
    )
    check.add_argument(
        "--quiet", "-q", action="store_true", help="only the problems, not the configuration"
    )
    check.set_defaults(func=_cmd_check_config)

    sessions = sub.add_parser(
        "sessions",
        help="inspect or reset stored conversations",
        description="Inspect or reset the conversations in the store the bots use (the store "
        "path is printed first). list: the most recent sessions; show USER: one user's "
        "sessions; reset USER: forget them (their next message starts a new conversation); "
        "reset-all: forget every session (asks first). A missing SQLite file is never created.",
    )
    sessions.add_argument(
        "action", choices=["list", "show", "reset", "reset-all"], help="what to do"
    )
    sessions.add_argument("user", nargs="?", help="user id (show, reset)")
    sessions.add_argument("--config", required=True, help="TOML configuration file")
    sessions.add_argument("--bot", default=None, help="only this bot (a name from the file)")
    sessions.add_argument("--limit", type=int, default=50, help="list at most this many")
    sessions.add_argument("--yes", action="store_true", help="reset-all without asking")
    sessions.set_defaults(func=_cmd_sessions)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception:
        # a bug, not an operator mistake: the traceback goes through the redacting logger
        # (tokens and keys registered so far are masked), never straight to stderr
        if not any(h.get_name() == "chatbridge" for h in logging.getLogger().handlers):
            _setup_logging("WARNING")
        log.critical("chatbridge %s stopped by an unexpected error", args.command, exc_info=True)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
