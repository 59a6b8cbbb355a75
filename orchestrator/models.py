"""Domain objects shared by every part of the orchestrator and its front ends."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


class Tier(StrEnum):
    """A node's hardware class, strongest first."""

    PREMIUM = "premium"  #: the strongest GPU; runs every family and upscales
    QUALITY = "quality"  #: strong SDXL card
    STANDARD = "standard"  #: mid-range SDXL card
    DRAFT = "draft"  #: small card, SD 1.5 drafts only

    @property
    def rank(self) -> int:
        """0 for the strongest tier."""
        return list(Tier).index(self)


class Family(StrEnum):
    """A model family: decides the template, the checkpoint and the prompt style."""

    SD15 = "sd15"
    SDXL = "sdxl"
    PONY = "pony"
    ILLUSTRIOUS = "illustrious"
    FLUX = "flux"

    @property
    def uses_tags(self) -> bool:
        """True for families prompted with comma-separated tags and (word:1.2) weights."""
        return self is not Family.FLUX

    @property
    def speed_family(self) -> Family:
        """The family whose measured speed stands in for this one (pony/illustrious are SDXL models)."""
        return Family.SDXL if self in (Family.PONY, Family.ILLUSTRIOUS) else self

    @property
    def native_size(self) -> int:
        """The side in pixels the family was trained at."""
        return 512 if self is Family.SD15 else 1024


#: the seeds we pick and users may give: 0..2**32-1, as most front ends show them (a graph takes up to 2**64-1)
MAX_SEED = 2**32 - 1


class TaskKind(StrEnum):
    """What a job is for; decides priority and which tiers are preferred."""

    DRAFT = "draft"  #: fast exploration
    STANDARD = "standard"  #: refined stage
    QUALITY = "quality"  #: polished stage
    PREMIUM = "premium"  #: the final image
    UPSCALE = "upscale"  #: model upscale of a finished image

    @property
    def priority(self) -> int:
        """Higher runs first: final > polished > refined > draft; upscales ride with finals."""
        return {
            TaskKind.DRAFT: 0,
            TaskKind.STANDARD: 1,
            TaskKind.QUALITY: 2,
            TaskKind.PREMIUM: 3,
            TaskKind.UPSCALE: 3,
        }[self]


