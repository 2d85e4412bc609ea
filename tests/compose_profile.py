"""deploy/docker-compose.replicas.yml run as local processes (for tests/test_deploy_profile.py).

Docker cannot run here, so each service becomes the process its container would run, started
in the order of its ``depends_on``, with the files and variables compose would give it. The only
rewrites (each one a substitution that must match exactly where expected, so a changed deploy
file fails here instead of being run differently):

- **service hostnames** (``redis``, ``bridge-0``, ...) become 127.0.0.1, and every port a
  service listens on (``expose``, ``ports``, Redis's 6379) an ephemeral port of its own: on one
  host two replicas cannot both listen on 8443. A container's ``0.0.0.0`` is 127.0.0.1 too.
- **platform and backend base URLs** point at the local fakes and emulators: the variables
  ``LOOPOS_BASE_URL`` / ``SHOPAI_BASE_URL``, the public ``TELEGRAM_WEBHOOK_URL`` (nginx's
  port, http: TLS in front of nginx is the operator's), and ``api_base_url`` / ``gateway_url``
  keys added to the bots (the file leaves them at Telegram's and Discord's defaults).
- **paths** of a container (its config mount, ``WORKDIR``, ``tmpfs``) live under
  ``<tmp>/<service>/``; nginx's pid, logs and temp files under its own prefix.

What cannot be honoured locally, each handled on purpose:

- images: the bridges run this checkout (``python -m chatbridge.bots.cli`` is the image's
  ``chatbridge`` script), Redis and nginx the binaries installed here (not redis:7 /
  nginx:1.28); nginx's image ``nginx.conf`` (which includes ``conf.d/*.conf``) is stood in
  for by :func:`nginx_main_conf`, with one worker (round robin then alternates strictly);
- Docker's DNS: upstream servers become IP literals, so their ``resolve`` (re-resolving a
  recreated replica's new address) is dropped and the ``resolver`` never asked;
- ``read_only``, ``cap_drop``, ``security_opt``, ``USER``: the processes run as the current
  user without privileges; only the config mount's ``:ro`` is kept (the file is made
  read-only) and ``tmpfs: /tmp`` becomes ``TMPDIR``;
- ``restart: unless-stopped`` is the test's to do (it restarts the replica it killed, once
  it has checked what the survivor did alone); volumes are folders under tmp (``redis-data``
  is Redis's ``--dir``);
- healthchecks run their own command (``redis-cli ping``, the image's ``python -c`` probe of
  ``/healthz``) but polled every 0.1 s rather than at their ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crash_harness import Bridge
from replica_harness import REDIS_SERVER, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
REDIS_CLI = shutil.which("redis-cli")
REDIS_PORT = 6379  # the redis image's port (the compose file exposes none)
BRIDGE_IMAGE = "chatbridge:latest"


def env_example() -> dict[str, str]:
    """deploy/replicas.env.example: what an operator copies to replicas.env (env_file)."""
    out = {}
    for line in (DEPLOY / "replicas.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((DEPLOY / "docker-compose.replicas.yml").read_text())
    assert isinstance(data, dict)
    return data


def bridges() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if name.startswith("bridge")}


def replica_env(service: Mapping[str, Any]) -> dict[str, str]:
    """What a replica's process sees: replicas.env, then the service's own environment."""
    assert service["env_file"] == ["replicas.env"]
    return {**env_example(), **{k: str(v) for k, v in service["environment"].items()}}


def _sub_once(pattern: str, repl: str | Callable[[re.Match[str]], str], text: str) -> str:
    """``re.sub`` that must match exactly once: the deploy file is as this module expects."""
    out, n = re.subn(pattern, repl, text, flags=re.M)
    assert n == 1, f"expected one match of {pattern!r} in the deploy file, found {n}"
    return out


# --- the image: what the Dockerfile's last stage gives a bridge container ---------------------


@dataclass
class Image:
    env: dict[str, str]
    workdir: str
    cmd: list[str]
    healthcheck: list[str]  # the argv of HEALTHCHECK ... CMD [...]
    stop_signal: str = "SIGTERM"


def dockerfile_image(path: Path) -> Image:
    """ENV, WORKDIR, CMD, HEALTHCHECK and STOPSIGNAL of the Dockerfile's final stage."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    last_from = max(i for i, line in enumerate(logical) if line.split()[0].upper() == "FROM")
    image = Image(env={}, workdir="/", cmd=[], healthcheck=[])
    for line in logical[last_from + 1 :]:
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                image.env[name] = value
        elif word == "WORKDIR":
            image.workdir = rest.strip()
        elif word == "CMD":
            image.cmd = json.loads(rest)
        elif word == "HEALTHCHECK":
            image.healthcheck = json.loads(rest[rest.index(" CMD ") + 5 :])
        elif word == "STOPSIGNAL":
            image.stop_signal = rest.strip()
    return image


