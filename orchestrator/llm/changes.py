"""Domain objects of the feedback pipeline: structured changes, requests, results and the intent document."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.models import Family


class Scope(StrEnum):
    """Whether feedback re-prompts the whole image or changes one subject/region."""

    #: the whole prompt is re-engineered
    GLOBAL = "global"
    #: the change concerns one subject or region (Changes.target names it)
    REGION = "region"


class Source(StrEnum):
    """Which path produced a refinement."""

    #: the three Ollama stages answered
    OLLAMA = "ollama"
    #: the built-in rule-based interpreter and engineer answered
    RULES = "rules"


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(v) for v in value if isinstance(v, str | int | float) and str(v).strip())


@dataclass(frozen=True)
class Changes:
    """Structured edits that feedback asks for; the interpreter's output and the engineer's input."""

    keep: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    #: old token/phrase -> replacement
    modify: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    emphasis_up: tuple[str, ...] = ()
    emphasis_down: tuple[str, ...] = ()
    negative_add: tuple[str, ...] = ()
    scope: Scope = Scope.GLOBAL
    #: the subject or region a scope=region change is about
    target: str | None = None
    #: image numbers of the current stage the user pointed at ("like #3")
    borrow_from: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # frozen means frozen: a caller's dict must not change the Changes afterwards
        object.__setattr__(self, "modify", MappingProxyType(dict(self.modify)))

    def __hash__(self) -> int:
        return hash((self.keep, self.remove, self.add, tuple(sorted(self.modify.items())), self.scope))

    @property
    def is_empty(self) -> bool:
        """True when the changes ask for nothing at all."""
        return not (
            self.keep
            or self.remove
            or self.add
            or self.modify
            or self.emphasis_up
            or self.emphasis_down
            or self.negative_add
            or self.borrow_from
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for the DB and --json)."""
        return {
            "keep": list(self.keep),
            "remove": list(self.remove),
            "add": list(self.add),
            "modify": dict(self.modify),
            "emphasis_up": list(self.emphasis_up),
            "emphasis_down": list(self.emphasis_down),
            "negative_add": list(self.negative_add),
            "scope": self.scope.value,
            "target": self.target,
            "borrow_from": list(self.borrow_from),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Changes:
        """Inverse of to_dict; tolerant of missing keys (older rows)."""
        modify = d.get("modify") or {}
        scope_raw = d.get("scope", "global")
        target = d.get("target")
        return cls(
            keep=_strs(d.get("keep")),
            remove=_strs(d.get("remove")),
            add=_strs(d.get("add")),
            modify={str(k): str(v) for k, v in modify.items()} if isinstance(modify, Mapping) else {},
            emphasis_up=_strs(d.get("emphasis_up")),
            emphasis_down=_strs(d.get("emphasis_down")),
            negative_add=_strs(d.get("negative_add")),
            scope=Scope(scope_raw) if scope_raw in {s.value for s in Scope} else Scope.GLOBAL,
            target=str(target) if isinstance(target, str) and target else None,
            borrow_from=tuple(int(n) for n in d.get("borrow_from") or () if isinstance(n, int)),
        )


@dataclass(frozen=True, slots=True)
class VisionComparison:
    """What the vision model saw in the selected images that the rejected ones lack, and the reverse."""

    selected_traits: tuple[str, ...]
    rejected_traits: tuple[str, ...]
    key_differences: str


@dataclass(frozen=True, slots=True)
class ImageRef4Llm:
    """An image the user can point at ("#3"): its number in the stage, file, prompt and seed."""

    number: int
    path: Path | None
    prompt: str
    seed: int


@dataclass(frozen=True, slots=True)
class IntentEntry:
    """One piece of feedback in a session's intent document, with what it changed."""

    feedback: str
    changes: Changes
    old_prompt: str
    new_prompt: str
    old_negative: str
    new_negative: str
    source: Source
    rationale: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the DB stores it as JSON)."""
        return {
            "feedback": self.feedback,
            "changes": self.changes.to_dict(),
            "old_prompt": self.old_prompt,
            "new_prompt": self.new_prompt,
            "old_negative": self.old_negative,
            "new_negative": self.new_negative,
            "source": self.source.value,
            "rationale": self.rationale,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntentEntry:
        """Inverse of to_dict."""
        source = d.get("source", "rules")
        return cls(
            feedback=str(d.get("feedback", "")),
            changes=Changes.from_dict(d.get("changes") or {}),
            old_prompt=str(d.get("old_prompt", "")),
            new_prompt=str(d.get("new_prompt", "")),
            old_negative=str(d.get("old_negative", "")),
            new_negative=str(d.get("new_negative", "")),
            source=Source(source) if source in {s.value for s in Source} else Source.RULES,
            rationale=str(d.get("rationale", "")),
            created_at=float(d.get("created_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class RefineRequest:
    """Everything the pipeline needs for one piece of feedback."""

    prompt: str
    feedback: str
    family: Family
    negative_prompt: str = ""
    selected: tuple[ImageRef4Llm, ...] = ()
    rejected: tuple[ImageRef4Llm, ...] = ()
    #: every image of the current stage, so "like #3" can be resolved
    stage_images: tuple[ImageRef4Llm, ...] = ()
    intent: tuple[IntentEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptDiff:
    """What a refinement added to and removed from the prompt and the negative prompt."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    negative_added: tuple[str, ...] = ()
    negative_removed: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when nothing changed."""
        return not (self.added or self.removed or self.negative_added or self.negative_removed)

    def render(self) -> str:
        """A compact one-line diff: '+ golden hour  - blurry background  (neg + people)'."""
        if self.is_empty:
            return "no change"
        parts = [f"+ {t}" for t in self.added] + [f"- {t}" for t in self.removed]
        neg = [f"+ {t}" for t in self.negative_added] + [f"- {t}" for t in self.negative_removed]
        if neg:
            parts.append(f"(neg {'  '.join(neg)})")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, list[str]]:
        """A JSON-safe dict."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "negative_added": list(self.negative_added),
            "negative_removed": list(self.negative_removed),
        }


@dataclass(frozen=True, slots=True)
class RefineResult:
    """A refined prompt, why, and which path produced it."""

    prompt: str
    negative_prompt: str
    rationale: str
    changes: Changes
    source: Source
    diff: PromptDiff
    #: why the rules answered although Ollama is enabled; None when Ollama answered or is disabled
    fallback_reason: str | None = None
    #: the seed of the image borrowed from ("like #3"), for the next stage to reuse
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `vibes refine --json` shape."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "rationale": self.rationale,
            "changes": self.changes.to_dict(),
            "source": self.source.value,
            "fallback_reason": self.fallback_reason,
            "diff": self.diff.to_dict(),
            "seed": self.seed,
        }

    def intent_entry(self, req: RefineRequest, created_at: float) -> IntentEntry:
        """The intent-document row for this result."""
        return IntentEntry(
            feedback=req.feedback,
            changes=self.changes,
            old_prompt=req.prompt,
            new_prompt=self.prompt,
            old_negative=req.negative_prompt,
            new_negative=self.negative_prompt,
            source=self.source,
            rationale=self.rationale,
            created_at=created_at,
        )
