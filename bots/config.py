"""The configuration contract: one TOML file, ``${NAME}`` from the environment, checked.

Keys may be added; renaming one breaks operators' files. Every error names the file and the
key, and every problem of the file is reported at once: each table is checked on its own
(core/settings.py), a backend by its ``type``, a bot by its ``platform``. Backend and
platform option models live next to the code they configure (core/backends,
adapters/*/options.py); this module only assembles them under ``type`` / ``platform``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from chatbridge.adapters.discord_adapter.options import DiscordOptions
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.core.backends.loopos import LoopOSSettings
from chatbridge.core.backends.shopai import ShopAISettings
from chatbridge.core.settings import (
    MASKED,
    MISSING_KEY,
    UNKNOWN_KEY,
    Invalid,
    KeyCheck,
    KeyProblem,
    Secret,
    Table,
    convert,
    dump,
    kind_of,
)
from chatbridge.core.texts import DEFAULT_LOCALE, LOCALES, check_overrides

__all__ = ["MASKED", "Config", "ConfigError", "load_config", "parse_config"]

_T = TypeVar("_T")


class ConfigError(Exception):
    """A configuration problem, phrased for the operator (file and key named)."""


class StoreConfig(Table, kw_only=True):
    url: str = "sqlite:///chatbridge.db"


def _host_port(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if host and port.isdigit() and 0 <= int(port) < 65536:
        return None
    return "must look like HOST:PORT, e.g. 127.0.0.1:8080"


class HttpConfig(Table, kw_only=True):
    listen: str | None = None  # "HOST:PORT"; absent = no port opened

    key_checks = {"listen": _host_port}


class LoggingConfig(Table, kw_only=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["plain", "json"] = "plain"


class LimitsConfig(Table, kw_only=True):
    turns_per_minute: Annotated[int, Meta(ge=0)] = 20  # per user; 0 = no cap
    shutdown_grace: Annotated[float, Meta(ge=0)] = 10.0  # seconds in-flight turns may finish in
    turn_timeout: Annotated[float, Meta(gt=0)] = 300.0
    # seconds a bot keeps retrying an unreachable platform at start before the process exits
    startup_retry: Annotated[float, Meta(ge=0)] = 60.0


class ReplicasConfig(Table, kw_only=True):
    """Several replicas of this file on one Redis (``[store] url = "redis://..."``)."""

    name: str | None = None  # default: env CHATBRIDGE_REPLICA, else <hostname>-<pid>
    partitions: Annotated[int, Meta(ge=1, le=1024)] = 16  # conversations are hashed into these
    lease: Annotated[float, Meta(gt=0, le=60)] = 3.0  # seconds a dead replica's work stays put
    shared_budgets: bool = True  # platform and per-user limits counted across replicas


# The backends' own settings models carry a ``type`` literal, so they are the tables as written.
LoopOSBackendConfig = LoopOSSettings
ShopAIBackendConfig = ShopAISettings
BackendConfig = LoopOSSettings | ShopAISettings
BACKEND_TYPES: dict[str, type[BackendConfig]] = {"loopos": LoopOSSettings, "shopai": ShopAISettings}

GroupPolicy = Literal["off", "mention", "all"]
BotName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def _known_locale(value: str) -> str | None:
    for locale in LOCALES:
        if value.replace("_", "-").lower() == locale.lower():
            return locale
    return None


def _locale(value: str) -> str | None:
    if _known_locale(value) is not None:
        return None
    return f"unknown locale {value!r} (known: {', '.join(LOCALES)})"


def _texts(value: dict[str, dict[str, str]]) -> str | None:
    return "; ".join(check_overrides(value)) or None


COMMON_CHECKS: dict[str, KeyCheck] = {"locale": _locale, "texts": _texts}  # of _BotCommon's keys


class _BotCommon(Table, kw_only=True):
    """The keys of every ``[[bots]]`` table. The Telegram and Discord tables repeat them (a
    msgspec Struct has one base with fields: their platform's options);
    tests/test_config_tables.py checks the copies stay the same."""

    name: BotName
    backend: str
    admins: list[int] = []  # platform user ids; always allowed
    # Access control (core/access.py): empty lists = open to everyone. A user may talk to the
    # bot when any list admits them (their id, the chat/guild/channel they write in, a role).
    allowed_users: list[int] = []
    # In groups: "off" ignores groups, "mention" answers mentions/replies/commands, "all"
    # answers every message. Unset: Telegram's group_reply, else "mention".
    group_policy: GroupPolicy | None = None
    # The locale used when the user's platform language is not one we have (en, pt-PT).
    locale: str = DEFAULT_LOCALE
    # Operator overrides of any text, per locale: [bots.texts.pt-PT] refused = "..."
    texts: dict[str, dict[str, str]] = {}

    key_checks = COMMON_CHECKS

    def __post_init__(self) -> None:
        self.locale = _known_locale(self.locale) or self.locale
        super().__post_init__()


class ConsoleBotConfig(_BotCommon, kw_only=True):
    platform: Literal["console"]
    user_id: str = "console-user"
    language: str | None = None


class TelegramBotConfig(TelegramOptions, kw_only=True):
    # _BotCommon's keys (see there)
    name: BotName
    backend: str
    admins: list[int] = []
    allowed_users: list[int] = []
    group_policy: GroupPolicy | None = None
    locale: str = DEFAULT_LOCALE
    texts: dict[str, dict[str, str]] = {}

    platform: Literal["telegram"]
    token: Secret
    allowed_chats: list[int] = []  # group / private chat ids

    key_checks = {**TelegramOptions.key_checks, **COMMON_CHECKS}

    def __post_init__(self) -> None:
        self.locale = _known_locale(self.locale) or self.locale
        super().__post_init__()

    @property
    def effective_group_policy(self) -> GroupPolicy:
        return self.group_policy or self.group_reply


class DiscordBotConfig(DiscordOptions, kw_only=True):
    # _BotCommon's keys (see there)
    name: BotName
    backend: str
    admins: list[int] = []
    allowed_users: list[int] = []
    group_policy: GroupPolicy | None = None
    locale: str = DEFAULT_LOCALE
    texts: dict[str, dict[str, str]] = {}

    platform: Literal["discord"]
    token: Secret
    allowed_guilds: list[int] = []
    allowed_channels: list[int] = []
    allowed_roles: list[int] = []  # role ids (guild messages only)

    key_checks = {**DiscordOptions.key_checks, **COMMON_CHECKS}

    def __post_init__(self) -> None:
        self.locale = _known_locale(self.locale) or self.locale
        super().__post_init__()

    @property
    def effective_group_policy(self) -> GroupPolicy:
        return self.group_policy or "mention"


BotConfig = ConsoleBotConfig | TelegramBotConfig | DiscordBotConfig
BOT_PLATFORMS: dict[str, type[BotConfig]] = {
    "console": ConsoleBotConfig,
    "telegram": TelegramBotConfig,
    "discord": DiscordBotConfig,
}


class Config(msgspec.Struct, kw_only=True):
    """The whole file. Built by :func:`parse_config` table by table (each bot by its
    ``platform``, each backend by its ``type``), not by ``msgspec.convert``."""

    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    backends: dict[str, BackendConfig]
    bots: list[BotConfig]
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    replicas: ReplicasConfig = msgspec.field(default_factory=ReplicasConfig)

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
                found.extend(backend.header_values().values())  # API keys, bearer tokens
        found.append(url_password(self.store.url) or "")
        return [s for s in found if s]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret masked: tokens, license keys and
        LoopOS header values (:class:`Secret`), the password of a store URL."""
        data: dict[str, Any] = dump(self)
        data["store"]["url"] = mask_url_password(self.store.url)
        return data


def _replica_problems(config: Config) -> list[KeyProblem]:
    # several replicas behind one webhook URL: each must accept the others' secret
    if config.store.url.split("://", 1)[0].lower() not in ("redis", "rediss", "unix"):
        return []
    return [
        KeyProblem(
            f"bots[{i}].webhook_secret_token",
            "required with a redis store (replicas behind one webhook URL must share it; a "
            "random one per replica would refuse the others' updates)",
        )
        for i, bot in enumerate(config.bots)
        if isinstance(bot, TelegramBotConfig)
        and bot.mode == "webhook"
        and bot.webhook_secret_token is None
    ]


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


_TABLES: dict[str, type[Table]] = {
    "store": StoreConfig,
    "http": HttpConfig,
    "logging": LoggingConfig,
    "limits": LimitsConfig,
    "replicas": ReplicasConfig,
}


def _kind(
    table: Any, key: str, tag: str, kinds: dict[str, type[_T]], found: list[KeyProblem]
) -> type[_T] | None:
    """The model a backend (``type``) or bot (``platform``) table names, or None (reported)."""
    if not isinstance(table, dict):
        found.append(KeyProblem(key, f"must be a table (got {kind_of(table)})"))
        return None
    choices = ", ".join(sorted(kinds))
    if tag not in table:
        found.append(KeyProblem(key, f"missing key {tag} (one of: {choices})"))
        return None
    kind = kinds.get(table[tag]) if isinstance(table[tag], str) else None
    if kind is None:
        found.append(
            KeyProblem(key, f"{tag} = {table[tag]!r} is not supported (one of: {choices})")
        )
    return kind


def _backends(data: dict[str, Any], found: list[KeyProblem]) -> dict[str, BackendConfig]:
    if "backends" not in data:
        found.append(KeyProblem("backends", MISSING_KEY))
        return {}
    tables = data["backends"]
    if not isinstance(tables, dict):
        found.append(KeyProblem("backends", f"must be a table (got {kind_of(tables)})"))
        return {}
    backends: dict[str, BackendConfig] = {}
    for name, table in tables.items():
        key = f"backends.{name}"
        model = _kind(table, key, "type", BACKEND_TYPES, found)
        try:
            if model is not None:
                backends[name] = convert(model, table, key)
        except Invalid as exc:
            found += exc.problems
    return backends


def _bots(data: dict[str, Any], found: list[KeyProblem]) -> list[BotConfig]:
    if "bots" not in data:
        found.append(KeyProblem("bots", MISSING_KEY))
        return []
    tables = data["bots"]
    if not isinstance(tables, list):
        found.append(
            KeyProblem("bots", f"must be a list of [[bots]] tables (got {kind_of(tables)})")
        )
        return []
    if not tables:
        found.append(KeyProblem("bots", "at least one [[bots]] table is required"))
    bots: list[BotConfig] = []
    for i, table in enumerate(tables):
        key = f"bots[{i}]"
        model = _kind(table, key, "platform", BOT_PLATFORMS, found)
        try:
            if model is not None:
                bots.append(convert(model, table, key))
        except Invalid as exc:
            found += exc.problems
    return bots


def _assemble(data: dict[str, Any]) -> Config | list[KeyProblem]:
    """The configuration, or every problem of it: each table is checked on its own."""
    found: list[KeyProblem] = []
    tables: dict[str, Any] = {}
    for name in ("store", "backends", "bots", "http", "logging", "limits", "replicas"):
        if name == "backends":
            tables[name] = _backends(data, found)
        elif name == "bots":
            tables[name] = _bots(data, found)
        elif name in data:
            try:
                tables[name] = convert(_TABLES[name], data[name], name)
            except Invalid as exc:
                found += exc.problems
    found += [
        KeyProblem(str(key), UNKNOWN_KEY) for key in data if key not in Config.__struct_fields__
    ]
    if found:
        return found
    config = Config(**tables)
    return _replica_problems(config) or config


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
    config = _assemble(data)
    if not isinstance(config, Config):
        for problem in config:
            where = problem.key
            caused = problem.by_check and any(key.startswith(f"{where}.") for key in unset_keys)
            # a table's own check failing on the empty value of its unset variable
            if where in unset_keys or caused:
                continue  # already reported as an unset variable
            lines.append(f"{file}: {where or '(top level)'}: {problem.message}")
        raise ConfigError("\n".join(lines))
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
