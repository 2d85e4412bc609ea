"""deploy/docker-compose.replicas.yml: Redis, scaled bridge replicas and nginx in front of
their webhooks; the configuration they share loads and asks for a shared store; nginx spreads
webhooks round-robin and retries a POST on the next replica. Shape only: Docker cannot run
here (``nginx -t`` runs when nginx is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chatbridge.bots.config import TelegramBotConfig, load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def env_example() -> dict[str, str]:
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


def test_replicas_profile_shape() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "bridge", "nginx"}
    assert all(s["profiles"] == ["replicas"] for s in services.values())
    bridge = services["bridge"]
    assert 2 <= bridge["deploy"]["replicas"] <= 3
    assert "ports" not in bridge  # reached through nginx only
    assert bridge["depends_on"]["redis"]["condition"] == "service_healthy"
    assert bridge["read_only"] is True and bridge["cap_drop"] == ["ALL"]
    assert any(v.endswith(":/etc/chatbridge/config.toml:ro") for v in bridge["volumes"])
    assert "--appendonly" in services["redis"]["command"]
    nginx = services["nginx"]
    assert any(v.startswith("./nginx-replicas.conf:") for v in nginx["volumes"])
    assert any(str(p).endswith(":8443") for p in nginx["ports"])


def test_the_shared_configuration_loads_with_the_documented_variables() -> None:
    env = {**env_example(), "CHATBRIDGE_HTTP_LISTEN": "0.0.0.0:8080"}
    config = load_config(DEPLOY / "config.replicas.toml", env)
    assert config.store.url.startswith("redis://redis:")
    bots = [b for b in config.bots if isinstance(b, TelegramBotConfig)]
    assert bots and all(b.mode == "webhook" and b.webhook_secret_token for b in bots)
    assert all(b.webhook_port == 8443 and b.webhook_listen == "0.0.0.0" for b in bots)
    grace = float(str(compose()["services"]["bridge"]["stop_grace_period"]).rstrip("s"))
    assert grace > config.limits.shutdown_grace
    assert config.replicas.lease <= 5  # the failover promise: work resumes within 5 s
    text = (DEPLOY / "config.replicas.toml").read_text()
    assert set(VAR.findall(text)) <= set(env) | {"CHATBRIDGE_HTTP_LISTEN"}


def test_nginx_spreads_webhooks_and_retries_a_post_elsewhere(tmp_path: Path) -> None:
    conf = (DEPLOY / "nginx-replicas.conf").read_text()
    assert re.search(r"upstream \w+ \{\s*server bridge:8443", conf)
    assert "location /telegram" in conf
    retry = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert retry and {"error", "timeout", "non_idempotent"} <= set(retry[1].split())
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx not installed: syntax not checked")
    wrapped = f"events {{}}\nhttp {{\n{conf}\n}}\n".replace("bridge:8443", "127.0.0.1:8443")
    path = tmp_path / "nginx.conf"
    path.write_text(wrapped)
    result = subprocess.run(
        [nginx, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
