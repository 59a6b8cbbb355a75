"""
settings.yaml: every section but the nodes, as frozen dataclasses with their defaults, parsed and checked.

Unknown keys are errors and missing ones take the defaults below; VIBES_DATA overrides storage.data_dir.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.fields import _At, _bool, _enum, _family_map, _int, _num, _pos_int, _str
from orchestrator.db.url import is_postgres_url
from orchestrator.models import Family, TaskKind

DEFAULT_CHECKPOINTS: dict[Family, str] = {
    Family.SD15: "v1-5-pruned-emaonly.safetensors",
    Family.SDXL: "sd_xl_base_1.0.safetensors",
    Family.PONY: "sd_xl_base_1.0.safetensors",
    Family.ILLUSTRIOUS: "sd_xl_base_1.0.safetensors",
    Family.FLUX: "flux1-dev-fp8.safetensors",
}
DEFAULT_UPSCALE_MODEL = "4x-UltraSharp.pth"


@dataclass(frozen=True, slots=True)
class StageRecipe:
    """One Draft Grid stage: how many images and how they are rendered."""

    name: str
    count: int
    family: Family
    width: int
    height: int
    steps: int
    task: TaskKind
    denoise: float = 1.0
    cfg: float = 7.0
    sampler: str = "euler"
    scheduler: str = "normal"


DEFAULT_STAGES: tuple[StageRecipe, ...] = (
    StageRecipe("drafts", 20, Family.SD15, 512, 512, 10, TaskKind.DRAFT),
    StageRecipe("refined", 8, Family.SDXL, 1024, 1024, 25, TaskKind.STANDARD, denoise=0.6),
    StageRecipe("polished", 3, Family.SDXL, 1024, 1024, 35, TaskKind.QUALITY, denoise=0.45),
    StageRecipe("final", 1, Family.SDXL, 1024, 1024, 50, TaskKind.PREMIUM, denoise=0.35),
)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where images and the database live."""

    data_dir: Path = Path("data")
    #: how long a DB write waits for another connection's lock before failing (and being retried)
    busy_timeout_s: float = 30.0
    #: storage.database or $VIBES_DATABASE_URL: a SQLite file path, or a postgresql:// URL of a server several
    #: instances share; "" = vibes.db in the data dir. Kept out of repr: a URL may hold a password.
    database: str = field(default="", repr=False)

    @property
    def database_target(self) -> Path | str:
        """What the Database opens: the PostgreSQL URL, or the SQLite file."""
        return self.database if is_postgres_url(self.database) else self.db_path

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def db_path(self) -> Path:
        """The SQLite file: storage.database when it is a path, else vibes.db in the data dir."""
        if self.database and not is_postgres_url(self.database):
            return Path(self.database)
        return self.data_dir / "vibes.db"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Health checks of the nodes."""

    interval_s: float = 10.0
    timeout_s: float = 5.0
    failures_to_down: int = 2


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Retries, timeouts and per-node depth."""

    max_attempts: int = 3
    #: prompts a node holds at once (one running + queued ones to hide transfer time)
    node_depth: int = 2
    #: a job that shows no sign of life (no WS message) for this long is taken away from its node
    stall_timeout_s: float = 120.0
    #: hard limit per job by task; None means default_timeout_s
    job_timeout_s: Mapping[TaskKind, float | None] = field(default_factory=dict)
    default_timeout_s: float = 900.0
    http_timeout_s: float = 30.0
    #: a job's whole life on a node (upload, submit, run, download, store) must end within its estimate (the
    #: node's queue ahead of it included) times this factor, but never sooner than the floor nor later than the cap
    deadline_factor: float = 4.0
    deadline_floor_s: float = 60.0
    deadline_cap_s: float = 1800.0
    #: the reconciler compares the DB with memory this often (and on every node up/down)
    reconcile_interval_s: float = 5.0
    #: a running job this many times past its estimate gets a backup copy on an idle capable node
    backup_after_factor: float = 2.0
    #: backup copies on or off (first result wins, the other is interrupted)
    backups: bool = True

    def timeout_for(self, task: TaskKind) -> float:
        value = self.job_timeout_s.get(task)
        return self.default_timeout_s if value is None else value


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Bounds on one HTTP transfer with a node: the body size accepted and the time the whole call may take."""

    #: a body from a node (an image from /view above all) larger than this is abandoned unread
    max_mib: float = 64.0
    #: one whole call, body included, must finish within this (httpx's own timeout is per read)
    timeout_s: float = 300.0

    @property
    def max_bytes(self) -> int:
        return int(self.max_mib * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The simulated farm."""

    time_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class FunnelSettings:
    """Session flows."""

    stages: tuple[StageRecipe, ...] = DEFAULT_STAGES
    final_upscale: bool = True
    prune_unselected: bool = False
    concept_options: int = 5
    explorer_count: int = 6


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """The Ollama feedback pipeline."""

    enabled: bool = True
    #: None: the ollama client's own default (OLLAMA_HOST or localhost:11434)
    host: str | None = None
    interpreter_model: str = "hermes3:8b"
    engineer_model: str = "phi4:14b"
    vision_model: str = "minicpm-v"
    timeout_s: float = 30.0
    vision_max_images: int = 3
    vision_max_side: int = 512


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    """Discord front-end options."""

    progress_interval_s: float = 1.5
    thread_auto_archive_minutes: int = 1440
    #: stop editing messages older than this (Discord error 30046 after an hour)
    max_edit_age_s: float = 3300.0
    #: show the newest in-progress preview a node sends on the stage's progress message
    live_previews: bool = True
    #: a gallery or final post Discord refused (5xx, 413, a timeout) is tried again this many times
    post_retries: int = 4
    #: the first wait before such a retry; each next wait doubles (capped at a minute)
    post_retry_s: float = 2.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Per-user caps and input bounds."""

    max_active_sessions_per_user: int = 3
    max_queued_images_per_user: int = 60
    max_count: int = 40
    max_prompt_chars: int = 1500
    #: negative prompts on every path: `--no`, the `negative` option, the Edit modal, merged vision traits
    max_negative_chars: int = 500
    max_side: int = 2048
    max_steps: int = 150
    #: an uploaded image (/explore): bytes (from the attachment's metadata, before downloading) and pixels (from
    #: its header, before decoding); PNG, JPEG and WebP only
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 16_000_000
    #: what one member's kept uploads may take on disk together
    upload_quota_bytes: int = 200 * 1024 * 1024
    #: one member's wait between two feedback replies, and between two session starts
    feedback_cooldown_s: float = 20.0
    session_cooldown_s: float = 30.0
    #: feedback refines that may use the language model at once, for the whole bot (the rest wait in line)
    max_concurrent_refines: int = 1


# --- leadership: active/standby instances over a PostgreSQL database
@dataclass(frozen=True, slots=True)
class LeadershipSettings:
    """Active/standby over PostgreSQL: how fast a lost lock is noticed, and how long a new holder waits to act."""

    #: the active instance checks its lock connection this often (and gives the check as long to answer)
    keepalive_s: float = 1.0
    #: a standby tries to take the lock this often
    poll_s: float = 0.5
    #: the longest an instance that lost its lock may take to stop driving GPUs and leave Discord
    fence_s: float = 1.0
    #: a new active instance waits this long after taking the lock before it acts
    grace_s: float = 3.5


def _leadership(at: _At) -> LeadershipSettings:
    at.only({"keepalive_s", "poll_s", "fence_s", "grace_s"})
    d = LeadershipSettings()
    values = {k: at.get(k, _num, getattr(d, k)) for k in ("keepalive_s", "poll_s", "fence_s", "grace_s")}
    for k, v in values.items():
        if v <= 0:
            raise at.child(k).fail("expected a number > 0")
    out = LeadershipSettings(**values)
    # An old active instance notices a lost lock within two keepalives and stops within fence_s.
    if out.grace_s <= 2 * out.keepalive_s + out.fence_s:
        raise at.child("grace_s").fail("must be longer than 2 x keepalive_s + fence_s, or two instances could overlap")
    return out


@dataclass(frozen=True, slots=True)
class SpeculationSettings:
    """Voting time: warm the next stage's checkpoints and run what Continue would ask for, on idle GPUs only."""

    #: speculative stages on or off for the whole bot (a server can also turn them off for itself)
    enabled: bool = True
    #: the prediction of the next stage must stay the same this long before its jobs are submitted
    settle_s: float = 3.0
    #: load the next stage's checkpoints on idle nodes when a stage opens for votes
    warmup: bool = True
    #: idle-lane prompts and upscales keep the checkpoint of a node's last real work in ComfyUI's cache
    keep_alive: bool = True
    #: a GPU gets speculative work once the prediction has held for this many times the GPU's run time of one of
    #: the next stage's jobs (1: as likely as not to outlive the job; 0: every GPU at settle_s)
    ramp: float = 1.0


