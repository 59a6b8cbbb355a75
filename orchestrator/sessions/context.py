"""
SessionContext: what every part of the session service shares.

The database, scheduler, image store, event bus, settings, LLM pipeline and planner, plus the per-session
locks and deadline timers, and the small row look-ups every part needs.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence

from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.errors import InvalidState, SessionNotFound
from orchestrator.events import EventBus
from orchestrator.farm.scheduler import Scheduler
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import JobSpec
from orchestrator.sessions.models import StageView
from orchestrator.sessions.planner import Planner
from orchestrator.sessions.records import SessionRecord, StageRecord
from orchestrator.sessions.views import stage_view
from orchestrator.store import ImageStore


class SessionContext:
    """The services, settings, locks and timers the parts of the session engine share."""

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
        self.db = db
        self.scheduler = scheduler
        self.store = store
        self.bus = bus
        self.settings = settings
        self.pipeline = pipeline
        self.planner = Planner(db, settings)
        #: held only while someone uses them: a lock nobody holds or waits for is gone with its last reference
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.timers: dict[str, asyncio.Task[None]] = {}
        #: told the id of a session whose state, stage or votes changed (the speculator listens)
        self.watchers: list[Callable[[str], None]] = []
        #: the speculator's: the speculative jobs a stage about to be committed adopts (spec index -> job id)
        self.adopter: Callable[[str, Sequence[JobSpec]], Awaitable[Mapping[int, str]]] | None = None

    async def speculation_take(self, session_id: str, specs: Sequence[JobSpec]) -> Mapping[int, str]:
        """The speculative jobs matching these specs of the session's next stage, by spec index (none without)."""
        return await self.adopter(session_id, specs) if self.adopter is not None else {}

    def changed(self, session_id: str) -> None:
        """Tell the watchers a session changed (a write, a vote): what Continue would run may have changed."""
        for watch in self.watchers:
            watch(session_id)

    def lock(self, session_id: str) -> asyncio.Lock:
        """The lock that serialises every change to one session."""
        lock = self.locks.get(session_id)
        if lock is None:
            lock = self.locks[session_id] = asyncio.Lock()
        return lock

    def cancel_timer(self, session_id: str) -> None:
        """Drop the session's deadline timer (only forgotten if it is the caller: it is advancing the session)."""
        task = self.timers.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def row(self, session_id: str) -> SessionRecord:
        """The session, parsed; SessionNotFound if there is none."""
        row = await self.db.get_session(session_id)
        if row is None:
            raise SessionNotFound(f"session {session_id}")
        return SessionRecord.of(row)

    async def save(self, rec: SessionRecord) -> None:
        """Write the session back whole."""
        await self.db.update_session(rec.to_row())
        self.changed(rec.id)

    async def stage(self, stage_id: str | None) -> StageRecord | None:
        """A stage, parsed, if it exists."""
        st = await self.db.get_stage(stage_id) if stage_id else None
        return StageRecord.of(st) if st is not None else None

    async def save_stage(self, st: StageRecord) -> None:
        """Write a stage back whole."""
        await self.db.update_stage(st.to_row())
        self.changed(st.session_id)

    async def stages_of(self, session_id: str) -> list[StageRecord]:
        """Every stage of the session, in order."""
        return [StageRecord.of(st) for st in await self.db.session_stages(session_id)]

    async def current(self, rec: SessionRecord) -> StageRecord | None:
        """The session's current stage, if it has one yet."""
        return await self.stage(rec.data.stage_id)

    async def need_current(self, rec: SessionRecord) -> StageRecord:
        """The session's current stage; InvalidState if it has none."""
        st = await self.current(rec)
        if st is None:
            raise InvalidState("no stage", user_message="This session has no stage yet.")
        return st

    async def current_view(self, rec: SessionRecord) -> StageView:
        """The current stage as front ends show it."""
        return await stage_view(self.db, await self.need_current(rec), self.settings.funnel)
