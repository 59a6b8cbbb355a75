"""
Typed session state: the sessions and stages rows as the session engine reads and writes them.

db.py stores a session's and a stage's flow-specific state as JSON (`data`) and the settings as JSON too. The
engine parses each row once, where it is read (`SessionRecord.of` / `StageRecord.of`), works on frozen
dataclasses, and writes the record back whole (`to_row`). The JSON shape on disk is the one the engine always
wrote: a DB written by an earlier version reads the same.

A stage's status changes only through `StageRecord.moved` and the `STAGE_MOVES` table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.db import SessionRow, StageRow
from orchestrator.errors import ImGenError
from orchestrator.llm.changes import IntentEntry
from orchestrator.sessions.explorer import Pick
from orchestrator.sessions.models import (
    Flow,
    SessionSettings,
    SessionState,
    StageKind,
    StageStatus,
    Suggestion,
    Visibility,
)


class NextStep(StrEnum):
    """What a delivered current stage leads to."""

    VOTE = "vote"  #: the stage is open for votes
    UPSCALE = "upscale"  #: the final image is delivered; its upscale follows
    FINAL = "final"  #: an Explorer's upscale is delivered: the session goes on voting
    FINISHED = "finished"  #: the final image is delivered and the session is finished


@dataclass(frozen=True, slots=True)
class ParentShare:
    """A selected image and how many children it gets in the next stage (on disk: [image_id, count])."""

    image_id: str
    count: int


@dataclass(frozen=True, slots=True)
class ConceptData:
    """Concept Builder state: the locked fields and the field the current round explores (None: the final)."""

    locked: Mapping[str, str] = field(default_factory=dict)
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As kept in the session's data (JSON)."""
        return {"locked": dict(self.locked), "field": self.field}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptData:
        """The inverse of to_dict."""
        return cls({str(k): str(v) for k, v in (d.get("locked") or {}).items()}, d.get("field"))


def _concept(d: Any) -> ConceptData | None:
    return ConceptData.from_dict(d) if d else None


