"""
Persistence: every SQL statement of the project lives in this package.

`Database(target)` is SQLite for a path (the default) and PostgreSQL for a postgresql:// URL; callers see one
interface. The PostgreSQL backend imports asyncpg (the `postgres` extra) only when a URL is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.db.base import Database
from orchestrator.db.dialect import DB_WRITE_ERRORS, INTEGRITY_ERRORS, SCHEMA_VERSION
from orchestrator.db.rows import SessionRow, StageRow, Vote
from orchestrator.db.url import is_postgres_url, redact

__all__ = [
    "DB_WRITE_ERRORS",
    "INTEGRITY_ERRORS",
    "SCHEMA_VERSION",
    "Database",
    "DatabaseCheck",
    "SessionRow",
    "StageRow",
    "Vote",
    "check_database",
    "is_postgres_url",
    "peek_ref",
    "redact",
]


async def peek_ref(target: Path | str, session_id: str, key: str) -> str | None:
    """Read one ref without changing the database (no migration, nothing created); None if there is none."""
    if is_postgres_url(target):
        from orchestrator.db import postgres

        return await postgres.peek_ref(str(target), session_id, key)
    from orchestrator.db import sqlite

    return await sqlite.peek_ref(Path(target), session_id, key)


@dataclass(frozen=True, slots=True)
class DatabaseCheck:
    """What `vibes doctor` found about the database; nothing in it holds a password."""

    backend: str
    #: the file, or the URL with its password redacted
    where: str
    reachable: bool
    #: the schema version found (None: no database yet, it is created on the first start)
    version: int | None
    #: the server's version, or what was found instead of a database
    detail: str = ""
    error: str = ""

    @property
    def migrated(self) -> bool:
        return self.version == SCHEMA_VERSION

    @property
    def problem(self) -> str:
        """Empty when the database is fine (or will be created on the first start)."""
        if not self.reachable:
            return f"cannot reach the database at {self.where}: {self.error}"
        if self.version is not None and self.version > SCHEMA_VERSION:
            return f"the database is at schema v{self.version}, newer than this program (v{SCHEMA_VERSION})"
        return ""


async def check_database(target: Path | str) -> DatabaseCheck:
    """Reach the database read-only and read its schema version (nothing is created or migrated)."""
    where = redact(target)
    try:
        if is_postgres_url(target):
            from orchestrator.db import postgres

            version, detail = await postgres.probe(str(target))
            return DatabaseCheck("postgresql", where, True, version, detail)
        from orchestrator.db import sqlite

        version, detail = await sqlite.probe(Path(target))
        return DatabaseCheck("sqlite", where, True, version, detail)
    except (ConnectionError, ImportError) as e:
        backend = "postgresql" if is_postgres_url(target) else "sqlite"
        return DatabaseCheck(backend, where, False, None, error=str(e))
