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

from orchestrator.checks import check_count, check_negative, check_prompt
from orchestrator.comfy.sim import SimFarm, is_loopback
from orchestrator.config import Config
from orchestrator.db import DB_WRITE_ERRORS, Database
from orchestrator.errors import ConfigError, InputError
from orchestrator.events import EventBus
from orchestrator.families import sampling_defaults
from orchestrator.farm.registry import Registry
from orchestrator.farm.router import seconds_per_step
from orchestrator.farm.scheduler import BatchResult, Scheduler
from orchestrator.farm.speculative import SpeculationStats
from orchestrator.llm.changes import RefineResult
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import MAX_SEED, Family, GenerationParams, JobSpec, LoraSpec, NodeModels, TaskKind
from orchestrator.sessions import access, speculation
from orchestrator.sessions.engine import SessionEngine
from orchestrator.sessions.models import ImageInfo, Session, SessionRequest, StageView, Visibility, VoteResult
from orchestrator.store import ImageStore
from orchestrator.supervisor import Supervisor
from orchestrator.uploads import Uploads
from orchestrator.workflows import WorkflowEngine

log = logging.getLogger(__name__)

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
    #: a checkpoint the node's ComfyUI cache keeps besides the loaded one (speculation.keep_alive)
    kept_checkpoint: str | None = None


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
    #: speculative GPU-seconds (voting time): adopted by a stage at Continue, and thrown away
    speculative_useful_s: float = 0.0
    speculative_wasted_s: float = 0.0
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


@dataclass(frozen=True, slots=True)
class FullImage:
    """A full-size image file's bytes and its format ("png", or "jpg" when the PNG was over the upload limit)."""

    data: bytes
    ext: str


