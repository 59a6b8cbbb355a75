"""
StageLifecycle: what happens to a stage after it is queued, without anyone pressing a button.

Listens for the scheduler's finished batches and opens each stage for votes (then finishes, upscales or waits,
as the flow says), resumes sessions left by a previous process, and advances a session when its quorum is met
or its deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from orchestrator.errors import ImGenError, InvalidState
from orchestrator.events import BatchDone, DeadlineMissed, Event, SessionEnded, StageDone, Subscription
from orchestrator.models import JobStatus
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import Flow, SessionState, StageKind, StageStatus
from orchestrator.sessions.moves import FunnelMoves
from orchestrator.sessions.records import NextStep, SessionRecord, StageRecord, is_final
from orchestrator.sessions.stages import StageWriter
from orchestrator.sessions.state import Action, transition
from orchestrator.sessions.voting import distinct_voters

log = logging.getLogger(__name__)

#: the supervised task that completes stages as their batches finish
PUMP_TASK = "sessions-pump"

LIVE_STATES = (SessionState.GENERATING, SessionState.VOTING, SessionState.FINISHED)


class StageLifecycle:
    """Completes stages as their batches finish, resumes after a restart, and runs the quorum and deadline rules."""

    def __init__(self, ctx: SessionContext, stages: StageWriter, moves: FunnelMoves) -> None:
        self.ctx = ctx
        self.stages = stages
        self.moves = moves
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Listen for stage batches, then resume sessions left by a previous process."""
        ctx = self.ctx
        self._sub = ctx.bus.subscribe(maxsize=10_000, accept=_is_stage_batch)
        ctx.scheduler.supervisor.spawn(PUMP_TASK, functools.partial(self._pump, self._sub))
        for row in await ctx.db.sessions_in_states([s.value for s in LIVE_STATES]):
            async with ctx.lock(row.id):
                await self._resume(row.id)

    async def stop(self) -> None:
        """Cancel the listener and every deadline timer; sessions stay in the DB as they are."""
        if self._sub is not None:
            self._sub.close()
        await self.ctx.scheduler.supervisor.cancel(PUMP_TASK)
        tasks = list(self.ctx.timers.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.ctx.timers.clear()

    async def _pump(self, sub: Subscription) -> None:
        ctx = self.ctx
        async for ev in sub:
            assert isinstance(ev, BatchDone) and ev.session_id and ev.stage_id
            try:
                async with ctx.lock(ev.session_id):
                    row = await ctx.row(ev.session_id)
                    st = await ctx.stage(ev.stage_id)
                    if st is not None and st.status is StageStatus.GENERATING:
                        await self._complete(row, st)
            except Exception:
                log.exception("session=%s stage=%s: handling its finished batch failed", ev.session_id, ev.stage_id)

    async def _resume(self, session_id: str) -> None:
        row = await self.ctx.row(session_id)
        st = await self.ctx.current(row)
        if st is None:
            return
        if st.status is StageStatus.GENERATING:
            jobs = await self.ctx.db.stage_jobs(st.id)
            if not jobs:
                # Stopped between writing the stage and queueing its jobs: plan it again.
                await self.stages.replan(row, st)
            elif all(j.status.terminal for j in jobs):
                await self._complete(row, st)
        elif st.status is StageStatus.VOTING and row.state is SessionState.VOTING:
            self.arm_deadline(row, st)
        log.info("resumed session=%s stage=%s (%s)", row.id, st.name, st.status)

    async def _complete(self, row: SessionRecord, st: StageRecord) -> None:
        """Every job of the stage is terminal: open it for votes (once), then do what the flow does next."""
        ctx = self.ctx
        jobs = await ctx.db.stage_jobs(st.id)
        done = sum(1 for j in jobs if j.status is JobStatus.DONE)
        deadline_s = row.settings.deadline_s
        if deadline_s:
            st = st.with_data(st.data.with_(deadline_at=time.time() + deadline_s))
        if st.kind is StageKind.STAGE and st.data.next_seed is None:
            st = st.with_data(st.data.with_(next_seed=self.stages.seed()))
        st = st.moved(StageStatus.VOTING)
        await ctx.save_stage(st)
        current = row.data.stage_id == st.id
        then = NextStep.VOTE
        if current:
            # Decide what follows before announcing the stage, so a front end that reacts to StageDone
            # already reads the finished session (or the final image) from get().
            row = row.with_(state=transition(row.state, Action.STAGE_DONE))
            if done:
                row, then = await self._after_stage(row, st)
            await ctx.save(row)
        ctx.bus.publish(StageDone(row.id, st.id, st.name, done, len(jobs) - done))
        log.info("session=%s stage=%s %s done=%d failed=%d", row.id, st.id[:8], st.name, done, len(jobs) - done)
        if not current or not done:
            return
        if then is NextStep.FINISHED:
            ctx.bus.publish(SessionEnded(row.id, "finished"))
            log.info("session=%s finished final=%s", row.id, row.data.final_image_id)
        elif then is NextStep.UPSCALE:
            assert row.data.final_image_id is not None
            try:
                await self.stages.start_upscale(row, st, row.data.final_image_id)
            except ImGenError as e:
                log.warning("session=%s final upscale not possible: %s", row.id, e.user_message)
                row = row.with_(state=transition(row.state, Action.FINISH))
                await ctx.save(row)
                ctx.bus.publish(SessionEnded(row.id, "finished"))
        elif then is NextStep.VOTE:
            await self.maybe_quorum(row, st)
            refreshed = await ctx.row(row.id)
            if refreshed.data.stage_id == st.id:
                self.arm_deadline(refreshed, st)

    async def _after_stage(self, row: SessionRecord, st: StageRecord) -> tuple[SessionRecord, NextStep]:
        """What a delivered current stage leads to, and the session as it leads there."""
        funnel = self.ctx.settings.funnel
        if not is_final(st.kind, st.idx, len(funnel.stages)):
            return row, NextStep.VOTE
        images = await self.ctx.db.stage_images(st.id)
        row = row.with_(data=row.data.with_(final_image_id=images[0].id))
        if st.kind is not StageKind.UPSCALE and funnel.final_upscale:
            return row, NextStep.UPSCALE
        if row.flow is Flow.EXPLORER:
            # An Explorer's upscale is a result, not the end: its rounds go on from any pick.
            return row, NextStep.FINAL
        return row.with_(state=transition(row.state, Action.FINISH)), NextStep.FINISHED

    async def maybe_quorum(self, row: SessionRecord, st: StageRecord) -> None:
        """Advance the session (its lock held) once as many people voted on the open stage as its quorum asks."""
        quorum = row.settings.quorum
        if not quorum or st.status is not StageStatus.VOTING:
            return
        images = await self.ctx.db.stage_images(st.id)
        votes = await self.ctx.db.votes_for_images([im.id for im in images])
        if distinct_voters(votes) < quorum:
            return
        try:
            await self.moves.advance_locked(row)
            log.info("session=%s advanced by quorum of %d", row.id, quorum)
        except InvalidState as e:
            log.info("session=%s quorum reached but not advancing: %s", row.id, e.user_message)

    def arm_deadline(self, row: SessionRecord, st: StageRecord) -> None:
        """Start the timer that advances the session at the stage's deadline, if it has one."""
        at = st.data.deadline_at
        if at is None:
            return
        self.ctx.cancel_timer(row.id)
        task = asyncio.create_task(self._deadline(row.id, st.id, float(at)), name=f"deadline-{row.id}")
        self.ctx.timers[row.id] = task

    async def _deadline(self, session_id: str, stage_id: str, at: float) -> None:
        ctx = self.ctx
        await asyncio.sleep(max(0.0, at - time.time()))
        async with ctx.lock(session_id):
            if ctx.timers.get(session_id) is asyncio.current_task():
                del ctx.timers[session_id]
            row = await ctx.row(session_id)
            if row.data.stage_id != stage_id or row.state is not SessionState.VOTING:
                return
            try:
                await self.moves.advance_locked(row)
                log.info("session=%s advanced at its deadline", session_id)
            except ImGenError as e:
                log.info("session=%s deadline passed, not advancing: %s", session_id, e.user_message)
                # Otherwise the group waits on a rule that already fired: say so, and Continue stays the way on.
                ctx.bus.publish(DeadlineMissed(session_id, stage_id, e.user_message))
            except Exception:
                # A one-shot timer has no supervisor to restart it: it must not die unseen.
                log.exception("session=%s: advancing at the deadline failed", session_id)
                ctx.bus.publish(DeadlineMissed(session_id, stage_id, "something went wrong; press Continue"))


def _is_stage_batch(ev: Event) -> bool:
    return isinstance(ev, BatchDone) and ev.session_id is not None and ev.stage_id is not None
