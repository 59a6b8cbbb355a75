"""
The farm's nodes: one ComfyUI client each, health checks, and live stats (speed, load, failures).

The registry is the only writer of every node's `NodeStats`: the job runner and the scheduler report what they
saw through its `record_*` and `report_failure` methods. Health changes go out on the bus (NodeHealthChanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.protocol import ObjectInfo
from orchestrator.config import HealthSettings, NodeConfig, TransferSettings
from orchestrator.errors import ComfyError
from orchestrator.events import EventBus, NodeHealthChanged
from orchestrator.farm.router import DEFAULT_LOAD_SECONDS, DEFAULT_SWAP_SECONDS, load_cost, prior_seconds_per_step
from orchestrator.models import Family, NodeModels, NodeStats
from orchestrator.supervisor import Supervisor

log = logging.getLogger(__name__)

#: the supervised health-check loop's name
HEALTH_TASK = "registry-health"

#: weight of a new measurement in the moving averages of speed
EMA_ALPHA = 0.3


@dataclass(slots=True)
class Node:
    """A configured node with its client and live stats."""

    config: NodeConfig
    client: ComfyClient
    stats: NodeStats
    object_info: ObjectInfo | None = None
    load_seconds: float | None = None
    swap_seconds: float | None = None

    @property
    def id(self) -> str:
        """The node's configured id."""
        return self.config.id


