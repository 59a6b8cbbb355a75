"""
Speculation: while a Draft Grid stage is open for votes, run what Continue would ask for on idle GPUs.

Per-server opt-out lives in the refs table (`SERVER_REF`, `speculation:<server id>`), set by an admin-only
/server command; `speculation.enabled` turns it off for the whole bot.
"""

from __future__ import annotations

from orchestrator.db import Database

#: per-server options live in the refs table under this pseudo-session id
SERVER_REF = "_server"


def server_key(server_id: str) -> str:
    """The refs key of a server's speculation switch."""
    return f"speculation:{server_id}"


async def server_allows(db: Database, server_id: str | None) -> bool:
    """Whether a server allows speculative stages: on unless an admin turned it off there."""
    if server_id is None:
        return True
    return await db.get_ref(SERVER_REF, server_key(server_id)) != "off"