# --- ports: every service's listening ports, on 127.0.0.1 -------------------------------------


@dataclass
class Ports:
    """Service -> {container port: local port}; a service's own hostname is 127.0.0.1."""

    of: dict[str, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def allocate(cls, services: Mapping[str, Mapping[str, Any]]) -> Ports:
        ports = cls()
        for name, service in services.items():
            inside = {int(str(p).split(":")[-1]) for p in service.get("expose", [])}
            inside |= {int(str(p).split(":")[-1]) for p in service.get("ports", [])}
            if str(service.get("image", "")).startswith("redis:"):
                inside.add(REDIS_PORT)
            ports.of[name] = {p: free_port() for p in sorted(inside)}
        return ports

    def address(self, service: str, port: int) -> str:
        return f"127.0.0.1:{self.of[service][port]}"

    def rewrite_hosts(self, text: str) -> str:
        """``<service>:<port>`` (a compose DNS name) -> 127.0.0.1 and the service's port."""

        def local(m: re.Match[str]) -> str:
            host, port = m[1], int(m[2])
            return self.address(host, port) if host in self.of else m[0]

        return re.sub(r"\b([A-Za-z][\w-]*):(\d+)\b", local, text)


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The services, each after what it ``depends_on`` (as compose starts them)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in services[name].get("depends_on", []):
            visit(dep)
        order.append(name)

    for name in sorted(services):
        visit(name)
    return order


def healthy_first(service: Mapping[str, Any]) -> list[str]:
    """The dependencies compose waits to be healthy (not just started) before this service."""
    deps = service.get("depends_on", [])
    if isinstance(deps, list):
        return []
    return [d for d, how in deps.items() if how.get("condition") == "service_healthy"]


# --- Redis ---------------------------------------------------------------------------------


class RedisService:
    """The compose ``command`` on ``port``, its data in the ``redis-data`` volume's folder;
    :meth:`start` again after :meth:`stop` is ``docker compose restart redis``."""

    def __init__(self, service: Mapping[str, Any], port: int, root: Path) -> None:
        assert REDIS_SERVER is not None
        command = list(service["command"])
        assert command[0] == "redis-server"
        (volume,) = service["volumes"]  # redis-data:/data: the image's WORKDIR (the AOF)
        data = root / volume.split(":", 1)[0]
        data.mkdir(parents=True)
        self.argv = [REDIS_SERVER, *command[1:], "--bind", "127.0.0.1", "--port", str(port)]
        self.argv += ["--dir", str(data)]
        check = list(service["healthcheck"]["test"])
        assert check[:2] == ["CMD", "redis-cli"], check
        if REDIS_CLI is not None:  # inside the container redis-cli's default is 127.0.0.1:6379
            self.probe = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *check[2:]]
        else:  # redis-cli not installed: the same PING through redis-py
            ping = f"import redis; redis.Redis(host='127.0.0.1', port={port}).ping()"
            self.probe = [sys.executable, "-c", ping]
        self.url = f"redis://127.0.0.1:{port}/0"
        self.root = root
        self.runs = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Started, and healthy by its healthcheck; returns its URL."""
        self.runs += 1
        log = self.root / f"redis-{self.runs}.log"
        proc = self.proc = await spawn(self.argv, log)
        what = f"redis-server ({log})"
        await wait_healthy(self.probe, {}, what=what, alive=lambda: proc.returncode)
        return self.url

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)


async def spawn(argv: list[str], log: Path) -> asyncio.subprocess.Process:
    """``argv`` started with its output in ``log``."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )


