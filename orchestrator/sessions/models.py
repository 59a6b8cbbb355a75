"""Session domain objects: flows, states, roles, settings, the session itself and what front ends show."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from orchestrator.models import Family, ImageRecord, LoraSpec, Mode


class Flow(StrEnum):
    """How a session converges on an image."""

    DRAFT_GRID = "draft_grid"  #: drafts -> refined -> polished -> final, by votes
    CONCEPT = "concept"  #: one field of the intent per round, a pick locks it
    EXPLORER = "explorer"  #: variations around the current pick, round after round


class Visibility(StrEnum):
    """Who may vote in a session."""

    OPEN = "open"  #: anyone who sees it votes, and anyone may advance
    PRIVATE = "private"  #: owner and invited members only


class SessionState(StrEnum):
    """Where a session is; changes only through sessions.state.transition."""

    GENERATING = "generating"  #: the current stage's images are being rendered
    VOTING = "voting"  #: the current stage is delivered and open for votes
    FINISHED = "finished"  #: the final image is delivered (upscales and going back still work)
    ENDED = "ended"  #: ended by a user; nothing changes any more

    @property
    def active(self) -> bool:
        """True while the session is still converging."""
        return self in (SessionState.GENERATING, SessionState.VOTING)


class StageStatus(StrEnum):
    """Where a stage (or round) is."""

    GENERATING = "generating"  #: jobs queued or running
    VOTING = "voting"  #: every job is terminal; the stage is the current one and takes votes
    DONE = "done"  #: the session moved past it (its images and votes stay)
    CANCELLED = "cancelled"  #: replaced by a regenerate or abandoned by going back / ending


class StageKind(StrEnum):
    """What a stage is; kept in the stage's data as "kind"."""

    STAGE = "stage"  #: a Draft Grid recipe stage
    ROUND = "round"  #: a Concept Builder or Explorer round
    FINAL = "final"  #: the Concept Builder's final render
    UPSCALE = "upscale"  #: a one-image upscale


class Role(StrEnum):
    """A participant's role."""

    OWNER = "owner"  #: started the session
    INVITED = "invited"  #: invited by the owner; may vote in a private session
    VOTER = "voter"  #: voted in an open session


