"""Issue 11 point 8: a refused gallery is retried, posted once, or explained in the thread; the relay lives on."""

from __future__ import annotations

import logging

from tests.bot.helpers import bot_messages, custom_id, galleries, make_config, running_bot, wait_galleries, wait_thread


def notes(fake, thread_id: int) -> list:
    return [m for m in bot_messages(fake, thread_id) if m.content.startswith("⚠ Could not post")]


async def test_refused_gallery_is_retried_and_posted_once(fake_discord, tmp_path):
    """Two 503s on the gallery upload: the retry posts it, exactly one copy per page, and no failure note."""
    fake = fake_discord
    fake.fail_posts(None, times=2, status=503, with_files=True)
    async with running_bot(fake, make_config(tmp_path, drafts=12)) as bot:
        await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 2)
        await bot.relay.wait_retries()
        assert len(fake.failed_posts) == 2
        pages = galleries(fake, thread.id, "drafts")
        assert [len(p.attachments) for p in pages] == [10, 2], "each page once, complete"
        assert notes(fake, thread.id) == []


async def test_refused_final_image_is_retried(fake_discord, tmp_path):
    """A 413 on a final image: the retry sends a smaller file and the final image arrives once."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path, drafts=2, final_upscale=False)) as bot:
        await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
        thread = await wait_thread(fake)
        stages = ("drafts", "refined", "polished")
        for stage in stages:
            page = (await wait_galleries(fake, thread.id, stage, 1))[0]
            if stage == "polished":
                fake.fail_posts(thread.id, times=1, status=413, code=40005, message="Request entity too large")
            await (await fake.click(fake.users[0], page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda page=page: "✓1 · 1" in [c.label for c in page.all_components])
            await (await fake.click(fake.users[0], page, custom_id(page, "Continue"))).response()
        await fake.wait_for(
            lambda: any(m.content.startswith("**Final image**") for m in bot_messages(fake, thread.id)), timeout=30
        )
        await bot.relay.wait_retries()
        finals = [m for m in bot_messages(fake, thread.id) if m.content.startswith("**Final image**")]
        assert len(finals) == 1 and len(finals[0].attachments) == 1
        assert fake.failed_posts == [(thread.id, 413)]
        assert notes(fake, thread.id) == []


async def test_permanently_refused_gallery_leaves_a_plain_note(fake_discord, tmp_path):
    """Every upload refused as too large: after the last retry, one plain note says what and why; pings nobody."""
    fake = fake_discord
    fake.fail_posts(None, times=1000, status=413, code=40005, message="Request entity too large", with_files=True)
    async with running_bot(fake, make_config(tmp_path, drafts=4, post_retries=2)) as bot:
        await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: notes(fake, thread.id), timeout=30)
        await bot.relay.wait_retries()
        (note,) = notes(fake, thread.id)
        assert "the gallery of drafts" in note.content
        assert "upload limit" in note.content
        assert note.attachments == [] and note.embeds == [] and note.raw_components == []
        assert note.pings == set()
        assert galleries(fake, thread.id, "drafts") == []
        await bot.relay.settled()
        # The first try (or two: the thread's bind and StageDone may both find the stage done), then two retries;
        # a StageDone handled after the note (a loaded machine) tries once more.
        tries = len(fake.failed_posts)
        assert 3 <= tries <= 5
        # A later event tries the gallery once more but starts no new round of retries, and says nothing new.
        sid = (await bot.orch.active_sessions())[0].id
        await bot.relay.sync(sid)
        await bot.relay.settled()
        assert len(fake.failed_posts) == tries + 1
        assert len(notes(fake, thread.id)) == 1


async def test_relay_consumer_survives_an_exception(fake_discord, tmp_path, caplog):
    """An exception while handling one event is logged with its traceback; the next events are still handled."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path, drafts=4)) as bot:
        real_stage = bot.orch.stage
        calls = {"n": 0}

        async def broken_once(stage_id):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return await real_stage(stage_id)

        bot.orch.stage = broken_once  # the relay's first read of a stage fails
        with caplog.at_level(logging.ERROR, logger="bot.relay"):
            await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
            thread = await wait_thread(fake)
            pages = await wait_galleries(fake, thread.id, "drafts", 1)
        assert len(pages[0].attachments) == 4
        failed = [r for r in caplog.records if r.name == "bot.relay" and r.exc_info]
        assert failed and "relay failed on" in failed[0].getMessage()
        assert not bot.relay._task.done(), "the consumer task is still running"
