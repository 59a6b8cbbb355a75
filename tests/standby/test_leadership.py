"""Leadership on a real PostgreSQL server: one active instance, standbys waiting, fencing before any takeover."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from orchestrator.config import LeadershipSettings
from orchestrator.db.leadership import LOCK_KEY, Role
from orchestrator.leadership import Leadership, LeadershipLost
from orchestrator.shared_store import SharedStoreError, StoreCheck, read_marker, write_marker
from tests.standby.pg import terminate_sessions

FAST = LeadershipSettings(keepalive_s=0.2, poll_s=0.05, fence_s=0.2, grace_s=0.8)
#: a bound for waits that should end long before it (a hang fails the test instead of blocking the run)
BOUND_S = 15.0


async def leader(url: str, name: str) -> Leadership:
    lead = Leadership(url, FAST, instance_id=name, host=f"host-{name}", pid=1000 + len(name))
    await lead.open()
    return lead


async def test_one_active_the_other_waits_then_takes_over_when_released(pg_url):
    a, b = await leader(pg_url, "a"), await leader(pg_url, "b")
    try:
        await asyncio.wait_for(a.acquire(), BOUND_S)
        assert a.is_active
        seen = asyncio.Event()
        seen_active: list[str | None] = []

        async def watch(active):
            seen_active.append(active.id if active else None)
            seen.set()

        b_acquire = asyncio.create_task(b.acquire(watch))
        await asyncio.wait_for(seen.wait(), BOUND_S)
        assert not b_acquire.done() and b.role is Role.STANDBY
        assert seen_active[-1] == "a"
        found = await a.instances()
        assert [(i.id, i.holds_lock) for i in found] == [("a", True), ("b", False)]
        assert found[0].role is Role.ACTIVE and found[1].role is Role.STANDBY
        assert (found[0].host, found[0].pid) == ("host-a", 1001)

        await a.close()
        await asyncio.wait_for(b_acquire, BOUND_S)
        assert b.is_active
        assert [(i.id, i.holds_lock) for i in await b.instances()] == [("b", True)]
    finally:
        await a.close()
        await b.close()


async def test_a_cut_lock_connection_fences_the_active_before_the_standby_acts(pg_url):
    """Split brain: the server drops the active's session (its process lives on); it must stop before B starts."""
    a, b = await leader(pg_url, "a"), await leader(pg_url, "b")
    order: list[str] = []
    a.on_lost.append(lambda reason: order.append("a fenced"))
    try:
        await asyncio.wait_for(a.acquire(), BOUND_S)
        b_acquire = asyncio.create_task(b.acquire())
        conn = await asyncpg.connect(pg_url)
        try:
            backend = await conn.fetchval(
                "SELECT backend_pid FROM vibes_instances WHERE id = 'a'",
            )
        finally:
            await conn.close()
        await terminate_sessions(pg_url, [backend])
        reason = await asyncio.wait_for(a.wait_lost(), BOUND_S)
        await asyncio.wait_for(b_acquire, BOUND_S)
        order.append("b active")
        assert order == ["a fenced", "b active"]
        assert a.role is Role.FENCED and a.lost
        assert "closed" in reason or "failed" in reason
        assert b.is_active
        assert [i.id for i in await b.instances()] == ["b"]
    finally:
        await a.close()
        await b.close()


async def test_lock_lost_during_grace_aborts_acquire(pg_url):
    a = await leader(pg_url, "a")
    try:
        acquiring = asyncio.create_task(a.acquire())
        conn = await asyncpg.connect(pg_url)
        try:
            while True:  # wait until a holds the lock (its grace period has begun)
                holder = await conn.fetchval(
                    "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objid = $1",
                    LOCK_KEY,
                )
                if holder is not None:
                    break
                await asyncio.sleep(0.01)
        finally:
            await conn.close()
        await terminate_sessions(pg_url, [holder])
        with pytest.raises(LeadershipLost):
            await asyncio.wait_for(acquiring, BOUND_S)
        assert a.role is Role.FENCED
    finally:
        await a.close()


async def test_standby_refuses_an_image_store_it_does_not_share(pg_url, tmp_path):
    shared, elsewhere = tmp_path / "shared", tmp_path / "local"
    a, b = await leader(pg_url, "a"), await leader(pg_url, "b")
    try:
        await asyncio.wait_for(a.acquire(), BOUND_S)
        marker = await write_marker(shared, a.id)
        await a.publish_store_nonce(marker.nonce)
        assert await read_marker(shared) == marker

        good = StoreCheck(shared, patience=2)
        active = (await b.instances())[0]
        await good(active)
        assert good.verified == marker.nonce

        bad = StoreCheck(elsewhere, patience=2)
        await bad(active)  # one miss is tolerated: right at a takeover the file may be a marker ahead
        with pytest.raises(SharedStoreError, match="does not see the image store of the active instance a"):
            await bad(active)
        # and through acquire(): the standby gives up instead of waiting
        with pytest.raises(SharedStoreError):
            await asyncio.wait_for(b.acquire(StoreCheck(elsewhere, patience=2)), BOUND_S)
    finally:
        await a.close()
        await b.close()


async def test_database_out_of_reach_fails_open_with_a_clear_error(tmp_path):
    lead = Leadership(f"postgresql://vibes:secret@/nothing?host={tmp_path}", FAST, instance_id="x")
    with pytest.raises((OSError, asyncpg.PostgresError)) as e:
        await lead.open()
    assert "secret" not in str(e.value)
