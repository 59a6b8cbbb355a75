"""
Active/standby: which of several `vibes bot` processes sharing one PostgreSQL database is allowed to act.

The active instance holds a session-level advisory lock on a connection of its own. A standby tries to take the
lock every `poll_s`; it gets it only when the holder's session ends (its process, host or network died, or it let
go). The new holder then waits `grace_s` before acting: longer than an old holder that lost its connection can take
to notice (a keepalive query every `keepalive_s`, given as long to answer, and asyncpg's termination listener) and
to stop (`fence_s`). So two instances never act at once. Nothing here knows about Discord: the front end waits on
`acquire()` and `wait_lost()` and reacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from orchestrator.config import LeadershipSettings
from orchestrator.db import leadership as leader_db
from orchestrator.db.url import scrub
from orchestrator.models import InstanceInfo, Role
from orchestrator.shared_store import StoreCheck, write_marker

log = logging.getLogger(__name__)

#: what a lost or failing lock connection raises
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

#: how long /gpus waits for the instances table
INSTANCES_TIMEOUT_S = 1.5

#: called with the active instance (or None) on every poll of a standby; raising aborts `acquire()`
Watch = Callable[[InstanceInfo | None], Awaitable[None]]


class Leadership:
    """A process's claim to be the active instance: a standby until `acquire()` returns, then active until lost."""

    def __init__(
        self,
        dsn: str,
        settings: LeadershipSettings,
        *,
        instance_id: str | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self._dsn = dsn
        self.settings = settings
        self.id = instance_id or secrets.token_hex(6)
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.role = Role.STANDBY
        #: why the lock was lost (None while held or never held)
        self.lost_reason: str | None = None
        #: called (synchronously, at once) when the lock is lost, before anything else hears of it
        self.on_lost: list[Callable[[str], None]] = []
        self._conn: asyncpg.Connection[Any] | None = None
        self._op = asyncio.Lock()
        self._lost = asyncio.Event()
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def is_active(self) -> bool:
        return self.role is Role.ACTIVE

    # ------------------------------------------------------------------ standby

    async def open(self) -> None:
        """Connect and register as a standby (raises when the database cannot be reached)."""
        conn = await leader_db.connect(self._dsn, timeout=max(5.0, self.settings.keepalive_s))
        try:
            await leader_db.ensure_schema(conn)
            await leader_db.register(conn, self.id, self.host, self.pid)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        log.info("instance %s (%s pid %d) standing by", self.id, self.host, self.pid)

    async def acquire(self, watch: Watch | None = None) -> None:
        """Wait until this instance holds the lock and the grace period is over; `watch` sees every poll."""
        s = self.settings
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self.open()
                async with self._op:
                    assert self._conn is not None
                    got = await asyncio.wait_for(leader_db.try_lock(self._conn, self.id), s.keepalive_s * 5)
                    active = None if got else await self._active_locked()
            except CONNECTION_ERRORS as e:
                # A standby holds nothing, so losing its connection is harmless: connect again on the next poll.
                log.warning("standby %s: database not reachable (%s); retrying", self.id, scrub(str(e), self._dsn))
                await self._drop_connection()
                await asyncio.sleep(s.poll_s)
                continue
            if got:
                break
            if watch is not None:
                await watch(active)
            await asyncio.sleep(s.poll_s)
        self.role = Role.ACTIVE
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"leadership-keepalive-{self.id}")
        log.info("instance %s took the lock; waiting %.1f s before acting", self.id, s.grace_s)
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({lost}, timeout=s.grace_s)
        finally:
            lost.cancel()
        if self._lost.is_set():
            raise LeadershipLost(self.lost_reason or "lost")
        log.info("instance %s is active", self.id)

    async def take_over(self, images_dir: Path) -> None:
        """
        Stand by until this instance may act on the image store at `images_dir`, then mark the store as its own.

        Raises SharedStoreError when this host does not see the active instance's store (not a shared volume).
        """
        await self.acquire(StoreCheck(images_dir))
        marker = await write_marker(images_dir, self.id)
        await self.publish_store_nonce(marker.nonce)

    # ------------------------------------------------------------------ active

    async def _keep_alive(self) -> None:
        s = self.settings
        while not self._lost.is_set():
            await asyncio.sleep(s.keepalive_s)
            if self._lost.is_set():
                return
            try:
                async with self._op:
                    assert self._conn is not None
                    held = await asyncio.wait_for(leader_db.heartbeat(self._conn, self.id, self.role), s.keepalive_s)
            except Exception as e:
                # Whatever went wrong, this instance can no longer show that it holds the lock: it must stop.
                self._lose(f"the lock connection failed ({type(e).__name__}: {scrub(str(e), self._dsn)})")
                return
            if not held:
                self._lose("the lock is no longer held by this session")
                return

    def _terminated(self, conn: asyncpg.Connection[Any]) -> None:
        if self.role is Role.ACTIVE:
            self._lose("the lock connection was closed")

    def _lose(self, reason: str) -> None:
        if self._lost.is_set():
            return
        self.role = Role.FENCED
        self.lost_reason = reason
        self._lost.set()
        log.error("instance %s lost the lock: %s; it stops acting now", self.id, reason)
        for callback in list(self.on_lost):
            try:
                callback(reason)
            except Exception:
                log.exception("a lost-lock callback failed")
        # Drop the session ourselves: if it was only slow, the server frees the lock now instead of never.
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()

    async def wait_lost(self) -> str:
        """Return (the reason) once the lock is lost."""
        await self._lost.wait()
        return self.lost_reason or "lost"

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    async def publish_store_nonce(self, nonce: str) -> None:
        """Record the marker this active instance wrote into the image store (standbys compare theirs with it)."""
        async with self._op:
            assert self._conn is not None
            await leader_db.set_store_nonce(self._conn, self.id, nonce)

    # ------------------------------------------------------------------ both

    async def instances(self) -> list[InstanceInfo]:
        """
        Every live instance sharing the database, the active one first; empty when it does not answer at once.

        Read on a short-lived connection of its own: the lock connection stays free for the keepalive (a slow
        listing must never delay it), and /gpus must answer within Discord's 3 s even when the database is slow.
        """
        try:
            found, _ = await read_instances(self._dsn, timeout=INSTANCES_TIMEOUT_S)
        except CONNECTION_ERRORS as e:
            log.info("instances not read: %s", scrub(str(e), self._dsn))
            return []
        return found

    async def _active_locked(self) -> InstanceInfo | None:
        assert self._conn is not None
        found = await leader_db.instances(self._conn)
        return next((i for i in found if i.holds_lock), None)

    async def close(self) -> None:
        """Let go: release the lock (a standby takes over after its grace period) and leave the instances table."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keepalive
            self._keepalive = None
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        conn.remove_termination_listener(self._terminated)
        try:
            async with self._op:
                await asyncio.wait_for(leader_db.leave(conn, self.id), self.settings.keepalive_s * 5)
        except CONNECTION_ERRORS as e:
            log.info("instance %s: could not leave cleanly (%s)", self.id, scrub(str(e), self._dsn))
        finally:
            if not conn.is_closed():
                await _close(conn)
        if self.role is Role.ACTIVE:
            self.role = Role.STANDBY

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._terminated)
            conn.terminate()


class LeadershipLost(Exception):
    """The lock was lost during the grace period, before this instance acted."""


async def _close(conn: asyncpg.Connection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except CONNECTION_ERRORS:
        conn.terminate()


async def read_instances(dsn: str, *, timeout: float = 5.0) -> tuple[list[InstanceInfo], int | None]:
    """For `vibes doctor`: the live instances and the server pid of the lock's holder, from a short-lived connection."""
    conn = await leader_db.connect(dsn, timeout=timeout)
    try:
        found = await asyncio.wait_for(leader_db.instances(conn), timeout)
        holder = await asyncio.wait_for(leader_db.lock_holder_backend(conn), timeout)
        return found, holder
    finally:
        await _close(conn)
