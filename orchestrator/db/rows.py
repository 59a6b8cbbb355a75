"""
Rows and the domain objects they become: the one place that knows the tables' columns.

Both drivers' rows (aiosqlite.Row, asyncpg.Record) are read by column name; nothing outside sees one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.models import (
    Family,
    GenerationParams,
    ImageRecord,
    Job,
    JobSpec,
    JobStatus,
    LoraSpec,
    Mode,
    TaskKind,
)


class Row(Protocol):
    """What both drivers' rows offer: a column by name or position."""

    def __getitem__(self, key: str | int, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A sessions row; the session engine turns it into its own model."""

    id: str
    flow: str
    owner_id: str
    visibility: str
    state: str
    prompt: str
    negative_prompt: str
    settings: dict[str, Any]
    stage_index: int
    data: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StageRow:
    """A stages row."""

    id: str
    session_id: str
    idx: int
    name: str
    status: str
    batch_id: str | None
    prompt: str
    negative_prompt: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class Vote:
    """One participant's vote on one image."""

    session_id: str
    image_id: str
    user_id: str
    value: int


def params_to_json(p: GenerationParams) -> str:
    """Serialise render parameters for the generations table."""
    d: dict[str, Any] = {
        "prompt": p.prompt,
        "family": p.family.value,
        "checkpoint": p.checkpoint,
        "negative_prompt": p.negative_prompt,
        "width": p.width,
        "height": p.height,
        "steps": p.steps,
        "cfg": p.cfg,
        "sampler": p.sampler,
        "scheduler": p.scheduler,
        "seed": p.seed,
        "denoise": p.denoise,
        "loras": [[lo.name, lo.strength_model, lo.strength_clip] for lo in p.loras],
        "mode": p.mode.value,
        "init_image": p.init_image,
        "upscale_model": p.upscale_model,
    }
    return json.dumps(d, ensure_ascii=False)


def params_from_json(text: str) -> GenerationParams:
    d = json.loads(text)
    return GenerationParams(
        prompt=d["prompt"],
        family=Family(d["family"]),
        checkpoint=d["checkpoint"],
        negative_prompt=d["negative_prompt"],
        width=int(d["width"]),
        height=int(d["height"]),
        steps=int(d["steps"]),
        cfg=float(d["cfg"]),
        sampler=d["sampler"],
        scheduler=d["scheduler"],
        seed=int(d["seed"]),
        denoise=float(d["denoise"]),
        loras=tuple(LoraSpec(n, float(m), float(c)) for n, m, c in d["loras"]),
        mode=Mode(d["mode"]),
        init_image=d["init_image"],
        upscale_model=d["upscale_model"],
    )


def job_values(j: Job) -> tuple[Any, ...]:
    """A job's columns in the order of `JOB_COLUMNS`."""
    p = j.params
    return (
        j.id,
        j.batch_id,
        j.spec.session_id,
        j.spec.stage_id,
        j.spec.user_id,
        j.spec.parent_id,
        j.spec.index,
        j.spec.task.value,
        j.status.value,
        j.attempt,
        j.max_attempts,
        j.node_id,
        j.prompt_id,
        params_to_json(p),
        p.prompt,
        p.negative_prompt,
        p.family.value,
        p.model_name,
        p.seed,
        p.width,
        p.height,
        p.steps,
        p.cfg,
        p.denoise,
        json.dumps(list(j.failed_nodes)),
        j.created_at,
    )


JOB_COLUMNS = (
    "id, batch_id, session_id, stage_id, user_id, parent_id, idx, task, status, attempt, max_attempts, node_id, "
    "prompt_id, params, prompt, negative_prompt, family, checkpoint, seed, width, height, steps, cfg, denoise, "
    "failed_nodes, created_at"
)


def job_from_row(r: Row) -> Job:
    spec = JobSpec(
        params=params_from_json(r["params"]),
        task=TaskKind(r["task"]),
        session_id=r["session_id"],
        stage_id=r["stage_id"],
        user_id=r["user_id"],
        parent_id=r["parent_id"],
        index=r["idx"],
    )
    return Job(
        id=r["id"],
        batch_id=r["batch_id"],
        spec=spec,
        status=JobStatus(r["status"]),
        attempt=r["attempt"],
        max_attempts=r["max_attempts"],
        node_id=r["node_id"],
        prompt_id=r["prompt_id"],
        error=r["error"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        failed_nodes=tuple(json.loads(r["failed_nodes"])),
    )


def image_from_row(r: Row) -> ImageRecord:
    return ImageRecord(
        id=r["id"],
        job_id=r["id"],
        path=r["image_path"],
        thumbnail=r["thumbnail_path"],
        node_id=r["node_id"] or "",
        seed=r["seed"],
        seconds=r["seconds"] or 0.0,
        checkpoint=r["checkpoint"],
        width=r["width"],
        height=r["height"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        session_id=r["session_id"],
        stage_id=r["stage_id"],
        parent_id=r["parent_id"],
        index=r["idx"],
    )


def session_from_row(r: Row) -> SessionRow:
    return SessionRow(
        id=r["id"],
        flow=r["flow"],
        owner_id=r["owner_id"],
        visibility=r["visibility"],
        state=r["state"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        settings=json.loads(r["settings"]),
        stage_index=r["stage_index"],
        data=json.loads(r["data"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def stage_from_row(r: Row) -> StageRow:
    return StageRow(
        id=r["id"],
        session_id=r["session_id"],
        idx=r["idx"],
        name=r["name"],
        status=r["status"],
        batch_id=r["batch_id"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        data=json.loads(r["data"]),
        created_at=r["created_at"],
    )
