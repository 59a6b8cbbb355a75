"""`vibes doctor`: public node addresses are flagged; a simulated node that is not served says how to serve it."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "192.168.1.20", "10.8.0.3", "172.16.4.4", "100.101.102.103", "fd7a:115c::4", "gpu.lan"]
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
