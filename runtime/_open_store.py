"""Opening a store by its URL."""

from __future__ import annotations

from ._store import Store, StoreError, redact


def open_store(url: str) -> Store:
    """The store at ``url`` (not yet opened): ``sqlite:///path.db`` (relative to the
    working directory; ``sqlite:////abs/path.db`` for an absolute one, ``sqlite://:memory:``
    for a throwaway one) or ``postgresql://user@host:port/db`` (needs the ``postgres``
    extra: ``pip install 'troupe[postgres]'``).

    Raises:
        StoreError: the URL names no store Troupe knows, or its kind's extra is missing.
    """
    if not isinstance(url, str):
        raise StoreError(f"a store URL must be a string, got {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from ._sqlite_store import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from ._postgres_store import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"store {redact(url)!r}: the PostgreSQL store needs psycopg ({exc}): "
                "pip install 'trio-troupe[postgres]'"
            ) from None
        return PostgresStore(url)
    raise StoreError(
        f"store {redact(url)!r}: unknown kind of store (use sqlite:///path.db or "
        "postgresql://user@host/db)"
    )
