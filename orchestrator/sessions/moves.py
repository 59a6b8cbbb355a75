"""
FunnelMoves: the moves that take a session from one stage to another.

Advance from the selection, pick an image (Concept Builder field or Explorer round), lock a Concept Builder
field by hand, regenerate, go back, upscale, and end. Each public move takes the session's lock, except
`advance_locked`, which expects the caller to hold it (the quorum and deadline rules advance through it).
"""

from __future__ import annotations

import logging

from orchestrator.config import StageRecipe
from orchestrator.errors import InputError, InvalidState
from orchestrator.events import SessionEnded
from orchestrator.models import Family, ImageRecord
from orchestrator.sessions import concept
from orchestrator.sessions.access import check_advance, check_owner
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.explorer import Pick
from orchestrator.sessions.models import Flow, Session, SessionState, StageKind, StageStatus, StageView
from orchestrator.sessions.planner import aspect_of
from orchestrator.sessions.records import ParentShare, SessionRecord, StageData, StageRecord
from orchestrator.sessions.stages import StageWriter
from orchestrator.sessions.state import Action, require, transition
from orchestrator.sessions.views import session_of, stage_view
from orchestrator.sessions.voting import allocate

log = logging.getLogger(__name__)


def next_stage(stages: tuple[StageRecipe, ...], st: StageRecord, view: StageView) -> tuple[int, str, StageData]:
    """
    What Continue on a Draft Grid stage starts: the next stage's index, name and data, from the selection now.

    The next stage's seed is the one drawn when `st` opened for votes, so the same votes give the same stage.
    """
    if not view.selection:
        raise InvalidState(
            "empty selection", user_message="Nothing is selected: select at least one image before continuing."
        )
    if st.kind is not StageKind.STAGE or st.idx + 1 >= len(stages):
        raise InvalidState("last stage", user_message="This is the final stage: upscale the image or end.")
    recipe = stages[st.idx + 1]
    ranked = [im for n in view.selection if (im := view.image(n)) is not None]
    shares = allocate(recipe.count, [(im.image.id, im.tally) for im in ranked])
    parents = tuple(ParentShare(im.image.id, shares[im.image.id]) for im in ranked if im.image.id in shares)
    return st.idx + 1, recipe.name, StageData(StageKind.STAGE, parents=parents, prev=st.id, seed=st.data.next_seed)


