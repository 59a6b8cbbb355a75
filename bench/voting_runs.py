"""Voting time (issue 15), the runs: scripted vote timelines driven through the facade, speculation off and on.

Every scenario is a Draft Grid session on a fresh simulated farm (nothing loaded), driven with the calls the bot
makes (create_session, toggle, advance, generate); the vote pauses and the settle time are scaled like the farm
(a 45 s vote lasts 45 x time scale seconds of wall time). Times are taken from the facade's events: a stage's last
image is its StageDone. Each scenario runs `REPEATS` times (interleaved, so a slow spell of the machine hits
several scenarios once rather than one scenario thrice); bench/voting.py writes the section from them (medians
and ranges).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.farm import sim_farm
from bench.timeline import JobSpan, Start, draw_timeline, read_spans
from orchestrator.config import Config, StorageSettings
from orchestrator.events import Event, JobStarted, SessionEnded, StageDone
from orchestrator.farm.router import prior_seconds_per_step
from orchestrator.farm.speculative import SpeculationStats
from orchestrator.models import Family, TaskKind
from orchestrator.service import GenerateRequest, Orchestrator
from orchestrator.sessions.models import Flow, SessionRequest

#: simulated seconds of one vote pause, and of the settle time asked of speculation
VOTE_S = 45.0
SETTLE_S = 3.0
PROMPT = "a lighthouse at dusk, dramatic sky --seed 1000"
OWNER = "owner"
OTHER_USER = "other"
STAGE_NAMES = ("refined", "polished", "final")
#: goals of issue 15
STABLE_GOAL = 0.15
WASTE_GOAL = 0.30
CHANGED_GOAL = 0.5
OTHER_USER_GOAL = 1.10
#: runs of each scenario; figures are their medians
REPEATS = 3


@dataclass(frozen=True)
class Vote:
    """One button press at a fraction of the vote pause: ✓ (1) or ✗ (-1) on an image number; twice withdraws."""

    at: float
    user: str
    number: int
    value: int = 1
    #: a label for the timeline picture at this press
    mark: str = ""


#: votes settle within the first third of the pause (per stage: drafts, refined, polished)
STABLE: tuple[tuple[Vote, ...], ...] = (
    (Vote(0.04, "ana", 3), Vote(0.12, "ben", 3), Vote(0.20, "cyd", 7), Vote(0.30, "ana", 7)),
    (Vote(0.05, "ana", 2), Vote(0.15, "ben", 5), Vote(0.30, "cyd", 2)),
    (Vote(0.05, "ana", 1), Vote(0.20, "ben", 1)),
)
#: the first picks settle at this fraction of the pause (their last vote)
FIRST_SETTLED = 0.30


def changed_votes(at: float) -> tuple[Vote, ...]:
    """The leading drafts change once, at `at` of the pause: the voters withdraw (press again), pick two others."""
    return (
        Vote(0.04, "ana", 3),
        Vote(0.12, "ben", 3),
        Vote(0.20, "cyd", 7),
        Vote(FIRST_SETTLED, "ana", 7),
        Vote(at, "ana", 3, mark="votes change"),
        Vote(at, "ben", 3),
        Vote(at, "cyd", 7),
        Vote(at, "ana", 7),
        Vote(at + 0.01, "ana", 12),
        Vote(at + 0.01, "ben", 15),
        Vote(at + 0.02, "cyd", 12),
    )


#: the change of the changed-mind scenario (its goals), and the other moments of its sensitivity table
CHANGE_AT = 0.50
SENSITIVITY = (0.35, 0.50, 0.65)
CHANGED: tuple[Vote, ...] = changed_votes(CHANGE_AT)
#: when the other user sends 20 drafts, as a fraction of the pause (speculative work is running by then)
OTHER_AT = 0.5


@dataclass
class FunnelRun:
    """One session through its stages: Continue -> last image per stage, and the whole wall time."""

    continue_to_done: dict[str, float] = field(default_factory=dict)
    continue_to_upscaled: float | None = None
    draft_to_final: float = 0.0
    draft_to_upscaled: float = 0.0
    spec: SpeculationStats = field(default_factory=SpeculationStats)
    spans: list[JobSpan] = field(default_factory=list)
    #: wall-clock marks for the picture: (epoch seconds, label)
    marks: list[tuple[float, str]] = field(default_factory=list)
    t0: float = 0.0
    other_makespan: float | None = None
    #: (job id, node id, when) of each run's start, from the bus
    starts: list[Start] = field(default_factory=list)


@dataclass
class VotingResult:
    """
    Every figure of the section: each scenario's runs, and its median run (the one drawn and described).

    `stable_off` ... `other_on` are the median runs (by the scenario's headline figure); the lists hold all runs.
    """

    stable_off: FunnelRun
    stable_on: FunnelRun
    changed_on: FunnelRun
    other_off: FunnelRun
    other_on: FunnelRun
    seed_walls: list[float]
    pause: float
    settle: float
    picture: Path | None
    more_picture: Path | None
    stable_offs: list[FunnelRun] = field(default_factory=list)
    stable_ons: list[FunnelRun] = field(default_factory=list)
    #: changed-mind runs (speculation on) by the moment of the change (fraction of the pause)
    changed: dict[float, list[FunnelRun]] = field(default_factory=dict)
    other_offs: list[FunnelRun] = field(default_factory=list)
    other_ons: list[FunnelRun] = field(default_factory=list)
    #: `speculation.ramp` of the runs, and the refined job's estimated run time per SDXL card (s, at this scale)
    ramp: float = 0.0
    refined_job_s: dict[str, float] = field(default_factory=dict)
    #: wall time of all the runs (s)
    took: float = 0.0
    #: each card's configured VRAM (GB): whether a kept checkpoint stays on the card or is moved back
    vram_gb: dict[str, float] = field(default_factory=dict)


class Watcher:
    """Records when each stage's images are all delivered and when sessions end (wall-clock, from the bus)."""

    def __init__(self, orch: Orchestrator) -> None:
        self._sub = orch.bus.subscribe(accept=self._wanted)
        self.done: dict[str, float] = {}
        #: (job id, node id, when) of every run's start, for the runs the job rows forget
        self.starts: list[Start] = []
        self.ended: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name="bench-watcher")

    @staticmethod
    def _wanted(ev: Event) -> bool:
        return isinstance(ev, StageDone | SessionEnded | JobStarted)

    async def _run(self) -> None:
        async for ev in self._sub:
            now = time.time()
            if isinstance(ev, JobStarted):
                self.starts.append((ev.job_id, ev.node_id, now))
            elif isinstance(ev, StageDone):
                self.done.setdefault(ev.stage_id, now)
            elif isinstance(ev, SessionEnded):
                self.ended.setdefault(ev.session_id, now)
            async with self._changed:
                self._changed.notify_all()

    async def stage_done(self, stage_id: str, timeout: float = 120.0) -> float:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: stage_id in self.done), timeout)
        return self.done[stage_id]

    async def session_ended(self, session_id: str, timeout: float = 120.0) -> float:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: session_id in self.ended), timeout)
        return self.ended[session_id]

    async def close(self) -> None:
        self._sub.close()
        await self._task


