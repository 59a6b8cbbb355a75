"""The read side of sessions: rows of sessions, stages, jobs and votes turned into what front ends show."""

from __future__ import annotations

from orchestrator.db import Database, SessionRow, StageRow
from orchestrator.errors import InvalidState
from orchestrator.models import JobStatus
from orchestrator.sessions.models import (
    ConceptState,
    Flow,
    ImageInfo,
    LineageLink,
    Role,
    Session,
    SessionSettings,
    SessionState,
    StageImage,
    StageStatus,
    StageView,
    Suggestion,
    Visibility,
)
from orchestrator.sessions.voting import rank_selection


async def session_of(db: Database, row: SessionRow) -> Session:
    """The Session model of a sessions row and its participants."""
    people = await db.participants(row.id)
    c = row.data.get("concept")
    pick = row.data.get("pick")
    suggestion = row.data.get("suggestion")
    return Session(
        id=row.id,
        flow=Flow(row.flow),
        owner_id=row.owner_id,
        visibility=Visibility(row.visibility),
        state=SessionState(row.state),
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        settings=SessionSettings.from_dict(row.settings),
        stage_index=row.stage_index,
        stage_name=str(row.data.get("stage_name", "")),
        stage_id=row.data.get("stage_id"),
        participants={u: Role(r) for u, r in people.items()},
        suggestion=Suggestion.from_dict(suggestion) if suggestion else None,
        concept=ConceptState(dict(c["locked"]), c.get("field")) if c else None,
        explorer_pick=pick.get("image_id") if pick else None,
        final_image_id=row.data.get("final_image_id"),
        created_at=row.created_at,
    )


async def stage_view(db: Database, st: StageRow) -> StageView:
    """A stage with its delivered images, votes, tallies and ranked selection."""
    jobs = await db.stage_jobs(st.id)
    images = await db.stage_images(st.id)
    votes = await db.votes_for_images([im.id for im in images])
    per_image: dict[str, dict[str, int]] = {}
    for v in votes:
        per_image.setdefault(v.image_id, {})[v.user_id] = v.value
    shown = tuple(
        StageImage(im.index, im, sum(per_image.get(im.id, {}).values()), per_image.get(im.id, {})) for im in images
    )
    labels = st.data.get("options") or st.data.get("labels") or ()
    return StageView(
        id=st.id,
        session_id=st.session_id,
        index=st.idx,
        name=st.name,
        status=StageStatus(st.status),
        total=len(jobs),
        delivered=len(images),
        failed=sum(1 for j in jobs if j.status in (JobStatus.FAILED, JobStatus.CANCELLED)),
        images=shown,
        selection=rank_selection({im.number: im.tally for im in shown}),
        field=st.data.get("field"),
        options=tuple(str(x) for x in labels),
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
