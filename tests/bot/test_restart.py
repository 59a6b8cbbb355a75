"""Issue 7: stop the bot mid-stage and mid-vote, start it again: nothing lost, nothing posted twice."""

from __future__ import annotations

import asyncio
import sqlite3

from orchestrator.events import StageDone
from tests.bot.helpers import (
    custom_id,
    galleries,
    make_config,
    progress_messages,
    running_bot,
    wait_galleries,
    wait_thread,
)


async def test_restart_mid_stage_and_mid_vote(fake_discord, tmp_path):
    """Galleries of a stage that finished while down are posted once; old buttons work; votes are intact."""
    fake = fake_discord
    alice, bob = fake.users[:2]
    config = make_config(tmp_path, steps=40)
    # 1. Start a Draft Grid and stop the bot while the drafts are still rendering.
    async with running_bot(fake, config, time_scale=0.1):
        await (await fake.run_slash(alice, "draft", {"prompt": "restart me"})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: progress_messages(fake, thread.id, "drafts"), timeout=20)
    assert galleries(fake, thread.id, "drafts") == [], "stopped before the stage finished"
    progress_id = progress_messages(fake, thread.id, "drafts")[0].id

    # 2. Start again: the stage finishes (the scheduler recovers its jobs), galleries appear exactly once,
    #    and the same progress message is edited to its final state instead of a new one.
    async with running_bot(fake, config) as bot:
        pages = await wait_galleries(fake, thread.id, "drafts", 2, timeout=60)
        progress = progress_messages(fake, thread.id, "drafts")
        assert [m.id for m in progress] == [progress_id]
        await fake.wait_for(lambda: "20/20" in progress[0].content and "Done" in progress[0].content)
        page = pages[0]
        await (await fake.click(alice, page, custom_id(page, "✓7"))).response()
        await fake.wait_for(lambda: "✓7 · 1" in [c.label for c in page.all_components])
        sid = (await bot.orch.active_sessions())[0].id

    # 3. Restart mid-vote: the buttons of the old gallery work, the earlier vote is still there.
    async with running_bot(fake, config) as bot:
        await (await fake.click(bob, page, custom_id(page, "✓7 · 1"))).response()
        await fake.wait_for(lambda: "✓7 · 2" in [c.label for c in page.all_components])
        stage = await bot.orch.current_stage(sid)
        assert stage.image(7).tally == 2
        assert len(galleries(fake, thread.id, "drafts")) == 2, "nothing posted twice"
        assert len(progress_messages(fake, thread.id, "drafts")) == 1
        await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
        await wait_galleries(fake, thread.id, "refined", 1)
    assert len(galleries(fake, thread.id, "drafts")) == 2


async def test_progress_message_too_old_is_replaced(fake_discord, tmp_path):
    """When Discord refuses to edit an old progress message (30046), a new one carries on."""
    fake = fake_discord
    config = make_config(tmp_path, steps=40)
    async with running_bot(fake, config, time_scale=0.05):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "old message"})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: progress_messages(fake, thread.id, "drafts"), timeout=20)
        fake.make_message_old(progress_messages(fake, thread.id, "drafts")[0].id)
        await fake.wait_for(lambda: len(progress_messages(fake, thread.id, "drafts")) == 2, timeout=30)
        await wait_galleries(fake, thread.id, "drafts", 2, timeout=60)
        newest = progress_messages(fake, thread.id, "drafts")[-1]
        await fake.wait_for(lambda: "20/20" in newest.content)


async def test_stage_that_finished_while_the_front_end_was_down_is_posted_once(fake_discord, tmp_path):
    """The relay is down while the drafts finish; the next start posts their galleries exactly once."""
    fake = fake_discord
    config = make_config(tmp_path, drafts=12, steps=40)
    async with running_bot(fake, config, time_scale=0.05) as bot:
        done = bot.orch.bus.subscribe(accept=lambda e: isinstance(e, StageDone))
        await bot.relay.close()  # the Discord side goes away; the orchestrator keeps working
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "while away"})).response()
        await asyncio.wait_for(done.get(), 30)
        thread = await wait_thread(fake)
        assert galleries(fake, thread.id, "drafts") == []
    for _ in range(2):
        async with running_bot(fake, config):
            pages = await wait_galleries(fake, thread.id, "drafts", 2, timeout=30)
            assert [len(p.attachments) for p in pages] == [10, 2]
            assert len(progress_messages(fake, thread.id, "drafts")) == 1
    assert len(galleries(fake, thread.id, "drafts")) == 2, "posted once, not again on the second restart"


async def test_a_crash_between_posting_and_recording_it_makes_no_second_copy(fake_discord, tmp_path):
    """Galleries whose refs were never written (a crash right after posting) are not posted again on restart."""
    fake = fake_discord
    config = make_config(tmp_path, drafts=12)
    async with running_bot(fake, config) as bot:
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "crash after posting"})).response()
        thread = await wait_thread(fake)
        pages = await wait_galleries(fake, thread.id, "drafts", 2, timeout=30)
        sid = (await bot.orch.active_sessions())[0].id
    # What a crash between thread.send and set_ref leaves behind: the messages exist, the DB does not know them.
    with sqlite3.connect(config.settings.storage.db_path) as conn:
        lost = conn.execute("DELETE FROM refs WHERE key LIKE 'discord.gallery.%'").rowcount
    assert lost == 2
    async with running_bot(fake, config) as bot:
        await bot.relay.sync(sid)
        refs = await bot.orch.message_refs(sid, "discord.gallery.")
    assert sorted(int(v) for v in refs.values()) == sorted(p.id for p in pages), "the refs point at the first posts"
    assert [m.id for m in galleries(fake, thread.id, "drafts")] == [p.id for p in pages], "nothing posted twice"