def with_speculation(cfg: Config, on: bool, settle_s: float) -> Config:
    """The farm's config with speculation (and warm-up) on or off and the settle time scaled like the farm."""
    spec = dataclasses.replace(cfg.settings.speculation, enabled=on, warmup=on, settle_s=settle_s)
    return cfg.with_settings(speculation=spec)


async def _vote_pause(
    orch: Orchestrator, session_id: str, votes: Sequence[Vote], pause: float, opened: float, run: FunnelRun
) -> None:
    """Press the buttons at their moments of the pause (from when the stage opened), then wait out the pause."""
    view = await orch.current_stage(session_id)
    ids = {im.number: im.image.id for im in view.images}
    for v in sorted(votes, key=lambda v: v.at):
        delay = opened + v.at * pause - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if v.mark:
            run.marks.append((time.time(), v.mark))
        await orch.toggle(session_id, ids[v.number], v.user, v.value)
    rest = opened + pause - time.time()
    if rest > 0:
        await asyncio.sleep(rest)


async def _funnel(
    orch: Orchestrator,
    scripts: Sequence[Sequence[Vote]],
    pause: float,
    run: FunnelRun,
    *,
    other_user_at: float | None = None,
) -> None:
    """One Draft Grid session: drafts, then per script a vote pause and Continue, until the scripts run out.

    With `other_user_at`, another user sends 20 drafts at that fraction of the first pause, and the run ends when
    they are done (no Continue: only their makespan is measured).
    """
    watcher = Watcher(orch)
    try:
        run.t0 = time.time()
        session = await orch.create_session(SessionRequest(Flow.DRAFT_GRID, OWNER, PROMPT))
        stage_id = session.stage_id
        assert stage_id is not None
        opened = await watcher.stage_done(stage_id)
        run.marks.append((opened, "drafts done"))
        if other_user_at is not None:
            voting = asyncio.create_task(_vote_pause(orch, session.id, scripts[0], pause, opened, run))
            try:
                run.other_makespan = await _other_user(orch, opened + other_user_at * pause, run)
            finally:
                voting.cancel()
            run.spec = orch.speculation_stats()
            return
        for i, votes in enumerate(scripts):
            await _vote_pause(orch, session.id, votes, pause, opened, run)
            pressed = time.time()
            run.marks.append((pressed, "Continue"))
            view = await orch.advance(session.id, OWNER)
            opened = await watcher.stage_done(view.id)
            run.continue_to_done[STAGE_NAMES[i]] = opened - pressed
            run.marks.append((opened, f"{view.name} done"))
            if view.name == "final":
                run.draft_to_final = opened - run.t0
                ended = await watcher.session_ended(session.id)
                run.continue_to_upscaled = ended - pressed
                run.draft_to_upscaled = ended - run.t0
        run.spec = orch.speculation_stats()
    finally:
        await watcher.close()
        run.starts = watcher.starts