class Mode(StrEnum):
    """The shape of the graph a job runs."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"


class JobStatus(StrEnum):
    """Where a job is in its life; transitions live in one function in job_state.py."""

    QUEUED = "queued"  #: waiting for a node
    SUBMITTED = "submitted"  #: accepted by a node's queue (prompt_id known)
    RUNNING = "running"  #: the node is executing it
    DONE = "done"  #: image stored, event published
    FAILED = "failed"  #: gave up; error says why
    CANCELLED = "cancelled"  #: cancelled by a user or session

    @property
    def terminal(self) -> bool:
        """True when the job will never change again."""
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def active(self) -> bool:
        """True while a node holds the job."""
        return self in (JobStatus.SUBMITTED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """One LoRA to chain after the checkpoint loader."""

    name: str
    strength_model: float = 1.0
    strength_clip: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """Parse `NAME` or `NAME:WEIGHT` (weight applies to model and clip)."""
        name, sep, weight = text.rpartition(":")
        if not sep:
            return cls(name=text.strip())
        try:
            w = float(weight)
        except ValueError:
            return cls(name=text.strip())
        if not name.strip():
            raise ValueError(f"LoRA {text!r}: expected NAME or NAME:WEIGHT")
        return cls(name=name.strip(), strength_model=w, strength_clip=w)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Everything a workflow template needs to render one image."""

    prompt: str
    family: Family = Family.SD15
    checkpoint: str = ""
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "euler"
    scheduler: str = "normal"
    seed: int = 0
    denoise: float = 1.0
    loras: tuple[LoraSpec, ...] = ()
    mode: Mode = Mode.TXT2IMG
    #: local path of the input image for img2img / upscale; the scheduler uploads it to the node
    init_image: str | None = None
    upscale_model: str | None = None

    def with_(self, **changes: object) -> GenerationParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def model_name(self) -> str:
        """The model file the node must hold for this job."""
        return (self.upscale_model or "") if self.mode is Mode.UPSCALE else self.checkpoint

    @property
    def loads_checkpoint(self) -> str | None:
        """The checkpoint the job's prompt loads; None for an upscale (its small model file costs no switch)."""
        return None if self.mode is Mode.UPSCALE else self.checkpoint


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A request for one image, before it becomes a job."""

    params: GenerationParams
    task: TaskKind = TaskKind.DRAFT
    session_id: str | None = None
    stage_id: str | None = None
    user_id: str | None = None
    parent_id: str | None = None
    #: position of the image in its stage (1-based), for numbered galleries
    index: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    """One image's unit of work, as the scheduler and the DB know it."""

    id: str
    batch_id: str
    spec: JobSpec
    status: JobStatus = JobStatus.QUEUED
    attempt: int = 0
    max_attempts: int = 3
    node_id: str | None = None
    prompt_id: str | None = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: nodes this job already failed on, so a retry goes elsewhere when it can
    failed_nodes: tuple[str, ...] = ()

    def with_(self, **changes: object) -> Job:
        """A copy with some fields changed (use job_state.transition for status)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def params(self) -> GenerationParams:
        """Shortcut to the render parameters."""
        return self.spec.params


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A delivered image: files on disk plus where it came from."""

    id: str
    job_id: str
    path: str
    thumbnail: str
    node_id: str
    seed: int
    seconds: float
    checkpoint: str
    width: int
    height: int
    prompt: str
    negative_prompt: str = ""
    session_id: str | None = None
    stage_id: str | None = None
    parent_id: str | None = None
    index: int = 0


@dataclass(frozen=True, slots=True)
class NodeModels:
    """The model files a ComfyUI node reports in /object_info."""

    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    upscale_models: tuple[str, ...] = ()


@dataclass(slots=True)
class NodeStats:
    """Live view of one node; the registry is its only writer (jobs on the node: the scheduler's job table)."""

    node_id: str
    healthy: bool = False
    queue_length: int = 0
    loaded_checkpoint: str | None = None
    #: a checkpoint the node's ComfyUI cache keeps besides the loaded one (an idle-lane prompt's keep-alive loader):
    #: using it again moves weights back to VRAM instead of reading the file
    kept_checkpoint: str | None = None
    #: the checkpoint of the last real (not speculative) work the node ran: the one idle-lane prompts keep alive
    last_real_checkpoint: str | None = None
    #: measured seconds per step by (speed family, megapixel bucket)
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    last_response_ms: float | None = None
    #: how much faster (<1) or slower (>1) the farm measures than the tier priors; scales unmeasured estimates
    prior_scale: float = 1.0
    #: the same, per family, from the nodes that measured that family (more accurate than the overall one)
    family_prior_scale: dict[str, float] = field(default_factory=dict)
    recent_failures: int = 0
    consecutive_failures: int = 0
    completed: int = 0
    last_error: str | None = None
    models: NodeModels = field(default_factory=NodeModels)


# ---------------------------------------------------------------------------- instances (active/standby)


class Role(StrEnum):
    """What an instance is doing."""

    STANDBY = "standby"
    ACTIVE = "active"
    #: lost its lock: stopped acting, on its way out or back to standby
    FENCED = "fenced"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """One `vibes bot` process sharing the database, as /gpus and `vibes doctor` show it."""

    id: str
    host: str
    pid: int
    role: Role
    started: dt.datetime
    last_seen: dt.datetime
    #: this instance's lock connection holds the lock (the truth; `role` is what it last reported)
    holds_lock: bool
    #: the marker the instance wrote into the image store when it became active (None before)
    store_nonce: str | None = None