def _pick(d: Any) -> Pick | None:
    return Pick.from_dict(d) if d else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The flow state of the session when a stage was planned; going back to the stage restores it."""

    concept: ConceptData | None = None
    pick: Pick | None = None

    def to_dict(self) -> dict[str, Any]:
        """As kept in the stage's data under "session_data"."""
        return {
            "concept": self.concept.to_dict() if self.concept else None,
            "pick": self.pick.to_dict() if self.pick else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        """The inverse of to_dict."""
        return cls(_concept(d.get("concept")), _pick(d.get("pick")))


@dataclass(frozen=True, slots=True)
class StageData:
    """A stage's flow-specific state (the stages row's JSON `data`)."""

    kind: StageKind
    #: None until the stage is planned (StageWriter.prepare draws it)
    seed: int | None = None
    #: planned before: a replan draws a new seed instead of the session's fixed one
    regen: bool = False
    #: the stage this one follows (Back returns to it)
    prev: str | None = None
    #: Draft Grid: the selected images the stage grows from
    parents: tuple[ParentShare, ...] = ()
    #: Draft Grid: the user's image the first stage starts from
    init_image: str | None = None
    #: upscale: the image it upscales
    image_id: str | None = None
    #: Concept Builder round: the field it explores, the option each number shows, and where they came from
    field: str | None = None
    options: tuple[str, ...] = ()
    options_source: str | None = None
    #: Explorer round: what it varies, and the label under each number
    pick: Pick | None = None
    labels: tuple[str, ...] = ()
    #: when the votes close (epoch seconds), if the session has a deadline
    deadline_at: float | None = None
    snapshot: Snapshot | None = None
    #: Draft Grid: the base seed of the stage Continue starts from this one, drawn once when it opens for votes,
    #: so that what Continue will run is known (and speculated on) while people vote
    next_seed: int | None = None

    def with_(self, **changes: Any) -> StageData:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of the stages row (keys that were never set stay out, as they always did)."""
        out: dict[str, Any] = {"kind": self.kind.value, "seed": self.seed, "prev": self.prev}
        if self.regen:
            out["regen"] = True
        if self.kind is StageKind.STAGE:
            out["parents"] = [[p.image_id, p.count] for p in self.parents]
        optional: dict[str, Any] = {
            "init_image": self.init_image,
            "image_id": self.image_id,
            "field": self.field,
            "options_source": self.options_source,
            "pick": self.pick.to_dict() if self.pick else None,
            "deadline_at": self.deadline_at,
            "next_seed": self.next_seed,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.options:
            out["options"] = list(self.options)
        if self.labels:
            out["labels"] = list(self.labels)
        if self.snapshot is not None:
            out["session_data"] = self.snapshot.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageData:
        """The inverse of to_dict."""
        snapshot = d.get("session_data")
        deadline = d.get("deadline_at")
        return cls(
            kind=StageKind(d["kind"]),
            seed=int(d["seed"]) if d.get("seed") is not None else None,
            regen="regen" in d,
            prev=d.get("prev"),
            parents=tuple(ParentShare(str(i), int(n)) for i, n in d.get("parents") or ()),
            init_image=d.get("init_image"),
            image_id=d.get("image_id"),
            field=d.get("field"),
            options=tuple(str(o) for o in d.get("options") or ()),
            options_source=d.get("options_source"),
            pick=_pick(d.get("pick")),
            labels=tuple(str(x) for x in d.get("labels") or ()),
            deadline_at=float(deadline) if deadline is not None else None,
            next_seed=int(d["next_seed"]) if d.get("next_seed") is not None else None,
            snapshot=Snapshot.from_dict(snapshot) if isinstance(snapshot, Mapping) else None,
        )


@dataclass(frozen=True, slots=True)
class SessionData:
    """A session's flow-specific state (the sessions row's JSON `data`)."""

    stage_id: str | None = None
    stage_name: str = ""
    #: Concept Builder: locked fields and the current field
    concept: ConceptData | None = None
    #: Explorer: what the current round varies
    pick: Pick | None = None
    #: the pending prompt suggestion and the intent entry applying it would record
    suggestion: Suggestion | None = None
    suggestion_entry: IntentEntry | None = None
    final_image_id: str | None = None
    ended_reason: str | None = None

    def with_(self, **changes: Any) -> SessionData:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def restored(self, snapshot: Snapshot | None) -> SessionData:
        """A copy with the flow state a stage was planned from (going back to it)."""
        if snapshot is None:
            return self
        return self.with_(concept=snapshot.concept, pick=snapshot.pick)

    def snapshot(self) -> Snapshot:
        """The flow state a stage planned now is planned from."""
        return Snapshot(self.concept, self.pick)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of the sessions row."""
        out: dict[str, Any] = {
            "stage_id": self.stage_id,
            "stage_name": self.stage_name,
            "suggestion": self.suggestion.to_dict() if self.suggestion else None,
            "suggestion_entry": self.suggestion_entry.to_dict() if self.suggestion_entry else None,
        }
        if self.concept is not None:
            out["concept"] = self.concept.to_dict()
        if self.pick is not None:
            out["pick"] = self.pick.to_dict()
        if self.final_image_id is not None:
            out["final_image_id"] = self.final_image_id
        if self.ended_reason is not None:
            out["ended_reason"] = self.ended_reason
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionData:
        """The inverse of to_dict (a prompt `history` kept by earlier versions is left: the intent table has it)."""
        suggestion = d.get("suggestion")
        entry = d.get("suggestion_entry")
        return cls(
            stage_id=d.get("stage_id"),
            stage_name=str(d.get("stage_name") or ""),
            concept=_concept(d.get("concept")),
            pick=_pick(d.get("pick")),
            suggestion=Suggestion.from_dict(suggestion) if suggestion else None,
            suggestion_entry=IntentEntry.from_dict(entry) if entry else None,
            final_image_id=d.get("final_image_id"),
            ended_reason=d.get("ended_reason"),
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A sessions row, parsed: what the session engine reads and writes."""

    id: str
    flow: Flow
    owner_id: str
    visibility: Visibility
    state: SessionState
    prompt: str
    negative_prompt: str
    settings: SessionSettings
    stage_index: int
    data: SessionData
    created_at: float
    updated_at: float

    def with_(self, **changes: Any) -> SessionRecord:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, row: SessionRow) -> SessionRecord:
        """Parse a sessions row."""
        return cls(
            id=row.id,
            flow=Flow(row.flow),
            owner_id=row.owner_id,
            visibility=Visibility(row.visibility),
            state=SessionState(row.state),
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            settings=SessionSettings.from_dict(row.settings),
            stage_index=row.stage_index,
            data=SessionData.from_dict(row.data),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_row(self) -> SessionRow:
        """The row to write back."""
        return SessionRow(
            id=self.id,
            flow=self.flow.value,
            owner_id=self.owner_id,
            visibility=self.visibility.value,
            state=self.state.value,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            settings=self.settings.to_dict(),
            stage_index=self.stage_index,
            data=self.data.to_dict(),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


def is_final(kind: StageKind, idx: int, recipes: int) -> bool:
    """A final render or an upscale: front ends post it full size with final actions instead of a vote."""
    # Recipe stages are the Draft Grid's only, so their last recipe is its final stage.
    return kind in (StageKind.UPSCALE, StageKind.FINAL) or (kind is StageKind.STAGE and idx == recipes - 1)


class IllegalStageMove(ImGenError):
    """A stage status change that STAGE_MOVES does not allow (a bug, not a user's mistake)."""


S = StageStatus

#: every status change a stage may make
STAGE_MOVES: dict[StageStatus, frozenset[StageStatus]] = {
    S.GENERATING: frozenset({S.VOTING, S.DONE, S.CANCELLED}),
    S.VOTING: frozenset({S.DONE, S.CANCELLED}),
    # Back makes an earlier stage current again, whether the session moved past it or cut it short.
    S.DONE: frozenset({S.VOTING}),
    S.CANCELLED: frozenset({S.VOTING}),
}


@dataclass(frozen=True, slots=True)
class StageRecord:
    """A stages row, parsed: what the session engine reads and writes."""

    id: str
    session_id: str
    idx: int
    name: str
    status: StageStatus
    batch_id: str | None
    prompt: str
    negative_prompt: str
    data: StageData
    created_at: float

    @property
    def kind(self) -> StageKind:
        """What the stage is."""
        return self.data.kind

    def with_data(self, data: StageData) -> StageRecord:
        """A copy with other data (the status stays)."""
        return dataclasses.replace(self, data=data)

    def moved(self, to: StageStatus) -> StageRecord:
        """A copy in status `to`; IllegalStageMove unless STAGE_MOVES allows it (staying put always is)."""
        if to is not self.status and to not in STAGE_MOVES[self.status]:
            raise IllegalStageMove(f"stage {self.id}: {self.status.value} -> {to.value} is not allowed")
        return dataclasses.replace(self, status=to)

    @classmethod
    def of(cls, row: StageRow) -> StageRecord:
        """Parse a stages row."""
        return cls(
            id=row.id,
            session_id=row.session_id,
            idx=row.idx,
            name=row.name,
            status=StageStatus(row.status),
            batch_id=row.batch_id,
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            data=StageData.from_dict(row.data),
            created_at=row.created_at,
        )

    def to_row(self) -> StageRow:
        """The row to write back."""
        return StageRow(
            id=self.id,
            session_id=self.session_id,
            idx=self.idx,
            name=self.name,
            status=self.status.value,
            batch_id=self.batch_id,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            data=self.data.to_dict(),
            created_at=self.created_at,
        )
