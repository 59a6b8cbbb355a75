"""The SQLite backend (aiosqlite, WAL): one shared connection, writes one at a time. The embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from orchestrator.db.base import PEEK_REF, Database
from orchestrator.db.dialect import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SQLITE,
    SQLITE_MIGRATE,
    SQLITE_READ_VERSION,
    SQLITE_SETUP,
)
from orchestrator.db.rows import Row

log = logging.getLogger(__name__)


class _SqliteTx:
    """A write on the shared connection (the caller holds the write lock)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(sql, args)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        async with self._conn.execute(sql, args) as cur:
            row: Row | None = await cur.fetchone()
        return row


class SqliteDatabase(Database):
    """The project's database in one SQLite file."""

    backend = "sqlite"

    def __init__(self, target: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__(target, busy_timeout_s=busy_timeout_s)
        self.path = Path(target) if str(target) != ":memory:" else target
        self._conn: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self) -> None:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # sqlite3's `timeout` is the busy timeout: how long a statement waits for another connection's lock.
        self._conn = await aiosqlite.connect(str(self.path), timeout=self.busy_timeout_s)
        self._conn.row_factory = aiosqlite.Row
        for pragma in SQLITE_SETUP:
            await self._conn.execute(pragma)
        await self.migrate()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def migrate(self) -> int:
        version = await self.user_version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database {self.path} is newer (v{version}) than this program (v{SCHEMA_VERSION})")
        for i in range(version, SCHEMA_VERSION):
            log.info("migrating database to v%d", i + 1)
            await self.conn.executescript(SQLITE_MIGRATE.format(ddl=SQLITE.render(MIGRATIONS[i]), version=i + 1))
        return SCHEMA_VERSION

    async def user_version(self) -> int:
        async with self.conn.execute(SQLITE_READ_VERSION) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[_SqliteTx]:
        # The connection is shared by every coroutine: without the lock, one write's failed commit would roll back
        # another coroutine's statement that had not been committed yet, and that one would believe it had landed.
        async with self._write_lock:
            try:
                yield _SqliteTx(self.conn)
                await self.conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.conn.rollback()
                raise

    async def _fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        async with self.conn.execute(sql, args) as cur:
            row: Row | None = await cur.fetchone()
        return row

    async def _fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self.conn.execute(sql, args) as cur:
            return list(await cur.fetchall())


async def peek_ref(path: Path, session_id: str, key: str) -> str | None:
    """Read one ref from a database file without changing it (no migration, read-only); None if there is none."""
    if not path.is_file():
        return None
    try:
        async with (
            aiosqlite.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as conn,
            conn.execute(PEEK_REF, (session_id, key)) as cur,
        ):
            row = await cur.fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


async def probe(path: Path) -> tuple[int | None, str]:
    """The schema version of a database file, read-only (None when there is no file yet), and what was found."""
    if not path.is_file():
        return None, f"{path} does not exist yet (created on the first start)"
    try:
        async with (
            aiosqlite.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as conn,
            conn.execute(SQLITE_READ_VERSION) as cur,
        ):
            row = await cur.fetchone()
    except sqlite3.Error as e:
        raise ConnectionError(f"cannot read {path}: {e}") from e
    return (int(row[0]) if row else 0), str(path)
