"""
gpus.yaml: the farm's nodes (the seed's schema) and how the simulator serves each, parsed and checked.

Apart from settings.yaml's sections because the two files change for different reasons: this one when the farm
does, that one when the bot's behaviour does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config.fields import _At, _bool, _enum, _family_map, _int, _num, _opt_int, _pos_int, _str, _str_list
from orchestrator.errors import ConfigError
from orchestrator.models import Family, Tier


@dataclass(frozen=True, slots=True)
class SimFaults:
    """Faults a simulated node injects (counts are of prompts this node has started)."""

    #: stop answering at all (HTTP and WebSocket) when this prompt starts
    die_after: int | None = None
    #: the Nth prompt never finishes
    hang_after: int | None = None
    #: the Nth prompt ends with execution_error
    error_after: int | None = None
    #: drop the WebSocket while the Nth prompt runs
    drop_ws_after: int | None = None
    #: extra delay on every GET /view
    slow_view_seconds: float = 0.0
    #: mix a malformed WebSocket frame (cycling through every kind) after each real message the node sends
    malformed_ws: bool = False
    #: GET /system_stats answers wrongly: "vram_text" (a VRAM size of "16 GB") or "list" (a list, not an object)
    bad_system_stats: str | None = None
    #: GET /object_info answers a list instead of an object
    bad_object_info: bool = False
    #: JSON answers say Content-Encoding: gzip over a plain body (a misconfigured proxy)
    gzip_lie: bool = False
    #: GET /view sends its body at this many bytes per second (real time, not scaled)
    drip_view_bytes_per_s: float | None = None
    #: GET /view answers bytes that are not an image, labelled image/png
    view_garbage: bool = False
    #: GET /view answers a chunked body of this many bytes (without building it in memory)
    view_oversize_bytes: int | None = None
    #: when the Nth prompt would start the node wedges: it accepts prompts and answers health checks but never
    #: executes or reports anything further (unlike die_after, which refuses connections)
    wedge_after: int | None = None


#: the values SimFaults.bad_system_stats accepts
BAD_SYSTEM_STATS = ("vram_text", "list")


@dataclass(frozen=True, slots=True)
class SimNodeConfig:
    """How the simulator serves a node: speeds at the family's native size, load times, models, faults."""

    #: seconds per sampler step at the family's native size (sd15 512², others 1024²); scaled by pixels
    seconds_per_step: Mapping[Family, float] = field(default_factory=dict)
    upscale_seconds: float = 2.0
    checkpoint_load_seconds: float = 5.0
    #: a checkpoint whose loader output ComfyUI's cache kept only moves its weights back from CPU RAM to VRAM. An
    #: estimate, not a measurement: fp16 SDXL (~6.5 GB of UNet, text encoders and VAE) at the ~13 GB/s a PCIe 4.0
    #: x16 link sustains from pageable memory; SD 1.5 (~2 GB) takes a third of it, so 0.5 s errs on the slow side
    checkpoint_swap_seconds: float = 0.5
    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    upscale_models: tuple[str, ...] = ()
    previews: bool = True
    faults: SimFaults = field(default_factory=SimFaults)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One ComfyUI server of the farm (the seed's gpus.yaml schema)."""

    id: str
    name: str
    tier: Tier
    host: str
    port: int
    capabilities: tuple[str, ...]
    vram_gb: float = 0.0
    max_resolution: int = 1024
    max_batch: int = 1
    sim: SimNodeConfig | None = None

    @property
    def base_url(self) -> str:
        """http://host:port of the node."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def can_run(self, capability: str) -> bool:
        """True when the node lists this capability (a family name or 'upscale')."""
        return capability in self.capabilities


# --------------------------------------------------------------------------- parsing


def _bad_stats(at: _At) -> str:
    value = _str(at)
    if value not in BAD_SYSTEM_STATS:
        raise at.fail(f"expected one of {', '.join(BAD_SYSTEM_STATS)}")
    return value


def _faults(at: _At) -> SimFaults:
    at.only(
        {
            "die_after",
            "hang_after",
            "error_after",
            "drop_ws_after",
            "slow_view_seconds",
            "malformed_ws",
            "bad_system_stats",
            "bad_object_info",
            "gzip_lie",
            "drip_view_bytes_per_s",
            "view_garbage",
            "view_oversize_bytes",
            "wedge_after",
        }
    )
    drip = at.get("drip_view_bytes_per_s", _num, None)
    if drip is not None and drip <= 0:
        raise at.child("drip_view_bytes_per_s").fail("expected a number > 0")
    return SimFaults(
        die_after=at.get("die_after", _opt_int, None),
        hang_after=at.get("hang_after", _opt_int, None),
        error_after=at.get("error_after", _opt_int, None),
        drop_ws_after=at.get("drop_ws_after", _opt_int, None),
        slow_view_seconds=at.get("slow_view_seconds", _num, 0.0),
        malformed_ws=at.get("malformed_ws", _bool, False),
        bad_system_stats=at.get("bad_system_stats", _bad_stats, None),
        bad_object_info=at.get("bad_object_info", _bool, False),
        gzip_lie=at.get("gzip_lie", _bool, False),
        drip_view_bytes_per_s=drip,
        view_garbage=at.get("view_garbage", _bool, False),
        view_oversize_bytes=at.get("view_oversize_bytes", _pos_int, None),
        wedge_after=at.get("wedge_after", _opt_int, None),
    )


def _sim_node(at: _At) -> SimNodeConfig:
    at.only(
        {
            "seconds_per_step",
            "upscale_seconds",
            "checkpoint_load_seconds",
            "checkpoint_swap_seconds",
            "checkpoints",
            "loras",
            "upscale_models",
            "previews",
            "faults",
        }
    )
    return SimNodeConfig(
        seconds_per_step=at.get("seconds_per_step", _family_map(_num), {}),
        upscale_seconds=at.get("upscale_seconds", _num, 2.0),
        checkpoint_load_seconds=at.get("checkpoint_load_seconds", _num, 5.0),
        checkpoint_swap_seconds=at.get("checkpoint_swap_seconds", _num, 0.5),
        checkpoints=at.get("checkpoints", _str_list, ()),
        loras=at.get("loras", _str_list, ()),
        upscale_models=at.get("upscale_models", _str_list, ()),
        previews=at.get("previews", _bool, True),
        faults=at.get("faults", _faults, SimFaults()),
    )


def _port(at: _At) -> int:
    v = _int(at)
    if not 0 <= v <= 65535:
        raise at.fail(f"expected a port 0-65535, got {v}")
    return v


def _node(at: _At) -> NodeConfig:
    at.mapping()
    return NodeConfig(
        id=at.need("id", _str),
        name=at.get("name", _str, ""),
        tier=at.need("tier", _enum(Tier)),
        host=at.need("host", _str),
        port=at.get("port", _port, 8188),
        capabilities=at.need("capabilities", _str_list),
        vram_gb=at.get("vram_gb", _num, 0.0),
        max_resolution=at.get("max_resolution", _pos_int, 1024),
        max_batch=at.get("max_batch", _pos_int, 1),
        sim=at.get("sim", _sim_node, None),
    )


def parse_nodes(doc: Any, file: str = "gpus.yaml") -> tuple[NodeConfig, ...]:
    """Parse the gpus.yaml document (already loaded from YAML)."""
    root = _At(file, "", doc)
    if not isinstance(doc, dict):
        raise ConfigError(file, "", "expected a mapping with a 'nodes' list")
    nodes_at = root.child("nodes")
    if nodes_at.value is None:
        raise nodes_at.fail("required")
    nodes = tuple(_node(n) for n in nodes_at.items())
    if not nodes:
        raise nodes_at.fail("expected at least one node")
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        if n.id in seen:
            raise nodes_at.child(i).child("id").fail(f"duplicate node id {n.id!r}")
        seen.add(n.id)
    return nodes
