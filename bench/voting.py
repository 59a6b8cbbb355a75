"""Voting time (issue 15): scripted vote timelines driven through the facade, speculation off and on in one run.

Every scenario is a Draft Grid session on a fresh simulated farm (nothing loaded), driven with the calls the bot
makes (create_session, toggle, advance, generate); the vote pauses and the settle time are scaled like the farm
(a 45 s vote lasts 45 x time scale seconds of wall time). Times are taken from the facade's events: a stage's last
image is its StageDone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.farm import sim_farm
from bench.timeline import JobSpan, draw_timeline, read_spans
from orchestrator.config import Config, StorageSettings
from orchestrator.events import SessionEnded, StageDone
from orchestrator.farm.speculative import SpeculationStats
from orchestrator.models import Family, TaskKind
from orchestrator.service import GenerateRequest, Orchestrator
from orchestrator.sessions.models import Flow, SessionRequest

#: simulated seconds of one vote pause, and of the settle time asked of speculation
VOTE_S = 45.0
SETTLE_S = 3.0
PROMPT = "a lighthouse at dusk, dramatic sky --seed 1000"
OWNER = "owner"
STAGE_NAMES = ("refined", "polished", "final")
#: goals of issue 15
STABLE_GOAL = 0.15
WASTE_GOAL = 0.30
CHANGED_GOAL = 0.5
OTHER_USER_GOAL = 1.10


@dataclass(frozen=True)
class Vote:
    """One button press at a fraction of the vote pause: ✓ (1) or ✗ (-1) on an image number; twice withdraws."""

    at: float
    user: str
    number: int
    value: int = 1


#: votes settle within the first third of the pause (per stage: drafts, refined, polished)
STABLE: tuple[tuple[Vote, ...], ...] = (
    (Vote(0.04, "ana", 3), Vote(0.12, "ben", 3), Vote(0.20, "cyd", 7), Vote(0.30, "ana", 7)),
    (Vote(0.05, "ana", 2), Vote(0.15, "ben", 5), Vote(0.30, "cyd", 2)),
    (Vote(0.05, "ana", 1), Vote(0.20, "ben", 1)),
)
#: the leading drafts change once, halfway: both voters withdraw (press again) and vote for two others
CHANGED: tuple[Vote, ...] = (
    Vote(0.04, "ana", 3),
    Vote(0.12, "ben", 3),
    Vote(0.20, "cyd", 7),
    Vote(0.30, "ana", 7),
    Vote(0.50, "ana", 3),
    Vote(0.50, "ben", 3),
    Vote(0.50, "cyd", 7),
    Vote(0.50, "ana", 7),
    Vote(0.51, "ana", 12),
    Vote(0.51, "ben", 15),
    Vote(0.52, "cyd", 12),
)
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


@dataclass
class VotingResult:
    """Every figure of the section."""

    stable_off: FunnelRun
    stable_on: FunnelRun
    changed_off: FunnelRun
    changed_on: FunnelRun
    other_off: FunnelRun
    other_on: FunnelRun
    seed_walls: list[float]
    pause: float
    settle: float
    picture: Path | None


class Watcher:
    """Records when each stage's images are all delivered and when sessions end (wall-clock, from the bus)."""

    def __init__(self, orch: Orchestrator) -> None:
        self._sub = orch.bus.subscribe(accept=lambda e: isinstance(e, StageDone | SessionEnded))
        self.done: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name="bench-watcher")

    async def _run(self) -> None:
        async for ev in self._sub:
            now = time.time()
            if isinstance(ev, StageDone):
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


async def _vote_pause(orch: Orchestrator, session_id: str, votes: Sequence[Vote], pause: float, opened: float) -> None:
    """Press the buttons at their moments of the pause (from when the stage opened), then wait out the pause."""
    view = await orch.current_stage(session_id)
    ids = {im.number: im.image.id for im in view.images}
    for v in sorted(votes, key=lambda v: v.at):
        delay = opened + v.at * pause - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
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
    """One Draft Grid session: drafts, then per script a vote pause and Continue, until the scripts run out."""
    watcher = Watcher(orch)
    try:
        run.t0 = time.time()
        session = await orch.create_session(SessionRequest(Flow.DRAFT_GRID, OWNER, PROMPT))
        stage_id = session.stage_id
        assert stage_id is not None
        opened = await watcher.stage_done(stage_id)
        run.marks.append((opened, "drafts done"))
        other: asyncio.Task[float] | None = None
        if other_user_at is not None:
            other = asyncio.create_task(_other_user(orch, opened + other_user_at * pause))
        for i, votes in enumerate(scripts):
            await _vote_pause(orch, session.id, votes, pause, opened)
            if other is not None:
                # Only the other user's drafts are measured: no Continue in this scenario.
                run.other_makespan = await other
                run.marks.append((time.time(), "other user's drafts done"))
                return
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
    finally:
        await watcher.close()
    run.spec = orch.speculation_stats()


