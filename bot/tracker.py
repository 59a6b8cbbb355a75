"""Live progress of one stage, folded from the orchestrator's job events (what the progress message shows)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.errors import scrub
from orchestrator.events import (
    Event,
    JobFailed,
    JobFinished,
    JobPreview,
    JobProgress,
    JobQueued,
    JobRetried,
    JobStarted,
)
from orchestrator.models import ImageRecord

#: a node's preview frames are small; anything bigger is not worth re-uploading to Discord every few seconds
MAX_PREVIEW_BYTES = 512 * 1024
_PREVIEW_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class NodeLine:
    """One GPU's share of a stage."""

    node_id: str
    done: int
    running: int
    #: sampler step of the job it runs (step, total), when known
    step: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A snapshot of a stage's progress, ready to render."""

    name: str
    index: int
    total: int
    done: int
    failed: int
    nodes: tuple[NodeLine, ...]
    eta_s: float | None
    notes: tuple[str, ...]
    finished: bool
    last_error: str | None = None
    #: the next stage is being prepared on idle GPUs from the current votes (voting time)
    speculating: bool = False


@dataclass(slots=True)
class _Running:
    node_id: str
    step: int = 0
    total: int = 0


@dataclass(slots=True)
class StageProgress:
    """Mutable progress of one stage; apply() each job event, snapshot() to render."""

    session_id: str
    stage_id: str
    name: str
    index: int
    total: int
    done_jobs: set[str] = field(default_factory=set)
    failed_jobs: set[str] = field(default_factory=set)
    running: dict[str, _Running] = field(default_factory=dict)
    per_node: Counter[str] = field(default_factory=Counter)
    #: seconds each node took per delivered image: the measured speed behind the ETA
    node_seconds: dict[str, list[float]] = field(default_factory=dict)
    moved_from: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    finished: bool = False
    #: failures known from the DB when resuming (their events were missed)
    failed_floor: int = 0
    #: why the latest image failed (ComfyUI's words, scrubbed of hosts and paths)
    last_error: str | None = None
    #: the newest preview frame of a running job: (file extension, bytes)
    preview: tuple[str, bytes] | None = None
    #: the next stage is being prepared from the current votes (SpeculationChanged)
    speculating: bool = False

    def seed(self, images: Iterable[ImageRecord], failed: int = 0) -> None:
        """Start from what is already delivered (a resumed stage)."""
        for img in images:
            self._finish(img)
        self.failed_floor = failed

    def _finish(self, img: ImageRecord) -> bool:
        if img.job_id in self.done_jobs:
            return False
        self.done_jobs.add(img.job_id)
        self.running.pop(img.job_id, None)
        self.per_node[img.node_id] += 1
        if img.seconds > 0:
            self.node_seconds.setdefault(img.node_id, []).append(img.seconds)
        return True

    def apply(self, event: Event) -> bool:
        """Fold one event in; True when the view changed."""
        match event:
            case JobQueued():
                return False
            case JobStarted(job_id=job_id, node_id=node):
                if job_id in self.done_jobs:
                    return False
                moved = self.moved_from.pop(job_id, None)
                if moved is not None and moved[0] != node:
                    reason = f" ({scrub(moved[1], 80)})" if moved[1] else ""
                    self.notes.append(f"an image moved from {moved[0]} to {node}{reason}")
                self.running[job_id] = _Running(node)
                return True
            case JobProgress(job_id=job_id, node_id=node, step=step, total=total):
                if job_id in self.done_jobs:
                    return False
                run = self.running.setdefault(job_id, _Running(node))
                run.node_id, run.step, run.total = node, step, total
                return True
            case JobRetried(job_id=job_id, from_node=node, reason=reason):
                self.running.pop(job_id, None)
                self.moved_from[job_id] = (node, reason)
                return True
            case JobFinished(image=img):
                return self._finish(img)
            case JobPreview(job_id=job_id, image=data, mime=mime):
                ext = _PREVIEW_TYPES.get(mime)
                if job_id in self.done_jobs or ext is None or not data or len(data) > MAX_PREVIEW_BYTES:
                    return False
                self.preview = (ext, data)
                return True
            case JobFailed(job_id=job_id, error=error, cancelled=cancelled):
                self.running.pop(job_id, None)
                if job_id in self.failed_jobs or cancelled:
                    return not cancelled
                self.failed_jobs.add(job_id)
                self.last_error = scrub(error, 120) if error else None
                return True
        return False

    def eta(self) -> float | None:
        """Seconds left from each working node's measured seconds per image; None before any image is measured."""
        remaining = self.total - len(self.done_jobs) - len(self.failed_jobs)
        if remaining <= 0:
            return 0.0
        rate = 0.0
        for secs in self.node_seconds.values():
            mean = sum(secs) / len(secs)
            if mean > 0:
                rate += 1.0 / mean
        return remaining / rate if rate > 0 else None

    def snapshot(self) -> ProgressView:
        """The current state as a frozen view."""
        running = Counter(r.node_id for r in self.running.values())
        steps: dict[str, tuple[int, int]] = {}
        for r in self.running.values():
            if r.total:
                steps[r.node_id] = (r.step, r.total)
        nodes = tuple(
            NodeLine(n, self.per_node.get(n, 0), running.get(n, 0), steps.get(n))
            for n in sorted(set(self.per_node) | set(running))
        )
        failed = max(len(self.failed_jobs), self.failed_floor)
        return ProgressView(
            name=self.name,
            index=self.index,
            total=self.total,
            done=len(self.done_jobs),
            failed=failed,
            nodes=nodes,
            eta_s=None if self.finished else self.eta(),
            notes=tuple(self.notes),
            finished=self.finished,
            last_error=self.last_error,
            speculating=self.speculating and self.finished,
        )
