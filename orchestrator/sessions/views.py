"""The read side of sessions: rows of sessions, stages, jobs and votes turned into what front ends show."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.config import FunnelSettings
from orchestrator.db import Database
from orchestrator.errors import InvalidState, SessionNotFound
from orchestrator.models import JobStatus
from orchestrator.sessions.models import (
    ConceptState,
    ImageInfo,
    LineageLink,
    Role,
    Session,
    SessionState,
    StageImage,
    StageView,
)
from orchestrator.sessions.records import SessionRecord, StageRecord, is_final
from orchestrator.sessions.voting import rank_selection, votes_by_image

if TYPE_CHECKING:
    from orchestrator.sessions.context import SessionContext


async def session_of(db: Database, rec: SessionRecord) -> Session:
    """The Session model of a session and its participants."""
    people = await db.participants(rec.id)
    d = rec.data
    return Session(
        id=rec.id,
        flow=rec.flow,
        owner_id=rec.owner_id,
        visibility=rec.visibility,
        state=rec.state,
        prompt=rec.prompt,
        negative_prompt=rec.negative_prompt,
        settings=rec.settings,
        stage_index=rec.stage_index,
        stage_name=d.stage_name,
        stage_id=d.stage_id,
        participants={u: Role(r) for u, r in people.items()},
        suggestion=d.suggestion,
        concept=ConceptState(dict(d.concept.locked), d.concept.field) if d.concept else None,
        explorer_pick=d.pick.image_id if d.pick else None,
        final_image_id=d.final_image_id,
        created_at=rec.created_at,
    )


async def stage_view(db: Database, st: StageRecord, funnel: FunnelSettings) -> StageView:
    """A stage with its delivered images, votes, tallies and ranked selection."""
    jobs = await db.stage_jobs(st.id)
    images = await db.stage_images(st.id)
    votes = await db.votes_for_images([im.id for im in images])
    per_image = votes_by_image(votes)
    shown = tuple(
        StageImage(im.index, im, sum(per_image.get(im.id, {}).values()), per_image.get(im.id, {})) for im in images
    )
    return StageView(
        id=st.id,
        session_id=st.session_id,
        index=st.idx,
        name=st.name,
        kind=st.kind,
        is_final=is_final(st.kind, st.idx, len(funnel.stages)),
        status=st.status,
        total=len(jobs),
        delivered=len(images),
        failed=sum(1 for j in jobs if j.status in (JobStatus.FAILED, JobStatus.CANCELLED)),
        images=shown,
        selection=rank_selection({im.number: im.tally for im in shown}),
        field=st.data.field,
        options=st.data.options or st.data.labels,
    )


async def image_info(db: Database, image_id: str) -> ImageInfo:
    """Prompt, seed, node, time, size, checkpoint and ancestors of a delivered image."""
    image = await db.image(image_id)
    job = await db.get_job(image_id)
    if image is None or job is None:
        raise InvalidState("no image", user_message="That image does not exist or is not finished yet.")
    chain: list[LineageLink] = []
    parent = image.parent_id
    while parent is not None and len(chain) < 100:
        pj = await db.get_job(parent)
        if pj is None:
            break
        st = await db.get_stage(pj.spec.stage_id) if pj.spec.stage_id else None
        chain.append(LineageLink(pj.id, st.name if st else "", pj.spec.index, pj.params.seed))
        parent = pj.spec.parent_id
    p = job.params
    return ImageInfo(
        id=image.id,
        prompt=image.prompt,
        negative_prompt=image.negative_prompt,
        seed=image.seed,
        node_id=image.node_id,
        seconds=image.seconds,
        width=image.width,
        height=image.height,
        checkpoint=image.checkpoint,
        family=p.family,
        steps=p.steps,
        denoise=p.denoise,
        mode=p.mode,
        session_id=image.session_id,
        stage_id=image.stage_id,
        parent_id=image.parent_id,
        lineage=tuple(reversed(chain)),
        path=image.path or None,
        thumbnail=image.thumbnail,
    )


class SessionReader:
    """Reads sessions, stages and images as front ends show them."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx

    async def session(self, session_id: str) -> Session:
        """The session as it is now."""
        return await session_of(self.ctx.db, await self.ctx.row(session_id))

    async def current_stage(self, session_id: str) -> StageView:
        """The session's current stage or round."""
        return await self.ctx.current_view(await self.ctx.row(session_id))

    async def stage(self, stage_id: str) -> StageView:
        """Any stage by id."""
        st = await self.ctx.stage(stage_id)
        if st is None:
            raise SessionNotFound(f"stage {stage_id}", user_message="That stage no longer exists.")
        return await stage_view(self.ctx.db, st, self.ctx.settings.funnel)

    async def image_info(self, image_id: str) -> ImageInfo:
        """Prompt, seed, node, time, size, checkpoint and ancestors of a delivered image."""
        return await image_info(self.ctx.db, image_id)

    async def active_sessions(self) -> list[Session]:
        """Sessions still generating or voting."""
        rows = await self.ctx.db.sessions_in_states([SessionState.GENERATING.value, SessionState.VOTING.value])
        return [await session_of(self.ctx.db, SessionRecord.of(r)) for r in rows]
