"""Issue 7: the whole Draft Grid funnel to a final image and an upscale; Concept Builder and Explorer in Discord."""

from __future__ import annotations

import io

from PIL import Image

from tests.bot.helpers import (
    bot_messages,
    custom_id,
    finals,
    galleries,
    make_config,
    running_bot,
    stage_jobs,
    wait_galleries,
    wait_thread,
)
from tests.fakes.fake_discord import FakeFile


async def test_full_draft_grid_funnel_to_final_image_and_upscale(fake_discord, tmp_path):
    """drafts -> refined -> polished -> final (full size, with actions) -> Upscale 4x -> Info -> Variations."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path, final_upscale=False)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "a castle on a hill"})).response()
        thread = await wait_thread(fake)
        for stage, pages in (("drafts", 2), ("refined", 1), ("polished", 1)):
            page = (await wait_galleries(fake, thread.id, stage, pages))[0]
            await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda page=page: "✓1 · 1" in [c.label for c in page.all_components])
            await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
        await fake.wait_for(lambda: finals(fake, thread.id), timeout=30)
        final = finals(fake, thread.id)[0]
        assert len(final.attachments) == 1 and final.attachments[0].filename.endswith(".png")
        assert final.attachments[0].content[:8] == b"\x89PNG\r\n\x1a\n", "the full-size PNG, not a thumbnail"
        assert [b.label for b in final.buttons] == ["Upscale 4x", "Variations", "Branch from here", "Info"]

        info = await fake.click(alice, final, custom_id(final, "Info"))
        await info.response()
        await fake.wait_for(lambda: any(m.embeds for m in info.messages))
        embed = next(m for m in info.messages if m.embeds).embeds[0]
        names = {f["name"] for f in embed["fields"]}
        assert {"Seed", "GPU", "Time", "Lineage"} <= names

        await (await fake.click(alice, final, custom_id(final, "Upscale 4x"))).response()
        await fake.wait_for(lambda: len(finals(fake, thread.id)) == 2, timeout=30)
        upscaled = finals(fake, thread.id)[1]
        assert upscaled.content.startswith("**Upscaled**")
        assert "Upscale 4x" not in [b.label for b in upscaled.buttons]

        var = await fake.click(alice, final, custom_id(final, "Variations"))
        await var.response()
        explorer_thread = await wait_thread(fake, 2)
        await fake.wait_for(lambda: any("Explorer started" in m.content for m in var.messages))
        await fake.wait_for(
            lambda: galleries(fake, explorer_thread.id, "round 1") or bot_messages(fake, explorer_thread.id)
        )
        sessions = await bot.orch.active_sessions()
        assert any(s.flow.value == "explorer" for s in sessions)

        branch = await fake.click(alice, final, custom_id(final, "Branch from here"))
        await branch.response()
        await fake.wait_for(lambda: any(m.all_components for m in branch.messages))
        chooser = next(m for m in branch.messages if m.all_components)
        select = next(c for c in chooser.all_components if c.type == 3)
        assert len(select.options) >= 3, "the image and its ancestors"
        ancestor = select.options[-1]["value"]
        picked = await fake.select(alice, chooser, select.custom_id, [ancestor])
        await picked.response()
        await wait_thread(fake, 3)
        await fake.wait_for(lambda: any("branched" in m.content for m in picked.messages))
        assert fake.rate_limited_count == 0


def pick_galleries(fake, thread_id):
    return [m for m in bot_messages(fake, thread_id) if "Pick 1" in [b.label for b in m.buttons]]


async def test_concept_builder_to_final_image(fake_discord, tmp_path):
    """Rounds come as galleries with Pick buttons and locked fields; a typed reply locks a field; then a final."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path, final_upscale=False)) as bot:
        await (await fake.run_slash(alice, "concept", {"subject": "a red fox"})).response()
        thread = await wait_thread(fake)
        sid = (await bot.orch.active_sessions())[0].id
        await fake.wait_for(lambda: pick_galleries(fake, thread.id), timeout=30)
        rounds = 0
        while not finals(fake, thread.id):
            seen = len(pick_galleries(fake, thread.id))
            page = pick_galleries(fake, thread.id)[-1]
            assert "a red fox" in page.content, "locked fields are shown"
            assert "Type a value ✎" in [b.label for b in page.buttons]
            if rounds == 0:
                await fake.say(alice, thread.id, "neon noir")
            elif rounds == 1:
                opened = await fake.click(alice, page, custom_id(page, "Type a value"))
                await opened.response()
                assert opened.modal is not None
                typed = await fake.submit_modal(
                    alice, thread.id, opened.modal["custom_id"], {"value": "low angle"}, opened_by=opened
                )
                await typed.response()
            else:
                await (await fake.click(alice, page, custom_id(page, "Pick 2"))).response()
            rounds += 1
            await fake.wait_for(
                lambda seen=seen: len(pick_galleries(fake, thread.id)) > seen or finals(fake, thread.id), timeout=30
            )
            assert rounds <= 10
        final = finals(fake, thread.id)[0]
        assert final.attachments and next(b.label for b in final.buttons) == "Upscale 4x"
        session = await bot.orch.session(sid)
        assert "neon noir" in session.prompt and "low angle" in session.prompt
        assert session.concept is not None and len(session.concept.locked) >= 5


