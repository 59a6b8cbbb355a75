"""The database: migrations, jobs round-trip, at-most-once delivery, votes, participants, intent, refs."""

from __future__ import annotations

import asyncio
from dataclasses import replace

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


# ---------------------------------------------------------------------- two instances on one database


@pytest.fixture
async def two(target):
    """Two Database objects on the same database, as two bot instances would have (separate connections)."""
    a, b = Database(target), Database(target)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


def delivered(job: Job) -> ImageRecord:
    return ImageRecord(
        id=job.id,
        job_id=job.id,
        path=f"{job.id}.png",
        thumbnail=None,
        node_id="n1",
        seed=1,
        seconds=1.0,
        checkpoint="x",
        width=8,
        height=8,
        prompt="p",
    )


async def test_each_job_is_delivered_once_and_stays_ended_across_instances(two):
    a, b = two
    jobs = [make_job(i) for i in range(12)]
    await a.insert_jobs(jobs)
    done = [j.with_(status=JobStatus.DONE, node_id="n1") for j in jobs]
    firsts = await asyncio.gather(*(db.finish_job(j, delivered(j)) for j in done for db in (a, b)))
    assert [firsts[2 * i] + firsts[2 * i + 1] for i in range(len(jobs))] == [1] * len(jobs)
    # an instance holding a stale view of a job cannot move it back
    stale = await asyncio.gather(*(db.update_job(j.with_(status=JobStatus.RUNNING)) for j in jobs for db in (a, b)))
    assert not any(stale)
    assert {j.status for j in await b.batch_jobs("b1")} == {JobStatus.DONE}


async def test_concurrent_votes_from_two_instances_leave_one_vote_per_member(two):
    a, b = two
    users = [f"u{i}" for i in range(8)]
    await asyncio.gather(*(db.set_vote("s1", "img", u, v) for u in users for db, v in ((a, 1), (b, -1))))
    votes = await a.votes_for_images(["img"])
    assert sorted(v.user_id for v in votes) == users
    await asyncio.gather(*(db.set_vote("s1", "img", u, None) for u in users[:4] for db in (a, b)))
    assert sorted(v.user_id for v in await b.votes_for_images(["img"])) == users[4:]


async def test_an_intent_entry_is_popped_by_one_instance_only(two):
    a, b = two
    for n in range(6):
        await a.add_intent("s1", {"n": n})
    popped = [p["n"] for p in await asyncio.gather(*(db.pop_intent("s1") for _ in range(6) for db in (a, b))) if p]
    left = [e["n"] for e in await b.intent("s1")]
    # nothing popped twice, nothing lost (a pop that lost the race to the same entry finds nothing: it is an undo)
    assert len(popped) == len(set(popped)) and sorted(popped + left) == list(range(6))
    assert popped


async def test_concurrent_refs_from_two_instances_keep_one_value(two):
    a, b = two
    await asyncio.gather(*(db.set_ref("s1", "discord.thread", str(n)) for n in range(10) for db in (a, b)))
    assert await a.refs("s1") in ({"discord.thread": str(n)} for n in range(10))


async def test_instances_starting_together_migrate_once(postgres_server):
    url = await postgres_server.create_database()
    try:
        dbs = [Database(url) for _ in range(4)]
        await asyncio.gather(*(d.open() for d in dbs))
        assert [await d.user_version() for d in dbs] == [1, 1, 1, 1]
        await asyncio.gather(*(d.close() for d in dbs))
    finally:
        await postgres_server.drop_database(url)


async def test_hostile_text_is_stored_on_both_backends(db):
    """A NUL (which PostgreSQL's text cannot hold), quotes, a ? and emoji neither fail a write nor leak into SQL."""
    text = "before\x00after '; DROP TABLE votes; -- ? $1 🌅"
    base = make_job()
    job = base.with_(spec=replace(base.spec, params=replace(base.params, prompt=text, negative_prompt=text)))
    await db.insert_jobs([job])
    assert (await db.get_job(job.id)).params.prompt == text  # the parameters of record keep every character
    s = SessionRow("s1", "draft_grid", "alice", "open", "voting", text, "", {"p": text}, 0, {"q": text}, 1.0, 1.0)
    await db.insert_session(s)
    back = await db.get_session("s1")
    assert back.settings == {"p": text} and back.data == {"q": text}
    assert back.prompt.replace("\ufffd", "\x00") == text  # PostgreSQL's text shows the NUL as U+FFFD
    await db.add_intent("s1", {"text": text})
    assert await db.pop_intent("s1") == {"text": text}
    await db.set_vote("s1", "img", "u1", 1)
    assert await db.get_vote("img", "u1") == 1
