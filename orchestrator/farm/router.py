"""
Pure routing decisions: which node can run a job, how long it would take, and which job a free node takes.

The scheduler calls `choose` whenever a node has a free slot. It simulates giving each
queued job (in priority and fair-share order) to the node where it would finish first, and
hands the asking node the first job that lands on it. For a stage of identical images on
nodes of different speeds this earliest-finish rule is the optimal assignment; a checkpoint
swap counts as time, which gives model affinity for free.

A node's backlog moves with time alone (a run on time counts down; an overdue one is expected to go on the
longer, the longer it has overrun), so a node told to leave the queue to another is also told when that answer
could change: the scheduler asks it again then, without waiting for a run to end or a job to be queued.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.config import NodeConfig
from orchestrator.models import Family, Job, Mode, NodeStats, TaskKind, Tier

#: Seconds per sampler step at the family's native size, by tier, used until a node has been measured.
TIER_PRIOR: Mapping[Tier, Mapping[Family, float]] = {
    Tier.PREMIUM: {Family.SD15: 0.05, Family.SDXL: 0.30, Family.FLUX: 0.40},
    Tier.QUALITY: {Family.SD15: 0.08, Family.SDXL: 0.34, Family.FLUX: 0.60},
    Tier.STANDARD: {Family.SD15: 0.10, Family.SDXL: 0.40, Family.FLUX: 0.80},
    Tier.DRAFT: {Family.SD15: 0.15, Family.SDXL: 0.80, Family.FLUX: 1.60},
}
DEFAULT_LOAD_SECONDS = 5.0
#: moving a checkpoint the node's cache kept back to VRAM, until measured (the sim's checkpoint_swap_seconds)
DEFAULT_SWAP_SECONDS = 0.5
DEFAULT_UPSCALE_SECONDS = 2.0
#: jobs looked at per decision; beyond this the queue order alone decides
LOOKAHEAD = 256
#: a node is asked again this long after the moment its answer could change (finish times are compared to the ms)
RECHECK_MARGIN = 0.002


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the router knows about one node at decision time."""

    config: NodeConfig
    stats: NodeStats
    #: seconds from now until the work already on the node is done (estimated)
    busy_for: float
    #: the checkpoint the node will have loaded once its current work is done
    next_checkpoint: str | None
    #: prompts held now; a node with depth slots free may take more
    in_flight: int
    depth: int
    load_seconds: float = DEFAULT_LOAD_SECONDS
    #: the checkpoint the node's cache will keep besides `next_checkpoint` (None once real work replaces it)
    kept_checkpoint: str | None = None
    swap_seconds: float = DEFAULT_SWAP_SECONDS
    #: how `busy_for` moves while nothing new is heard (seconds per second: -1 a run on time counting down,
    #: positive an overdue run), and for how many seconds that rate holds
    busy_rate: float = 0.0
    steady_for: float = math.inf

    @property
    def node_id(self) -> str:
        """The node's configured id."""
        return self.config.id

    @property
    def has_slot(self) -> bool:
        """True when the node is up and holds fewer prompts than its depth."""
        return self.stats.healthy and self.in_flight < self.depth


def required_capability(job: Job) -> str:
    """The capability a node must list: the family, or 'upscale'."""
    return "upscale" if job.params.mode is Mode.UPSCALE else job.params.family.value


def can_run(node: NodeConfig, stats: NodeStats, job: Job) -> bool:
    """Capability, size, health and (when the node reported them) model files."""
    if not stats.healthy or not node.can_run(required_capability(job)):
        return False
    p = job.params
    if p.mode is not Mode.UPSCALE and max(p.width, p.height) > node.max_resolution:
        return False
    models = stats.models
    if p.mode is Mode.UPSCALE:
        return not models.upscale_models or (p.upscale_model or "") in models.upscale_models
    if models.checkpoints and p.checkpoint not in models.checkpoints:
        return False
    return not (p.loras and models.loras and any(lo.name not in models.loras for lo in p.loras))


def could_ever_run(node: NodeConfig, job: Job) -> bool:
    """Capability and size only: True when this node could run the job if it were healthy."""
    p = job.params
    if not node.can_run(required_capability(job)):
        return False
    return p.mode is Mode.UPSCALE or max(p.width, p.height) <= node.max_resolution


def seconds_per_step(node: NodeConfig, stats: NodeStats, family: Family) -> float:
    """Measured seconds per step at native size, else the tier prior."""
    fam = family.speed_family
    measured = stats.seconds_per_step.get(fam.value)
    if measured is not None:
        return measured
    return prior_seconds_per_step(node, fam) * stats.family_prior_scale.get(fam.value, stats.prior_scale)


def prior_seconds_per_step(node: NodeConfig, family: Family) -> float:
    """The tier's guess for a family's seconds per step at native size."""
    return TIER_PRIOR[node.tier].get(family.speed_family, TIER_PRIOR[node.tier][Family.SDXL] * 2)


def run_seconds(node: NodeConfig, stats: NodeStats, job: Job) -> float:
    """Estimated execution time of a job on a node, without any checkpoint load."""
    p = job.params
    if p.mode is Mode.UPSCALE:
        return stats.seconds_per_step.get("upscale", DEFAULT_UPSCALE_SECONDS * stats.prior_scale)
    # ComfyUI's KSampler runs `steps` steps whatever the denoise (it stretches the schedule instead).
    native = p.family.native_size**2
    return seconds_per_step(node, stats, p.family) * p.steps * (p.pixels / native)


