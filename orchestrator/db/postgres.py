"""
The PostgreSQL backend (asyncpg pool): a server several instances share.

Every write is a transaction on a connection of its own; what must hold across instances is in the statements
themselves (UPDATE ... WHERE guards, ON CONFLICT upserts, DELETE ... RETURNING), which PostgreSQL applies under
row locks, so no in-process lock is needed or relied on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

try:
    import asyncpg
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("a postgresql:// database needs asyncpg: pip install -e '.[postgres]'") from e

from orchestrator.db.base import PEEK_REF, Database
from orchestrator.db.dialect import (
    MIGRATIONS,
    PG_FIRST_VERSION,
    PG_HAS_VERSION_TABLE,
    PG_LOCK_MIGRATIONS,
    PG_MIGRATION_LOCK,
    PG_READ_VERSION,
    PG_SET_VERSION,
    PG_VERSION_TABLE,
    POSTGRES,
    SCHEMA_VERSION,
    lock_timeout_ms,
    numbered,
    pg_args,
    rowcount,
)
from orchestrator.db.rows import Row
from orchestrator.db.url import scrub
from orchestrator.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

#: connections one instance keeps to the server at most (writes are short; reads run beside them)
POOL_SIZE = 10
#: how long reaching the server may take before `open` gives up with a clear message
CONNECT_TIMEOUT_S = 10.0
_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)


class _PgTx:
    """A write transaction on one pooled connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return rowcount(await self._conn.execute(numbered(sql), *pg_args(args)))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(numbered(sql), [pg_args(r) for r in rows])

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(numbered(sql), *pg_args(args))
        return row


class PostgresDatabase(Database):
    """The project's database on a PostgreSQL server (the URL's password is never shown: see `where`)."""

    backend = "postgresql"

    def __init__(self, target: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__(target, busy_timeout_s=busy_timeout_s)
        self._url = str(target)
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                # a write waits this long for another instance's row lock, then fails and is retried
                server_settings={"lock_timeout": lock_timeout_ms(self.busy_timeout_s), "application_name": "vibes"},
            )
        except _CONNECT_ERRORS as e:
            problem = f"cannot open the database at {self.where}: {scrub(str(e), self._url)}"
            raise DatabaseUnavailable(problem, user_message=problem) from None
        log.info("database: PostgreSQL at %s", self.where)
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def migrate(self) -> int:
        # One transaction under an advisory lock: instances starting together migrate one after the other,
        # and a migration that fails leaves the schema as it was.
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(PG_LOCK_MIGRATIONS, PG_MIGRATION_LOCK)
            await conn.execute(PG_VERSION_TABLE)
            version = await conn.fetchval(PG_READ_VERSION)
            if version is None:
                await conn.execute(PG_FIRST_VERSION)
                version = 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database {self.where} is newer (v{version}) than this program (v{SCHEMA_VERSION})")
            for i in range(version, SCHEMA_VERSION):
                log.info("migrating database %s to v%d", self.where, i + 1)
                await conn.execute(POSTGRES.render(MIGRATIONS[i]))
                await conn.execute(PG_SET_VERSION, i + 1)
        return SCHEMA_VERSION

    async def user_version(self) -> int:
        return int(await self.pool.fetchval(PG_READ_VERSION) or 0)

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[_PgTx]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        # One statement is atomic by itself: no BEGIN/COMMIT round trips around it.
        return rowcount(await self.pool.execute(numbered(sql), *pg_args(args)))

    async def _fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self.pool.fetchrow(numbered(sql), *pg_args(args))
        return row

    async def _fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(await self.pool.fetch(numbered(sql), *pg_args(args)))


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except _CONNECT_ERRORS as e:
        raise ConnectionError(scrub(str(e), url)) from None
    try:
        yield conn
    finally:
        await conn.close()


async def peek_ref(url: str, session_id: str, key: str) -> str | None:
    """Read one ref without changing anything (no migration); None if there is none or the server is not there."""
    try:
        async with _connection(url) as conn:
            if not await conn.fetchval("SELECT to_regclass('refs') IS NOT NULL"):
                return None
            value = await conn.fetchval(numbered(PEEK_REF), session_id, key)
    except (ConnectionError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return None
    return None if value is None else str(value)


async def probe(url: str) -> tuple[int | None, str]:
    """The schema version the server's database is at (0 before the first start) and the server's version."""
    async with _connection(url) as conn:
        server = await conn.fetchval("SHOW server_version")
        version = await conn.fetchval(PG_READ_VERSION) if await conn.fetchval(PG_HAS_VERSION_TABLE) else 0
    return int(version or 0), f"PostgreSQL {server}"
