"""
The SQL of leadership: the advisory lock, the instances table and the shared-store marker, on one asyncpg connection.

Leadership does not go through `Database`: the lock lives and dies with one server session, so it has a connection
of its own that nothing else uses (a pooled connection would hand the lock to whoever borrows it next).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from orchestrator.models import InstanceInfo, Role

#: the advisory lock key of "the active vibes bot" (advisory locks are per database; any constant below 2**31 works)
LOCK_KEY = 0x5F1BE5
#: a second key that serialises creating the instances table (CREATE TABLE IF NOT EXISTS races with itself)
SCHEMA_KEY = 0x5F1BE6

#: a dropped network path is noticed by the server within ~idle + interval x count seconds, which frees the lock
SERVER_KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vibes_instances (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    role TEXT NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    backend_pid INTEGER NOT NULL,
    store_nonce TEXT
)
"""

# Rows of instances whose server session is gone (killed, cut off) are not instances any more.
_GONE = "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = i.backend_pid)"
_HOLDER = (
    "(SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
    f" AND l.classid = 0 AND l.objid = {LOCK_KEY} AND l.objsubid = 1)"
)


def _instance(row: asyncpg.Record) -> InstanceInfo:
    return InstanceInfo(
        id=row["id"],
        host=row["host"],
        pid=row["pid"],
        role=Role(row["role"]),
        started=row["started"],
        last_seen=row["last_seen"],
        holds_lock=bool(row["holds_lock"]),
        store_nonce=row["store_nonce"],
    )


async def connect(dsn: str, *, timeout: float) -> asyncpg.Connection[Any]:
    """A connection of its own for the lock, with server-side TCP keepalives (so a lost host frees it)."""
    return await asyncpg.connect(dsn, timeout=timeout, server_settings=SERVER_KEEPALIVES)


async def ensure_schema(conn: asyncpg.Connection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_KEY)
        await conn.execute(_SCHEMA)


async def register(conn: asyncpg.Connection[Any], instance_id: str, host: str, pid: int) -> None:
    """Add this instance as a standby, and drop the rows of instances whose sessions are gone."""
    await conn.execute(f"DELETE FROM vibes_instances i WHERE {_GONE}")
    await conn.execute(
        "INSERT INTO vibes_instances (id, host, pid, role, started, last_seen, backend_pid)"
        " VALUES ($1, $2, $3, $4, now(), now(), pg_backend_pid())"
        " ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, role = $4, last_seen = now(),"
        " backend_pid = pg_backend_pid(), store_nonce = NULL",
        instance_id,
        host,
        pid,
        Role.STANDBY.value,
    )


async def try_lock(conn: asyncpg.Connection[Any], instance_id: str) -> bool:
    """Take the lock if it is free (never waits); a standby's heartbeat too."""
    got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY))
    await conn.execute("UPDATE vibes_instances SET last_seen = now() WHERE id = $1", instance_id)
    return got


async def heartbeat(conn: asyncpg.Connection[Any], instance_id: str, role: Role) -> bool:
    """Refresh this instance's row; True while this session still holds the lock."""
    held = await conn.fetchval(
        f"UPDATE vibes_instances SET last_seen = now(), role = $2 WHERE id = $1 RETURNING {_HOLDER} = pg_backend_pid()",
        instance_id,
        role.value,
    )
    return bool(held)


async def set_store_nonce(conn: asyncpg.Connection[Any], instance_id: str, nonce: str) -> None:
    await conn.execute("UPDATE vibes_instances SET store_nonce = $2 WHERE id = $1", instance_id, nonce)


async def leave(conn: asyncpg.Connection[Any], instance_id: str) -> None:
    """Release the lock (when held) and remove this instance's row."""
    await conn.execute("SELECT pg_advisory_unlock_all()")
    await conn.execute("DELETE FROM vibes_instances WHERE id = $1", instance_id)


async def instances(conn: asyncpg.Connection[Any]) -> list[InstanceInfo]:
    """Every live instance, the lock holder first (the table is created if missing, so a fresh DB reads as empty)."""
    await ensure_schema(conn)
    rows = await conn.fetch(
        f"SELECT i.*, i.backend_pid = {_HOLDER} AS holds_lock FROM vibes_instances i WHERE NOT {_GONE}"
        " ORDER BY holds_lock DESC NULLS LAST, started"
    )
    return [_instance(r) for r in rows]


async def lock_holder_backend(conn: asyncpg.Connection[Any]) -> int | None:
    """The server process id of the session holding the lock, if any (held by an instance or by anyone else)."""
    pid = await conn.fetchval(f"SELECT {_HOLDER}")
    return int(pid) if pid is not None else None
