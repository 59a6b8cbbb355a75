"""Issue 6 through the fake Discord with the real discord.py: /draft -> thread -> progress -> galleries -> votes."""

from __future__ import annotations

import gc
from dataclasses import replace

from orchestrator.config import SimFaults
from tests.bot.helpers import (
    bot_messages,
    custom_id,
    galleries,
    make_config,
    progress_messages,
    rows,
    running_bot,
    wait_galleries,
    wait_thread,
)


async def test_draft_to_second_stage_gallery(fake_discord, tmp_path):
    """/draft opens a thread; 20 drafts come as 2 galleries of 10 with 4 toggle rows + controls; votes; Continue."""
    fake = fake_discord
    alice, bob, carol = fake.users[:3]
    async with running_bot(fake, make_config(tmp_path)) as bot:
        h = await fake.run_slash(alice, "draft", {"prompt": "a lighthouse at dusk"})
        assert (await h.response()).type == 5, "the command defers within 3 s"
        thread = await wait_thread(fake)
        assert thread.name == "a lighthouse at dusk"
        assert thread.parent_id == fake.channel_id
        header = fake.message(thread.starter_message_id)
        assert header.embeds and header.embeds[0]["title"] == "a lighthouse at dusk"
        assert any(f["name"] == "Owner" and str(alice.id) in f["value"] for f in header.embeds[0]["fields"])

        pages = await wait_galleries(fake, thread.id, "drafts", 2)
        assert [len(p.attachments) for p in pages] == [10, 10]
        assert [a.filename for a in pages[0].attachments] == [f"{n:02d}.jpg" for n in range(1, 11)]
        assert all(a.size < 1024 * 1024 for p in pages for a in p.attachments)
        layout = rows(pages[1])
        assert layout[0] == ["✓11", "✓12", "✓13", "✓14", "✓15"]
        assert layout[1] == ["✗11", "✗12", "✗13", "✗14", "✗15"]
        assert layout[2] == ["✓16", "✓17", "✓18", "✓19", "✓20"]
        assert layout[3] == ["✗16", "✗17", "✗18", "✗19", "✗20"]
        assert [lbl.split()[0] for lbl in layout[4]] == ["Continue", "Regenerate", "Feedback", "End"]

        progress = progress_messages(fake, thread.id, "drafts")
        assert len(progress) == 1, "one progress message per stage"
        await fake.wait_for(lambda: "20/20" in progress[0].content and "Done" in progress[0].content)

        page = pages[0]
        for user in (alice, bob):
            click = await fake.click(user, page, custom_id(page, "✓3"))
            assert (await click.response()).type == 6
        click = await fake.click(carol, page, custom_id(page, "✗4"))
        await click.response()
        await fake.wait_for(lambda: "✓3 · 2" in [c.label for c in page.all_components])
        await fake.wait_for(lambda: "✗4 · 1" in [c.label for c in page.all_components])
        # Pressing again withdraws the vote.
        await (await fake.click(carol, page, custom_id(page, "✗4 · 1"))).response()
        await fake.wait_for(lambda: "✗4" in [c.label for c in page.all_components])

        cont = await fake.click(alice, page, custom_id(page, "Continue"))
        await cont.response()
        refined = await wait_galleries(fake, thread.id, "refined", 1)
        assert len(refined[0].attachments) == 4
        assert len(progress_messages(fake, thread.id, "refined")) == 1
        stage = await bot.orch.current_stage((await bot.orch.active_sessions())[0].id)
        assert stage.name == "refined"
        # Images of the next stage come from the selected draft.
        parents = {im.image.parent_id for im in stage.images}
        assert parents == {page_image_id(page, 3)}
        assert fake.rate_limited_count == 0
        assert not [e for e in fake.errors if e.status != 404], fake.errors


def page_image_id(page, number: int) -> str:
    """The image id behind a ✓ button (from its custom_id)."""
    cid = custom_id(page, f"✓{number}")
    return cid.rsplit(":", 1)[1]


async def test_gpus_shows_every_node(fake_discord, tmp_path):
    """/gpus lists each node with health, tier, loaded checkpoint, queue and speed."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)):
        h = await fake.run_slash(fake.users[0], "gpus")
        cb = await h.response()
        assert cb.type == 4
        embed = cb.data["embeds"][0]
        names = " ".join(f["name"] for f in embed["fields"])
        for node in ("gpu-premium", "gpu-quality", "gpu-standard", "gpu-draft"):
            assert node in names
        text = " ".join(f["value"] for f in embed["fields"])
        assert "tier" in text and "s/step" in text and "queue" in text and "loaded" in text


async def test_family_autocomplete_lists_capable_families(fake_discord, tmp_path):
    """Autocomplete for family comes from what healthy nodes can run."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await fake.wait_for(lambda: any(n.healthy for n in bot.orch.farm_status()), timeout=10)
        choices = await fake.autocomplete(fake.users[0], "draft", {"prompt": "x", "family": "sd"}, focused="family")
        assert {c["value"] for c in choices} == {"sd15", "sdxl"}
        assert all(len(c["name"]) <= 100 for c in choices)