def load_cost(model: str | None, loaded: str | None, kept: str | None, load_s: float, swap_s: float) -> float:
    """
    Seconds a node spends getting checkpoint `model` ready: none if loaded, a swap-in if its cache kept it.

    A kept checkpoint's model objects are still in the node's RAM (ComfyUI's cache holds the loader's output), so
    only the weights move back to VRAM; anything else is read from disk.
    """
    if not model or model == loaded:
        return 0.0
    return min(swap_s, load_s) if model == kept else load_s


def job_order(jobs: Sequence[Job]) -> list[Job]:
    """
    Priority first (final > polished > refined > draft), then round-robin across users, then sessions.

    Round-robin by rank within each user's (and session's) own queue means one user's big batch
    interleaves with another's small one instead of starving it.
    """
    user_rank: dict[str, int] = defaultdict(int)
    session_rank: dict[str, int] = defaultdict(int)
    keyed = []
    for seq, j in enumerate(sorted(jobs, key=lambda j: (j.created_at, j.spec.index))):
        u = j.spec.user_id or ""
        s = j.spec.session_id or j.batch_id
        keyed.append((-j.spec.task.priority, user_rank[u], session_rank[s], seq, j))
        user_rank[u] += 1
        session_rank[s] += 1
    keyed.sort(key=lambda k: k[:4])
    return [k[4] for k in keyed]


def _tier_bias(task: TaskKind, tier: Tier) -> int:
    """Tie-break: drafts prefer small cards (keep the big one free), quality work prefers big ones."""
    return -tier.rank if task in (TaskKind.DRAFT, TaskKind.STANDARD) else tier.rank


@dataclass(frozen=True, slots=True)
class Choice:
    """
    What a node with a free slot should do: take `job`, or (None) leave the queue to others for now.

    When it leaves it, `recheck_in`: ask again in that many seconds, when the nodes' backlogs will have moved
    enough to change the answer (None: only an event, a run ending or a job queued, can change it).
    """

    job: Job | None
    recheck_in: float | None = None


def choose_job(asking: str, queued: Sequence[Job], nodes: Sequence[NodeView]) -> Job | None:
    """The job the node `asking` should take now, or None to leave the queue to faster nodes (see `choose`)."""
    return choose(asking, queued, nodes).job


def choose(asking: str, queued: Sequence[Job], nodes: Sequence[NodeView]) -> Choice:
    """
    The job the node `asking` should take now, or when to ask again.

    Simulates earliest-finish-time assignment over the queue (in `job_order`) with every healthy node's current
    backlog; returns the first job assigned to `asking`. When none is, the earliest moment any job of the
    simulation would land elsewhere: each finish time moves with its node's `busy_rate` until the node's
    `steady_for` runs out, so the gap between a job's best node and every other candidate closes at a known pace.
    """
    me = next((n for n in nodes if n.node_id == asking), None)
    if me is None or not me.has_slot:
        return Choice(None)
    free_at = {n.node_id: n.busy_for for n in nodes}
    loaded = {n.node_id: n.next_checkpoint for n in nodes}
    kept = {n.node_id: n.kept_checkpoint for n in nodes}
    recheck = math.inf
    could = False
    for job in job_order(queued)[:LOOKAHEAD]:
        candidates = [n for n in nodes if can_run(n.config, n.stats, job)]
        preferred = [n for n in candidates if n.node_id not in job.failed_nodes] or candidates
        if not preferred:
            continue
        could = could or any(n.node_id == asking for n in preferred)
        best: NodeView | None = None
        best_key: tuple[float, int, int] | None = None
        finishes: list[tuple[NodeView, float]] = []
        for n in preferred:
            model = job.params.loads_checkpoint
            load = load_cost(model, loaded[n.node_id], kept[n.node_id], n.load_seconds, n.swap_seconds)
            finish = free_at[n.node_id] + load + run_seconds(n.config, n.stats, job)
            finishes.append((n, finish))
            # Millisecond rounding lets the tier bias decide near-ties deterministically.
            key = (round(finish, 3), _tier_bias(job.spec.task, n.config.tier), 0 if n.node_id == asking else 1)
            if best_key is None or key < best_key:
                best, best_key = n, key
        assert best is not None and best_key is not None
        if best.node_id == asking:
            return Choice(job)
        best_finish = next(f for n, f in finishes if n is best)
        for n, finish in finishes:
            closing = best.busy_rate - n.busy_rate
            if n is not best and closing > 0:
                recheck = min(recheck, (finish - best_finish) / closing)
        free_at[best.node_id] = best_key[0]
        loaded[best.node_id] = job.params.loads_checkpoint or loaded[best.node_id]
        kept[best.node_id] = None  # a real job's prompt names one loader: the cache keeps nothing else
    if not could:
        return Choice(None)
    # A node's rate changes when one of its runs turns overdue: the answer may change then too.
    recheck = min([recheck, *(n.steady_for for n in nodes if n.stats.healthy)])
    return Choice(None, None if math.isinf(recheck) else max(0.0, recheck) + RECHECK_MARGIN)


def even_split(count: int, node_ids: Sequence[str]) -> dict[str, int]:
    """The seed's static split ([5, 5, 5, 5] for 20 on four nodes): the baseline the benchmark compares with."""
    if not node_ids:
        return {}
    base, extra = divmod(count, len(node_ids))
    return {nid: base + (1 if i < extra else 0) for i, nid in enumerate(node_ids)}
