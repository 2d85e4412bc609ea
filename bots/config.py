"""The configuration contract: one TOML file, ``${NAME}`` from the environment, pydantic-checked.

Keys may be added; renaming one breaks operators' files. Every error names the file and the
key. Backend and platform option models live next to the code they configure (core/backends,
adapters/*/options.py); this module only assembles them under ``type`` / ``platform``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from chatbridge.adapters.discord_adapter.options import DiscordOptions
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.core.backends.loopos import LoopOSSettings
from chatbridge.core.backends.shopai import ShopAISettings


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (file and key named)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(_Strict):
    url: str = "sqlite:///chatbridge.db"


class HttpConfig(_Strict):
    listen: str | None = None  # "HOST:PORT"; absent = no port opened

    @model_validator(mode="after")
    def _check_listen(self) -> HttpConfig:
        if self.listen is not None:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError("listen must look like HOST:PORT, e.g. 127.0.0.1:8080")
        return self


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["plain", "json"] = "plain"


class LimitsConfig(_Strict):
    turns_per_minute: int = Field(default=20, ge=0)  # per user; 0 = no cap
    shutdown_grace: float = Field(default=10.0, ge=0)  # seconds in-flight turns may finish in
    turn_timeout: float = Field(default=300.0, gt=0)


class ReplicasConfig(_Strict):
    """Several replicas of this file on one Redis (``[store] url = "redis://..."``)."""

    name: str | None = None  # default: env CHATBRIDGE_REPLICA, else <hostname>-<pid>
    partitions: int = Field(default=16, ge=1, le=1024)  # conversations are hashed into these
    lease: float = Field(default=3.0, gt=0, le=60)  # seconds a dead replica's work stays put
    shared_budgets: bool = True  # platform and per-user limits counted across replicas


# The backends' own settings models carry a ``type`` literal, so they are the tables as written.
LoopOSBackendConfig = LoopOSSettings
ShopAIBackendConfig = ShopAISettings
BackendConfig = Annotated[LoopOSSettings | ShopAISettings, Field(discriminator="type")]


class _BotCommon(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    backend: str
    admins: list[int] = Field(default_factory=list)


class ConsoleBotConfig(_BotCommon):
    platform: Literal["console"]
    user_id: str = "console-user"
    language: str | None = None


class TelegramBotConfig(_BotCommon, TelegramOptions):
    platform: Literal["telegram"]
    token: SecretStr


class DiscordBotConfig(_BotCommon, DiscordOptions):
    platform: Literal["discord"]
    token: SecretStr


BotConfig = Annotated[
    ConsoleBotConfig | TelegramBotConfig | DiscordBotConfig, Field(discriminator="platform")
]


class Config(_Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    backends: dict[str, BackendConfig]
    bots: list[BotConfig] = Field(min_length=1)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        names: set[str] = set()
        for i, bot in enumerate(self.bots):
            if bot.name in names:
                raise ValueError(f"bots[{i}].name: {bot.name!r} is used by two bots")
            names.add(bot.name)
            if bot.backend not in self.backends:
                known = ", ".join(sorted(self.backends)) or "none"
                raise ValueError(
                    f"bots[{i}].backend: no backend named {bot.backend!r} (defined: {known})"
                )
        return self

    @model_validator(mode="after")
    def _check_replicas(self) -> Config:
        # several replicas behind one webhook URL: each must accept the others' secret
        shared = self.store.url.split("://", 1)[0].lower() in ("redis", "rediss", "unix")
        for i, bot in enumerate(self.bots):
            if (
                shared
                and isinstance(bot, TelegramBotConfig)
                and bot.mode == "webhook"
                and bot.webhook_secret_token is None
            ):
                raise ValueError(
                    f"bots[{i}].webhook_secret_token: required with a redis store (replicas "
                    "behind one webhook URL must share it; a random one per replica would "
                    "refuse the others' updates)"
                )
        return self

    def secrets(self) -> list[str]:
        """Every secret value in the file, for log redaction."""
        found: list[str] = []
        for bot in self.bots:
            if isinstance(bot, TelegramBotConfig | DiscordBotConfig):
                found.append(bot.token.get_secret_value())
        for backend in self.backends.values():
            if isinstance(backend, ShopAIBackendConfig):
                found.append(backend.license_key.get_secret_value())
        return [s for s in found if s]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (SecretStr dumps as ********)."""
        return self.model_dump(mode="json")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, path: str, env: dict[str, str], file: str) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{file}: {path}: environment variable {name} is not set "
                    f"(the file asks for ${{{name}}})"
                )
            return env[name]

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else k, env, file) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, file) for i, v in enumerate(value)]
    return value


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"loopos", "shopai", "console", "telegram", "discord"}:
            continue  # the discriminator's branch name, not a key the operator wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(
    data: dict[str, Any], file: str = "<config>", env: dict[str, str] | None = None
) -> Config:
    data = _substitute(data, "", dict(os.environ) if env is None else env, file)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{file}: {_format_loc(e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    file = str(path)
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, file, env)
