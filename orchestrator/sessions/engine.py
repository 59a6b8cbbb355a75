"""
SessionEngine: the funnel-session parts wired around one SessionContext.

Front ends never call this: they call the Orchestrator facade (orchestrator/service.py), whose session methods
go straight to the part that does the work. create.py starts sessions, moves.py moves them through the funnel,
lifecycle.py completes stages and runs the quorum and deadline rules, ballots.py takes votes, access.py says who
may do what, feedback.py turns feedback into prompt suggestions, stages.py writes the stages themselves and
views.py reads them for front ends, and speculation.py runs what Continue would ask for while people vote.

Every session state change goes through `state.transition`, every stage status change through
`StageRecord.moved`; rows are parsed once into records.py's typed records and written back whole through db.py.
"""

from __future__ import annotations

from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.events import EventBus
from orchestrator.farm.scheduler import Scheduler
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.sessions.access import Access
from orchestrator.sessions.ballots import Ballots
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.create import SessionFactory
from orchestrator.sessions.feedback import Feedback
from orchestrator.sessions.lifecycle import StageLifecycle
from orchestrator.sessions.moves import FunnelMoves
from orchestrator.sessions.speculation import Speculator
from orchestrator.sessions.stages import StageWriter
from orchestrator.sessions.views import SessionReader
from orchestrator.store import ImageStore


class SessionEngine:
    """The parts of the session engine, sharing one context; listens to the scheduler for its stages' batches."""

    def __init__(
        self,
        *,
        db: Database,
        scheduler: Scheduler,
        store: ImageStore,
        bus: EventBus,
        settings: Settings,
        pipeline: FeedbackPipeline,
    ) -> None:
        self.ctx = SessionContext(
            db=db, scheduler=scheduler, store=store, bus=bus, settings=settings, pipeline=pipeline
        )
        stages = StageWriter(self.ctx)
        #: moves through the funnel: advance, pick, regenerate, back, upscale, end
        self.moves = FunnelMoves(self.ctx, stages)
        #: completes stages as their batches finish; quorum and deadline rules
        self.lifecycle = StageLifecycle(self.ctx, stages, self.moves)
        #: starts sessions (from a prompt, an image, a branch)
        self.factory = SessionFactory(self.ctx, stages)
        #: votes and the rules that close a vote
        self.ballots = Ballots(self.ctx, self.lifecycle)
        #: invites and visibility
        self.access = Access(self.ctx)
        #: prompt suggestions from feedback
        self.feedback = Feedback(self.ctx)
        #: sessions, stages and images as front ends show them
        self.reader = SessionReader(self.ctx)
        #: voting time: what Continue would run, on idle GPUs, adopted at Continue
        self.speculation = Speculator(self.ctx)

    async def start(self) -> None:
        """Listen for stage batches, then resume sessions left by a previous process."""
        await self.lifecycle.start()

    async def stop(self) -> None:
        """Cancel the listener, every deadline timer and speculation watch; sessions stay in the DB as they are."""
        await self.speculation.stop()
        await self.lifecycle.stop()
