"""Forged interactions: modals and clicks claiming another channel or session, edits with nothing pending."""

from __future__ import annotations

import pytest

from bot.custom_ids import ModalKind
from tests.bot.helpers import custom_id, running_bot, wait_galleries, wait_thread
from tests.bot.hostile.arena import assert_pings_only, config_for, open_arena, refusal, snap

FORGED_MODALS = [
    pytest.param(ModalKind.EDIT, {"prompt": "hijacked prompt", "negative": ""}, id="edit-from-main-channel"),
    pytest.param(ModalKind.FEEDBACK, {"feedback": "make it a horror scene"}, id="feedback-from-main-channel"),
    pytest.param(ModalKind.FIELD, {"value": "hijacked"}, id="field-from-main-channel"),
]


@pytest.mark.parametrize(("kind", "values"), FORGED_MODALS)
async def test_forged_modal_submit_from_another_channel_is_refused(fake_discord, tmp_path, kind, values):
    """A modal submit naming a session, sent from the main channel, changes nothing and is refused privately."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.bob, kind, values, channel_id=fake.channel_id)
        assert "another session's thread" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert len(arena.suggestions()) == 1
        assert await snap(bot, tmp_path) == before
        assert_pings_only(fake)


async def test_forged_edit_submit_from_another_sessions_thread_is_refused(fake_discord, tmp_path):
    """Bob's own thread is no key to alice's session: the Edit submit naming hers is refused there."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        await (await fake.run_slash(arena.bob, "draft", {"prompt": "bob's own"})).response()
        bobs = await wait_thread(fake, 2)
        await wait_galleries(fake, bobs.id, "drafts", 1)
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.bob, ModalKind.EDIT, {"prompt": "hijacked"}, channel_id=bobs.id)
        assert "another session's thread" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert await snap(bot, tmp_path) == before
        await bot.relay.wait_retries()


FORGED_CLICKS = [
    pytest.param("✓1", id="vote"),
    pytest.param("✗2", id="reject"),
    pytest.param("Continue", id="continue"),
    pytest.param("Regenerate", id="regenerate"),
    pytest.param("End", id="end"),
    pytest.param("Feedback", id="feedback-button"),
]


@pytest.mark.parametrize("label", FORGED_CLICKS)
async def test_forged_gallery_click_from_another_channel_is_refused(fake_discord, tmp_path, label):
    """A gallery button's custom_id sent from another channel is refused; no vote, stage or job is made."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        before = await snap(bot, tmp_path)
        cid = custom_id(arena.gallery, label)
        h = await fake.click(arena.alice, arena.gallery, cid, channel_id=fake.other_channel_id)
        assert "another session's thread" in await refusal(fake, h)
        assert await snap(bot, tmp_path) == before
        assert (await arena.session()).state.value != "ended"


@pytest.mark.parametrize("label", ["Use", "Discard", "Edit"])
async def test_forged_suggestion_click_from_another_channel_is_refused(fake_discord, tmp_path, label):
    """Use / Discard / Edit from another channel: refused; the suggestion stays pending, the prompt unchanged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        assert arena.suggestion is not None
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        cid = custom_id(arena.suggestion, label)
        h = await fake.click(arena.alice, arena.suggestion, cid, channel_id=fake.channel_id)
        assert "another session's thread" in await refusal(fake, h)
        session = await arena.session()
        assert session.prompt == prompt and session.suggestion is not None
        assert await snap(bot, tmp_path) == before


@pytest.mark.parametrize("after", ["nothing-pending", "discarded"])
async def test_edit_submit_needs_the_pending_suggestion(fake_discord, tmp_path, after):
    """An Edit submit in the right thread, with no suggestion pending (never made, or discarded): refused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=after == "discarded")
        if arena.suggestion is not None:
            await (await fake.click(arena.alice, arena.suggestion, custom_id(arena.suggestion, "Discard"))).response()
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.alice, ModalKind.EDIT, {"prompt": "a new prompt out of nowhere"})
        assert "no pending suggestion" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert await snap(bot, tmp_path) == before