@dataclass(frozen=True, slots=True)
class Settings:
    """settings.yaml: everything but the nodes."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    checkpoints: Mapping[Family, str] = field(default_factory=lambda: dict(DEFAULT_CHECKPOINTS))
    upscale_model: str = DEFAULT_UPSCALE_MODEL
    health: HealthSettings = field(default_factory=HealthSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    funnel: FunnelSettings = field(default_factory=FunnelSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    leadership: LeadershipSettings = field(default_factory=LeadershipSettings)
    speculation: SpeculationSettings = field(default_factory=SpeculationSettings)

    def checkpoint_for(self, family: Family) -> str:
        return self.checkpoints.get(family, DEFAULT_CHECKPOINTS[family])


# --------------------------------------------------------------------------- parsing


def _database(at: _At) -> str:
    """A SQLite path or a postgresql:// URL ("" when unset); the value is never echoed: a URL may hold a password."""
    if at.value is None:
        return ""
    value = _str(at).strip()
    if "://" in value and not is_postgres_url(value):
        scheme = value.split("://", 1)[0]
        raise at.fail(f"expected a SQLite file path or a postgresql:// URL, not a {scheme}:// URL")
    return value


def _stage(at: _At) -> StageRecipe:
    at.only({"name", "count", "family", "width", "height", "steps", "task", "denoise", "cfg", "sampler", "scheduler"})
    denoise = at.get("denoise", _num, 1.0)
    if denoise > 1.0:
        raise at.child("denoise").fail(f"expected 0..1, got {denoise}")
    return StageRecipe(
        name=at.need("name", _str),
        count=at.need("count", _pos_int),
        family=at.need("family", _enum(Family)),
        width=at.need("width", _pos_int),
        height=at.need("height", _pos_int),
        steps=at.need("steps", _pos_int),
        task=at.need("task", _enum(TaskKind)),
        denoise=denoise,
        cfg=at.get("cfg", _num, 7.0),
        sampler=at.get("sampler", _str, "euler"),
        scheduler=at.get("scheduler", _str, "normal"),
    )


