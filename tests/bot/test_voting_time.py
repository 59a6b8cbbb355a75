"""Issue 15 through the fake Discord: the next stage is prepared from the votes while people vote.

The bench measures how soon the next stage arrives; these tests check what makes it soon (every job of the stage
adopted from speculation, none left to run at Continue) and what must never happen (an image of a prompt that was
replaced mid-vote reaching a gallery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from orchestrator.config import SpeculationSettings
from orchestrator.events import JobFinished
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.models import JobStatus
from orchestrator.service import Orchestrator
from tests.bot.helpers import (
    custom_id,
    galleries,
    make_config,
    progress_messages,
    running_bot,
    stage_jobs,
    wait_galleries,
    wait_thread,
)
from tests.fakes.discord_models import FakeMessage

SPECULATING = "preparing the next stage from the current votes"
#: the small funnel's refined stage (tests/bot/helpers.small_stages)
REFINED = 4


def texts(message: FakeMessage) -> list[str]:
    """Every content a message has shown: each edit's, and the current one."""
    return [str(p["content"]) for _, p in message.edits if "content" in p] + [message.content]


class SpeculativeDone:
    """Speculative jobs whose images are stored (from the facade's events), to wait on without sleeping."""

    def __init__(self, orch: Orchestrator) -> None:
        self._sub = orch.bus.subscribe(accept=lambda e: isinstance(e, JobFinished) and is_speculative_batch(e.batch_id))
        self.jobs: set[str] = set()
        self._task = asyncio.create_task(self._run())
        self._changed = asyncio.Condition()

    async def _run(self) -> None:
        async for ev in self._sub:
            assert isinstance(ev, JobFinished)
            async with self._changed:
                self.jobs.add(ev.job_id)
                self._changed.notify_all()

    async def wait(self, count: int, timeout: float = 20) -> set[str]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.jobs) >= count), timeout)
        return set(self.jobs)

    async def close(self) -> None:
        self._sub.close()
        await self._task


def speculating_config(tmp_path):
    config = make_config(tmp_path, drafts=4)
    # The prediction is taken as settled at once and gets the whole stage (no ramp): the tests wait on events, not
    # on a settle timer.
    return config.with_settings(speculation=replace(SpeculationSettings(), enabled=True, settle_s=0.0, ramp=0.0))


async def test_settled_votes_have_the_refined_stage_ready_at_continue(fake_discord, tmp_path):
    """Votes settle; while the voters pause, the refined stage renders; Continue adopts all of it, runs nothing."""
    fake = fake_discord
    alice, bob = fake.users[:2]
    async with running_bot(fake, speculating_config(tmp_path)) as bot:
        done = SpeculativeDone(bot.orch)
        try:
            await (await fake.run_slash(alice, "draft", {"prompt": "a lighthouse at dusk"})).response()
            thread = await wait_thread(fake)
            page = (await wait_galleries(fake, thread.id, "drafts", 1))[0]
            for user in (alice, bob):
                await (await fake.click(user, page, custom_id(page, "✓2"))).response()
            await fake.wait_for(lambda: "✓2 · 2" in [c.label for c in page.all_components])
            progress = progress_messages(fake, thread.id, "drafts")[0]
            await fake.wait_for(lambda: any(SPECULATING in t for t in texts(progress)))
            # The pause: the voters wait until the farm has rendered what Continue will ask for.
            speculative = await done.wait(REFINED)
            assert not galleries(fake, thread.id, "refined"), "nothing speculative is posted before Continue"

            pressed = time.time()
            await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
            refined = await wait_galleries(fake, thread.id, "refined", 1)
            assert len(refined[0].attachments) == REFINED
            sid = (await bot.orch.active_sessions())[0].id
            stage = await bot.orch.current_stage(sid)
            assert stage.name == "refined" and stage.delivered == REFINED
            jobs = await stage_jobs(bot, stage.id)
            assert len(jobs) == REFINED
            # Every job of the stage is one the farm ran while people voted, finished before Continue.
            assert {j.id for j in jobs} <= speculative
            assert all(j.status is JobStatus.DONE and (j.finished_at or 0) <= pressed for j in jobs)
            stats = bot.orch.speculation_stats()
            assert stats.adopted == REFINED
            assert stats.useful_gpu_s > 0
            # The refined images grow from the voted draft.
            assert {im.image.parent_id for im in stage.images} == {custom_id(page, "✓2").rsplit(":", 1)[1]}
        finally:
            await done.close()


