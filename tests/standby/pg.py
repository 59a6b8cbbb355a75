"""Cutting sessions on the PostgreSQL server: what a dropped network path does to the instance that holds them."""

from __future__ import annotations

import asyncpg


async def terminate_sessions(url: str, backend_pids: list[int]) -> None:
    """pg_terminate_backend: the server drops these sessions (their locks are freed), their processes live on."""
    conn = await asyncpg.connect(url)
    try:
        for pid in backend_pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