def _task_timeouts(at: _At) -> dict[TaskKind, float | None]:
    out: dict[TaskKind, float | None] = {}
    for k in at.mapping():
        out[_enum(TaskKind)(_At(at.file, f"{at.key}.{k}", k))] = _num(at.child(str(k)))
    return out


def parse_settings(doc: Any, file: str = "settings.yaml", env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings.yaml (already loaded); unknown keys are errors, missing ones take defaults."""
    env = os.environ if env is None else env
    root = _At(file, "", doc if doc is not None else {})
    root.mapping()
    root.only(
        {
            "storage",
            "checkpoints",
            "upscale_model",
            "health",
            "scheduler",
            "transfer",
            "sim",
            "funnel",
            "llm",
            "discord",
            "limits",
            "leadership",
            "speculation",
        }
    )
    d = Settings()

    st = root.child("storage")
    st.only({"data_dir", "busy_timeout_s", "database"})
    data_dir = Path(env.get("VIBES_DATA") or st.get("data_dir", _str, str(d.storage.data_dir)))
    # storage.database, overridden by $VIBES_DATABASE_URL
    database = _database(
        _At("environment", "VIBES_DATABASE_URL", env["VIBES_DATABASE_URL"])
        if env.get("VIBES_DATABASE_URL")
        else st.child("database")
    )

    h = root.child("health")
    h.only({"interval_s", "timeout_s", "failures_to_down"})
    sc = root.child("scheduler")
    sc.only(
        {
            "max_attempts",
            "node_depth",
            "stall_timeout_s",
            "job_timeout_s",
            "default_timeout_s",
            "http_timeout_s",
            "deadline_factor",
            "deadline_floor_s",
            "deadline_cap_s",
            "reconcile_interval_s",
            "backup_after_factor",
            "backups",
        }
    )
    tr = root.child("transfer")
    tr.only({"max_mib", "timeout_s"})
    transfer = TransferSettings(
        max_mib=tr.get("max_mib", _num, d.transfer.max_mib),
        timeout_s=tr.get("timeout_s", _num, d.transfer.timeout_s),
    )
    if transfer.max_bytes < 1024 * 1024:
        raise tr.child("max_mib").fail("expected at least 1 (MiB)")
    if transfer.timeout_s <= 0:
        raise tr.child("timeout_s").fail("expected a number > 0")
    sim = root.child("sim")
    sim.only({"time_scale"})
    fu = root.child("funnel")
    fu.only({"stages", "final_upscale", "prune_unselected", "concept_options", "explorer_count"})
    llm = root.child("llm")
    llm.only(
        {
            "enabled",
            "host",
            "interpreter_model",
            "engineer_model",
            "vision_model",
            "timeout_s",
            "vision_max_images",
            "vision_max_side",
        }
    )
    dc = root.child("discord")
    dc.only(
        {
            "progress_interval_s",
            "thread_auto_archive_minutes",
            "max_edit_age_s",
            "live_previews",
            "post_retries",
            "post_retry_s",
        }
    )
    lim = root.child("limits")
    lim.only(
        {
            "max_active_sessions_per_user",
            "max_queued_images_per_user",
            "max_count",
            "max_prompt_chars",
            "max_negative_chars",
            "max_side",
            "max_steps",
            "max_upload_bytes",
            "max_upload_pixels",
            "upload_quota_bytes",
            "feedback_cooldown_s",
            "session_cooldown_s",
            "max_concurrent_refines",
        }
    )

    spec = root.child("speculation")
    spec.only({"enabled", "settle_s", "warmup", "keep_alive", "ramp"})
    settle_s = spec.get("settle_s", _num, d.speculation.settle_s)
    if settle_s < 0:
        raise spec.child("settle_s").fail("expected a number >= 0")
    ramp = spec.get("ramp", _num, d.speculation.ramp)
    if ramp < 0:
        raise spec.child("ramp").fail("expected a number >= 0")

    checkpoints = dict(DEFAULT_CHECKPOINTS)
    empty: dict[Family, str] = {}
    checkpoints.update(root.get("checkpoints", _family_map(_str), empty))
    stages = fu.get("stages", lambda a: tuple(_stage(s) for s in a.items()), d.funnel.stages)
    if not stages:
        raise fu.child("stages").fail("expected at least one stage")
    archive = dc.get("thread_auto_archive_minutes", _int, d.discord.thread_auto_archive_minutes)
    if archive not in (60, 1440, 4320, 10080):
        raise dc.child("thread_auto_archive_minutes").fail("expected one of 60, 1440, 4320, 10080")
    post_retries = dc.get("post_retries", _int, d.discord.post_retries)
    if post_retries < 0:
        raise dc.child("post_retries").fail("expected an integer >= 0")
    time_scale = sim.get("time_scale", _num, d.sim.time_scale)
    if time_scale <= 0:
        raise sim.child("time_scale").fail("expected a number > 0")

    return Settings(
        storage=StorageSettings(
            data_dir=data_dir,
            busy_timeout_s=st.get("busy_timeout_s", _num, d.storage.busy_timeout_s),
            database=database,
        ),
        checkpoints=checkpoints,
        upscale_model=root.get("upscale_model", _str, d.upscale_model),
        health=HealthSettings(
            interval_s=h.get("interval_s", _num, d.health.interval_s),
            timeout_s=h.get("timeout_s", _num, d.health.timeout_s),
            failures_to_down=h.get("failures_to_down", _pos_int, d.health.failures_to_down),
        ),
        scheduler=SchedulerSettings(
            max_attempts=sc.get("max_attempts", _pos_int, d.scheduler.max_attempts),
            node_depth=sc.get("node_depth", _pos_int, d.scheduler.node_depth),
            stall_timeout_s=sc.get("stall_timeout_s", _num, d.scheduler.stall_timeout_s),
            job_timeout_s=sc.get("job_timeout_s", _task_timeouts, {}),
            default_timeout_s=sc.get("default_timeout_s", _num, d.scheduler.default_timeout_s),
            http_timeout_s=sc.get("http_timeout_s", _num, d.scheduler.http_timeout_s),
            deadline_factor=sc.get("deadline_factor", _num, d.scheduler.deadline_factor),
            deadline_floor_s=sc.get("deadline_floor_s", _num, d.scheduler.deadline_floor_s),
            deadline_cap_s=sc.get("deadline_cap_s", _num, d.scheduler.deadline_cap_s),
            reconcile_interval_s=sc.get("reconcile_interval_s", _num, d.scheduler.reconcile_interval_s),
            backup_after_factor=sc.get("backup_after_factor", _num, d.scheduler.backup_after_factor),
            backups=sc.get("backups", _bool, d.scheduler.backups),
        ),
        transfer=transfer,
        sim=SimSettings(time_scale=time_scale),
        funnel=FunnelSettings(
            stages=stages,
            final_upscale=fu.get("final_upscale", _bool, d.funnel.final_upscale),
            prune_unselected=fu.get("prune_unselected", _bool, d.funnel.prune_unselected),
            concept_options=fu.get("concept_options", _pos_int, d.funnel.concept_options),
            explorer_count=fu.get("explorer_count", _pos_int, d.funnel.explorer_count),
        ),
        llm=LlmSettings(
            enabled=llm.get("enabled", _bool, d.llm.enabled),
            host=llm.get("host", _str, None),
            interpreter_model=llm.get("interpreter_model", _str, d.llm.interpreter_model),
            engineer_model=llm.get("engineer_model", _str, d.llm.engineer_model),
            vision_model=llm.get("vision_model", _str, d.llm.vision_model),
            timeout_s=llm.get("timeout_s", _num, d.llm.timeout_s),
            vision_max_images=llm.get("vision_max_images", _pos_int, d.llm.vision_max_images),
            vision_max_side=llm.get("vision_max_side", _pos_int, d.llm.vision_max_side),
        ),
        discord=DiscordSettings(
            progress_interval_s=dc.get("progress_interval_s", _num, d.discord.progress_interval_s),
            thread_auto_archive_minutes=archive,
            max_edit_age_s=dc.get("max_edit_age_s", _num, d.discord.max_edit_age_s),
            live_previews=dc.get("live_previews", _bool, d.discord.live_previews),
            post_retries=post_retries,
            post_retry_s=dc.get("post_retry_s", _num, d.discord.post_retry_s),
        ),
        limits=LimitSettings(
            max_active_sessions_per_user=lim.get(
                "max_active_sessions_per_user", _pos_int, d.limits.max_active_sessions_per_user
            ),
            max_queued_images_per_user=lim.get(
                "max_queued_images_per_user", _pos_int, d.limits.max_queued_images_per_user
            ),
            max_count=lim.get("max_count", _pos_int, d.limits.max_count),
            max_prompt_chars=lim.get("max_prompt_chars", _pos_int, d.limits.max_prompt_chars),
            max_negative_chars=lim.get("max_negative_chars", _pos_int, d.limits.max_negative_chars),
            max_side=lim.get("max_side", _pos_int, d.limits.max_side),
            max_steps=lim.get("max_steps", _pos_int, d.limits.max_steps),
            max_upload_bytes=lim.get("max_upload_bytes", _pos_int, d.limits.max_upload_bytes),
            max_upload_pixels=lim.get("max_upload_pixels", _pos_int, d.limits.max_upload_pixels),
            upload_quota_bytes=lim.get("upload_quota_bytes", _pos_int, d.limits.upload_quota_bytes),
            feedback_cooldown_s=lim.get("feedback_cooldown_s", _num, d.limits.feedback_cooldown_s),
            session_cooldown_s=lim.get("session_cooldown_s", _num, d.limits.session_cooldown_s),
            max_concurrent_refines=lim.get("max_concurrent_refines", _pos_int, d.limits.max_concurrent_refines),
        ),
        leadership=root.get("leadership", _leadership, d.leadership),
        speculation=SpeculationSettings(
            enabled=spec.get("enabled", _bool, d.speculation.enabled),
            settle_s=settle_s,
            warmup=spec.get("warmup", _bool, d.speculation.warmup),
            keep_alive=spec.get("keep_alive", _bool, d.speculation.keep_alive),
            ramp=ramp,
        ),
    )
