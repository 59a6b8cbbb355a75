"""The event bus: per-subscriber queues, coalesced progress, terminal events never dropped, publish never blocks."""

from __future__ import annotations

import asyncio

from orchestrator.events import EventBus, JobFailed, JobProgress, JobQueued


def progress(job: str, step: int) -> JobProgress:
    return JobProgress(job_id=job, batch_id="b", node_id="n", step=step, total=10)


async def test_each_subscriber_gets_every_event_in_order():
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(3):
        bus.publish(JobQueued(job_id=f"j{i}", batch_id="b"))
    for sub in (a, b):
        got = [await asyncio.wait_for(sub.get(), 1) for _ in range(3)]
        assert [e.job_id for e in got] == ["j0", "j1", "j2"]


async def test_progress_is_coalesced_to_the_latest_per_job():
    bus = EventBus()
    sub = bus.subscribe()
    for step in range(1, 11):
        bus.publish(progress("j1", step))
    bus.publish(progress("j2", 1))
    assert sub.pending() == 2
    first = sub.get_nowait()
    assert first.job_id == "j1" and first.step == 10


async def test_slow_subscriber_drops_progress_but_never_terminal_events():
    bus = EventBus()
    sub = bus.subscribe(maxsize=5)
    for i in range(50):
        bus.publish(progress(f"p{i}", 1))
        bus.publish(JobFailed(job_id=f"f{i}", batch_id="b", error="x"))
    got = []
    while (ev := sub.get_nowait()) is not None:
        got.append(ev)
    assert [e.job_id for e in got if isinstance(e, JobFailed)] == [f"f{i}" for i in range(50)]
    assert sub.dropped > 0


async def test_filter_and_close():
    bus = EventBus()
    sub = bus.subscribe(accept=lambda e: isinstance(e, JobFailed))
    bus.publish(progress("j", 1))
    bus.publish(JobFailed(job_id="j", batch_id="b", error="boom"))
    assert (await asyncio.wait_for(sub.get(), 1)).error == "boom"
    sub.close()
    bus.publish(JobFailed(job_id="k", batch_id="b", error="late"))
    assert sub.get_nowait() is None


async def test_iteration_ends_when_closed():
    bus = EventBus()
    sub = bus.subscribe()

    async def consume():
        return [e async for e in sub]

    task = asyncio.create_task(consume())
    bus.publish(JobQueued(job_id="a", batch_id="b"))
    await asyncio.sleep(0)
    sub.close()
    assert [e.job_id for e in await asyncio.wait_for(task, 1)] == ["a"]