async def test_explorer_from_an_attached_image_to_an_upscale(fake_discord, tmp_path):
    """/explore with an image: rounds with Pick and Upscale buttons; a pick starts the next round; upscale any."""
    fake = fake_discord
    alice = fake.users[0]
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (200, 80, 40)).save(buf, format="PNG")
    async with running_bot(fake, make_config(tmp_path)) as bot:
        h = await fake.run_slash(
            alice,
            "explore",
            {"prompt": "a clay teapot"},
            attachments={"image": FakeFile("teapot.png", buf.getvalue(), "image/png")},
        )
        await h.response()
        thread = await wait_thread(fake)
        first = (await wait_galleries(fake, thread.id, "round 1", 1))[0]
        assert {"Pick 1", "Upscale 1", "Regenerate ↻", "End ■"} <= {b.label for b in first.buttons}
        await (await fake.click(alice, first, custom_id(first, "Pick 1"))).response()
        second = (await wait_galleries(fake, thread.id, "round 2", 1))[0]
        await (await fake.click(alice, second, custom_id(second, "Upscale 2"))).response()
        await fake.wait_for(lambda: finals(fake, thread.id), timeout=30)
        up = finals(fake, thread.id)[0]
        assert up.content.startswith("**Upscaled**") and up.attachments
        sid = (await bot.orch.active_sessions())[0].id
        assert (await bot.orch.session(sid)).flow.value == "explorer"


async def test_explore_needs_a_prompt_or_an_image(fake_discord, tmp_path):
    """/explore with neither is refused; with only an image it starts from the image."""
    fake = fake_discord
    alice = fake.users[0]
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (20, 120, 40)).save(buf, format="PNG")
    async with running_bot(fake, make_config(tmp_path)) as bot:
        nothing = await fake.run_slash(alice, "explore", {})
        cb = await nothing.response()
        assert cb.ephemeral and "prompt or attach an image" in cb.data["content"]
        h = await fake.run_slash(
            alice, "explore", {}, attachments={"image": FakeFile("leaf.png", buf.getvalue(), "image/png")}
        )
        await h.response()
        await fake.wait_for(lambda: fake.threads or [m for m in h.messages if m.ephemeral], timeout=20)
        assert not [m.content for m in h.messages if m.ephemeral]
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "round 1", 1)
        assert thread.name == "Explorer · leaf.png"
        # No invented prompt: the image alone leads, so every variation is img2img from it.
        session = (await bot.orch.active_sessions())[0]
        assert session.prompt == ""
        stage = await bot.orch.current_stage(session.id)
        jobs = await stage_jobs(bot, stage.id)
        assert jobs and all(j.params.mode.value == "img2img" for j in jobs)
