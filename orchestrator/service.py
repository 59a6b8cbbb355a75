"""The Orchestrator facade: front ends call this and subscribe to its events; it owns every background task."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from orchestrator.comfy.simulator import SimFarm, is_loopback
from orchestrator.config import Config
from orchestrator.db import DB_WRITE_ERRORS, Database
from orchestrator.errors import ConfigError, InputError
from orchestrator.events import EventBus
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import Family, GenerationParams, JobSpec, LoraSpec, NodeModels, TaskKind
from orchestrator.registry import Registry
from orchestrator.router import seconds_per_step
from orchestrator.scheduler import BatchResult, Scheduler
from orchestrator.sessions.service import SessionService
from orchestrator.store import ImageStore
from orchestrator.supervisor import Supervisor
from orchestrator.uploads import Uploads
from orchestrator.workflows import WorkflowEngine

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
#: where the running engine keeps its health snapshot for `vibes doctor`, and how often it is refreshed
HEALTH_REF = ("_engine", "health")
HEALTH_SNAPSHOT_S = 15.0


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One batch of identical-recipe images with consecutive seeds."""

    prompt: str
    family: Family = Family.SD15
    count: int = 1
    negative_prompt: str = ""
    task: TaskKind = TaskKind.DRAFT
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    loras: tuple[LoraSpec, ...] = ()
    checkpoint: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as /gpus and `vibes doctor` show it."""

    id: str
    name: str
    tier: str
    healthy: bool
    capabilities: tuple[str, ...]
    loaded_checkpoint: str | None
    queue_length: int
    in_flight: int
    #: seconds per step at native size by family (measured, else the tier prior)
    seconds_per_step: dict[str, float]
    measured: bool
    recent_failures: int
    last_error: str | None
    last_response_ms: float | None
    completed: int
    models: NodeModels = field(default_factory=NodeModels)
    #: times this node's WebSocket listener crashed and was restarted by the supervisor
    listener_restarts: int = 0
    #: malformed frames from the node that were dropped (each logged, at most once per 10 s)
    dropped_frames: int = 0


@dataclass(frozen=True, slots=True)
class FarmHealth:
    """How the engine itself is doing, as /gpus and `vibes doctor` show it (each number but the backups a problem)."""

    #: supervised task restarts in total and by task, and tasks that are dead (always empty unless a bug)
    task_restarts: int = 0
    restarts_by_task: dict[str, int] = field(default_factory=dict)
    dead_tasks: tuple[str, ...] = ()
    #: differences between the DB and memory the reconciler healed (each is a bug found), by kind
    reconciler_heals: int = 0
    heals_by_kind: dict[str, int] = field(default_factory=dict)
    #: backup copies of stragglers started, and how many delivered before their original
    backups_started: int = 0
    backups_won: int = 0
    #: DB writes that failed (locked, full) and were retried
    db_retries: int = 0
    #: when this snapshot was taken (epoch seconds)
    taken_at: float = 0.0

    def to_json(self) -> str:
        """The snapshot as JSON (the bot stores it so that `vibes doctor` can show it)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FarmHealth:
        """Read a stored snapshot; unknown keys (from another version) are ignored."""
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in known} if isinstance(raw, dict) else {}
        if "dead_tasks" in data:
            data["dead_tasks"] = tuple(data["dead_tasks"])
        return cls(**data)


