"""The real ``chatbridge run`` in a subprocess, to be killed with SIGKILL and started again.

Its log goes to a file in the test's temporary folder (shown when a test fails); the store is a
real SQLite file there too, so the second process finds what the first one wrote down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Bridge:
    """``args``: what follows ``chatbridge`` (default ``run --config <config>``); ``base_env``:
    the environment under ``env`` (default this process's)."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        workdir: Path,
        *,
        args: Sequence[str] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        base = os.environ if base_env is None else base_env
        self.env = {**base, **env, "PYTHONPATH": str(REPO)}
        self.workdir = workdir
        self.args = list(args) if args is not None else ["run", "--config", str(config)]
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"bridge-{self.runs}.log"

    async def start(self) -> None:
        self.runs += 1
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatbridge.bots.cli",
            *self.args,
            cwd=self.workdir,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            return await proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- run {i} ---\n" + (self.workdir / f"bridge-{i}.log").read_text(errors="replace")
            for i in range(1, self.runs + 1)
            if (self.workdir / f"bridge-{i}.log").exists()
        )


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float, what: str, bridge: Bridge
) -> None:
    """Until ``check()`` holds; on timeout fail with the bridge's logs."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                if bridge.proc is not None and bridge.proc.returncode is not None:
                    raise AssertionError(f"the bridge exited while waiting for {what}")
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{bridge.logs()[-6000:]}") from None