class Orchestrator:
    """
    The one facade behind every front end: batches, sessions, the farm's status, message references, image files.

    Front ends (the bot, the CLI) call only these methods and subscribe to `bus`; the DB, the image store, the
    scheduler and the session engine are the Orchestrator's own.
    """

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
        # The DB, the image store and the scheduler are the engine's own: front ends go through the methods below.
        self._db = Database.at(
            self.settings.storage.database_target, busy_timeout_s=self.settings.storage.busy_timeout_s
        )
        self._store = ImageStore(self.settings.storage.images_dir)
        self._scheduler: Scheduler | None = None
        self._sessions: SessionEngine | None = None
        self.uploads = Uploads(self.settings.storage.data_dir, self.settings.limits)
        self.workflows = WorkflowEngine.load()
        self.registry: Registry | None = None
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
        await self._db.open()
        install_id = await self._db.get_ref("_install", "id")
        if install_id is None:
            install_id = secrets.token_hex(8)
            await self._db.set_ref("_install", "id", install_id)
        self.registry = Registry(
            config.nodes,
            self.settings.health,
            self.bus,
            install_id=install_id,
            http_timeout=self.settings.scheduler.http_timeout_s,
            transfer=self.settings.transfer,
        )
        await self.registry.start(self.supervisor)
        self._scheduler = Scheduler(
            self.registry, self._db, self._store, self.workflows, self.bus, self.settings.scheduler, self.supervisor
        )
        self._scheduler.lane.keep_alive = self.settings.speculation.keep_alive
        await self._scheduler.start()
        self._sessions = SessionEngine(
            db=self._db,
            scheduler=self._scheduler,
            store=self._store,
            bus=self.bus,
            settings=self.settings,
            pipeline=self.pipeline,
        )
        await self._sessions.start()
        self.supervisor.spawn("health-snapshot", self._keep_health_snapshot)
        self._started = True
        log.info("orchestrator started: %d nodes", len(config.nodes))

    async def fence(self) -> None:
        """Stop driving GPUs at once (this instance lost its leadership); `stop` still follows to close the rest."""
        if self._scheduler is not None:
            await self._scheduler.stop()

    async def stop(self) -> None:
        """Stop every task; unfinished jobs stay in the DB for the next start."""
        if self._sessions is not None:
            await self._sessions.stop()
            self._sessions = None
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self.registry is not None:
            await self.registry.stop()
        await self.supervisor.stop()
        if self._started:
            await self._write_health_snapshot()  # the last word, for `vibes doctor` after this process
        await self._db.close()
        if self.farm is not None:
            await self.farm.stop()
            self.farm = None
        self._started = False

    async def _llm_image(self, path: Path, max_side: int) -> bytes:
        # Downscaled JPEG for the vision model, made off the event loop by the store.
        return await self._store.jpeg(path, max_side=max_side, quality=85)

    @property
    def _sched(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("orchestrator not started")
        return self._scheduler

    @property
    def _engine(self) -> SessionEngine:
        if self._sessions is None:
            raise RuntimeError("orchestrator not started")
        return self._sessions

    # ------------------------------------------------------------------ batches

    def build_specs(self, req: GenerateRequest) -> list[JobSpec]:
        """Turn a request into job specs, checking it against the limits."""
        lim = self.settings.limits
        check_prompt(req.prompt, lim)
        check_negative(req.negative_prompt, lim)
        check_count(req.count, lim)
        side = req.family.native_size
        width, height = req.width or side, req.height or side
        for name, v in (("width", width), ("height", height)):
            if not 64 <= v <= lim.max_side or v % 8:
                raise InputError(name, user_message=f"{name} must be a multiple of 8 between 64 and {lim.max_side}.")
        steps = req.steps or (10 if req.task is TaskKind.DRAFT and req.family is Family.SD15 else 20)
        if not 1 <= steps <= lim.max_steps:
            raise InputError("steps", user_message=f"Steps must be between 1 and {lim.max_steps}.")
        defaults = sampling_defaults(req.family)
        cfg = req.cfg if req.cfg is not None else defaults.cfg
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
                scheduler=defaults.scheduler,
            )
            specs.append(JobSpec(params=params, task=req.task, user_id=req.user_id, index=i + 1))
        return specs

    async def generate(self, req: GenerateRequest) -> str:
        """Queue one batch; returns its id."""
        batch_id, _ = await self._sched.submit(self.build_specs(req))
        return batch_id

    async def submit(self, specs: Sequence[JobSpec], *, batch_id: str | None = None) -> str:
        """Queue job specs as one batch (a new id unless given); returns its id."""
        batch_id, _ = await self._sched.submit(specs, batch_id=batch_id)
        return batch_id

    async def wait_batch(self, batch_id: str) -> BatchResult:
        """Wait until every job of the batch is done, failed or cancelled."""
        return await self._sched.wait_batch(batch_id)

    async def cancel_batch(self, batch_id: str) -> int:
        """Cancel the batch's unfinished jobs; returns how many were cancelled."""
        return await self._sched.cancel_batch(batch_id)

    # ------------------------------------------------------------------ farm

    def farm_status(self) -> list[NodeStatus]:
        """Every node, healthy or not, with live stats."""
        if self.registry is None:
            return []
        out = []
        for node in self.registry:
            st = node.stats
            in_flight = len(self._scheduler.jobs_in_flight(node.id)) if self._scheduler is not None else 0
            fams = [f for f in (Family.SD15, Family.SDXL, Family.FLUX) if node.config.can_run(f.value)]
            out.append(
                NodeStatus(
                    id=node.id,
                    name=node.config.name,
                    tier=node.config.tier.value,
                    healthy=st.healthy,
                    capabilities=node.config.capabilities,
                    loaded_checkpoint=st.loaded_checkpoint,
                    kept_checkpoint=st.kept_checkpoint,
                    queue_length=max(st.queue_length, in_flight),
                    in_flight=in_flight,
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
        sched = self._scheduler
        restarts = {t.name: t.restarts for t in self.supervisor.status() if t.restarts}
        spec = self.speculation_stats()
        return FarmHealth(
            task_restarts=self.supervisor.total_restarts,
            restarts_by_task=restarts,
            dead_tasks=tuple(self.supervisor.dead()),
            reconciler_heals=sched.reconciler.total_heals if sched else 0,
            heals_by_kind=dict(sched.reconciler.heals) if sched else {},
            backups_started=sched.backups_started if sched else 0,
            backups_won=sched.backups_won if sched else 0,
            db_retries=sched.table.db_retries if sched else 0,
            speculative_useful_s=spec.useful_gpu_s,
            speculative_wasted_s=spec.wasted_gpu_s,
            taken_at=time.time(),
        )

    def speculation_stats(self) -> SpeculationStats:
        """Speculative work since start (voting time): useful and wasted GPU-seconds, jobs adopted and cancelled."""
        sched = self._scheduler
        return sched.speculation.snapshot(sched.lane.warmer.done) if sched is not None else SpeculationStats()

    async def set_server_speculation(self, server_id: str, enabled: bool) -> None:
        """Turn speculative stages on or off for one server (a Discord guild); the global setting still rules."""
        await self._db.set_ref(speculation.SERVER_REF, speculation.server_key(server_id), "on" if enabled else "off")

    async def server_speculation(self, server_id: str) -> bool:
        """Whether a server allows speculative stages (on unless turned off there)."""
        return await speculation.server_allows(self._db, server_id)

    async def _keep_health_snapshot(self) -> None:
        # `vibes doctor` runs in another process: it reads the running engine's health from the DB.
        while True:
            await self._write_health_snapshot()
            await asyncio.sleep(HEALTH_SNAPSHOT_S)

    async def _write_health_snapshot(self) -> None:
        try:
            await self._db.set_ref(HEALTH_REF[0], HEALTH_REF[1], self.farm_health().to_json())
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

    # ------------------------------------------------------------------ sessions: start and read

    async def create_session(self, req: SessionRequest) -> Session:
        """Start a session (Draft Grid, Concept Builder or Explorer) with its first stage queued."""
        return await self._engine.factory.create(req)

    async def variations(self, user_id: str, image_id: str) -> Session:
        """A new Explorer session around a delivered image."""
        return await self._engine.factory.variations(user_id, image_id)

    async def branch(self, session_id: str, user_id: str, image_id: str) -> Session:
        """A new Draft Grid that continues from an image of a session: its next stage all grows from it."""
        return await self._engine.factory.branch(session_id, user_id, image_id)

    async def session(self, session_id: str) -> Session:
        """The session as it is now (SessionNotFound if there is none)."""
        return await self._engine.reader.session(session_id)

    async def current_stage(self, session_id: str) -> StageView:
        """The session's current stage or round."""
        return await self._engine.reader.current_stage(session_id)

    async def stage(self, stage_id: str) -> StageView:
        """Any stage by id."""
        return await self._engine.reader.stage(stage_id)

    async def image_info(self, image_id: str) -> ImageInfo:
        """Prompt, seed, node, time, size, checkpoint and ancestors of a delivered image."""
        return await self._engine.reader.image_info(image_id)

    async def active_sessions(self) -> list[Session]:
        """Sessions still generating or voting."""
        return await self._engine.reader.active_sessions()

    # ------------------------------------------------------------------ sessions: who may do what

    @staticmethod
    def may_vote(session: Session, user_id: str) -> bool:
        """Open sessions: anyone; private ones: the owner and invited members."""
        return access.may_vote(session, user_id)

    @staticmethod
    def may_advance(session: Session, user_id: str) -> bool:
        """The owner, or anyone in an open session."""
        return access.may_advance(session, user_id)

    @staticmethod
    def check_vote(session: Session, user_id: str) -> None:
        """NotAllowed / InvalidState (with a message for the user) unless `user_id` may vote in the session now."""
        access.check_vote(session, user_id)

    @staticmethod
    def check_advance(session: Session, user_id: str, what: str = "continue this session") -> None:
        """NotAllowed unless `user_id` may move the session on; `what` completes "Only the owner can ..."."""
        access.check_advance(session, user_id, what)

    async def invite(self, session_id: str, by_user: str, user_id: str) -> Session:
        """Let someone vote in a private session (owner only)."""
        return await self._engine.access.invite(session_id, by_user, user_id)

    async def set_visibility(self, session_id: str, by_user: str, visibility: Visibility) -> Session:
        """Open or close the session to everyone (owner only)."""
        return await self._engine.access.set_visibility(session_id, by_user, visibility)

    # ------------------------------------------------------------------ sessions: votes and moves

    async def vote(self, session_id: str, image_id: str, user_id: str, value: int | None) -> VoteResult:
        """Select (+1), reject (-1) or withdraw (None) one person's vote on an image of the current stage."""
        return await self._engine.ballots.vote(session_id, image_id, user_id, value)

    async def toggle(self, session_id: str, image_id: str, user_id: str, value: int) -> VoteResult:
        """Press Select (or Reject) once to vote, twice to withdraw."""
        return await self._engine.ballots.vote(session_id, image_id, user_id, value, toggle=True)

    async def set_rules(
        self, session_id: str, by_user: str, *, quorum: int | None = None, deadline_s: float | None = None
    ) -> Session:
        """Advance automatically once `quorum` people voted, or `deadline_s` after a stage opens (owner only)."""
        return await self._engine.ballots.set_rules(session_id, by_user, quorum=quorum, deadline_s=deadline_s)

    async def advance(self, session_id: str, user_id: str) -> StageView:
        """Next stage from the selection (Concept Builder / Explorer: pick the best-voted image)."""
        return await self._engine.moves.advance(session_id, user_id)

    async def regenerate(self, session_id: str, user_id: str) -> StageView:
        """Run the current stage again with new seeds (and the current prompt)."""
        return await self._engine.moves.regenerate(session_id, user_id)

    async def back(self, session_id: str, user_id: str) -> StageView:
        """Make the previous stage current again, with its images and votes."""
        return await self._engine.moves.back(session_id, user_id)

    async def end(self, session_id: str, user_id: str) -> Session:
        """End the session (owner only); a stage still rendering is cancelled."""
        return await self._engine.moves.end(session_id, user_id)

    async def concept_set_field(self, session_id: str, user_id: str, value: str) -> StageView:
        """Lock the current Concept Builder field with the user's own value and move to the next field."""
        return await self._engine.moves.concept_set_field(session_id, user_id, value)

    async def pick(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Concept Builder: lock the field from that image's option; Explorer: next round around that image."""
        return await self._engine.moves.pick(session_id, user_id, image_id)

    async def upscale(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Upscale any delivered image of the session as a one-image stage (InvalidState if one exists)."""
        return await self._engine.moves.upscale(session_id, user_id, image_id)

    async def existing_upscale(self, session_id: str, image_id: str) -> StageView | None:
        """The upscale of this image that exists or is rendering, if any (a second would be identical)."""
        return await self._engine.moves.existing_upscale(session_id, image_id)

    # ------------------------------------------------------------------ sessions: feedback

    async def refine(self, session_id: str, user_id: str, feedback: str) -> RefineResult:
        """Turn feedback into a suggested prompt (kept pending, not applied) using the current votes."""
        return await self._engine.feedback.refine(session_id, user_id, feedback)

    async def apply_suggestion(
        self,
        session_id: str,
        user_id: str,
        prompt: str | None = None,
        negative: str | None = None,
        *,
        require_pending: bool = False,
    ) -> Session:
        """Use the pending suggestion (or the user's edit of it, which needs it still pending) as the next prompt."""
        return await self._engine.feedback.apply_suggestion(
            session_id, user_id, prompt, negative, require_pending=require_pending
        )

    async def discard_suggestion(self, session_id: str, user_id: str) -> None:
        """Drop the pending suggestion."""
        await self._engine.feedback.discard_suggestion(session_id, user_id)

    async def undo(self, session_id: str, user_id: str) -> Session:
        """Go back to the prompt before the last applied suggestion."""
        return await self._engine.feedback.undo(session_id, user_id)

    # ------------------------------------------------------------------ front ends' message references

    async def message_ref(self, session_id: str, key: str) -> str | None:
        """What a front end stored under `key` for a session (a message or thread id), if anything."""
        return await self._db.get_ref(session_id, key)

    async def set_message_ref(self, session_id: str, key: str, value: str) -> None:
        """Store a front end's reference (a message or thread id) under `key` for a session."""
        await self._db.set_ref(session_id, key, value)

    async def message_refs(self, session_id: str, prefix: str = "") -> dict[str, str]:
        """Every reference of a session whose key starts with `prefix`, by key."""
        return await self._db.refs(session_id, prefix)

    async def session_for_ref(self, key: str, value: str) -> str | None:
        """The session that stored `value` under `key` (e.g. the session of a thread), if one did."""
        return await self._db.session_for_ref(key, value)

    # ------------------------------------------------------------------ image files

    async def image_jpeg(self, path: str, *, max_side: int, quality: int, max_bytes: int | None = None) -> bytes:
        """A stored image as a JPEG within `max_side` pixels (and `max_bytes`), made off the event loop."""
        return await self._store.jpeg(Path(path), max_side=max_side, quality=quality, max_bytes=max_bytes)

    async def full_size_image(self, path: str, limit: int) -> FullImage:
        """The full-size PNG, or a high-quality JPEG of the same pixels when the PNG is over `limit` bytes."""
        data = await self._store.read(Path(path))
        if len(data) <= limit:
            return FullImage(data, "png")
        return FullImage(await self._store.jpeg(Path(path), max_side=16384, quality=92, max_bytes=limit), "jpg")

    async def contact_sheet(self, session_id: str, name: str, paths: Sequence[Path], labels: Sequence[str]) -> Path:
        """A contact sheet of images, saved in the session's image folder as `name`.png."""
        out = self._store.images_dir / session_id / f"{name}.png"
        return await self._store.contact_sheet(list(paths), out, labels=list(labels))