async def _other_user(orch: Orchestrator, at: float, run: FunnelRun) -> float:
    """Another user's 20 drafts, sent at `at` (epoch seconds): their makespan."""
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    run.marks.append((time.time(), "another user's 20 drafts"))
    t0 = time.perf_counter()
    batch = await orch.generate(
        GenerateRequest(prompt="a red fox in the snow", family=Family.SD15, count=20, task=TaskKind.DRAFT,
                        seed=5000, user_id=OTHER_USER)
    )  # fmt: skip
    result = await orch.wait_batch(batch)
    if result.failed:
        raise RuntimeError(f"the other user's drafts: {len(result.failed)} failed: {result.failed[0].error}")
    took = time.perf_counter() - t0
    run.marks.append((time.time(), "their drafts done"))
    return took


async def _one(
    name: str,
    scale: float,
    work: Path,
    on: bool,
    scripts: Sequence[Sequence[Vote]],
    *,
    other_user_at: float | None = None,
) -> FunnelRun:
    run = FunnelRun()
    async with sim_farm(scale, work / f"{name}-sim") as cfg:
        cfg = with_speculation(cfg, on, SETTLE_S * scale).with_settings(storage=StorageSettings(data_dir=work / name))
        async with Orchestrator(cfg) as orch:
            await _funnel(orch, scripts, VOTE_S * scale, run, other_user_at=other_user_at)
        run.spans = await read_spans(cfg.settings.storage.database_target, run.starts)
    return run


