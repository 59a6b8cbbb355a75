"""Pure routing: capability filters, earliest-finish assignment, priorities, fair share, model affinity."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.farm import router
from orchestrator.models import Family, GenerationParams, Job, JobSpec, Mode, NodeModels, NodeStats, TaskKind

ROOT = Path(__file__).resolve().parents[2]
NODES = load_config(ROOT / "config", env={}).nodes


def job(
    i=0,
    *,
    family=Family.SD15,
    size=512,
    steps=10,
    task=TaskKind.DRAFT,
    user="u1",
    session="s1",
    ckpt="a",
    created=0.0,
    mode=Mode.TXT2IMG,
):
    p = GenerationParams(
        prompt="x",
        family=family,
        checkpoint=ckpt,
        width=size,
        height=size,
        steps=steps,
        mode=mode,
        upscale_model="up.pth" if mode is Mode.UPSCALE else None,
    )
    return Job(
        id=f"j{i}",
        batch_id="b",
        spec=JobSpec(params=p, task=task, user_id=user, session_id=session, index=i),
        created_at=created,
    )


def views(*, busy=None, loaded=None, healthy=None, depth=1):
    out = []
    for n in NODES:
        st = NodeStats(node_id=n.id, healthy=(healthy or {}).get(n.id, True))
        out.append(
            router.NodeView(
                config=n,
                stats=st,
                busy_for=(busy or {}).get(n.id, 0.0),
                next_checkpoint=(loaded or {}).get(n.id, "a"),
                in_flight=0,
                depth=depth,
            )
        )
    return out


def simulate(jobs, vs):
    """Run the pull decision like the scheduler would: whenever a node is free it asks; returns node per job."""
    queue = list(jobs)
    free_at = {v.node_id: 0.0 for v in vs}
    placed = {}
    t = 0.0
    while queue:
        asked = sorted(free_at, key=lambda n: free_at[n])
        progressed = False
        for nid in asked:
            if free_at[nid] > t:
                continue
            cur = [
                router.NodeView(
                    v.config,
                    v.stats,
                    max(0.0, free_at[v.node_id] - t),
                    v.next_checkpoint,
                    1 if free_at[v.node_id] > t else 0,
                    1,
                )
                for v in vs
            ]
            j = router.choose_job(nid, queue, cur)
            if j is None:
                continue
            v = next(x for x in vs if x.node_id == nid)
            queue.remove(j)
            placed[j.id] = nid
            free_at[nid] = t + router.run_seconds(v.config, v.stats, j)
            progressed = True
        if not progressed:
            t = min(x for x in free_at.values() if x > t)
    return placed, max(free_at.values())


def test_twenty_drafts_follow_node_speed_and_beat_even_split():
    placed, makespan = simulate([job(i) for i in range(20)], views())
    counts = Counter(placed.values())
    assert sum(counts.values()) == 20
    assert counts["gpu-premium"] > counts["gpu-quality"] >= counts["gpu-standard"] > counts["gpu-draft"] >= 1
    even = max(5 * 0.15 * 10, 5 * 0.10 * 10)  # the seed's [5,5,5,5]: the slowest node decides
    assert makespan < even * 0.75


def test_sdxl_never_goes_to_the_sd15_only_draft_node():
    placed, _ = simulate([job(i, family=Family.SDXL, size=1024, steps=25) for i in range(8)], views())
    assert "gpu-draft" not in placed.values()
    assert set(placed.values()) == {"gpu-premium", "gpu-quality", "gpu-standard"}


def test_max_resolution_filters_nodes():
    big = job(0, family=Family.SDXL, size=1536)
    assert [n.id for n in NODES if router.can_run(n, NodeStats(n.id, healthy=True), big)] == ["gpu-premium"]


def test_upscale_only_on_nodes_with_the_capability():
    up = job(0, mode=Mode.UPSCALE, task=TaskKind.UPSCALE)
    assert [n.id for n in NODES if router.can_run(n, NodeStats(n.id, healthy=True), up)] == ["gpu-premium"]


def test_down_node_gets_nothing():
    placed, _ = simulate([job(i) for i in range(10)], views(healthy={"gpu-premium": False}))
    assert "gpu-premium" not in placed.values() and len(placed) == 10


def test_missing_checkpoint_on_node_excludes_it():
    n = NODES[0]
    st = NodeStats(n.id, healthy=True, models=NodeModels(checkpoints=("other.safetensors",)))
    assert not router.can_run(n, st, job(0, ckpt="a"))
    assert router.can_run(n, st, job(0, ckpt="other.safetensors"))


def test_priority_final_before_drafts():
    queue = [job(i, created=i) for i in range(5)] + [
        job(9, task=TaskKind.PREMIUM, family=Family.SDXL, size=1024, created=10)
    ]
    assert router.job_order(queue)[0].id == "j9"


def test_fair_share_interleaves_users():
    big = [job(i, user="alice", session="a", created=i) for i in range(10)]
    small = [job(100 + i, user="bob", session="b", created=20 + i) for i in range(2)]
    order = [j.spec.user_id for j in router.job_order(big + small)]
    assert order[:4] == ["alice", "bob", "alice", "bob"]


def test_quality_work_prefers_strong_tiers_when_finishing_sooner():
    j = job(0, family=Family.SDXL, size=1024, steps=50, task=TaskKind.PREMIUM)
    vs = views()
    assert router.choose_job("gpu-premium", [j], vs) is j
    assert router.choose_job("gpu-standard", [j], vs) is None


def test_slow_node_takes_work_when_fast_node_is_busy_long_enough():
    j = job(0, family=Family.SDXL, size=1024, steps=50, task=TaskKind.PREMIUM)
    vs = views(busy={"gpu-premium": 60.0})
    assert router.choose_job("gpu-quality", [j], vs) is j


def test_model_affinity_avoids_checkpoint_swap():
    # Two nodes of equal speed would tie; the one with the model loaded wins because a load costs time.
    j = job(0, ckpt="b")
    vs = views(loaded={"gpu-premium": "a", "gpu-quality": "b"})
    assert router.choose_job("gpu-premium", [j], vs) is None
    assert router.choose_job("gpu-quality", [j], vs) is j


def test_retry_prefers_other_nodes():
    j = job(0).with_(failed_nodes=("gpu-premium",))
    assert router.choose_job("gpu-premium", [j], views()) is None


def test_even_split_is_the_seed_baseline():
    assert router.even_split(20, ["a", "b", "c", "d"]) == {"a": 5, "b": 5, "c": 5, "d": 5}
    assert router.even_split(3, ["a", "b"]) == {"a": 2, "b": 1}


def _moved(vs, dt):
    """The views `dt` seconds later with nothing heard meanwhile (each backlog moves at its rate)."""
    return [replace(v, busy_for=v.busy_for + v.busy_rate * dt, steady_for=v.steady_for - dt) for v in vs]


def test_node_left_out_for_an_overdue_node_is_told_when_to_ask_again():
    # The premium node is stuck past its estimate: its backlog grows (a quarter second per second). The draft node
    # is idle; for now the premium node still looks sooner, and the draft node learns when that stops being true.
    j = job(0)
    vs = [
        replace(v, busy_for=0.1, busy_rate=0.25, in_flight=1) if v.node_id == "gpu-premium" else v
        for v in views(depth=2)
        if v.node_id in ("gpu-premium", "gpu-draft")
    ]
    choice = router.choose("gpu-draft", [j], vs)
    assert choice.job is None and choice.recheck_in is not None
    assert router.choose("gpu-draft", [j], _moved(vs, choice.recheck_in)).job is j
    assert router.choose("gpu-draft", [j], _moved(vs, choice.recheck_in - 2 * router.RECHECK_MARGIN)).job is None


def test_node_left_out_is_asked_again_when_a_run_elsewhere_turns_overdue():
    j = job(0)
    vs = [
        replace(v, busy_for=0.1, busy_rate=-1.0, steady_for=0.3, in_flight=1) if v.node_id == "gpu-premium" else v
        for v in views(depth=2)
        if v.node_id in ("gpu-premium", "gpu-draft")
    ]
    choice = router.choose("gpu-draft", [j], vs)
    assert choice.job is None and choice.recheck_in == pytest.approx(0.3 + router.RECHECK_MARGIN)


def test_nothing_but_an_event_can_change_an_answer_when_no_backlog_moves():
    assert router.choose("gpu-draft", [job(0)], views()) == router.Choice(None, None)
    assert router.choose("gpu-draft", [job(0, family=Family.SDXL, size=1024)], views()) == router.Choice(None, None)
