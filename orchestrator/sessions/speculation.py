"""
Speculation: while a Draft Grid stage is open for votes, run what Continue would ask for on idle GPUs.

How much to run (the ramp). A speculative job costs its GPU the job's run time d, wasted if the prediction
changes before Continue; if the prediction holds, it saves about d of that GPU's work after Continue. Expected
waste and expected saving are even when the prediction is as likely as not to outlive the job. All that is known
of the voters is how long the prediction has held (a); with nothing else, a state is taken to be as likely as not
to last as long again as it has lasted (P(it holds t more | it held a) = a / (a + t)), so the break-even is
a = d. A GPU therefore gets speculative work once the prediction has held `speculation.ramp` (1: break-even)
times that GPU's run time of one of the next stage's jobs (the router's estimate), and never before
`speculation.settle_s`: the fastest GPU first, every GPU and the whole stage once it has held for the slowest
one's job. Before that, the prediction has at most one job in flight per GPU it has earned, so a change costs at
most one job per earned GPU, where submitting the whole stage at once kept every GPU on it until the change.
A change of the prediction (back and forth included) starts the count again. The times are the farm's own
estimates, so the ramp scales with the farm (and with the simulator's time scale).

Per-server opt-out lives in the refs table (`SERVER_REF`, `speculation:<server id>`), set by an admin-only
/server command; `speculation.enabled` turns it off for the whole bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from orchestrator.db import Database
from orchestrator.errors import ImGenError, SessionNotFound
from orchestrator.events import Event, JobFailed, JobFinished, SpeculationChanged
from orchestrator.farm.speculative import SPECULATIVE_BATCH_PREFIX, is_speculative_batch
from orchestrator.models import Job, JobSpec
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import Flow, SessionState, StageKind, StageStatus
from orchestrator.sessions.moves import next_stage
from orchestrator.sessions.records import ParentShare, SessionRecord, StageData, StageRecord
from orchestrator.sessions.views import stage_view

log = logging.getLogger(__name__)

#: per-server options live in the refs table under this pseudo-session id
SERVER_REF = "_server"


def server_key(server_id: str) -> str:
    """The refs key of a server's speculation switch."""
    return f"speculation:{server_id}"


async def server_allows(db: Database, server_id: str | None) -> bool:
    """Whether a server allows speculative stages: on unless an admin turned it off there."""
    if server_id is None:
        return True
    return await db.get_ref(SERVER_REF, server_key(server_id)) != "off"


def spec_key(spec: JobSpec) -> JobSpec:
    """
    A job spec by content: what the image will be, without the stage, session and owner it is filed under.

    Two stages' jobs with equal keys render the same image (same graph, seed and parent), so a speculative job
    with a stage's key can be adopted as that stage's job.
    """
    return dataclasses.replace(spec, stage_id=None, session_id=None, user_id=None)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What Continue would run now for a session: its voting stage and the next stage's specs (by content)."""

    stage_id: str
    keys: tuple[JobSpec, ...]


@dataclass(frozen=True, slots=True)
class Allowance:
    """How much of a prediction may be in flight at its age: `gpus` jobs, or the whole stage; when that grows."""

    gpus: int
    whole: bool
    #: seconds until the allowance grows (None: it is whole already, or nothing is known to grow it)
    grows_in: float | None


def allowance(thresholds: Sequence[float], age: float) -> Allowance:
    """The allowance of a prediction `age` seconds old, given the age at which each GPU joins (any order)."""
    gpus = sum(1 for t in thresholds if t <= age)
    later = [t - age for t in thresholds if t > age]
    return Allowance(gpus, bool(thresholds) and not later, min(later) if later else None)


@dataclass(slots=True, eq=False)
class _Watch:
    """One session's speculation: the prediction, since when it holds, and the speculative jobs it submitted."""

    poked: asyncio.Event = field(default_factory=asyncio.Event)
    prediction: Prediction | None = None
    #: loop time since which `prediction` has held
    since: float = 0.0
    #: speculative jobs submitted for this session and not cancelled: spec key -> job id
    jobs: dict[JobSpec, str] = field(default_factory=dict)
    #: speculative jobs of this session that ended (finished or failed): no longer in flight
    ended: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    #: set by Continue: the watch ends at its next look (never cancelled mid-submit, which would orphan rows)
    closed: bool = False
    #: the stage whose next checkpoint was warmed up already
    warmed: str | None = None