async def test_progress_edit_rate_is_bounded_over_a_full_stage(fake_discord, tmp_path):
    """With the real 1.5 s interval: no message is edited twice within 1.5 s, no 429, final state shown."""
    fake = fake_discord
    config = make_config(tmp_path, progress_interval_s=1.5, drafts=20, steps=40)
    async with running_bot(fake, config, time_scale=0.25):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "slow lighthouse"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 2, timeout=60)
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: "20/20" in progress.content and "Done" in progress.content, timeout=10)
        assert len(progress.edits) >= 2, "the stage ran long enough to be edited live"
        for message in bot_messages(fake, thread.id):
            gaps = fake.edit_intervals(message.id)
            assert all(g >= 1.5 for g in gaps), (message.content[:30], gaps)
        assert fake.rate_limited_count == 0


async def test_429_on_a_progress_edit_keeps_the_final_state(fake_discord, tmp_path):
    """A 429 answered to progress edits is retried; the last state still lands."""
    fake = fake_discord
    fake.inject_429(r"^PATCH /channels/\d+/messages/\d+$", times=3, retry_after=0.05)
    async with running_bot(fake, make_config(tmp_path)):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "rate limited"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 2)
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: "20/20" in progress.content and "Done" in progress.content)
        assert fake.rate_limited_count >= 1
        assert len(galleries(fake, thread.id, "drafts")) == 2


async def test_regenerate_then_end(fake_discord, tmp_path):
    """Regenerate reruns the stage as a new gallery; End closes the session with one message in the thread."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path, drafts=4)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "regen me"})).response()
        thread = await wait_thread(fake)
        first = (await wait_galleries(fake, thread.id, "drafts", 1))[0]
        await (await fake.click(alice, first, custom_id(first, "Regenerate"))).response()
        await fake.wait_for(lambda: len(galleries(fake, thread.id, "drafts")) == 2, timeout=20)
        assert len(progress_messages(fake, thread.id, "drafts")) == 2, "one progress message per (re)run"
        second = galleries(fake, thread.id, "drafts")[1]
        # The first gallery's Continue belongs to a stage that was replaced.
        old = await fake.click(alice, first, custom_id(first, "Continue"))
        await old.response()
        await fake.wait_for(lambda: any(m.ephemeral for m in old.messages))
        assert "earlier stage" in next(m for m in old.messages if m.ephemeral).content
        await (await fake.click(alice, second, custom_id(second, "End"))).response()
        await fake.wait_for(lambda: any(m.content.startswith("Session ended") for m in bot_messages(fake, thread.id)))
        assert await bot.orch.active_sessions() == []
        # A bot up for weeks keeps nothing per session it has finished with.
        await bot._relay.settled()
        gc.collect()
        assert bot._relay._sessions() == []


async def test_failover_shows_in_the_progress_message(fake_discord, tmp_path):
    """A node dying mid-stage: its image moves to another GPU, the progress says so, all 20 still arrive."""
    fake = fake_discord
    config = make_config(tmp_path)
    nodes = tuple(
        replace(n, sim=replace(n.sim, faults=SimFaults(error_after=2))) if n.id == "gpu-premium" else n
        for n in config.nodes
    )
    config = config.with_nodes(nodes)
    async with running_bot(fake, config):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "failover"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 2, timeout=60)
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: "20/20" in progress.content, timeout=20)
        seen = [progress.content] + [p.get("content", "") for _, p in progress.edits]
        assert any("moved from gpu-premium to" in text for text in seen), seen
        assert all("127.0.0.1" not in text for text in seen)


async def test_full_png_on_request(fake_discord, tmp_path):
    """/session png N sends the full-size PNG of a gallery image, ephemerally; a bad number says what exists."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path, drafts=3)):
        await (await fake.run_slash(alice, "draft", {"prompt": "full size please"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        h = await fake.run_slash(alice, "session png", {"number": 2}, channel_id=thread.id)
        await h.response()
        await fake.wait_for(lambda: any(m.attachments for m in h.messages))
        msg = next(m for m in h.messages if m.attachments)
        assert msg.ephemeral and msg.attachments[0].filename == "02.png"
        assert msg.attachments[0].content[:4] == b"\x89PNG"
        bad = await fake.run_slash(alice, "session png", {"number": 9}, channel_id=thread.id)
        cb = await bad.response()
        assert cb.ephemeral and "delivered: 1, 2, 3" in cb.data["content"]
