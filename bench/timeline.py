"""Where a run's GPU time went: job spans read from the engine's DB, drawn per GPU as a timeline picture."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from orchestrator.db import Database
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.models import Job, JobStatus, Mode

ACTIVE = (JobStatus.SUBMITTED, JobStatus.RUNNING)


class SpanKind(StrEnum):
    """What a stretch of a GPU's time was spent on."""

    REAL = "real"  #: a job someone asked for
    SPECULATIVE = "speculative"  #: speculative, neither adopted nor dropped when the run ended
    ADOPTED = "adopted"  #: speculative, then adopted by Continue as a stage's job
    WASTED = "wasted"  #: speculative, cancelled or never adopted


COLOURS: dict[SpanKind | str, tuple[int, int, int]] = {
    SpanKind.REAL: (52, 101, 164),
    SpanKind.SPECULATIVE: (237, 212, 0),
    SpanKind.ADOPTED: (78, 154, 6),
    SpanKind.WASTED: (204, 0, 0),
    "idle": (225, 225, 225),
}


@dataclass(frozen=True)
class JobSpan:
    """One job's run on a GPU (epoch seconds), as the engine recorded it."""

    node_id: str
    start: float
    end: float
    kind: SpanKind
    #: the checkpoint family, or "upscale"
    label: str
    user_id: str | None = None
    job_id: str = ""


def span_kind(job: Job, stage_opened: float | None) -> SpanKind:
    """
    Real, or what became of a speculative job.

    A job still in a speculative batch was never adopted. An adopted one carries its stage's batch since Continue
    but keeps the time it was queued: a stage's job queued before the stage was written (at Continue) was
    speculative and adopted.
    """
    if is_speculative_batch(job.batch_id):
        return SpanKind.SPECULATIVE if job.status in (JobStatus.QUEUED, *ACTIVE) else SpanKind.WASTED
    if stage_opened is not None and job.created_at < stage_opened:
        return SpanKind.ADOPTED
    return SpanKind.REAL


#: a run's start as the bus announced it: (job id, node id, epoch seconds)
Start = tuple[str, str, float]


async def read_spans(target: Path | str, starts: Sequence[Start] = ()) -> list[JobSpan]:
    """
    Every run of a job on a node, from the DB at `target` (the facade has no DB: read it directly).

    A job's row holds its status, batch and stage, its node and its end, but only one start: a speculative run that
    real work interrupted leaves the row (the job is queued again) and a run after it keeps the first start until
    its result is written. With `starts` (every JobStarted the bench saw), each run is drawn from its own start:
    an earlier run of a job lasted until its GPU started something else (it was interrupted, so wasted), its last
    run until the row's end.
    """
    db = Database(target)
    await db.open()
    try:
        jobs = await db.jobs_with_status(list(JobStatus))
        opened: dict[str, float] = {}
        for sid in {j.spec.stage_id for j in jobs if j.spec.stage_id}:
            row = await db.get_stage(sid)
            if row is not None:
                opened[sid] = row.created_at
    finally:
        await db.close()
    runs: dict[str, list[tuple[str, float]]] = {}
    for job_id, node_id, at in sorted(starts, key=lambda st: st[2]):
        runs.setdefault(job_id, []).append((node_id, at))
    by_node: dict[str, list[float]] = {}
    for _, node_id, at in starts:
        by_node.setdefault(node_id, []).append(at)
    stop = max([j.finished_at or 0.0 for j in jobs] + [at for _, _, at in starts] + [0.0])

    def next_on(node_id: str, after: float) -> float:
        return min((t for t in by_node.get(node_id, ()) if t > after), default=stop)

    spans = []
    for j in jobs:
        kind = span_kind(j, opened.get(j.spec.stage_id or ""))
        label = _label(j)
        seen = runs.get(j.id)
        if not seen:
            if j.node_id is not None and j.started_at is not None:
                end = j.finished_at if j.finished_at is not None else j.started_at
                spans.append(JobSpan(j.node_id, j.started_at, end, kind, label, j.spec.user_id, j.id))
            continue
        for i, (node_id, at) in enumerate(seen):
            last = i == len(seen) - 1
            if last and j.finished_at is not None and j.finished_at > at:
                end, run_kind = j.finished_at, kind
            elif last and j.status in ACTIVE:
                end, run_kind = next_on(node_id, at), kind  # still running when the run ended
            else:
                end, run_kind = next_on(node_id, at), SpanKind.WASTED  # interrupted: done again elsewhere or later
            spans.append(JobSpan(node_id, at, end, run_kind, label, j.spec.user_id, j.id))
    return spans