class Speculator:
    """
    Runs what Continue would ask for while a Draft Grid stage is open for votes, and hands it over at Continue.

    Each session with a voting Draft Grid stage gets a watch: whenever the session or its votes change the
    prediction is computed again (the same code as Continue, from the votes now, with the next seed drawn when the
    stage opened); its missing jobs are submitted speculative as the ramp allows (the module docstring): one job
    in flight per GPU whose job time the prediction has outlived, the whole stage once it has outlived every
    GPU's. Jobs that no longer match are cancelled if still queued; running and done ones are kept for a later
    match until Continue (`take`), which hands over the matching ones and cancels the rest.
    """

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.speculation
        self._watches: dict[str, _Watch] = {}
        self._closing = False
        # A speculative job that ends frees its GPU's place in the ramp: its session's watch looks again.
        self._ends = ctx.bus.subscribe(maxsize=10_000, accept=_speculative_end)
        self._hearing: asyncio.Task[None] | None = None
        ctx.watchers.append(self.poke)
        ctx.adopter = self.take

    def active(self, session_id: str) -> bool:
        """True while speculative jobs of the session are submitted (the progress message says so)."""
        w = self._watches.get(session_id)
        return w is not None and bool(w.jobs)

    def poke(self, session_id: str) -> None:
        """The session changed: look at its prediction again (starts a watch when speculation may apply)."""
        if self._closing or not (self.settings.enabled or self.settings.warmup):
            return
        w = self._watches.get(session_id)
        if w is None or w.closed:
            w = self._watches[session_id] = _Watch()
        w.poked.set()
        if w.task is None or w.task.done():
            w.task = asyncio.create_task(self._watch(session_id, w), name=f"speculate-{session_id[:8]}")
        if self._hearing is None:
            self._hearing = asyncio.create_task(self._hear_ends(), name="speculation-ends")

    async def _hear_ends(self) -> None:
        async for ev in self._ends:
            assert isinstance(ev, JobFinished | JobFailed)
            w = self._watches.get(ev.session_id or "")
            if w is not None and not w.closed:
                w.ended.add(ev.job_id)
                w.poked.set()

    async def stop(self) -> None:
        """Stop every watch (speculative jobs stay as they are; the next start cancels them)."""
        self._closing = True
        self._ends.close()
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        if self._hearing is not None:
            tasks.append(self._hearing)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def take(self, session_id: str, specs: Sequence[JobSpec]) -> dict[int, str]:
        """
        At Continue (the session's lock held): the speculative jobs matching `specs`, by spec index.

        The rest of the session's speculative jobs are cancelled: their images never reach a gallery.
        """
        w = self._watches.pop(session_id, None)
        if w is None:
            return {}
        w.closed = True
        w.poked.set()
        if w.task is not None and w.task is not asyncio.current_task():
            with contextlib.suppress(Exception):
                await w.task
        pool = dict(w.jobs)
        matched: dict[int, str] = {}
        for i, spec in enumerate(specs):
            job_id = pool.pop(spec_key(spec), None)
            if job_id is not None:
                matched[i] = job_id
        await self._drop(pool.values())
        if w.jobs and w.prediction is not None:
            self.ctx.bus.publish(SpeculationChanged(session_id, w.prediction.stage_id, False))
        if matched or pool:
            log.info("session=%s Continue: %d speculative jobs match, %d dropped", session_id, len(matched), len(pool))
        return matched

    async def _drop(self, job_ids: Iterable[str]) -> None:
        sched = self.ctx.scheduler
        for job_id in job_ids:
            await sched.cancel_job(job_id)
            sched.speculation.cancelled += 1
            sched.speculation.discard(job_id)

    async def _watch(self, session_id: str, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not w.closed:
                w.poked.clear()
                await self._warm(session_id, w)
                prediction = await self.predict(session_id)
                if w.closed:
                    return
                if prediction is None:
                    w.closed = True
                    await self._drop(list(w.jobs.values()))
                    if w.jobs and w.prediction is not None:
                        self.ctx.bus.publish(SpeculationChanged(session_id, w.prediction.stage_id, False))
                    w.jobs.clear()
                    if self._watches.get(session_id) is w:
                        del self._watches[session_id]
                    return
                if prediction != w.prediction:
                    w.prediction = prediction
                    w.since = loop.time()
                    await self._drop_unmatched(w, prediction)
                missing = [k for k in prediction.keys if k not in w.jobs]
                room = self.allowance(prediction, loop.time() - w.since)
                if missing:
                    in_flight = sum(1 for k in prediction.keys if k in w.jobs and w.jobs[k] not in w.ended)
                    n = len(missing) if room.whole else room.gpus - in_flight
                    if n > 0:
                        await self._submit(session_id, w, missing[:n])
                        continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(room.grows_in if missing else None):
                        await w.poked.wait()
        except asyncio.CancelledError:
            raise
        except ImGenError as e:
            # A prediction that cannot run (a model gone, a limit): nothing speculative for it; the next change
            # of the session looks again.
            log.info("session=%s: no speculation (%s)", session_id, e)
        except Exception:
            log.exception("session=%s: speculation failed; Continue will run the stage as usual", session_id)

    def thresholds(self, prediction: Prediction) -> list[float]:
        """Per GPU able to run the prediction's jobs, the age from which it may: ramp x its job time, >= settle_s."""
        settle, ramp = self.settings.settle_s, self.settings.ramp
        if not prediction.keys:
            return [settle]
        probe = Job(id="probe", batch_id="probe", spec=prediction.keys[0])
        # No GPU can take it now (all down): one job waits in the queue for the first to come back.
        return [max(settle, ramp * t) for t in self.ctx.scheduler.run_times(probe)] or [settle]

    def allowance(self, prediction: Prediction, age: float) -> Allowance:
        """How much of the prediction may be in flight now that it has held for `age` seconds."""
        return allowance(self.thresholds(prediction), age)

    async def _drop_unmatched(self, w: _Watch, prediction: Prediction) -> None:
        """Cancel the queued speculative jobs the new prediction no longer has; running and done ones wait."""
        sched = self.ctx.scheduler
        wanted = set(prediction.keys)
        for key, job_id in list(w.jobs.items()):
            if key in wanted or job_id not in sched.queued:
                continue
            del w.jobs[key]
            w.ended.discard(job_id)
            await self._drop([job_id])

    async def _submit(self, session_id: str, w: _Watch, keys: Sequence[JobSpec]) -> None:
        sched = self.ctx.scheduler
        batch_id = f"{SPECULATIVE_BATCH_PREFIX}{session_id[:12]}-{uuid.uuid4().hex[:12]}"
        # Filed under the session (its images go to the session's folder) but under no stage or owner: no gallery
        # shows them and no one's quota or fair share counts them until a stage adopts them.
        specs = [dataclasses.replace(k, session_id=session_id) for k in keys]
        _, jobs = await sched.submit(specs, batch_id=batch_id)
        for key, job in zip(keys, jobs, strict=True):
            w.jobs[key] = job.id
        log.info("session=%s: %d speculative jobs submitted from the current votes", session_id, len(jobs))
        self.ctx.bus.publish(SpeculationChanged(session_id, w.prediction.stage_id if w.prediction else "", True))

    async def _voting_stage(self, session_id: str) -> tuple[SessionRecord, StageRecord] | None:
        """The session and its Draft Grid stage open for votes that has a next stage, if it is one."""
        ctx = self.ctx
        try:
            row = await ctx.row(session_id)
        except SessionNotFound:
            return None
        if row.flow is not Flow.DRAFT_GRID or row.state is not SessionState.VOTING:
            return None
        st = await ctx.current(row)
        if st is None or st.status is not StageStatus.VOTING or st.kind is not StageKind.STAGE:
            return None
        if st.idx + 1 >= len(ctx.settings.funnel.stages) or st.data.next_seed is None:
            return None
        return row, st

    async def _warm(self, session_id: str, w: _Watch) -> None:
        """Once per stage open for votes: load the next stage's checkpoint on the idle nodes it will use."""
        if not self.settings.warmup:
            return
        found = await self._voting_stage(session_id)
        if found is None or found[1].id == w.warmed:
            return
        row, st = found
        w.warmed = st.id
        view = await stage_view(self.ctx.db, st, self.ctx.settings.funnel)
        if not view.images:
            return
        # Whatever the votes pick, the next stage's recipe (checkpoint, size, count) is the same: plan it from
        # any image to learn which checkpoint it needs and how many images it has.
        stages = self.ctx.settings.funnel.stages
        count = stages[st.idx + 1].count
        data = StageData(StageKind.STAGE, parents=(ParentShare(view.images[0].image.id, count),), prev=st.id,
                         seed=st.data.next_seed)  # fmt: skip
        plan = await self.ctx.planner.plan(row, st.idx + 1, data, stage_id="")
        self.ctx.scheduler.lane.warm_up(plan.specs)

    async def predict(self, session_id: str) -> Prediction | None:
        """What Continue would run now, or None when the session is not one to speculate for."""
        ctx = self.ctx
        if not self.settings.enabled:
            return None
        found = await self._voting_stage(session_id)
        if found is None:
            return None
        row, st = found
        if row.settings.quorum or row.settings.deadline_s:
            return None  # its rules move it on by themselves
        if not await server_allows(ctx.db, row.settings.server_id):
            return None
        view = await stage_view(ctx.db, st, ctx.settings.funnel)
        if not view.selection:
            return None
        idx, _name, data = next_stage(ctx.settings.funnel.stages, st, view)
        plan = await ctx.planner.plan(row, idx, data, stage_id="")
        for spec in plan.specs:
            ctx.scheduler.check_capable(spec)
        return Prediction(st.id, tuple(spec_key(s) for s in plan.specs))


def _speculative_end(ev: Event) -> bool:
    return isinstance(ev, JobFinished | JobFailed) and is_speculative_batch(ev.batch_id)
