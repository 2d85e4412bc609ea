"""Several replicas of the real ``chatbridge run`` on one real redis-server.

- :func:`redis_server`: a redis-server on a unix socket in a temporary folder (no TCP port),
  persistence off, stopped at the end.
- :class:`RoundRobin`: the load balancer in front of webhook replicas: each POST goes to the
  next replica; one that refuses the connection (killed) is skipped, as nginx does with
  ``proxy_next_upstream error``.
- :func:`replica_config`: one replica's TOML (they differ only in their ports).
- :func:`ready` / :func:`all_ready`: a replica's ``/readyz`` says it is up and in the cluster;
  :func:`owned_partitions` / :func:`partition_holders`: who holds which partition;
  :func:`until`: wait on a condition, failing with the replicas' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from crash_harness import Bridge

REDIS_SERVER = shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A fresh redis-server; yields its ``unix://`` URL."""
    import redis

    assert REDIS_SERVER is not None
    # a short folder of its own for the socket: a unix socket path holds at most 107 bytes
    short = Path(tempfile.mkdtemp(prefix="rds"))
    sock = short / "redis.sock"
    log = (workdir / "redis.log").open("wb")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
        ],
        stdout=log,
        stderr=log,
    )  # fmt: skip
    log.close()
    url = f"unix://{sock}?db=0"
    try:
        deadline = time.monotonic() + 30  # a loaded machine starts slowly
        while True:
            try:
                if sock.exists() and redis.Redis.from_url(url).ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = (workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start:\n{output}")
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(short, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RoundRobin:
    """A reverse proxy for webhooks: POST / -> the next upstream, skipping dead ones."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self._next = itertools.cycle(range(len(upstreams)))
        self.forwarded = [0] * len(upstreams)
        self.skipped = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> RoundRobin:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        for _ in range(len(self.upstreams)):
            i = next(self._next)
            try:
                async with self._session.post(
                    self.upstreams[i] + request.path, data=body, headers=headers
                ) as resp:
                    data = await resp.read()
                    self.forwarded[i] += 1
                    return web.Response(status=resp.status, body=data)
            except (TimeoutError, aiohttp.ClientConnectionError):
                self.skipped += 1
        return web.Response(status=502)


@contextlib.asynccontextmanager
async def round_robin(upstreams: list[str]) -> AsyncIterator[RoundRobin]:
    proxy = await RoundRobin(upstreams).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def replica_config(
    path: Path,
    *,
    redis_url: str,
    backend: str,
    telegram: str = "",
    discord: str = "",
    http_port: int,
    lease: float = 1.5,
    extra: str = "",
) -> Path:
    path.write_text(
        f"""
[store]
url = "{redis_url}"

{backend}

{telegram}

{discord}

[http]
listen = "127.0.0.1:{http_port}"

[limits]
shutdown_grace = 2

[replicas]
partitions = 8
lease = {lease}
{extra}
"""
    )
    return path


async def ready(port: int) -> bool:
    """The replica's ``/readyz`` on ``port`` answers 200 and it is in the cluster."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            body = await resp.json()
            return resp.status == 200 and body["checks"].get("replica") is True
    except aiohttp.ClientError:
        return False


async def all_ready(ports: list[int]) -> bool:
    return all(await asyncio.gather(*(ready(p) for p in ports)))


async def metrics(port: int) -> str:
    """The Prometheus text a replica serves on ``port``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


async def owned_partitions(port: int) -> float:
    """How many partitions the replica serving ``/metrics`` on ``port`` holds."""
    text = await metrics(port)
    match = re.search(r'^chatbridge_replica_partitions\{replica="[^"]+"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


async def balanced(ports: list[int]) -> bool:
    """Every replica holds at least two partitions (the first one started took them all)."""
    owned = await asyncio.gather(*(owned_partitions(p) for p in ports))
    return all(n >= 2 for n in owned)


async def partition_holders(redis_url: str, partitions: int) -> dict[int, str]:
    """Partition -> the name of the replica holding its lease (free partitions left out)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        values = await client.mget([f"chatbridge:lease:p:{p}" for p in range(partitions)])
    finally:
        await client.aclose()
    return {p: str(v).split(" ")[0] for p, v in enumerate(values) if v}


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, bridges: list[Bridge], timeout: float
) -> None:
    """Until ``check()`` holds; on timeout fail with the end of every replica's log."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        logs = "\n".join(b.logs()[-3000:] for b in bridges)
        raise AssertionError(f"timed out waiting for {what}\n{logs}") from None


@dataclass
class RoundTrips:
    """Every request the redis clients send while ``on`` and :meth:`counting`, by command
    (EVALSHA by script name, a pipeline as ``pipeline[A+B]``), outside the replicas'
    lease-keeping task (heartbeats and renewals are per second, not per turn). Counted at the
    socket, so whatever path a command takes, it shows."""

    scripts: dict[str, str] = field(default_factory=dict)  # sha -> name
    sends: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    on: bool = False

    def name_scripts(self, *owners: object) -> None:
        from redis.commands.core import AsyncScript

        from chatbridge.core.store.redis_pipelined import PipelinedScript

        for owner in owners:
            for attr, value in vars(owner).items():
                if isinstance(value, AsyncScript | PipelinedScript):
                    self.scripts[value.sha] = f"{type(owner).__name__}.{attr.lstrip('_')}"

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        from redis.asyncio.connection import AbstractConnection

        from chatbridge.core.store.redis_pipelined import _Wire

        original = AbstractConnection.send_packed_command
        original_wire = _Wire.send
        trips = self

        def count(command: Any) -> None:
            task = asyncio.current_task()
            if trips.on and not (task and task.get_name().startswith("replicas:leases")):
                names = trips._names(command)
                trips.commands += len(names)
                label = names[0] if len(names) == 1 else f"pipeline[{'+'.join(names)}]"
                trips.sends[label] += 1

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            count(command)
            await original(conn, command, check_health)

        def counted_wire(wire: _Wire, packed: bytes) -> asyncio.Future[Any]:
            count(packed)  # the pipelined connection's commands (core.store.redis_pipelined)
            return original_wire(wire, packed)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign,assignment]
        _Wire.send = counted_wire  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
            _Wire.send = original_wire  # type: ignore[method-assign]

    def _names(self, command: Any) -> list[str]:
        raw = command if isinstance(command, bytes) else b"".join(bytes(c) for c in command)
        names, i = [], 0
        while i < len(raw) and raw[i : i + 1] == b"*":
            end = raw.index(b"\r\n", i)
            count = int(raw[i + 1 : end])
            i = end + 2
            args = []
            for _ in range(count):
                end = raw.index(b"\r\n", i)
                size = int(raw[i + 1 : end])
                args.append(raw[end + 2 : end + 2 + size])
                i = end + 2 + size + 2
            name = args[0].decode().upper()
            if name == "EVALSHA":
                name = self.scripts.get(args[1].decode(), "EVALSHA ?")
            names.append(name)
        return names or ["?"]
