"""
A bot runs for weeks: once work has ended, the engine's memory holds nothing per batch, job or session.

What ended lives in the DB. These run a generate batch and a whole Draft Grid session (speculation on, so
speculative batches and adoptions happen too) through the simulated farm, let the reconciler make its pass, and
look at what the scheduler's table and the session engine still hold.
"""

from __future__ import annotations

import gc

import pytest

from orchestrator.config import SpeculationSettings
from orchestrator.events import JobFinished, SessionEnded
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.service import GenerateRequest
from orchestrator.sessions.models import Flow, SessionRequest
from tests.orchestrator.sessions.conftest import running, serve, small_config

pytestmark = pytest.mark.timeout(120)


def speculative_done(rec) -> list[JobFinished]:
    return [e for e in rec.of(JobFinished) if is_speculative_batch(e.batch_id)]


async def test_ended_batches_jobs_and_sessions_leave_nothing_in_memory(tmp_path):
    config = small_config(tmp_path).with_settings(speculation=SpeculationSettings(settle_s=0.0, ramp=0.0))
    async with serve(config) as bound, running(bound) as h:
        sched, ctx = h.orch._sched, h.orch._engine.ctx
        batch = await h.svc.submit(h.svc.build_specs(GenerateRequest("a fox", count=4, user_id="bob")))
        assert len((await h.svc.wait_batch(batch)).images) == 4

        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 9"))
        for _ in ("refined", "polished", "final"):
            cur = await h.current_done(s.id)
            await h.svc.vote(s.id, cur.images[0].image.id, "alice", 1)
            seen = len(speculative_done(h.rec))
            await h.rec.wait_for(lambda r, seen=seen: len(speculative_done(r)) > seen)
            await h.svc.advance(s.id, "alice")
        await h.current_done(s.id)
        up = await h.started(s.id, "upscale")
        await h.stage_done(up.stage_id)
        await h.rec.wait_for(lambda r: any(isinstance(e, SessionEnded) and e.session_id == s.id for e in r.events))
        await sched.run_until_idle()
        assert h.orch.speculation_stats().adopted > 0, "the session adopted speculative work"
        assert sched.batches, "until the reconciler's next pass the ended batches are still known"

        await sched.reconciler.reconcile_once()
        assert sched.batches == {}
        assert sched.table.adopted == {}
        gc.collect()
        assert dict(ctx.locks) == {}, "no session lock outlives its last user"

        # Forgotten, not lost: the DB still answers for them, and the session carries on being readable.
        again = await h.svc.wait_batch(batch)
        assert len(again.images) == 4 and not again.failed
        assert (await h.svc.session(s.id)).final_image_id is not None
