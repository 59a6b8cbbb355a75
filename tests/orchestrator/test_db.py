"""The database: migrations, jobs round-trip, at-most-once delivery, votes, participants, intent, refs."""

from __future__ import annotations

import pytest

from orchestrator.db import INTEGRITY_ERRORS, Database, SessionRow, StageRow
from orchestrator.models import (
    Family,
    GenerationParams,
    ImageRecord,
    Job,
    JobSpec,
    JobStatus,
    LoraSpec,
    Mode,
    TaskKind,
)


@pytest.fixture
def target(tmp_path, database_url):
    return database_url or tmp_path / "v.db"


@pytest.fixture
async def db(target):
    d = Database(target)
    await d.open()
    yield d
    await d.close()


def make_job(i=0, batch="b1") -> Job:
    p = GenerationParams(
        prompt='a "quoted" prompt\nwith {{seed}}',
        family=Family.SDXL,
        checkpoint="x.safetensors",
        width=1024,
        height=768,
        steps=25,
        seed=2**40,
        denoise=0.6,
        mode=Mode.IMG2IMG,
        init_image="/tmp/p.png",
        loras=(LoraSpec("a", 0.5, 0.7),),
    )
    return Job(
        id=f"job{i}",
        batch_id=batch,
        spec=JobSpec(p, TaskKind.STANDARD, "s1", "st1", "u1", "parent", i + 1),
        created_at=1.0 + i,
    )


async def test_migrations_set_user_version_and_are_idempotent(target, db):
    assert await db.user_version() == 1
    await db.close()
    again = Database(target)
    await again.open()
    assert await again.user_version() == 1
    await again.close()


async def test_job_round_trip_keeps_every_parameter(db):
    job = make_job()
    await db.insert_jobs([job])
    back = await db.get_job(job.id)
    assert back == job


async def test_finish_job_delivers_at_most_once(db):
    job = make_job()
    await db.insert_jobs([job])
    done = job.with_(status=JobStatus.DONE, node_id="n1", prompt_id="p1")
    img = ImageRecord(
        id=job.id,
        job_id=job.id,
        path="a.png",
        thumbnail="a.jpg",
        node_id="n1",
        seed=1,
        seconds=1.0,
        checkpoint="x",
        width=1024,
        height=768,
        prompt="p",
    )
    assert await db.finish_job(done, img) is True
    assert await db.finish_job(done, img) is False
    assert [i.id for i in await db.stage_images("st1")] == [job.id]
    assert (await db.image(job.id)).path == "a.png"


async def test_jobs_with_status_and_user_queue_count(db):
    await db.insert_jobs([make_job(i) for i in range(3)])
    await db.update_job((await db.get_job("job1")).with_(status=JobStatus.FAILED, error="x"))
    assert [j.id for j in await db.jobs_with_status([JobStatus.QUEUED])] == ["job0", "job2"]
    assert await db.queued_images_for_user("u1") == 2


async def test_votes_change_and_withdraw(db):
    await db.set_vote("s1", "img1", "alice", 1)
    await db.set_vote("s1", "img1", "bob", -1)
    await db.set_vote("s1", "img1", "alice", -1)
    assert {v.user_id: v.value for v in await db.votes_for_images(["img1"])} == {"alice": -1, "bob": -1}
    await db.set_vote("s1", "img1", "alice", None)
    assert [v.user_id for v in await db.votes_for_images(["img1"])] == ["bob"]
    with pytest.raises(INTEGRITY_ERRORS):
        await db.set_vote("s1", "img1", "carol", 5)


async def test_sessions_stages_participants_intent_refs(db):
    s = SessionRow("s1", "draft_grid", "alice", "open", "voting", "p", "", {"family": "sd15"}, 0, {}, 1.0, 1.0)
    await db.insert_session(s)
    await db.insert_stage(StageRow("st1", "s1", 0, "drafts", "generating", "b1", "p", "", {}, 1.0))
    await db.add_participant("s1", "alice", "owner")
    await db.add_participant("s1", "bob", "invited")
    assert await db.participants("s1") == {"alice": "owner", "bob": "invited"}
    assert (await db.get_session("s1")).settings == {"family": "sd15"}
    assert (await db.stage_for_batch("b1")).id == "st1"
    assert await db.count_user_sessions("alice", ["voting"]) == 1
    await db.add_intent("s1", {"n": 1})
    await db.add_intent("s1", {"n": 2})
    assert await db.pop_intent("s1") == {"n": 2}
    assert await db.intent("s1") == [{"n": 1}]
    await db.set_ref("s1", "discord.thread", "123")
    assert await db.session_for_ref("discord.thread", "123") == "s1"
    assert await db.refs("s1", "discord.") == {"discord.thread": "123"}
