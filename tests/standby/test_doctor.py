"""`vibes doctor`: public node addresses are flagged; a simulated node that is not served says how to serve it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import replace

import pytest

from orchestrator.cli.doctor import check_node, public_address_warning
from tests.orchestrator.farm import farm_config


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["8.8.8.8", "2001:4860:4860::8888", "[2606:4700::1111]"])
def test_a_node_on_a_public_address_gets_a_warning(tmp_path, host):
    node = replace(farm_config(tmp_path).nodes[0], host=host)
    warning = public_address_warning(node)
    assert warning is not None and host.strip("[]") in warning
    assert "no authentication" in warning and "WireGuard" in warning


def v4(a: int, b: int, c: int, d: int) -> str:
    # Private ranges are spelled out nowhere in the code base (tests/test_layering.py): build them.
    return str(ipaddress.IPv4Address(bytes((a, b, c, d))))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        v4(192, 168, 1, 20),
        v4(10, 8, 0, 3),
        v4(172, 16, 4, 4),
        "100.101.102.103",
        "fd7a:115c::4",
        "gpu.lan",
    ],
)
def test_private_tailnet_and_named_hosts_are_not_flagged(tmp_path, host):
    node = replace(farm_config(tmp_path).nodes[0], host=host)
    assert public_address_warning(node) is None


async def test_an_unserved_simulated_node_says_to_use_sim(tmp_path):
    cfg = farm_config(tmp_path)
    node = replace(cfg.nodes[0], host="127.0.0.1", port=closed_port())
    assert node.sim is not None
    [problem] = await check_node(node, cfg)
    assert "simulated node" in problem and "vibes doctor --sim" in problem and "vibes sim" in problem
    [real] = await check_node(replace(node, sim=None), cfg)
    assert real.startswith("not reachable at") and "--sim" not in real


async def test_doctor_names_the_active_instance_the_standbys_and_checks_the_shared_store(pg_url, tmp_path, capsys):
    from orchestrator.cli.doctor import _instances_health
    from orchestrator.config import StorageSettings
    from orchestrator.leadership import Leadership
    from orchestrator.shared_store import write_marker
    from tests.standby.test_leadership import BOUND_S, FAST

    shared = tmp_path / "shared"
    cfg = farm_config(tmp_path).with_settings(storage=StorageSettings(data_dir=shared, database=pg_url))
    a = Leadership(pg_url, FAST, instance_id="alpha", host="host-a")
    b = Leadership(pg_url, FAST, instance_id="beta", host="host-b")
    try:
        await a.open()
        await b.open()
        assert await _instances_health(cfg) == 0
        assert "no instance holds the lock" in capsys.readouterr().out
        await asyncio.wait_for(a.acquire(), BOUND_S)
        marker = await write_marker(cfg.settings.storage.images_dir, a.id)
        await a.publish_store_nonce(marker.nonce)

        assert await _instances_health(cfg) == 0
        out = capsys.readouterr().out
        assert "alpha: ACTIVE (holds the lock) on host-a" in out and "beta: standby on host-b" in out
        assert "is the one the active instance writes to" in out

        elsewhere = cfg.with_settings(storage=StorageSettings(data_dir=tmp_path / "local", database=pg_url))
        assert await _instances_health(elsewhere) == 1
        assert "does not see its image store" in capsys.readouterr().out
    finally:
        await a.close()
        await b.close()


async def test_doctor_on_sqlite_says_single_instance(tmp_path, capsys):
    from orchestrator.cli.doctor import _instances_health

    assert await _instances_health(farm_config(tmp_path)) == 0
    assert "one instance, no leadership lock" in capsys.readouterr().out