def _label(job: Job) -> str:
    return "upscale" if job.params.mode is Mode.UPSCALE else job.params.family.value


Panel = tuple[str, float, Sequence[JobSpan], Sequence[tuple[float, str]]]

WIDTH = 1400
LEFT = 130
ROW = 26
GAP = 6
TOP_PAD = 46


def draw_timeline(path: Path, panels: Sequence[Panel]) -> None:
    """One panel per run (title, its start, its spans, its marks), GPUs as rows, on one shared time axis."""
    font = ImageFont.load_default()
    nodes = sorted({s.node_id for _, _, spans, _ in panels for s in spans})
    ends = [s.end - t0 for _, t0, spans, _ in panels for s in spans]
    horizon = max([*ends, *(m - t0 for _, t0, _, marks in panels for m, _ in marks), 1.0])
    panel_h = TOP_PAD + len(nodes) * (ROW + GAP) + 20
    legend_h = 40
    height = panel_h * len(panels) + legend_h + 24
    img = Image.new("RGB", (WIDTH, height), "white")
    d = ImageDraw.Draw(img)
    px = (WIDTH - LEFT - 20) / horizon

    def x(t: float) -> float:
        return LEFT + t * px

    for p, (title, t0, spans, marks) in enumerate(panels):
        top = p * panel_h
        d.text((10, top + 4), title, fill="black", font=font)
        for r, node in enumerate(nodes):
            y = top + TOP_PAD + r * (ROW + GAP)
            d.text((10, y + 8), node, fill="black", font=font)
            d.rectangle((LEFT, y, x(horizon), y + ROW), fill=COLOURS["idle"])
            for s in spans:
                if s.node_id != node:
                    continue
                x0, x1 = x(s.start - t0), max(x(s.end - t0), x(s.start - t0) + 1)
                d.rectangle((x0, y, x1, y + ROW), fill=COLOURS[s.kind], outline="white")
        bottom = top + TOP_PAD + len(nodes) * (ROW + GAP)
        # Labels of marks close together go on alternate lines so that they stay readable.
        free_from = [0.0, 0.0]
        for at, label in sorted(marks):
            mx = x(at - t0)
            line = 0 if free_from[0] <= mx else 1
            d.line((mx, top + TOP_PAD - 4 - 12 * line, mx, bottom), fill="black", width=1)
            d.text((mx + 2, top + TOP_PAD - 16 - 12 * line), label, fill="black", font=font)
            free_from[line] = mx + 8 + d.textlength(label, font=font)
    # Time axis (seconds from /draft) and the legend.
    axis_y = panel_h * len(panels)
    d.line((LEFT, axis_y, x(horizon), axis_y), fill="black")
    step = 5.0 if horizon > 20 else 1.0
    t = 0.0
    while t <= horizon:
        d.line((x(t), axis_y, x(t), axis_y + 4), fill="black")
        d.text((x(t) - 4, axis_y + 6), f"{t:.0f}", fill="black", font=font)
        t += step
    d.text((10, axis_y + 6), "seconds", fill="black", font=font)
    lx = LEFT
    ly = axis_y + 26
    for key in (*SpanKind, "idle"):
        d.rectangle((lx, ly, lx + 16, ly + 12), fill=COLOURS[key])
        d.text((lx + 22, ly), str(key), fill="black", font=font)
        lx += 140
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "PNG", optimize=True)


def loads_before(spans: Sequence[JobSpan], user_id: str) -> int:
    """How many of a user's runs followed, on their GPU, a run of another checkpoint family (a model load each)."""
    loads = 0
    by_node: dict[str, list[JobSpan]] = {}
    for sp in sorted(spans, key=lambda sp: sp.start):
        by_node.setdefault(sp.node_id, []).append(sp)
    for runs in by_node.values():
        for prev, cur in pairwise(runs):
            if cur.user_id == user_id and prev.label != cur.label:
                loads += 1
    return loads
