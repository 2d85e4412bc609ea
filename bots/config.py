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
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from chatbridge.adapters.discord_adapter.options import DiscordOptions
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.core.backends.loopos import LoopOSSettings
from chatbridge.core.backends.shopai import ShopAISettings
from chatbridge.core.texts import DEFAULT_LOCALE, LOCALES, check_overrides

MASKED = "**********"  # how SecretStr dumps; every masked value looks the same


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
    # seconds a bot keeps retrying an unreachable platform at start before the process exits
    startup_retry: float = Field(default=60.0, ge=0)


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
    admins: list[int] = Field(default_factory=list)  # platform user ids; always allowed
    # Access control (core/access.py): empty lists = open to everyone. A user may talk to the
    # bot when any list admits them (their id, the chat/guild/channel they write in, a role).
    allowed_users: list[int] = Field(default_factory=list)
    # In groups: "off" ignores groups, "mention" answers mentions/replies/commands, "all"
    # answers every message. Unset: Telegram's group_reply, else "mention".
    group_policy: Literal["off", "mention", "all"] | None = None
    # The locale used when the user's platform language is not one we have (en, pt-PT).
    locale: str = DEFAULT_LOCALE
    # Operator overrides of any text, per locale: [bots.texts.pt-PT] refused = "..."
    texts: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        for locale in LOCALES:
            if value.replace("_", "-").lower() == locale.lower():
                return locale
        raise ValueError(f"unknown locale {value!r} (known: {', '.join(LOCALES)})")

    @field_validator("texts")
    @classmethod
    def _known_texts(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        problems = check_overrides(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class ConsoleBotConfig(_BotCommon):
    platform: Literal["console"]
    user_id: str = "console-user"
    language: str | None = None


class TelegramBotConfig(_BotCommon, TelegramOptions):
    platform: Literal["telegram"]
    token: SecretStr
    allowed_chats: list[int] = Field(default_factory=list)  # group / private chat ids

    @property
    def effective_group_policy(self) -> Literal["off", "mention", "all"]:
        return self.group_policy or self.group_reply


class DiscordBotConfig(_BotCommon, DiscordOptions):
    platform: Literal["discord"]
    token: SecretStr
    allowed_guilds: list[int] = Field(default_factory=list)
    allowed_channels: list[int] = Field(default_factory=list)
    allowed_roles: list[int] = Field(default_factory=list)  # role ids (guild messages only)

    @property
    def effective_group_policy(self) -> Literal["off", "mention", "all"]:
        return self.group_policy or "mention"


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
            if isinstance(bot, TelegramBotConfig) and bot.webhook_secret_token is not None:
                found.append(bot.webhook_secret_token.get_secret_value())
        for backend in self.backends.values():
            if isinstance(backend, ShopAIBackendConfig):
                found.append(backend.license_key.get_secret_value())
            else:
                found.extend(backend.headers.values())  # API keys, bearer tokens
        found.append(url_password(self.store.url) or "")
        return [s for s in found if s]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret masked: tokens and license keys
        (SecretStr), LoopOS header values, the password of a store URL."""
        data = self.model_dump(mode="json")
        data["store"]["url"] = mask_url_password(self.store.url)
        for backend in data["backends"].values():
            if backend.get("headers"):
                backend["headers"] = dict.fromkeys(backend["headers"], MASKED)
        return data


def url_password(url: str) -> str | None:
    """The password in ``scheme://user:password@host/...``, if any."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url_password(url: str) -> str:
    """``redis://:s3cret@host:6379/0`` -> ``redis://:**********@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASKED}@{hostinfo}"))


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, path: str, env: dict[str, str], missing: list[tuple[str, str]]) -> Any:
    """``value`` with every ``${NAME}`` replaced; unset names are collected in ``missing``
    as (key path, name), so the operator learns all of them at once."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append((path, name))
                return ""
            return env[name]

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else k, env, missing) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, missing) for i, v in enumerate(value)]
    return value


_TAGS = {"backends": {"loopos", "shopai"}, "bots": {"console", "telegram", "discord"}}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 2 and part in _TAGS.get(str(loc[0]), ()):
            # pydantic's name for the union branch (backends.<name>.<type>...), not a key the
            # operator wrote; only at this position, so a backend *named* loopos keeps its name
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _operator_words(error: Any) -> str:
    """A pydantic error message in the operator's words (no "discriminator", no "tag")."""
    kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    section = str(loc[0]) if loc else ""
    key = "type" if section == "backends" else "platform"
    choices = ", ".join(sorted(_TAGS.get(section, ())))
    if kind == "union_tag_not_found":
        return f"missing key {key} (one of: {choices})"
    if kind == "union_tag_invalid":
        return f"{key} = {ctx.get('tag')!r} is not supported (one of: {choices})"
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against the README's configuration reference)"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(
    data: dict[str, Any],
    file: str = "<config>",
    env: dict[str, str] | None = None,
    *,
    check: bool = True,
) -> Config:
    """Validate ``data`` (a parsed TOML file) and report every problem at once.

    ``check=False`` skips the file's cross-checks (bots/preflight.py), for check-config,
    which reports them itself beside its warnings."""
    from chatbridge.bots.preflight import static_problems

    missing: list[tuple[str, str]] = []
    data = _substitute(data, "", dict(os.environ) if env is None else env, missing)
    lines = [
        f"{file}: {path}: environment variable {name} is not set (the file asks for ${{{name}}})"
        for path, name in missing
    ]
    unset_keys = {path for path, _ in missing}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for e in exc.errors(include_url=False, include_input=False):
            where = _format_loc(e["loc"])
            caused = e["type"] == "value_error" and any(
                key.startswith(f"{where}.") for key in unset_keys
            )  # a table's own check failing on the empty value of its unset variable
            if where in unset_keys or caused:
                continue  # already reported as an unset variable
            lines.append(f"{file}: {where or '(top level)'}: {_operator_words(e)}")
        raise ConfigError("\n".join(lines)) from None
    problems = static_problems(config) if check or lines else []
    lines += [f"{file}: {p}" for p in problems if p.error and p.key not in unset_keys]
    if lines:
        raise ConfigError("\n".join(lines))
    return config


def load_config(
    path: str | Path, env: dict[str, str] | None = None, *, check: bool = True
) -> Config:
    file = str(path)
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, file, env, check=check)