class Registry:
    """Owns the node clients and the health-check loop."""

    def __init__(
        self,
        nodes: tuple[NodeConfig, ...],
        settings: HealthSettings,
        bus: EventBus,
        *,
        install_id: str = "",
        http_timeout: float = 30.0,
        transfer: TransferSettings | None = None,
        client_factory: Callable[[NodeConfig, str], ComfyClient] | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._task: asyncio.Task[None] | None = None
        self._supervisor: Supervisor | None = None
        self._probes: set[asyncio.Task[bool]] = set()
        self._changed = asyncio.Event()
        install = install_id or uuid.uuid4().hex
        limits = transfer or TransferSettings()

        def default_factory(cfg: NodeConfig, client_id: str) -> ComfyClient:
            return ComfyClient(
                cfg.base_url,
                client_id=client_id,
                http_timeout=http_timeout,
                name=cfg.id,
                max_transfer_bytes=limits.max_bytes,
                transfer_timeout=limits.timeout_s,
            )

        factory = client_factory or default_factory
        self.nodes: dict[str, Node] = {}
        for cfg in nodes:
            # A stable client id per install and node lets a restarted process re-attach to its prompts.
            client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vibes:{install}:{cfg.id}"))
            self.nodes[cfg.id] = Node(cfg, factory(cfg, client_id), NodeStats(node_id=cfg.id))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def get(self, node_id: str) -> Node:
        """The node of this id (KeyError if none)."""
        return self.nodes[node_id]

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Connect every client, check every node once, then keep checking them (under `supervisor` if given)."""
        self._supervisor = supervisor
        await asyncio.gather(*(n.client.start(supervisor) for n in self.nodes.values()))
        await asyncio.gather(*(self.check(n) for n in self.nodes.values()))
        if supervisor is not None:
            supervisor.spawn(HEALTH_TASK, self._loop)
        else:
            self._task = asyncio.create_task(self._loop(), name=HEALTH_TASK)

    async def stop(self) -> None:
        """Stop the health checks and close every client."""
        if self._supervisor is not None:
            await self._supervisor.cancel(HEALTH_TASK)
        tasks: list[asyncio.Task[None] | asyncio.Task[bool]] = [t for t in (self._task, *self._probes) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._task = None
        await asyncio.gather(*(n.client.close() for n in self.nodes.values()), return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval_s)
            # check() never raises; this is the net under it, so one node can never stop the others' checks.
            results = await asyncio.gather(*(self.check(n) for n in self.nodes.values()), return_exceptions=True)
            for node, result in zip(self.nodes.values(), results, strict=True):
                if isinstance(result, BaseException):
                    log.error("node=%s health check crashed", node.id, exc_info=result)

    async def check(self, node: Node) -> bool:
        """
        Probe one node now; update health and, when it (re)appears, its models. Never raises.

        Any exception of the probe (a malformed answer, an undecodable body, a bug) is a failed probe of this
        node with the reason in its stats; the node comes back when its answers are good again.
        """
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                await node.client.system_stats()
                queue = await node.client.queue()
                node.stats.queue_length = len(queue.running) + len(queue.pending)
                if node.object_info is None or not node.stats.healthy:
                    info = await node.client.object_info()
                    node.object_info = info
                    node.stats.models = info.models()
        except (ComfyError, TimeoutError, OSError) as e:
            self._failure(node, str(e) or type(e).__name__)
            return False
        except Exception as e:
            log.warning("node=%s health check failed unexpectedly", node.id, exc_info=True)
            self._failure(node, f"health check failed: {type(e).__name__}: {e}"[:300])
            return False
        node.stats.last_response_ms = (time.perf_counter() - t0) * 1000
        node.stats.consecutive_failures = 0
        self._set_health(node, True, "answering")
        return True

    def report_failure(self, node_id: str, reason: str) -> None:
        """The scheduler saw the node fail; probe again at once so a dead node is noticed in seconds."""
        node = self.nodes[node_id]
        node.stats.recent_failures += 1
        node.stats.last_error = reason
        self._failure(node, reason)
        if node.stats.healthy:
            task = asyncio.create_task(self.check(node), name=f"probe-{node_id}")
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    def _failure(self, node: Node, reason: str) -> None:
        node.stats.consecutive_failures += 1
        node.stats.last_error = reason
        if node.stats.consecutive_failures >= self._settings.failures_to_down:
            self._set_health(node, False, reason)

    def _set_health(self, node: Node, healthy: bool, reason: str) -> None:
        if node.stats.healthy == healthy:
            return
        node.stats.healthy = healthy
        (log.info if healthy else log.warning)("node=%s %s (%s)", node.id, "up" if healthy else "down", reason)
        self._bus.publish(NodeHealthChanged(node.id, healthy, reason))

    def record_speed(self, node_id: str, family: Family, seconds_per_step_native: float) -> None:
        """Fold a measured seconds-per-step (normalised to the family's native size) into the node's stats."""
        stats = self.nodes[node_id].stats
        key = family.speed_family.value
        old = stats.seconds_per_step.get(key)
        value = _fold(old, seconds_per_step_native)
        stats.seconds_per_step[key] = value
        self._calibrate()

    def _calibrate(self) -> None:
        # A farm that is uniformly faster or slower than the tier priors (or a time-scaled simulator) would
        # otherwise make unmeasured nodes look far better or worse than they are, and starve or flood them.
        families = {f.value for f in Family}
        by_family: dict[str, list[float]] = {}
        for n in self.nodes.values():
            for k, v in n.stats.seconds_per_step.items():
                if k in families:
                    by_family.setdefault(k, []).append(v / prior_seconds_per_step(n.config, Family(k)))
        ratios = sorted(r for rs in by_family.values() for r in rs)
        if not ratios:
            return
        overall = ratios[len(ratios) // 2]
        per_family = {k: sorted(rs)[len(rs) // 2] for k, rs in by_family.items()}
        for n in self.nodes.values():
            n.stats.prior_scale = overall
            n.stats.family_prior_scale = per_family

    def record_checkpoint(
        self, node_id: str, checkpoint: str | None, *, keep_alive: str | None = None, real: bool = False
    ) -> None:
        """
        A prompt started on the node: it holds this checkpoint now (None: a prompt without a checkpoint loader).

        keep_alive: the checkpoint of the prompt's dangling loader. ComfyUI's cache keeps a loader's output only
        while each prompt names that loader, so the node keeps it only if it held it already (loaded or kept), and
        a prompt without one keeps nothing besides its own: after a prompt with no loader at all (an upscale), the
        node holds only what it kept alive, still on the card if it was loaded. real: real work, not speculative.
        """
        stats = self.nodes[node_id].stats
        held = {stats.loaded_checkpoint, stats.kept_checkpoint} - {None}
        kept = keep_alive if keep_alive in held else None
        if checkpoint is None:
            stays = kept if kept == stats.loaded_checkpoint else None
            stats.loaded_checkpoint, stats.kept_checkpoint = stays, (None if stays else kept)
            return
        stats.kept_checkpoint = kept if kept != checkpoint else None
        stats.loaded_checkpoint = checkpoint
        if real:
            stats.last_real_checkpoint = checkpoint

    def record_completed(self, node_id: str) -> None:
        """The node delivered one more image."""
        self.nodes[node_id].stats.completed += 1

    def record_upscale(self, node_id: str, seconds: float) -> None:
        """Fold a measured upscale time into the node's stats."""
        stats = self.nodes[node_id].stats
        old = stats.seconds_per_step.get("upscale")
        stats.seconds_per_step["upscale"] = _fold(old, seconds)

    def record_load(self, node_id: str, seconds: float) -> None:
        """Fold a measured checkpoint load time into the node's estimate."""
        node = self.nodes[node_id]
        node.load_seconds = _fold(node.load_seconds, seconds)

    def record_swap(self, node_id: str, seconds: float) -> None:
        """Fold a measured swap-in (a kept checkpoint moved back to VRAM) into the node's estimate."""
        node = self.nodes[node_id]
        node.swap_seconds = _fold(node.swap_seconds, seconds)

    def swap_estimate(self, node_id: str) -> float:
        """Seconds a kept checkpoint takes to be usable again: measured, else the farm's median, else a default."""
        return self._learned(node_id, lambda n: n.swap_seconds, DEFAULT_SWAP_SECONDS)

    def switch_estimate(self, node_id: str, model: str | None, loaded: str | None, kept: str | None) -> float:
        """Seconds before a job of checkpoint `model` samples on a node holding `loaded` and keeping `kept`."""
        return load_cost(model, loaded, kept, self.load_estimate(node_id), self.swap_estimate(node_id))

    def load_estimate(self, node_id: str) -> float:
        """Seconds a checkpoint load from disk takes on a node: measured, else the farm's median, else a default."""
        return self._learned(node_id, lambda n: n.load_seconds, DEFAULT_LOAD_SECONDS)

    def _learned(self, node_id: str, of: Callable[[Node], float | None], default: float) -> float:
        """A node's measured time, else the median of the nodes that measured one, else `default` at its prior."""
        own = of(self.nodes[node_id])
        if own is not None:
            return own
        measured = sorted(v for v in map(of, self.nodes.values()) if v is not None)
        if measured:
            return measured[len(measured) // 2]
        return default * self.nodes[node_id].stats.prior_scale

    def models(self, node_id: str) -> NodeModels:
        """The models a node reported at its last (re)appearance."""
        return self.nodes[node_id].stats.models

    def healthy_nodes(self) -> list[Node]:
        """The nodes answering their health checks now."""
        return [n for n in self.nodes.values() if n.stats.healthy]


def _fold(old: float | None, measured: float) -> float:
    """A measurement folded into a moving average (the first one is taken as it is)."""
    return measured if old is None else old + EMA_ALPHA * (measured - old)
