"""
StageWriter: plans, writes, replaces and closes a session's stages.

The only place a stage's jobs are queued or cancelled. A stage's batch id is its stage id, so a stage and its
jobs are tied together before anything runs, and a restart finds them again.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator.db import SessionRow, StageRow
from orchestrator.errors import LimitExceeded
from orchestrator.events import StageStarted
from orchestrator.models import MAX_SEED, JobSpec
from orchestrator.sessions import concept
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import SessionSettings, SessionState, StageStatus, StageView
from orchestrator.sessions.planner import FINAL, ROUND, STAGE, UPSCALE
from orchestrator.sessions.state import Action, transition

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A planned stage, checked and not yet written."""

    row: SessionRow
    stage: StageRow
    specs: list[JobSpec]


class StageWriter:
    """Plans a stage, checks it can run, writes it with its jobs, and closes the stage it replaces."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self._rng = random.SystemRandom()

    async def prepare(
        self, row: SessionRow, kind: str, idx: int, name: str, data: dict[str, Any], *, replacing: int = 0
    ) -> Prepared:
        """Plan a stage and check it can run, without writing anything."""
        ctx = self.ctx
        stage_id = uuid.uuid4().hex
        first = idx == 0 and kind in (STAGE, ROUND) and not data.get("prev")
        ss = SessionSettings.from_dict(row.settings)
        seed = ss.seed if first and ss.seed is not None and "regen" not in data else self.seed()
        data = {
            **data,
            "kind": kind,
            "seed": seed,
            "regen": True,
            "session_data": {"concept": row.data.get("concept"), "pick": row.data.get("pick")},
        }
        specs = await ctx.planner.specs(row, kind, idx, data, stage_id)
        for spec in specs:
            ctx.scheduler.check_capable(spec)
        queued = await ctx.db.queued_images_for_user(row.owner_id) - replacing
        cap = ctx.settings.limits.max_queued_images_per_user
        if queued + len(specs) > cap:
            raise LimitExceeded(
                "queued images",
                user_message=f"You have {queued} images waiting; {len(specs)} more would pass the limit of {cap}. "
                "Wait for them to finish.",
            )
        st = StageRow(stage_id, row.id, idx, name, StageStatus.GENERATING.value, stage_id, row.prompt,
                      row.negative_prompt, data, time.time())  # fmt: skip
        return Prepared(row, st, specs)

    async def prepare_concept(
        self, row: SessionRow, locked: dict[str, str], idx: int, prev: str | None = None
    ) -> Prepared:
        """Plan the Concept Builder stage after `locked`: a round of options for the next field, or the final."""
        field = concept.next_field(locked)
        row = dataclasses.replace(
            row,
            prompt=concept.compose(locked),
            data={**row.data, "concept": {"locked": locked, "field": field}},
        )
        if field is None:
            return await self.prepare(row, FINAL, idx, "final", {"prev": prev})
        ss = SessionSettings.from_dict(row.settings)
        n = ss.count or self.ctx.settings.funnel.concept_options
        options, source = await self.ctx.pipeline.concept_options(field, locked["subject"], locked, n)
        options = tuple(o for o in options if o)[:n] or (field,)
        data = {"field": field, "options": list(options), "options_source": str(source), "prev": prev}
        return await self.prepare(row, ROUND, idx, field, data)

    async def commit(self, row: SessionRow, prepared: Prepared) -> SessionRow:
        """Write the stage, queue its jobs (batch id = stage id) and make it the session's current stage."""
        ctx = self.ctx
        st = prepared.stage
        state = transition(SessionState(row.state), Action.PLAN)
        await ctx.db.insert_stage(st)
        await ctx.scheduler.submit(prepared.specs, batch_id=st.id)
        data = {**row.data, "stage_id": st.id, "stage_name": st.name}
        row = dataclasses.replace(row, state=state.value, stage_index=st.idx, data=data)
        await ctx.db.update_session(row)
        ctx.cancel_timer(row.id)
        ctx.bus.publish(StageStarted(row.id, st.id, st.name, st.idx, len(prepared.specs)))
        log.info("session=%s stage=%s %s: %d images queued", row.id, st.id[:8], st.name, len(prepared.specs))
        return row

    async def close(self, st: StageRow, status: StageStatus) -> None:
        """Leave a stage: DONE keeps it as history; CANCELLED also cancels its unfinished jobs."""
        fresh = await self.ctx.db.get_stage(st.id) or st
        was_generating = fresh.status == StageStatus.GENERATING
        await self.ctx.db.update_stage(dataclasses.replace(fresh, status=status.value))
        if was_generating:
            # The stage is marked first, so the BatchDone its cancellation causes is ignored.
            await self.ctx.scheduler.cancel_batch(st.batch_id or st.id)

    async def replan(self, row: SessionRow, st: StageRow) -> SessionRow:
        """Run the stage again with new seeds in place of the old one, whose unfinished jobs are cancelled."""
        data = {k: v for k, v in st.data.items() if k not in ("seed", "deadline_at", "labels")}
        unfinished = sum(1 for j in await self.ctx.db.stage_jobs(st.id) if not j.status.terminal)
        prepared = await self.prepare(row, str(st.data.get("kind")), st.idx, st.name, data, replacing=unfinished)
        await self.close(st, StageStatus.CANCELLED)
        return await self.commit(row, prepared)

    async def start_upscale(self, row: SessionRow, st: StageRow, image_id: str) -> SessionRow:
        """Follow `st` with a one-image upscale stage of `image_id`."""
        prepared = await self.prepare(row, UPSCALE, st.idx + 1, "upscale", {"image_id": image_id, "prev": st.id})
        row = await self.commit(row, prepared)
        await self.close(st, StageStatus.DONE)
        return row

    async def prune(self, view: StageView) -> None:
        """Delete the full-size files of the stage's unselected images (their thumbnails stay)."""
        chosen = set(view.selection)
        drop = [im.image for im in view.images if im.number not in chosen and im.image.path]
        if not drop:
            return
        await self.ctx.store.prune([Path(im.path) for im in drop])
        for im in drop:
            await self.ctx.db.clear_image_path(im.id)
        log.info("stage=%s pruned %d unselected images", view.id[:8], len(drop))

    def seed(self) -> int:
        # Leave room below 2**32 for the per-image offsets of a stage.
        return self._rng.randint(0, MAX_SEED - 1000)