class Orchestrator:
    """The engine behind every front end."""

    def __init__(
        self,
        config: Config,
        *,
        sim: bool = False,
        time_scale: float | None = None,
        ephemeral_ports: bool = False,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.bus = EventBus()
        self._sim = sim
        self._time_scale = time_scale
        self._ephemeral = ephemeral_ports
        self.farm: SimFarm | None = None
        self.db = Database(self.settings.storage.database_target, busy_timeout_s=self.settings.storage.busy_timeout_s)
        self.store = ImageStore(self.settings.storage.images_dir)
        self.uploads = Uploads(self.settings.storage.data_dir, self.settings.limits)
        self.workflows = WorkflowEngine.load()
        self.registry: Registry | None = None
        self.scheduler: Scheduler | None = None
        self.sessions: SessionService | None = None
        self.pipeline = FeedbackPipeline(self.settings.llm, image_loader=self._llm_image)
        #: every long-lived task of the engine runs under this: crashes are logged, restarted and counted
        self.supervisor = Supervisor()
        self._started = False

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve the simulated farm when asked, open the DB, connect to every node, recover unfinished work."""
        config = self.config
        if self._sim:
            sim_nodes = [n for n in config.nodes if n.sim is not None]
            if not sim_nodes:
                raise ConfigError(str(config.directory / "gpus.yaml"), "nodes", "--sim needs nodes with a sim: block")
            for i, n in enumerate(config.nodes):
                if n.sim is not None and not is_loopback(n.host):
                    raise ConfigError(
                        str(config.directory / "gpus.yaml"), f"nodes[{i}].host", "a simulated node must be on loopback"
                    )
            self.farm = SimFarm(
                config.with_nodes(tuple(sim_nodes)), time_scale=self._time_scale, ephemeral_ports=self._ephemeral
            )
            config = await self.farm.start()
            self.config = config
        await self.db.open()
        install_id = await self.db.get_ref("_install", "id")
        if install_id is None:
            install_id = secrets.token_hex(8)
            await self.db.set_ref("_install", "id", install_id)
        self.registry = Registry(
            config.nodes,
            self.settings.health,
            self.bus,
            install_id=install_id,
            http_timeout=self.settings.scheduler.http_timeout_s,
            transfer=self.settings.transfer,
        )
        await self.registry.start(self.supervisor)
        self.scheduler = Scheduler(
            self.registry, self.db, self.store, self.workflows, self.bus, self.settings.scheduler, self.supervisor
        )
        await self.scheduler.start()
        self.sessions = SessionService(
            db=self.db,
            scheduler=self.scheduler,
            store=self.store,
            bus=self.bus,
            settings=self.settings,
            pipeline=self.pipeline,
        )
        await self.sessions.start()
        self.supervisor.spawn("health-snapshot", self._keep_health_snapshot)
        self._started = True
        log.info("orchestrator started: %d nodes", len(config.nodes))

    async def stop(self) -> None:
        """Stop every task; unfinished jobs stay in the DB for the next start."""
        if self.sessions is not None:
            await self.sessions.stop()
            self.sessions = None
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.registry is not None:
            await self.registry.stop()
        await self.supervisor.stop()
        if self._started:
            await self._write_health_snapshot()  # the last word, for `vibes doctor` after this process
        await self.db.close()
        if self.farm is not None:
            await self.farm.stop()
            self.farm = None
        self._started = False

    async def _llm_image(self, path: Path, max_side: int) -> bytes:
        # Downscaled JPEG for the vision model, made off the event loop by the store.
        return await self.store.jpeg(path, max_side=max_side, quality=85)

    @property
    def sched(self) -> Scheduler:
        if self.scheduler is None:
            raise RuntimeError("orchestrator not started")
        return self.scheduler

    # ------------------------------------------------------------------ batches

    def build_specs(self, req: GenerateRequest) -> list[JobSpec]:
        """Turn a request into job specs, checking it against the limits."""
        lim = self.settings.limits
        if not req.prompt.strip():
            raise InputError("empty prompt", user_message="The prompt is empty.")
        if len(req.prompt) > lim.max_prompt_chars:
            raise InputError(
                "prompt too long",
                user_message=f"The prompt is {len(req.prompt)} characters; the limit is {lim.max_prompt_chars}.",
            )
        if not 1 <= req.count <= lim.max_count:
            raise InputError("count", user_message=f"Count must be between 1 and {lim.max_count}.")
        side = req.family.native_size
        width, height = req.width or side, req.height or side
        for name, v in (("width", width), ("height", height)):
            if not 64 <= v <= lim.max_side or v % 8:
                raise InputError(name, user_message=f"{name} must be a multiple of 8 between 64 and {lim.max_side}.")
        steps = req.steps or (10 if req.task is TaskKind.DRAFT and req.family is Family.SD15 else 20)
        if not 1 <= steps <= lim.max_steps:
            raise InputError("steps", user_message=f"Steps must be between 1 and {lim.max_steps}.")
        cfg = req.cfg if req.cfg is not None else (1.0 if req.family is Family.FLUX else 7.0)
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise InputError("seed", user_message=f"Seed must be between 0 and {MAX_SEED}.")
        base_seed = req.seed if req.seed is not None else random.randint(0, MAX_SEED - req.count)
        checkpoint = req.checkpoint or self.settings.checkpoint_for(req.family)
        specs = []
        for i in range(req.count):
            params = GenerationParams(
                prompt=req.prompt,
                negative_prompt=req.negative_prompt,
                family=req.family,
                checkpoint=checkpoint,
                width=width,
                height=height,
                steps=steps,
                cfg=cfg,
                seed=(base_seed + i) % (MAX_SEED + 1),
                loras=req.loras,
                scheduler="simple" if req.family is Family.FLUX else "normal",
            )
            specs.append(JobSpec(params=params, task=req.task, user_id=req.user_id, index=i + 1))
        return specs

    async def generate(self, req: GenerateRequest) -> str:
        """Queue one batch; returns its id."""
        batch_id, _ = await self.sched.submit(self.build_specs(req))
        return batch_id

    async def submit(self, specs: Sequence[JobSpec], *, batch_id: str | None = None) -> str:
        batch_id, _ = await self.sched.submit(specs, batch_id=batch_id)
        return batch_id

    async def wait_batch(self, batch_id: str) -> BatchResult:
        return await self.sched.wait_batch(batch_id)

    async def cancel_batch(self, batch_id: str) -> int:
        return await self.sched.cancel_batch(batch_id)

    # ------------------------------------------------------------------ farm

    def farm_status(self) -> list[NodeStatus]:
        """Every node, healthy or not, with live stats."""
        if self.registry is None:
            return []
        out = []
        for node in self.registry:
            st = node.stats
            fams = [f for f in (Family.SD15, Family.SDXL, Family.FLUX) if node.config.can_run(f.value)]
            out.append(
                NodeStatus(
                    id=node.id,
                    name=node.config.name,
                    tier=node.config.tier.value,
                    healthy=st.healthy,
                    capabilities=node.config.capabilities,
                    loaded_checkpoint=st.loaded_checkpoint,
                    queue_length=max(st.queue_length, st.in_flight),
                    in_flight=st.in_flight,
                    seconds_per_step={f.value: round(seconds_per_step(node.config, st, f), 3) for f in fams},
                    measured=bool(st.seconds_per_step),
                    recent_failures=st.recent_failures,
                    last_error=st.last_error,
                    last_response_ms=st.last_response_ms,
                    completed=st.completed,
                    models=st.models,
                    listener_restarts=self.supervisor.restarts(node.client.listener_name),
                    dropped_frames=node.client.dropped_messages,
                )
            )
        return out

    def farm_health(self) -> FarmHealth:
        """The engine's own health: supervised restarts, reconciler heals, backup copies, DB retries."""
        sched = self.scheduler
        restarts = {t.name: t.restarts for t in self.supervisor.status() if t.restarts}
        return FarmHealth(
            task_restarts=self.supervisor.total_restarts,
            restarts_by_task=restarts,
            dead_tasks=tuple(self.supervisor.dead()),
            reconciler_heals=sched.reconciler.total_heals if sched else 0,
            heals_by_kind=dict(sched.reconciler.heals) if sched else {},
            backups_started=sched.backups_started if sched else 0,
            backups_won=sched.backups_won if sched else 0,
            db_retries=sched.table.db_retries if sched else 0,
            taken_at=time.time(),
        )

    async def _keep_health_snapshot(self) -> None:
        # `vibes doctor` runs in another process: it reads the running engine's health from the DB.
        while True:
            await self._write_health_snapshot()
            await asyncio.sleep(HEALTH_SNAPSHOT_S)

    async def _write_health_snapshot(self) -> None:
        try:
            await self.db.set_ref(HEALTH_REF[0], HEALTH_REF[1], self.farm_health().to_json())
        except DB_WRITE_ERRORS as e:
            # A locked or full DB: this snapshot is skipped (the next one comes soon); jobs retry their own writes.
            log.info("health snapshot not written: %s", e)

    def known_models(self) -> NodeModels:
        """Union of the model files every healthy node reports (for autocomplete)."""
        ck: set[str] = set()
        lo: set[str] = set()
        up: set[str] = set()
        if self.registry is not None:
            for node in self.registry.healthy_nodes():
                ck.update(node.stats.models.checkpoints)
                lo.update(node.stats.models.loras)
                up.update(node.stats.models.upscale_models)
        return NodeModels(tuple(sorted(ck)), tuple(sorted(lo)), tuple(sorted(up)))
