"""Benchmark: CPU and latency of one Bot API call through each transport (prints, asserts nothing).

The fake Bot API (tests/fakes/telegram_api.py, Telegram's flood limits off) runs in a
subprocess on loopback, so its CPU is its own. This process makes ``--calls`` sendMessage
calls through PTB's request seam (``BaseRequest.post``: the form encoding, the HTTP exchange
and PTB's JSON decoding of the answer, as a bot's every call) with 1 and ``--concurrency``
calls in flight, through:

- ``http11``: chatbridge's transport (adapters/telegram/gate.py on core/http11.py);
- ``aiohttp``: the aiohttp transport it replaced (a copy of the old gate.AiohttpRequest);
- ``httpx``: PTB's own default, HTTPXRequest with a pool as large as the others' limit.

Transports take turns round by round (``--rounds``), so a busy machine slows each alike.
Prints, per transport and concurrency: CPU µs per call (this process's user+sys time over the
calls) and the latency p50 / p99 of a call. About 30 s with the defaults.

    python bench/bot_api_transport.py [--calls 2000] [--concurrency 200] [--rounds 2]
                                      [--only http11,aiohttp,httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from percentiles import pct
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData
from telegram.request._requestparameter import RequestParameter

from chatbridge.adapters.telegram.gate import BotApiRequest, PriorityGate
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "9001:bench-transport-token"
LIMIT = 128  # the adapter's default connection_pool_size


class AiohttpRequest(BaseRequest):
    """The aiohttp transport chatbridge used before http11 (gate.py at 83b6877), for comparison."""

    def __init__(self, *, limit: int = LIMIT) -> None:
        self._limit = limit
        self._gate = PriorityGate(limit)
        self._session: Any = None  # an aiohttp.ClientSession, imported only when used

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def initialize(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": self.USER_AGENT}
        )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        import aiohttp

        assert self._session is not None
        fields = request_data.json_parameters if request_data else None
        read = 5.0 if isinstance(read_timeout, DefaultValue) else read_timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=35.0, sock_connect=5.0, sock_read=read)
        await self._gate.acquire(1)
        try:
            async with self._session.request(
                method, url, data=fields or None, timeout=timeout
            ) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise TimedOut("Timed out talking to the Bot API") from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp {type(exc).__name__}") from None
        finally:
            self._gate.release()


def make(kind: str) -> BaseRequest:
    if kind == "http11":
        return BotApiRequest(limit=LIMIT)
    if kind == "aiohttp":
        return AiohttpRequest(limit=LIMIT)
    return HTTPXRequest(connection_pool_size=LIMIT, pool_timeout=30.0)


async def measure(
    request: BaseRequest, url: str, chat_id: int, calls: int, concurrency: int
) -> tuple[float, list[float]]:
    """(CPU seconds, per-call latencies) of ``calls`` sendMessage calls, ``concurrency`` at once."""
    latencies: list[float] = []
    per_worker = calls // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            data = RequestData(
                [
                    RequestParameter.from_input("chat_id", chat_id),
                    RequestParameter.from_input("text", f"reply {w}.{i}: some text of a turn"),
                ]
            )
            start = time.perf_counter()
            await request.post(url, data)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(w) for w in range(min(concurrency, 20))))  # warm up
    latencies.clear()
    cpu = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.process_time() - cpu, latencies


async def drive(args: argparse.Namespace) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    base, chat = (await proc.stdout.readline()).decode().split()
    url = f"{base}/bot{TOKEN}/sendMessage"
    kinds = args.only.split(",")
    results: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
    try:
        for _ in range(args.rounds):
            for kind in kinds:
                for concurrency in (1, args.concurrency):
                    request = make(kind)
                    await request.initialize()
                    try:
                        got = await measure(request, url, int(chat), args.calls, concurrency)
                    finally:
                        await request.shutdown()
                    results.setdefault((kind, concurrency), []).append(got)
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    print(f"--- {args.calls} sendMessage calls each, {args.rounds} rounds (fake in a subprocess)")
    print(f"{'transport':10} {'in flight':>9} {'CPU µs/call':>12} {'p50 ms':>7} {'p99 ms':>7}")
    for (kind, concurrency), runs in results.items():
        cpu = sum(c for c, _ in runs) / sum(len(lat) for _, lat in runs) * 1e6
        lat = sorted(x for _, run in runs for x in run)
        p50, p99 = pct(lat, 0.50) * 1000, pct(lat, 0.99) * 1000
        print(f"{kind:10} {concurrency:9} {cpu:12.0f} {p50:7.2f} {p99:7.2f}")


async def serve() -> None:
    fake = FakeTelegram(interval=0, bot_limit=0, group_limit=0)
    await fake.start()
    bot = fake.add_bot(TOKEN, "bench_bot")
    chat = bot.private_chat(bot.make_user(7, "Ana"))
    print(fake.url, chat["id"], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="http11,aiohttp,httpx")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else drive(args))


if __name__ == "__main__":
    main()
