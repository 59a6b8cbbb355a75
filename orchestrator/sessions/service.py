"""
SessionService: the facade the bot and the terminal call to run funnel sessions.

It reads sessions itself and hands every change to one focused part, all sharing one SessionContext:
create.py starts sessions, moves.py moves them through the funnel, lifecycle.py completes stages and runs the
quorum and deadline rules, ballots.py takes votes, access.py says who may do what, feedback.py turns feedback
into prompt suggestions, and stages.py writes the stages themselves.

Every state change goes through `state.transition`; every row through db.py. Flow-specific state lives in the
JSON `data` of the session and stage rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.errors import SessionNotFound
from orchestrator.events import EventBus
from orchestrator.farm.scheduler import Scheduler
from orchestrator.llm.changes import RefineResult
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import Family, LoraSpec
from orchestrator.sessions import access
from orchestrator.sessions.ballots import Ballots
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.create import SessionFactory
from orchestrator.sessions.feedback import Feedback
from orchestrator.sessions.lifecycle import StageLifecycle
from orchestrator.sessions.models import Flow, ImageInfo, Session, SessionState, StageView, Visibility, VoteResult
from orchestrator.sessions.moves import FunnelMoves
from orchestrator.sessions.planner import Planner
from orchestrator.sessions.stages import StageWriter
from orchestrator.sessions.views import image_info, session_of, stage_view
from orchestrator.store import ImageStore


class SessionService:
    """Creates, advances and persists funnel sessions; listens to the scheduler for its stages' batches."""

    def __init__(
        self,
        *,
        db: Database,
        scheduler: Scheduler,
        store: ImageStore,
        bus: EventBus,
        settings: Settings,
        pipeline: FeedbackPipeline | None = None,
    ) -> None:
        self.ctx = SessionContext(
            db=db,
            scheduler=scheduler,
            store=store,
            bus=bus,
            settings=settings,
            pipeline=pipeline if pipeline is not None else FeedbackPipeline(settings.llm),
        )
        stages = StageWriter(self.ctx)
        self._moves = FunnelMoves(self.ctx, stages)
        self._lifecycle = StageLifecycle(self.ctx, stages, self._moves)
        self._factory = SessionFactory(self.ctx, stages)
        self._ballots = Ballots(self.ctx, self._lifecycle)
        self._access = access.Access(self.ctx)
        self._feedback = Feedback(self.ctx)

    # The shared services stay readable here; they are read-only so the parts cannot see a different one.

    @property
    def db(self) -> Database:
        return self.ctx.db

    @property
    def scheduler(self) -> Scheduler:
        return self.ctx.scheduler

    @property
    def store(self) -> ImageStore:
        return self.ctx.store

    @property
    def bus(self) -> EventBus:
        return self.ctx.bus

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def pipeline(self) -> FeedbackPipeline:
        return self.ctx.pipeline

    @property
    def planner(self) -> Planner:
        return self.ctx.planner

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Listen for stage batches, then resume sessions left by a previous process."""
        await self._lifecycle.start()

    async def stop(self) -> None:
        """Cancel the listener and every deadline timer; sessions stay in the DB as they are."""
        await self._lifecycle.stop()

    # ------------------------------------------------------------------ create

    async def create(
        self,
        flow: Flow,
        owner_id: str,
        prompt: str,
        *,
        negative: str | None = None,
        family: Family | None = None,
        count: int | None = None,
        aspect: str | None = None,
        private: bool = False,
        image_path: Path | None = None,
        fields: Mapping[str, str] | None = None,
        checkpoint: str | None = None,
        loras: Sequence[LoraSpec] = (),
    ) -> Session:
        """Start a session: flags in `prompt` are parsed (keyword arguments win) and the first stage queued."""
        return await self._factory.create(
            flow,
            owner_id,
            prompt,
            negative=negative,
            family=family,
            count=count,
            aspect=aspect,
            private=private,
            image_path=image_path,
            fields=fields,
            checkpoint=checkpoint,
            loras=loras,
        )

    async def variations(self, user_id: str, image_id: str) -> Session:
        """A new Explorer session around an image."""
        return await self._factory.variations(user_id, image_id)

    async def branch(self, session_id: str, user_id: str, image_id: str) -> Session:
        """A new Draft Grid that continues from that image: the next stage's images all grow from it."""
        return await self._factory.branch(session_id, user_id, image_id)

    # ------------------------------------------------------------------ reading

    async def get(self, session_id: str) -> Session:
        """The session as it is now."""
        return await session_of(self.ctx.db, await self.ctx.row(session_id))

    async def current_stage(self, session_id: str) -> StageView:
        """The session's current stage or round."""
        return await self.ctx.current_view(await self.ctx.row(session_id))

    async def stage(self, stage_id: str) -> StageView:
        """Any stage by id."""
        st = await self.ctx.db.get_stage(stage_id)
        if st is None:
            raise SessionNotFound(f"stage {stage_id}", user_message="That stage no longer exists.")
        return await stage_view(self.ctx.db, st)

    async def image_info(self, image_id: str) -> ImageInfo:
        """Prompt, seed, node, time, size, checkpoint and ancestors of a delivered image."""
        return await image_info(self.ctx.db, image_id)

    async def active_sessions(self) -> list[Session]:
        """Sessions still generating or voting."""
        rows = await self.ctx.db.sessions_in_states([SessionState.GENERATING.value, SessionState.VOTING.value])
        return [await session_of(self.ctx.db, r) for r in rows]

    # ------------------------------------------------------------------ permissions

    def may_vote(self, session: Session, user_id: str) -> bool:
        """Open sessions: anyone; private ones: the owner and invited members."""
        return access.may_vote(session, user_id)

    def may_advance(self, session: Session, user_id: str) -> bool:
        """The owner, or anyone in an open session."""
        return access.may_advance(session, user_id)

    async def invite(self, session_id: str, by_user: str, user_id: str) -> Session:
        """Let someone vote in a private session (owner only)."""
        return await self._access.invite(session_id, by_user, user_id)

    async def set_visibility(self, session_id: str, by_user: str, visibility: Visibility) -> Session:
        """Open or close the session to everyone (owner only)."""
        return await self._access.set_visibility(session_id, by_user, visibility)

    # ------------------------------------------------------------------ votes

    async def vote(self, session_id: str, image_id: str, user_id: str, value: int | None) -> VoteResult:
        """Select (+1), reject (-1) or withdraw (None) one person's vote on an image of the current stage."""
        return await self._ballots.vote(session_id, image_id, user_id, value)

    async def toggle(self, session_id: str, image_id: str, user_id: str, value: int) -> VoteResult:
        """Press Select (or Reject) once to vote, twice to withdraw."""
        return await self._ballots.vote(session_id, image_id, user_id, value, toggle=True)

    async def set_rules(
        self, session_id: str, by_user: str, *, quorum: int | None = None, deadline_s: float | None = None
    ) -> Session:
        """Advance automatically once `quorum` people voted, or `deadline_s` after a stage opens (owner only)."""
        return await self._ballots.set_rules(session_id, by_user, quorum=quorum, deadline_s=deadline_s)

    # ------------------------------------------------------------------ moving through the funnel

    async def advance(self, session_id: str, user_id: str) -> StageView:
        """Next stage from the selection (Concept Builder / Explorer: pick the best-voted image)."""
        return await self._moves.advance(session_id, user_id)

    async def regenerate(self, session_id: str, user_id: str) -> StageView:
        """Run the current stage again with new seeds (and the current prompt)."""
        return await self._moves.regenerate(session_id, user_id)

    async def back(self, session_id: str, user_id: str) -> StageView:
        """Make the previous stage current again, with its images and votes."""
        return await self._moves.back(session_id, user_id)

    async def end(self, session_id: str, user_id: str) -> Session:
        """End the session (owner only); a stage still rendering is cancelled."""
        return await self._moves.end(session_id, user_id)

    async def concept_set_field(self, session_id: str, user_id: str, value: str) -> StageView:
        """Lock the current Concept Builder field with the user's own value and move to the next field."""
        return await self._moves.concept_set_field(session_id, user_id, value)

    async def pick(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Concept Builder: lock the field from that image's option; Explorer: next round around that image."""
        return await self._moves.pick(session_id, user_id, image_id)

    async def upscale(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Upscale any delivered image of the session as a one-image stage (InvalidState if one exists)."""
        return await self._moves.upscale(session_id, user_id, image_id)

    async def existing_upscale(self, session_id: str, image_id: str) -> StageView | None:
        """The upscale of this image that exists or is rendering, if any (a second would be identical)."""
        return await self._moves.existing_upscale(session_id, image_id)

    # ------------------------------------------------------------------ feedback

    async def refine(self, session_id: str, user_id: str, feedback: str) -> RefineResult:
        """Turn feedback into a suggested prompt (kept pending, not applied) using the current votes."""
        return await self._feedback.refine(session_id, user_id, feedback)

    async def apply_suggestion(
        self,
        session_id: str,
        user_id: str,
        prompt: str | None = None,
        negative: str | None = None,
        *,
        require_pending: bool = False,
    ) -> Session:
        """Use the pending suggestion (or the user's edit of it, which needs it still pending) as the next prompt."""
        return await self._feedback.apply_suggestion(
            session_id, user_id, prompt, negative, require_pending=require_pending
        )

    async def discard_suggestion(self, session_id: str, user_id: str) -> None:
        """Drop the pending suggestion."""
        await self._feedback.discard_suggestion(session_id, user_id)

    async def undo(self, session_id: str, user_id: str) -> Session:
        """Go back to the prompt before the last applied suggestion."""
        return await self._feedback.undo(session_id, user_id)