async def test_a_used_suggestion_mid_vote_keeps_the_old_prompt_out_of_every_gallery(fake_discord, tmp_path, caplog):
    """Speculation starts on the old prompt; a suggestion is used; only images of the new prompt are posted."""
    # Seen once on a loaded CI machine: the refined stage never arrived. Its story is in the log if it happens again.
    caplog.set_level(logging.INFO, logger="orchestrator")
    caplog.set_level(logging.INFO, logger="bot")
    fake = fake_discord
    alice = fake.users[0]
    old_prompt = "a red barn"
    async with running_bot(fake, speculating_config(tmp_path)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": old_prompt})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 1))[0]
        await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: any(SPECULATING in t for t in texts(progress)))
        submitted = bot.orch.speculation_stats().submitted
        assert submitted >= REFINED, "the refined stage of the old prompt was sent to the farm"

        await fake.say(alice, thread.id, "more snow")
        await fake.wait_for(lambda: suggestion(fake, thread.id) is not None, timeout=20)
        msg = suggestion(fake, thread.id)
        assert msg is not None
        await (await fake.click(alice, msg, custom_id(msg, "Use"))).response()
        await fake.wait_for(lambda: "applied" in msg.content and not msg.buttons)
        sid = (await bot.orch.active_sessions())[0].id
        new_prompt = (await bot.orch.session(sid)).prompt
        assert new_prompt != old_prompt

        await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
        try:
            refined = await wait_galleries(fake, thread.id, "refined", 1)
        except TimeoutError:
            raise AssertionError(f"no refined gallery; {await where_it_stands(bot, fake, thread.id, sid)}") from None
        stage = await bot.orch.current_stage(sid)
        await fake.wait_for(lambda: sum(len(m.attachments) for m in galleries(fake, thread.id, "refined")) == REFINED)
        # Every image posted after the drafts, read back by the id behind its button: the new prompt only.
        posted = [
            c.custom_id.rsplit(":", 1)[1]
            for m in refined
            for c in m.all_components
            if c.custom_id and (c.label or "").startswith("✓")
        ]
        assert len(posted) == REFINED
        for image_id in posted:
            assert (await bot.orch.image_info(image_id)).prompt == new_prompt
        assert all(im.image.prompt == new_prompt for im in stage.images)
        assert all(j.params.prompt == new_prompt for j in await stage_jobs(bot, stage.id))
        # The old prompt's speculative jobs were thrown away, not adopted.
        stats = bot.orch.speculation_stats()
        assert stats.submitted > submitted, "the new prompt's stage was predicted again"
        assert stats.cancelled >= 1


async def where_it_stands(bot, fake, thread_id: int, sid: str) -> str:
    """The session's stage, its jobs and the thread's last messages: what a failure message needs."""
    stage = await bot.orch.current_stage(sid)
    jobs = [(j.id[:8], j.status.value, j.batch_id[:12]) for j in await stage_jobs(bot, stage.id)]
    last = [m.content[:80] for m in fake.messages(thread_id)[-6:]]
    return (
        f"stage {stage.name} {stage.status.value}, delivered {stage.delivered}; jobs {jobs}; "
        f"speculation {bot.orch.speculation_stats()}; last messages {last}"
    )


def suggestion(fake, thread_id: int) -> FakeMessage | None:
    """The suggestion message in the thread, once there is one."""
    found = [
        m
        for m in fake.messages(thread_id)
        if m.author.id == fake.bot_user.id and m.embeds and m.embeds[0].get("title") == "Suggested prompt"
    ]
    return found[0] if found else None
