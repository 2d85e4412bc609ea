"""Session stores, each with its delivery journal (``store.journal``, see :func:`journal_of`).

:func:`open_store` picks one from the ``[store] url`` of the configuration.

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``
  (a bare path or ``:memory:`` works too): :class:`~core.store.sqlite.SQLiteStore`
- ``memory://``: :class:`~core.store.memory.MemoryStore` (nothing persists)
- ``redis://host:6379/0``, ``rediss://...``, ``unix:///path/redis.sock``: RedisStore
  (needs the ``redis`` extra)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from chatbridge.core.protocols import Journal, SessionStore
from chatbridge.core.store._common import DEFAULT_BUTTON_TTL
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.store.sqlite import SchemaTooNew, SQLiteStore

__all__ = [
    "DEFAULT_BUTTON_TTL",
    "MemoryStore",
    "SQLiteStore",
    "SchemaTooNew",
    "StoreURLError",
    "journal_of",
    "open_store",
    "resolved_store",
    "sqlite_path",
]


class StoreURLError(ValueError):
    """The store URL has an unknown scheme or no path."""


def sqlite_path(url: str) -> str:
    """The filesystem path (or ``":memory:"``) a ``sqlite:`` URL or bare path names."""
    if url == ":memory:" or "://" not in url:
        if not url:
            raise StoreURLError("empty store url")
        return url
    scheme, rest = url.split("://", 1)
    if scheme != "sqlite":
        raise StoreURLError(f"not a sqlite url: {scheme}://...")
    # SQLAlchemy's convention: sqlite:///rel.db (three slashes) is relative,
    # sqlite:////abs.db (four) is absolute; the netloc part must be empty.
    if not rest.startswith("/"):
        if rest == ":memory:":
            return rest
        raise StoreURLError("sqlite url must look like sqlite:///relative.db or sqlite:////abs.db")
    path = rest[1:]
    if not path:
        raise StoreURLError("sqlite url has no path (use sqlite:///chatbridge.db)")
    return path


def resolved_store(url: str) -> tuple[str, Path | None]:
    """The store URL with a SQLite path made absolute (the path it really reads), and that
    path (None for other stores). A relative path is relative to the working directory."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("", "sqlite"):
        return url, None
    path = sqlite_path(url)
    if path == ":memory:":
        return url, None
    absolute = Path(path).absolute()
    return f"sqlite:///{absolute}", absolute


async def open_store(url: str, *, button_ttl: timedelta = DEFAULT_BUTTON_TTL) -> SessionStore:
    """Open the store ``url`` names (see the module docstring for the accepted forms)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "sqlite"):
        return await SQLiteStore.open(sqlite_path(url), button_ttl=button_ttl)
    if scheme == "memory":
        return await MemoryStore.open(button_ttl=button_ttl)
    if scheme in ("redis", "rediss", "unix"):
        # Imported lazily: redis is an optional extra.
        from chatbridge.core.store.redis import RedisStore

        return await RedisStore.open(url, button_ttl=button_ttl)
    raise StoreURLError(f"unknown store url scheme {scheme!r} (sqlite, memory or redis)")


def journal_of(store: SessionStore) -> Journal | None:
    """The delivery journal kept beside ``store``'s sessions (every store here has one)."""
    journal = getattr(store, "journal", None)
    return journal if isinstance(journal, Journal) else None
