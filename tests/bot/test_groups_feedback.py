"""Issue 7: group voting in a thread, invites, thread replies -> suggestion -> Use / Edit / Discard / undo."""

from __future__ import annotations

import pytest

from orchestrator.config import LlmSettings
from tests.bot.helpers import (
    bot_messages,
    custom_id,
    make_config,
    running_bot,
    start_ollama_for_feedback,
    wait_galleries,
    wait_thread,
)


def suggestions(fake, thread_id):
    return [m for m in bot_messages(fake, thread_id) if m.embeds and m.embeds[0].get("title") == "Suggested prompt"]


async def test_three_users_vote_in_an_open_session(fake_discord, tmp_path):
    """Alice, Bob and Carol vote; tallies show on the buttons; /session status lists who voted what."""
    fake = fake_discord
    alice, bob, carol = fake.users[:3]
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "three friends"})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 2))[0]
        for user in (alice, bob, carol):
            await (await fake.click(user, page, custom_id(page, "✓2"))).response()
        await (await fake.click(bob, page, custom_id(page, "✗5"))).response()
        await fake.wait_for(lambda: "✓2 · 3" in [c.label for c in page.all_components])
        await fake.wait_for(lambda: "✗5 · 1" in [c.label for c in page.all_components])
        sid = (await bot.orch.active_sessions())[0].id
        stage = await bot.orch.current_stage(sid)
        assert stage.selection[0] == 2
        status = await fake.run_slash(carol, "session status", channel_id=thread.id)
        cb = await status.response()
        assert cb.ephemeral
        votes = next(f for f in cb.data["embeds"][0]["fields"] if f["name"] == "Votes")["value"]
        assert "#2 +3" in votes and str(bob.id) in votes
        # In an open session anyone may continue.
        await (await fake.click(carol, page, custom_id(page, "Continue"))).response()
        await wait_galleries(fake, thread.id, "refined", 1)


async def test_private_session_invite_then_vote(fake_discord, tmp_path):
    """Bob is refused in Alice's private session until she invites him; then his vote counts."""
    fake = fake_discord
    alice, bob = fake.users[:2]
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "private", "private": True})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 2))[0]
        refused = await fake.click(bob, page, custom_id(page, "✓1"))
        await refused.response()
        await fake.wait_for(lambda: any(m.ephemeral for m in refused.messages))
        inv = await fake.run_slash(alice, "session invite", {"member": bob}, channel_id=thread.id)
        cb = await inv.response()
        assert cb.type == 4 and str(bob.id) in cb.data["content"]
        await (await fake.click(bob, page, custom_id(page, "✓1"))).response()
        await fake.wait_for(lambda: "✓1 · 1" in [c.label for c in page.all_components])
        # Only the owner continues a private session.
        nope = await fake.click(bob, page, custom_id(page, "Continue"))
        await nope.response()
        await fake.wait_for(lambda: any(m.ephemeral for m in nope.messages))
        sid = (await bot.orch.active_sessions())[0].id
        assert (await bot.orch.current_stage(sid)).name == "drafts"
        # /session open lets everyone in.
        await (await fake.run_slash(alice, "session open", channel_id=thread.id)).response()
        assert (await bot.orch.session(sid)).visibility.value == "open"


@pytest.mark.parametrize("llm", ["rules", "fake_ollama"])
async def test_thread_reply_suggestion_use_applies_to_next_stage(fake_discord, tmp_path, llm):
    """A reply becomes a suggestion (diff, rationale, source) with Use/Edit/Discard; Use feeds the next stage."""
    fake = fake_discord
    server = None
    settings = LlmSettings(enabled=False)
    if llm == "fake_ollama":
        server, settings = await start_ollama_for_feedback()
    alice = fake.users[0]
    try:
        async with running_bot(fake, make_config(tmp_path, llm=settings)) as bot:
            await (
                await fake.run_slash(alice, "draft", {"prompt": "a lighthouse at dusk, people on the pier"})
            ).response()
            thread = await wait_thread(fake)
            page = (await wait_galleries(fake, thread.id, "drafts", 2))[0]
            await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
            await fake.say(alice, thread.id, "warmer light, no people")
            await fake.wait_for(lambda: suggestions(fake, thread.id), timeout=20)
            assert fake.typing[thread.id] >= 1, "typing indicator while the pipeline works"
            msg = suggestions(fake, thread.id)[0]
            fields = {f["name"]: f["value"] for f in msg.embeds[0]["fields"]}
            assert "New prompt" in fields and "Answered by" in fields
            assert ("language model" if llm == "fake_ollama" else "rules") in fields["Answered by"]
            assert "```diff" in msg.embeds[0]["description"]
            assert [b.label for b in msg.buttons] == ["Use", "Edit", "Discard"]
            new_prompt = fields["New prompt"]

            use = await fake.click(alice, msg, custom_id(msg, "Use"))
            assert (await use.response()).type == 7
            await fake.wait_for(lambda: "applied" in msg.content and not msg.buttons)
            sid = (await bot.orch.active_sessions())[0].id
            assert (await bot.orch.session(sid)).prompt == new_prompt

            await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
            await wait_galleries(fake, thread.id, "refined", 1)
            stage = await bot.orch.current_stage(sid)
            assert all(im.image.prompt == new_prompt for im in stage.images)
    finally:
        if server is not None:
            await server.stop()


async def test_edit_modal_discard_and_undo(fake_discord, tmp_path):
    """Edit opens a modal whose text becomes the prompt; Discard drops a suggestion; "undo" reverts."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "a red barn"})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 2))[0]
        sid = (await bot.orch.active_sessions())[0].id

        # Feedback button -> modal -> suggestion in the thread.
        fb = await fake.click(alice, page, custom_id(page, "Feedback"))
        cb = await fb.response()
        assert cb.type == 9 and fb.modal["custom_id"].startswith("imgen:m:fb:")
        sub = await fake.submit_modal(alice, thread.id, fb.modal["custom_id"], {"feedback": "more snow"}, opened_by=fb)
        await sub.response()
        await fake.wait_for(lambda: len(suggestions(fake, thread.id)) == 1, timeout=20)
        msg = suggestions(fake, thread.id)[0]

        edit = await fake.click(alice, msg, custom_id(msg, "Edit"))
        assert (await edit.response()).type == 9
        modal_id = edit.modal["custom_id"]
        done = await fake.submit_modal(alice, thread.id, modal_id, {"prompt": "a blue barn in snow"}, opened_by=edit)
        cb = await done.response()
        assert cb.type == 4 and "a blue barn in snow" in cb.data["content"]
        assert (await bot.orch.session(sid)).prompt == "a blue barn in snow"

        await fake.say(alice, thread.id, "undo")
        await fake.wait_for(lambda: any("Reverted" in m.content for m in bot_messages(fake, thread.id)))
        assert (await bot.orch.session(sid)).prompt == "a red barn"

        await fake.say(alice, thread.id, "less red")
        await fake.wait_for(lambda: len(suggestions(fake, thread.id)) == 2, timeout=20)
        second = suggestions(fake, thread.id)[1]
        await (await fake.click(alice, second, custom_id(second, "Discard"))).response()
        await fake.wait_for(lambda: "Discarded" in second.content)
        assert (await bot.orch.session(sid)).suggestion is None
        assert (await bot.orch.session(sid)).prompt == "a red barn"