async def wait_healthy(
    probe: list[str],
    env: Mapping[str, str],
    *,
    what: str,
    alive: Callable[[], int | None],
    timeout: float = 40.0,
    every: float = 0.1,
) -> None:
    """Until the healthcheck command ``probe`` exits 0; fails when the service exits (``alive``
    returns its exit code) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        proc = await asyncio.create_subprocess_exec(
            *probe,
            env=dict(env) or None,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() == 0:
            return
        if alive() is not None:
            raise AssertionError(f"{what} exited before it was healthy")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not healthy within {timeout} s")
        await asyncio.sleep(every)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (what ``docker stop`` sends), SIGKILL after 10 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- the bridges ---------------------------------------------------------------------------


@dataclass
class Platforms:
    """Where the local fakes and emulators listen."""

    telegram_api: str  # ".../bot" (the token is appended)
    discord_api: str
    discord_gateway: str
    loopos: str
    shopai: str
    allowed_users: list[int] = field(default_factory=list)  # Telegram users to admit too


def localize_config(text: str, ports: Ports, service: str, platforms: Platforms) -> str:
    """deploy/config.replicas.toml for ``service`` on this host (see the module's rewrites)."""
    text = _sub_once(r'^url = "redis://redis:6379/0"$', lambda m: ports.rewrite_hosts(m[0]), text)
    text = _sub_once(r'^webhook_listen = "0\.0\.0\.0"$', 'webhook_listen = "127.0.0.1"', text)
    hook = ports.of[service][8443]
    text = _sub_once(r"^webhook_port = 8443$", f"webhook_port = {hook}", text)
    text = _sub_once(
        r'^platform = "telegram"$',
        lambda m: f'{m[0]}\napi_base_url = "{platforms.telegram_api}"',
        text,
    )
    text = _sub_once(
        r'^platform = "discord"$',
        lambda m: (
            f'{m[0]}\napi_base_url = "{platforms.discord_api}"\n'
            f'gateway_url = "{platforms.discord_gateway}"'
        ),
        text,
    )
    # the one deviation beyond hostnames, URLs and paths: the example admits one Telegram id
    # (123456789, "your sellers' ids", an operator's fill-in like the tokens); the test's
    # sellers are added to it, and a user not listed must still be refused
    extra = "".join(f", {u}" for u in platforms.allowed_users)
    return _sub_once(r"^allowed_users = \[123456789\]", f"allowed_users = [123456789{extra}]", text)


def localize_env(
    env: Mapping[str, str], ports: Ports, service: str, platforms: Platforms
) -> dict[str, str]:
    """The replica's variables with service addresses, URLs and listen addresses local."""
    own = ports.of[service]
    out = dict(env)
    host, _, port = out["CHATBRIDGE_HTTP_LISTEN"].rpartition(":")
    assert host == "0.0.0.0"
    out["CHATBRIDGE_HTTP_LISTEN"] = f"127.0.0.1:{own[int(port)]}"
    health = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", out["CHATBRIDGE_HEALTH_URL"])
    assert health is not None
    out["CHATBRIDGE_HEALTH_URL"] = f"http://127.0.0.1:{own[int(health[1])]}{health[2]}"
    # Telegram reaches nginx's published port at the public URL (same path)
    public = re.fullmatch(r"https://[^/]+(/.*)", out["TELEGRAM_WEBHOOK_URL"])
    assert public is not None
    out["TELEGRAM_WEBHOOK_URL"] = f"http://{ports.address('nginx', 8443)}{public[1]}"
    out["LOOPOS_BASE_URL"] = platforms.loopos
    out["SHOPAI_BASE_URL"] = platforms.shopai
    rewritten = {"CHATBRIDGE_HEALTH_URL", "TELEGRAM_WEBHOOK_URL", "LOOPOS_BASE_URL"}
    rewritten.add("SHOPAI_BASE_URL")
    untouched = [k for k, v in env.items() if "://" in v and k not in rewritten]
    assert not untouched, f"a URL this module does not point anywhere local: {untouched}"
    return out


def bridge_process(
    name: str,
    service: Mapping[str, Any],
    env: Mapping[str, str],
    image: Image,
    root: Path,
    ports: Ports,
    platforms: Platforms,
) -> Bridge:
    """One bridge service as the image's ``CMD`` would run it, its files under ``root``."""
    assert image.cmd[0] == "chatbridge", image.cmd  # the console script: python -m ...cli
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        local = root / target.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        text = (DEPLOY / source).read_text()
        local.write_text(localize_config(text, ports, name, platforms))
        if mode == ["ro"]:
            local.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    args = [str(root / a.lstrip("/")) if a.startswith("/") else a for a in image.cmd[1:]]
    config = Path(args[args.index("--config") + 1])
    workdir = root / image.workdir.lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = root / "tmp"  # the service's tmpfs
    assert service["tmpfs"] == ["/tmp"]
    tmp.mkdir(exist_ok=True)
    base = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(workdir)}
    base["TMPDIR"] = str(tmp)
    local_env = localize_env({**image.env, **env}, ports, name, platforms)
    return Bridge(config, local_env, workdir, args=args, base_env=base)