CONCEPT_FIELDS: tuple[str, ...] = ("subject", "style", "composition", "lighting", "palette", "mood")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Per-session render settings and group rules (persisted as JSON in the sessions row)."""

    #: None: each stage's recipe decides (Draft Grid: sd15 drafts, sdxl after)
    family: Family | None = None
    aspect: str = "1:1"
    #: images of the first stage (drafts / options per round / variations per round); None = settings
    count: int | None = None
    #: base seed of the first stage; None = random
    seed: int | None = None
    steps: int | None = None
    #: the user's checkpoint, used by the stages of `family` (create() sets the family when it was not given)
    checkpoint: str | None = None
    #: LoRAs chained into every sampling stage (upscales have none)
    loras: tuple[LoraSpec, ...] = ()
    #: advance automatically once this many distinct participants voted on the current stage
    quorum: int | None = None
    #: advance automatically this many seconds after the stage became votable
    deadline_s: float | None = None
    #: the Discord server (guild) the session runs in, for per-server options (speculation); None: none
    server_id: str | None = None

    def with_(self, **changes: Any) -> SessionSettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the sessions table."""
        return {
            "family": self.family.value if self.family else None,
            "aspect": self.aspect,
            "count": self.count,
            "seed": self.seed,
            "steps": self.steps,
            "checkpoint": self.checkpoint,
            "loras": [[lo.name, lo.strength_model, lo.strength_clip] for lo in self.loras],
            "quorum": self.quorum,
            "deadline_s": self.deadline_s,
            "server_id": self.server_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionSettings:
        """Inverse of to_dict; missing keys take defaults."""
        return cls(
            family=Family(d["family"]) if d.get("family") else None,
            aspect=str(d.get("aspect") or "1:1"),
            count=d.get("count"),
            seed=d.get("seed"),
            steps=d.get("steps"),
            checkpoint=d.get("checkpoint") or None,
            loras=tuple(LoraSpec(n, float(m), float(c)) for n, m, c in d.get("loras", ())),
            quorum=d.get("quorum"),
            deadline_s=d.get("deadline_s"),
            server_id=d.get("server_id"),
        )


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What starting a session asks for (flags in the prompt are parsed; the fields given here win)."""

    flow: Flow
    owner_id: str
    prompt: str
    #: None: the prompt's --no flag, else none
    negative: str | None = None
    family: Family | None = None
    count: int | None = None
    aspect: str | None = None
    private: bool = False
    #: the user's own image, copied into the data directory (Draft Grid: img2img drafts; Explorer: the first pick)
    image_path: Path | None = None
    #: Concept Builder fields the user fixed from the start
    fields: Mapping[str, str] | None = None
    #: the user's checkpoint for the stages of the session's family (the family is guessed from its name if not given)
    checkpoint: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    #: the Discord server (guild) it starts in, for per-server options (speculation)
    server_id: str | None = None


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A refined prompt from the feedback pipeline, shown with Use / Edit / Discard and not applied yet."""

    prompt: str
    negative_prompt: str
    rationale: str
    source: str
    feedback: str
    by_user: str

    def to_dict(self) -> dict[str, Any]:
        """As kept in the session's data (JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Suggestion:
        """The inverse of to_dict."""
        return cls(
            prompt=str(d["prompt"]),
            negative_prompt=str(d.get("negative_prompt", "")),
            rationale=str(d.get("rationale", "")),
            source=str(d.get("source", "")),
            feedback=str(d.get("feedback", "")),
            by_user=str(d.get("by_user", "")),
        )


@dataclass(frozen=True, slots=True)
class ConceptState:
    """Concept Builder progress: locked fields and the field the current round explores."""

    locked: Mapping[str, str] = field(default_factory=dict)
    #: None once every field is locked (the final render)
    current_field: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A funnel session as front ends see it."""

    id: str
    flow: Flow
    owner_id: str
    visibility: Visibility
    state: SessionState
    prompt: str
    negative_prompt: str
    settings: SessionSettings
    stage_index: int
    stage_name: str
    stage_id: str | None
    participants: Mapping[str, Role]
    suggestion: Suggestion | None
    concept: ConceptState | None
    #: Explorer: the image the current round varies (None before the first pick of a prompt-started session)
    explorer_pick: str | None
    #: the delivered final image (or its upscale), once there is one
    final_image_id: str | None
    created_at: float

    def role_of(self, user_id: str) -> Role | None:
        """The user's role, or None for someone who has not joined."""
        return self.participants.get(user_id)


@dataclass(frozen=True, slots=True)
class StageImage:
    """One delivered image of a stage with its votes."""

    number: int
    image: ImageRecord
    tally: int
    #: user id -> +1 / -1
    votes: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class StageView:
    """A stage (or round) with its images and votes."""

    id: str
    session_id: str
    index: int
    name: str
    kind: StageKind
    #: a final render or an upscale (shown full size with final actions), not a stage to vote on
    is_final: bool
    status: StageStatus
    total: int
    delivered: int
    failed: int
    images: tuple[StageImage, ...]
    #: numbers of the images with a positive tally, best first
    selection: tuple[int, ...]
    #: Concept Builder: the field this round explores and the option each number shows
    field: str | None = None
    options: tuple[str, ...] = ()

    def image(self, number: int) -> StageImage | None:
        """The image with that number, if delivered."""
        return next((im for im in self.images if im.number == number), None)


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The outcome of a vote: the image's new tally and the voter's current vote."""

    session_id: str
    stage_id: str
    image_id: str
    number: int
    tally: int
    #: the voter's vote now (None = no vote)
    value: int | None
    selection: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LineageLink:
    """One ancestor of an image: which stage and number it was, and its seed."""

    id: str
    stage_name: str
    number: int
    seed: int


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Everything known about one image, for an Info button."""

    id: str
    prompt: str
    negative_prompt: str
    seed: int
    node_id: str
    seconds: float
    width: int
    height: int
    checkpoint: str
    family: Family
    steps: int
    denoise: float
    mode: Mode
    session_id: str | None
    stage_id: str | None
    parent_id: str | None
    #: ancestors, oldest first (the image itself is not in it)
    lineage: tuple[LineageLink, ...]
    path: str | None
    thumbnail: str