class FunnelMoves:
    """Moves a session through its funnel on a user's request (or a quorum's or deadline's)."""

    def __init__(self, ctx: SessionContext, stages: StageWriter) -> None:
        self.ctx = ctx
        self.stages = stages

    async def _row_for_advance(self, session_id: str, user_id: str) -> SessionRecord:
        row = await self.ctx.row(session_id)
        check_advance(await session_of(self.ctx.db, row), user_id)
        return row

    async def advance(self, session_id: str, user_id: str) -> StageView:
        """Next stage from the selection (Concept Builder / Explorer: pick the best-voted image)."""
        async with self.ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            require(row.state, SessionState.VOTING)
            row = await self.advance_locked(row)
            return await self.ctx.current_view(row)

    async def advance_locked(self, row: SessionRecord) -> SessionRecord:
        """Advance with the session's lock held."""
        ctx = self.ctx
        st = await ctx.need_current(row)
        view = await stage_view(ctx.db, st, ctx.settings.funnel)
        if not view.selection:
            raise InvalidState(
                "empty selection", user_message="Nothing is selected: select at least one image before continuing."
            )
        if row.flow is not Flow.DRAFT_GRID:
            best = view.image(view.selection[0])
            assert best is not None
            return await self._pick_locked(row, st, best.image)
        idx, name, data = next_stage(ctx.settings.funnel.stages, st, view)
        prepared = await self.stages.prepare(row, idx, name, data)
        row = await self.stages.commit(row, prepared, adopt=await ctx.speculation_take(row.id, prepared.specs))
        await self.stages.close(st, StageStatus.DONE)
        if ctx.settings.funnel.prune_unselected:
            await self.stages.prune(view)
        return row

    async def regenerate(self, session_id: str, user_id: str) -> StageView:
        """Run the current stage again with new seeds (and the current prompt)."""
        async with self.ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            require(row.state, SessionState.GENERATING, SessionState.VOTING)
            st = await self.ctx.need_current(row)
            row = await self.stages.replan(row, st)
            return await self.ctx.current_view(row)

    async def back(self, session_id: str, user_id: str) -> StageView:
        """Make the previous stage current again, with its images and votes."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            st = await ctx.need_current(row)
            prev = await ctx.stage(st.data.prev)
            if prev is None:
                raise InvalidState("first stage", user_message="This is the first stage; there is nothing before it.")
            state = transition(row.state, Action.BACK)
            await self.stages.close(st, StageStatus.CANCELLED)
            prev = prev.moved(StageStatus.VOTING)
            await ctx.save_stage(prev)
            data = row.data.restored(prev.data.snapshot).with_(stage_id=prev.id, stage_name=prev.name)
            row = row.with_(state=state, stage_index=prev.idx, data=data)
            if row.flow is Flow.CONCEPT and data.concept is not None:
                row = row.with_(prompt=concept.compose(data.concept.locked))
            await ctx.save(row)
            ctx.cancel_timer(row.id)
            log.info("session=%s back to stage %s", row.id, prev.name)
            return await stage_view(ctx.db, prev, ctx.settings.funnel)

    async def end(self, session_id: str, user_id: str) -> Session:
        """End the session (owner only); a stage still rendering is cancelled."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_owner(await session_of(ctx.db, row), user_id, "end this session")
            state = transition(row.state, Action.END)
            st = await ctx.current(row)
            if st is not None and st.status is StageStatus.GENERATING:
                await self.stages.close(st, StageStatus.CANCELLED)
            row = row.with_(state=state, data=row.data.with_(ended_reason="ended by the owner"))
            await ctx.save(row)
            ctx.cancel_timer(row.id)
            ctx.bus.publish(SessionEnded(row.id, "ended by the owner"))
            log.info("session=%s ended by %s", row.id, user_id)
            return await session_of(ctx.db, row)

    async def concept_set_field(self, session_id: str, user_id: str, value: str) -> StageView:
        """Lock the current Concept Builder field with the user's own value and move to the next field."""
        async with self.ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            if row.flow is not Flow.CONCEPT:
                raise InvalidState("not concept", user_message="Only the Concept Builder has fields.")
            require(row.state, SessionState.GENERATING, SessionState.VOTING)
            field = row.data.concept.field if row.data.concept else None
            if field is None:
                raise InvalidState("no field", user_message="Every field is already chosen.")
            text = concept.clean_value(value)
            if not text:
                raise InputError("empty", user_message="The value is empty.")
            st = await self.ctx.need_current(row)
            row = await self._lock_field(row, st, field, text)
            return await self.ctx.current_view(row)

    async def pick(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Concept Builder: lock the field from that image's option; Explorer: next round around that image."""
        async with self.ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            if row.flow is Flow.DRAFT_GRID:
                raise InvalidState("pick", user_message="In a Draft Grid, select images and press Continue.")
            require(row.state, SessionState.VOTING)
            st = await self.ctx.need_current(row)
            image = await self._image_here(row, image_id)
            row = await self._pick_locked(row, st, image)
            return await self.ctx.current_view(row)

    async def upscale(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Upscale any delivered image of the session as a one-image stage (once: a second would be identical)."""
        async with self.ctx.lock(session_id):
            row = await self._row_for_advance(session_id, user_id)
            existing = await self.existing_upscale(session_id, image_id)
            if existing is not None:
                on_its_way = existing.status is StageStatus.GENERATING
                raise InvalidState(
                    "already upscaled",
                    user_message="The 4x upscale of this image is on its way."
                    if on_its_way
                    else "This image is already upscaled: the 4x image is in this thread.",
                )
            require(row.state, SessionState.VOTING, SessionState.FINISHED)
            image = await self._image_here(row, image_id)
            st = await self.ctx.need_current(row)
            row = await self.stages.start_upscale(row, st, image.id)
            return await self.ctx.current_view(row)

    async def existing_upscale(self, session_id: str, image_id: str) -> StageView | None:
        """The upscale stage of this image (rendering, or done with its image), if there is one."""
        funnel = self.ctx.settings.funnel
        for st in reversed(await self.ctx.stages_of(session_id)):
            if st.kind is not StageKind.UPSCALE or st.data.image_id != image_id:
                continue
            view = await stage_view(self.ctx.db, st, funnel)
            if st.status is StageStatus.GENERATING:
                return view
            if st.status is not StageStatus.CANCELLED and view.images:
                return view
        return None

    async def _image_here(self, row: SessionRecord, image_id: str) -> ImageRecord:
        image = await self.ctx.db.image(image_id)
        if image is None or image.session_id != row.id:
            raise InvalidState("not here", user_message="That image is not part of this session.")
        return image

    async def _pick_locked(self, row: SessionRecord, st: StageRecord, image: ImageRecord) -> SessionRecord:
        if row.flow is Flow.CONCEPT:
            if image.stage_id != st.id or st.kind is not StageKind.ROUND or st.data.field is None:
                raise InvalidState("not this round", user_message="Pick one of this round's images.")
            option = st.data.options[image.index - 1]
            return await self._lock_field(row, st, st.data.field, option)
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned; pick another.")
        job = await self.ctx.db.get_job(image.id)
        family = job.params.family if job else Family.SDXL
        # A session led by an image alone keeps its empty prompt: a picked style variation's text is only the style.
        prompt = image.prompt if row.prompt else ""
        pick = Pick.of_image(image, family, aspect_of(image.width, image.height), prompt=prompt)
        row = row.with_(prompt=prompt, data=row.data.with_(pick=pick))
        name = f"round {st.idx + 2}"
        data = StageData(StageKind.ROUND, pick=pick, prev=st.id)
        prepared = await self.stages.prepare(row, st.idx + 1, name, data)
        row = await self.stages.commit(row, prepared)
        await self.stages.close(st, StageStatus.DONE)
        return row

    async def _lock_field(self, row: SessionRecord, st: StageRecord, field: str, value: str) -> SessionRecord:
        locked = {**(row.data.concept.locked if row.data.concept else {}), field: value}
        prepared = await self.stages.prepare_concept(row, locked, st.idx + 1, prev=st.id)
        unfinished = st.status is StageStatus.GENERATING
        row = await self.stages.commit(prepared.session, prepared)
        await self.stages.close(st, StageStatus.CANCELLED if unfinished else StageStatus.DONE)
        return row