async def _other_user(orch: Orchestrator, at: float) -> float:
    """Another user's 20 drafts, sent at `at` (epoch seconds): their makespan."""
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    t0 = time.perf_counter()
    batch = await orch.generate(
        GenerateRequest(prompt="a red fox in the snow", family=Family.SD15, count=20, task=TaskKind.DRAFT,
                        seed=5000, user_id="other")
    )  # fmt: skip
    result = await orch.wait_batch(batch)
    if result.failed:
        raise RuntimeError(f"the other user's drafts: {len(result.failed)} failed: {result.failed[0].error}")
    return time.perf_counter() - t0


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
        run.spans = await read_spans(cfg.settings.storage.database_target)
    return run


async def voting(scale: float, work: Path, seed_walls: Sequence[float], picture: Path | None) -> VotingResult:
    """Every scenario off then on, each on a fresh farm; draws the stable-votes timeline into `picture`."""
    stable_off = await _one("stable-off", scale, work, False, STABLE)
    stable_on = await _one("stable-on", scale, work, True, STABLE)
    changed_off = await _one("changed-off", scale, work, False, (CHANGED,))
    changed_on = await _one("changed-on", scale, work, True, (CHANGED,))
    other_off = await _one("other-off", scale, work, False, STABLE[:1], other_user_at=OTHER_AT)
    other_on = await _one("other-on", scale, work, True, STABLE[:1], other_user_at=OTHER_AT)
    if picture is not None:
        await asyncio.to_thread(
            draw_timeline,
            picture,
            [("speculation off", stable_off.t0, stable_off.spans, stable_off.marks),
             ("speculation on", stable_on.t0, stable_on.spans, stable_on.marks)],
        )  # fmt: skip
    return VotingResult(
        stable_off, stable_on, changed_off, changed_on, other_off, other_on, list(seed_walls),
        VOTE_S * scale, SETTLE_S * scale, picture,
    )  # fmt: skip


# --------------------------------------------------------------------------- the section


def _verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    if value <= goal:
        return "met"
    return f"**missed** by {value - goal:.2f} ({value / goal:.1f}x the goal)"