def refined_job_seconds(cfg: Config, scale: float) -> dict[str, float]:
    """A refined job's run time per SDXL card as the router first estimates it (the tier prior at this scale)."""
    steps = cfg.settings.funnel.stages[1].steps
    return {
        n.id: prior_seconds_per_step(n, Family.SDXL) * steps * scale for n in cfg.nodes if n.can_run(Family.SDXL.value)
    }


def median_run(runs: Sequence[FunnelRun], figure: Callable[[FunnelRun], float | None]) -> FunnelRun:
    """The run whose figure is the median (the lower middle one of an even count; runs without it last)."""
    ranked = sorted(runs, key=lambda r: (figure(r) is None, figure(r) or 0.0))
    measured = [r for r in ranked if figure(r) is not None]
    return measured[(len(measured) - 1) // 2] if measured else ranked[0]


async def voting(
    scale: float, work: Path, seed_walls: Sequence[float], picture: Path | None, more_picture: Path | None = None
) -> VotingResult:
    """
    Every scenario off then on, `REPEATS` times, each on a fresh farm; draws the median stable-votes runs into
    `picture` (and the median changed-mind and other-user runs into `more_picture`).

    Changed mind has no run of its own with speculation off: without speculation the votes do not change what
    the farm does before Continue, so its Continue -> refined is the stable runs' (same stage, same farm state).
    """
    t0 = time.perf_counter()
    stable_offs: list[FunnelRun] = []
    stable_ons: list[FunnelRun] = []
    changed: dict[float, list[FunnelRun]] = {at: [] for at in SENSITIVITY}
    other_offs: list[FunnelRun] = []
    other_ons: list[FunnelRun] = []
    for i in range(REPEATS):
        stable_offs.append(await _one(f"stable-off-{i}", scale, work, False, STABLE))
        stable_ons.append(await _one(f"stable-on-{i}", scale, work, True, STABLE))
        for at in SENSITIVITY:
            changed[at].append(await _one(f"changed-{at:.2f}-on-{i}", scale, work, True, (changed_votes(at),)))
        other_offs.append(await _one(f"other-off-{i}", scale, work, False, STABLE[:1], other_user_at=OTHER_AT))
        other_ons.append(await _one(f"other-on-{i}", scale, work, True, STABLE[:1], other_user_at=OTHER_AT))
    took = time.perf_counter() - t0

    def refined(r: FunnelRun) -> float | None:
        return r.continue_to_done.get("refined")

    def makespan(r: FunnelRun) -> float | None:
        return r.other_makespan

    stable_off, stable_on = median_run(stable_offs, refined), median_run(stable_ons, refined)
    changed_on = median_run(changed[CHANGE_AT], lambda r: r.spec.waste_ratio)
    other_off, other_on = median_run(other_offs, makespan), median_run(other_ons, makespan)
    if picture is not None:
        await asyncio.to_thread(
            draw_timeline,
            picture,
            [("stable votes, speculation off", stable_off.t0, stable_off.spans, stable_off.marks),
             ("stable votes, speculation on", stable_on.t0, stable_on.spans, stable_on.marks)],
        )  # fmt: skip
    if more_picture is not None:
        await asyncio.to_thread(
            draw_timeline,
            more_picture,
            [("changed mind, speculation on", changed_on.t0, changed_on.spans, changed_on.marks),
             ("another user drafts meanwhile, speculation off", other_off.t0, other_off.spans, other_off.marks),
             ("another user drafts meanwhile, speculation on", other_on.t0, other_on.spans, other_on.marks)],
        )  # fmt: skip
    async with sim_farm(scale, work / "estimate-sim") as cfg:
        job_s = refined_job_seconds(cfg, scale)
        ramp = cfg.settings.speculation.ramp
        vram = {n.id: n.vram_gb for n in cfg.nodes}
    return VotingResult(
        stable_off, stable_on, changed_on, other_off, other_on, list(seed_walls), VOTE_S * scale, SETTLE_S * scale,
        picture, more_picture, stable_offs, stable_ons, changed, other_offs, other_ons, ramp, job_s, took, vram,
    )  # fmt: skip
