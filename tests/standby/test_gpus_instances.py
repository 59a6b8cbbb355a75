"""/gpus names the instance holding the lock and the standbys (a PostgreSQL database); nothing with SQLite."""

from __future__ import annotations

import datetime as dt

from bot import render
from orchestrator.models import InstanceInfo, Role


def instance(iid: str, host: str, *, holds: bool, role: Role) -> InstanceInfo:
    now = dt.datetime.now(dt.UTC)
    return InstanceInfo(iid, host, 4242, role, now - dt.timedelta(minutes=5), now, holds_lock=holds)


def test_gpus_lists_the_active_instance_first_and_the_standbys():
    found = [
        instance("a1", "nas", holds=True, role=Role.ACTIVE),
        instance("b2", "pi", holds=False, role=Role.STANDBY),
    ]
    embed = render.gpus_embed([], None, found)
    lines = (embed.description or "").splitlines()
    assert lines[0].startswith("🟢 active: `a1` on nas (pid 4242")
    assert lines[1].startswith("⏸️ standby: `b2` on pi (pid 4242")
    assert lines[-1] == "No GPU nodes are configured."


def test_gpus_without_instances_is_unchanged():
    assert render.gpus_embed([], None).description == "No GPU nodes are configured."
