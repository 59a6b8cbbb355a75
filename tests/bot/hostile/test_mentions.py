"""Mentions and markdown members type are echoed back without pinging anyone or rendering a link."""

from __future__ import annotations

import pytest

from bot.custom_ids import ModalId, ModalKind
from bot.relay import THREAD
from tests.bot.helpers import bot_messages, custom_id, running_bot, wait_galleries, wait_thread
from tests.bot.hostile.arena import MASKED, MENTIONS, assert_pings_only, config_for, live_masked_link, open_arena


async def test_mentions_and_masked_links_in_prompt_and_negative_ping_nobody(fake_discord, tmp_path):
    """/draft with @everyone, a role, a user and a masked link in prompt, `--no` and `negative`: nobody pinged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = f"{MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)} {MASKED}"
        prompt = f"a fox {evil} --no {evil}"
        arena = await open_arena(fake, bot, tmp_path, prompt=prompt)
        header = fake.message(fake.thread(arena.thread_id).starter_message_id)
        negative = next(f["value"] for f in header.embeds[0]["fields"] if f["name"] == "Negative")
        assert "@\u200beveryone" in negative and not live_masked_link(negative)
        assert_pings_only(fake)


async def test_negative_option_with_mentions_pings_nobody(fake_discord, tmp_path):
    """The `negative` option with mentions and a masked link: shown defused, nobody pinged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = f"{MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)} {MASKED}"
        await (await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox", "negative": evil})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        header = fake.message(thread.starter_message_id)
        negative = next(f["value"] for f in header.embeds[0]["fields"] if f["name"] == "Negative")
        assert not live_masked_link(negative)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


async def test_feedback_with_mentions_pings_nobody(fake_discord, tmp_path):
    """A reply full of mentions and a masked link becomes a suggestion that pings nobody and links nowhere."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        await arena.say(arena.bob, f"add {arena.mentions()} and {MASKED}, warmer light")
        await fake.wait_for(lambda: arena.suggestions(), timeout=15)
        embed = arena.suggestions()[0].embeds[0]
        for f in embed["fields"]:
            assert not live_masked_link(f["value"]), f
        assert_pings_only(fake)


async def test_edit_modal_and_undo_echo_mentions_without_pinging(fake_discord, tmp_path):
    """An Edit with mentions and a masked link is applied; the applied text and `undo` echo it defused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        evil = f"a fox {arena.mentions()} {MASKED}"
        h = await arena.submit(arena.alice, ModalKind.EDIT, {"prompt": evil, "negative": arena.mentions()})
        await h.response()
        assert (await arena.session()).prompt == " ".join(evil.split())
        applied = h.original
        assert applied is not None and "@\u200beveryone" in applied.content and not live_masked_link(applied.content)
        # One more applied prompt, so `undo` brings the hostile one back into a message.
        await arena.say(arena.alice, "more contrast")
        await fake.wait_for(lambda: len(arena.suggestions()) == 2, timeout=15)
        await (
            await fake.click(arena.alice, arena.suggestions()[1], custom_id(arena.suggestions()[1], "Use"))
        ).response()
        await arena.say(arena.alice, "undo")
        await fake.wait_for(lambda: any("Reverted" in m.content for m in bot_messages(fake, arena.thread_id)))
        undo = next(m for m in bot_messages(fake, arena.thread_id) if "Reverted" in m.content)
        assert "@\u200beveryone" in undo.content and not live_masked_link(undo.content)
        assert_pings_only(fake)


async def test_concept_values_with_mentions_ping_nobody(fake_discord, tmp_path):
    """Concept Builder: a subject, a typed value and a modal value with mentions; galleries repeat them defused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)
        await (await fake.run_slash(fake.users[0], "concept", {"subject": f"a cat {evil} {MASKED}"})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: any(m.all_components for m in bot_messages(fake, thread.id)), timeout=20)
        await fake.say(fake.users[1], thread.id, f"neon {evil} {MASKED}")
        await fake.wait_for(lambda: any("set the field" in m.content for m in bot_messages(fake, thread.id)))
        sid = await bot.orch.session_for_ref(THREAD, str(thread.id))
        h = await fake.submit_modal(fake.users[2], thread.id, str(ModalId(ModalKind.FIELD, sid)), {"value": evil})
        await h.response()
        await fake.wait_for(lambda: h.original is not None and not h.original.loading)
        for m in bot_messages(fake, thread.id):
            assert not live_masked_link(m.content)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


@pytest.mark.meant_pings(lambda fake: {f"user:{fake.users[1].id}"})
async def test_invite_pings_only_the_invited_member(fake_discord, tmp_path):
    """`/session invite` is the one message meant to ping: the invited member, not the inviter, no roles."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        h = await fake.run_slash(arena.alice, "session invite", {"member": arena.bob}, channel_id=arena.thread_id)
        await h.response()
        assert_pings_only(fake, frozenset({f"user:{arena.bob.id}"}))
        assert f"user:{arena.bob.id}" in fake.bot_pings()