def _stats(st: SpeculationStats) -> str:
    return (
        f"{st.useful_gpu_s:.2f} GPU-seconds useful, {st.wasted_gpu_s:.2f} wasted (wasted / useful "
        f"{_x(st.waste_ratio)}); jobs submitted {st.submitted}, adopted {st.adopted}, cancelled {st.cancelled}, "
        f"preempted by real work {st.preempted}; warm-up loads {st.warmups}"
    )


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def section(r: VotingResult, picture_name: str | None) -> list[str]:
    """The "## Voting time" section of results.md."""
    lines = [
        "## Voting time",
        "",
        f"Issue 15: the farm warms the next stage's checkpoints and renders what Continue would ask for while "
        f"people vote. Each scenario runs one Draft Grid session on a fresh simulated farm (time scale as above), "
        f"driven through the facade with the calls the bot makes, once with speculation off and once on "
        f"(`speculation.enabled`, `speculation.warmup`). A {VOTE_S:.0f} s vote pause lasts {r.pause:.2f} s here, "
        f"and the settle time ({SETTLE_S:.0f} s) is scaled the same way ({r.settle:.2f} s). "
        "A stage's last image is its StageDone event (every image stored and the stage open for votes).",
        "",
        "### Stable votes",
        "",
        "Three voters settle on their picks within the first third of each 45 s pause; Continue at its end.",
        "",
        "| stage | Continue -> last image, off (s) | on (s) | on / off | goal | verdict |",
        "|---|---|---|---|---|---|",
    ]
    off, on = r.stable_off, r.stable_on
    for name in STAGE_NAMES:
        a, b = off.continue_to_done.get(name), on.continue_to_done.get(name)
        ratio = b / a if a and b is not None else None
        lines.append(
            f"| {name} | {a:.2f} | {b:.2f} | **{_x(ratio)}** | <= {STABLE_GOAL:.2f}x | {_verdict(ratio, STABLE_GOAL)} |"
            if a is not None and b is not None
            else f"| {name} | n/a | n/a | n/a | <= {STABLE_GOAL:.2f}x | not measured |"
        )
    if off.continue_to_upscaled is not None and on.continue_to_upscaled is not None:
        ratio = on.continue_to_upscaled / off.continue_to_upscaled
        lines.append(
            f"| final + 4x upscale (the session's last image) | {off.continue_to_upscaled:.2f} | "
            f"{on.continue_to_upscaled:.2f} | {_x(ratio)} | (not a goal) | |"
        )
    lines += [
        "",
        f"Speculation in the stable run: {_stats(on.spec)}.",
    ]
    if picture_name:
        lines += [
            "",
            f"![timeline of the stable-votes run]({picture_name})",
            "",
            f"[`{picture_name}`]({picture_name}): the stable-votes run per GPU, speculation off (top) and on "
            "(bottom), on one time axis from /draft: real jobs, speculative jobs (still speculative when the run "
            "ended), adopted ones (speculative, then taken by Continue), wasted ones (speculative, cancelled or "
            "never adopted) and idle time; the vertical lines are the stages opening for votes and Continue.",
        ]
    c_off, c_on = r.changed_off, r.changed_on
    a, b = c_off.continue_to_done.get("refined"), c_on.continue_to_done.get("refined")
    cont = b / a if a and b is not None else None
    waste = c_on.spec.waste_ratio
    lines += [
        "",
        "### Changed mind",
        "",
        "The voters settle on drafts 3 and 7 in the first third, then at half time withdraw those votes and pick "
        "12 and 15 instead; Continue at the end of the pause.",
        "",
        "| measure | off | on | figure | goal | verdict |",
        "|---|---|---|---|---|---|",
        f"| speculative GPU-seconds wasted / useful | | {c_on.spec.wasted_gpu_s:.2f} / {c_on.spec.useful_gpu_s:.2f} | "
        f"**{_x(waste)}** | <= {WASTE_GOAL:.2f} | {_verdict(waste, WASTE_GOAL)} |",
        f"| Continue -> last refined image (s) | {a if a is not None else float('nan'):.2f} | "
        f"{b if b is not None else float('nan'):.2f} | **{_x(cont)}** | <= {CHANGED_GOAL:.2f}x | "
        f"{_verdict(cont, CHANGED_GOAL)} |",
    ]
    o_off, o_on = r.other_off.other_makespan, r.other_on.other_makespan
    other = o_on / o_off if o_off and o_on is not None else None
    lines += [
        "",
        "### Another user drafts meanwhile",
        "",
        f"While the session's voters settle (as in stable votes), another user sends 20 drafts at "
        f"{OTHER_AT:.0%} of the pause, when the session's speculative refined images are rendering.",
        "",
        "| measure | off (s) | on (s) | on / off | goal | verdict |",
        "|---|---|---|---|---|---|",
        f"| the other user's 20-draft makespan | {o_off or float('nan'):.2f} | {o_on or float('nan'):.2f} | "
        f"**{_x(other)}** | <= {OTHER_USER_GOAL:.2f}x | {_verdict(other, OTHER_USER_GOAL)} |",
    ]
    pauses = 3 * r.pause
    seed_total = sum(r.seed_walls) + pauses
    lines += [
        "",
        "### Whole funnel, three vote pauses",
        "",
        f"Wall time from /draft to the final image (and to its 4x upscale, the session's last image), with the "
        f"three {r.pause:.2f} s pauses of the stable-votes run. The seed's even split: its four stage times from "
        f"the funnel table above plus the same three pauses (the seed did nothing while people voted).",
        "",
        "| | to the final image (s) | to the upscaled image (s) |",
        "|---|---|---|",
        f"| speculation off | {off.draft_to_final:.2f} | {off.draft_to_upscaled:.2f} |",
        f"| speculation on | **{on.draft_to_final:.2f}** | **{on.draft_to_upscaled:.2f}** |",
        f"| the seed's even split | | {seed_total:.2f} |",
        f"| of which vote pauses | {pauses:.2f} | {pauses:.2f} |",
    ]
    return lines
