"""deploy/docker-compose.replicas.yml: Redis, two bridge replicas (every bot on each; the
Discord bot's two shards split between them) and nginx in front of their Telegram webhooks;
the configuration they share loads for each replica with its own shard and passes
``chatbridge check-config``; nginx spreads webhooks round-robin over both and retries a POST
on the next. Shape only: Docker cannot run here (``nginx -t`` runs when nginx is installed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from compose_profile import (
    DEPLOY,
    NGINX,
    ROOT,
    Ports,
    bridges,
    compose,
    localize_nginx_site,
    replica_env,
)

from chatbridge.bots.config import DiscordBotConfig, TelegramBotConfig, load_config

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def test_replicas_profile_shape() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "nginx", *bridges()}
    assert all(s["profiles"] == ["replicas"] for s in services.values())
    assert 2 <= len(bridges()) <= 3
    for bridge in bridges().values():
        assert "ports" not in bridge  # reached through nginx only
        assert bridge["depends_on"]["redis"]["condition"] == "service_healthy"
        assert bridge["read_only"] is True and bridge["cap_drop"] == ["ALL"]
        assert bridge["volumes"] == ["./config.replicas.toml:/etc/chatbridge/config.toml:ro"]
        assert bridge["env_file"] == ["replicas.env"]
    assert "--appendonly" in services["redis"]["command"]
    nginx = services["nginx"]
    assert any(v.startswith("./nginx-replicas.conf:") for v in nginx["volumes"])
    assert any(str(p).endswith(":8443") for p in nginx["ports"])
    assert set(nginx["depends_on"]) == set(bridges())


def test_each_replica_holds_its_own_discord_shard() -> None:
    envs = [replica_env(s) for s in bridges().values()]
    counts = {e["DISCORD_SHARD_COUNT"] for e in envs}
    assert counts == {str(len(envs))}  # every shard held, by exactly one replica
    assert sorted(int(e["DISCORD_SHARD_ID"]) for e in envs) == list(range(len(envs)))
    names = [e["CHATBRIDGE_REPLICA"] for e in envs]
    assert len(set(names)) == len(names)


def test_the_shared_configuration_loads_for_every_replica() -> None:
    grace = float(str(compose()["services"]["bridge-0"]["stop_grace_period"]).rstrip("s"))
    text = (DEPLOY / "config.replicas.toml").read_text()
    for service in bridges().values():
        env = replica_env(service)
        config = load_config(DEPLOY / "config.replicas.toml", env)
        assert config.store.url.startswith("redis://redis:")
        telegram = [b for b in config.bots if isinstance(b, TelegramBotConfig)]
        assert telegram and all(b.mode == "webhook" and b.webhook_secret_token for b in telegram)
        assert all(b.webhook_port == 8443 and b.webhook_listen == "0.0.0.0" for b in telegram)
        (discord,) = [b for b in config.bots if isinstance(b, DiscordBotConfig)]
        assert discord.shard_id == int(env["DISCORD_SHARD_ID"])
        assert discord.shard_count == len(bridges())
        assert grace > config.limits.shutdown_grace
        assert config.replicas.lease <= 5  # the failover promise: work resumes within 5 s
        assert config.replicas.shared_budgets  # Discord's buckets and global limit shared
        assert set(VAR.findall(text)) <= set(env)


def test_check_config_accepts_every_replica(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    pytest.importorskip("discord")
    pytest.importorskip("telegram")
    config = str(DEPLOY / "config.replicas.toml")
    for name, service in bridges().items():
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **replica_env(service)}
        result = subprocess.run(
            [sys.executable, "-m", "chatbridge.bots.cli", "check-config", "--quiet", config],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_nginx_spreads_webhooks_over_every_replica_and_retries_a_post(tmp_path: Path) -> None:
    conf = (DEPLOY / "nginx-replicas.conf").read_text()
    upstream = re.search(r"upstream \w+ \{([^}]*)\}", conf)
    assert upstream is not None
    servers = re.findall(r"server ([\w-]+):8443", upstream[1])
    assert sorted(servers) == sorted(bridges())
    assert "location /telegram" in conf
    retry = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert retry and {"error", "timeout", "non_idempotent"} <= set(retry[1].split())
    # the replicas' names are looked up again (a recreated container has a new IP): every
    # server "resolve", the group in shared memory, Docker's DNS as the resolver
    assert len(re.findall(r"^\s*server [\w-]+:8443 [^;]*\bresolve;", upstream[1], re.M)) == len(
        servers
    )
    assert re.search(r"^\s*zone \w+ \d+k;", upstream[1], re.M)
    assert re.search(r"^resolver 127\.0\.0\.11\b", conf, re.M)
    nginx = NGINX
    if nginx is None:
        pytest.skip("nginx not installed: syntax not checked")
    # no Docker DNS here: local addresses instead (as tests/test_deploy_profile.py runs it)
    local = localize_nginx_site(conf, Ports.allocate(compose()["services"]))
    wrapped = f"events {{}}\nhttp {{\n{local}\n}}\n"
    path = tmp_path / "nginx.conf"
    path.write_text(wrapped)
    result = subprocess.run(
        [nginx, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