async def wait_bridge_healthy(bridge: Bridge, image: Image, name: str) -> None:
    """The image's HEALTHCHECK command, with the bridge's environment, until it passes."""
    probe = list(image.healthcheck)
    assert probe[0] == "python"
    probe[0] = sys.executable

    def exited() -> int | None:
        return None if bridge.proc is None else bridge.proc.returncode

    try:
        await wait_healthy(probe, bridge.env, what=name, alive=exited, every=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{bridge.logs()[-4000:]}") from None


# --- nginx ---------------------------------------------------------------------------------


def nginx_main_conf(prefix: Path, site: Path) -> str:
    """What the nginx image's /etc/nginx/nginx.conf does (an http block including the site
    under conf.d/), with its pid, logs and temp files under ``prefix``; the access log names
    the upstream(s) each request went to."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} notice;
events {{
    worker_connections 256;
}}
http {{
    log_format upstreams '$request_method $uri $status "$upstream_addr" "$upstream_status"';
    access_log {prefix / "access.log"} upstreams;
{temp}
    include {site};
}}
"""


def localize_nginx_site(text: str, ports: Ports) -> str:
    """deploy/nginx-replicas.conf: upstream servers and the listen port local. A server's
    ``resolve`` goes with its name: an IP literal has nothing to look up again (and nginx
    before 1.27.3, as installed here, does not know the parameter)."""

    def server(m: re.Match[str]) -> str:
        params = [p for p in m[3].split() if p != "resolve"]
        return f"{m[1]}{ports.rewrite_hosts(m[2])} {' '.join(params)};"

    text, n = re.subn(r"^(\s*server )([\w-]+:\d+)([^;]*);", server, text, flags=re.M)
    assert n, "no upstream servers in nginx-replicas.conf"
    return _sub_once(
        r"^(\s*)listen 8443;$", lambda m: f"{m[1]}listen {ports.address('nginx', 8443)};", text
    )


@contextlib.asynccontextmanager
async def nginx_service(
    service: Mapping[str, Any], ports: Ports, root: Path
) -> AsyncIterator[Path]:
    """The real nginx with the compose file's site config; yields its prefix (logs)."""
    assert NGINX is not None
    prefix = root / "nginx"
    prefix.mkdir(parents=True)
    (volume,) = service["volumes"]
    source, target, *_ = volume.split(":")
    assert target.startswith("/etc/nginx/conf.d/"), target
    site = prefix / "conf.d" / Path(target).name
    site.parent.mkdir()
    site.write_text(localize_nginx_site((DEPLOY / source).read_text(), ports))
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, site))
    argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    argv += ["-g", "daemon off;"]  # the image's CMD
    proc = await spawn(argv, prefix / "stderr.log")
    try:
        await wait_listening(ports.of["nginx"][8443], proc, prefix)
        yield prefix
    finally:
        await stop_process(proc)


def logs_in(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))


async def wait_listening(port: int, proc: asyncio.subprocess.Process, prefix: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        if proc.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(f"nginx did not start:\n{logs_in(prefix)[-3000:]}")
        await asyncio.sleep(0.05)


# --- the whole profile ---------------------------------------------------------------------


@dataclass
class Running:
    """The profile's services, running: ``bridges`` in compose order."""

    services: Mapping[str, Mapping[str, Any]]
    ports: Ports
    image: Image
    redis_url: str = ""
    redis: RedisService | None = None
    nginx: Path | None = None  # nginx's prefix (access.log, error.log)
    bridges: dict[str, Bridge] = field(default_factory=dict)


def profile_services(profile: str) -> dict[str, dict[str, Any]]:
    """The services ``docker compose --profile <profile> up`` starts."""
    services = compose()["services"]
    return {name: s for name, s in services.items() if profile in s.get("profiles", [])}


@contextlib.asynccontextmanager
async def run_profile(
    services: Mapping[str, Mapping[str, Any]], ports: Ports, root: Path, platforms: Platforms
) -> AsyncIterator[Running]:
    """Every service started as compose would (after its ``depends_on``, a ``service_healthy``
    one once its healthcheck passed), stopped at the end (SIGTERM, as ``docker compose
    down``); the bridges are started, not waited for (see :func:`wait_bridge_healthy`)."""
    bridge_names = [n for n, s in services.items() if s.get("image") == BRIDGE_IMAGE]
    build = services[bridge_names[0]]["build"]
    image = dockerfile_image(DEPLOY / build["context"] / build["dockerfile"])
    running = Running(services, ports, image)
    healthy: set[str] = set()
    async with contextlib.AsyncExitStack() as stack:
        for name in start_order(services):
            service = services[name]
            missing = [d for d in healthy_first(service) if d not in healthy]
            assert not missing, f"{name} needs {missing} healthy first"
            kind = str(service.get("image", ""))
            if kind.startswith("redis:"):
                running.redis = RedisService(service, ports.of[name][REDIS_PORT], root)
                stack.push_async_callback(running.redis.stop)
                running.redis_url = await running.redis.start()
                healthy.add(name)
            elif kind == BRIDGE_IMAGE:
                env = replica_env(service)
                bridge = bridge_process(name, service, env, image, root / name, ports, platforms)
                await bridge.start()
                stack.push_async_callback(bridge.stop)
                running.bridges[name] = bridge
            elif kind.startswith("nginx:"):
                running.nginx = await stack.enter_async_context(nginx_service(service, ports, root))
            else:
                raise AssertionError(f"a service tests/compose_profile.py cannot run: {name}")
        yield running
