"""A stranger in a private session: gallery, suggestion, Explorer and Concept controls, replies and commands."""

from __future__ import annotations

import pytest

from tests.bot.helpers import bot_messages, custom_id, galleries, running_bot, wait_thread
from tests.bot.hostile.arena import Arena, assert_pings_only, config_for, open_arena, refusal, snap
from tests.fakes.discord_models import FakeMessage
from tests.fakes.fake_discord import FakeDiscord


async def _stranger_click(arena: Arena, label: str, message: FakeMessage | None = None) -> str:
    msg = message or arena.gallery
    return await refusal(arena.fake, await arena.fake.click(arena.carol, msg, custom_id(msg, label)))


STRANGER_CLICKS = [
    pytest.param("✓1", "private session", id="vote"),
    pytest.param("✗1", "private session", id="reject"),
    pytest.param("Continue", "Only the owner can continue", id="continue"),
    pytest.param("Regenerate", "Only the owner", id="regenerate"),
    pytest.param("End", "Only the owner", id="end"),
    pytest.param("Feedback", "private session", id="feedback-button"),
]


@pytest.mark.parametrize(("label", "expected"), STRANGER_CLICKS)
async def test_stranger_in_private_session_gallery_buttons(fake_discord, tmp_path, label, expected):
    """Carol, not invited, presses each gallery button of alice's private session: refused, nothing changes."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        before = await snap(bot, tmp_path)
        assert expected in await _stranger_click(arena, label)
        assert await snap(bot, tmp_path) == before
        assert_pings_only(fake)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        pytest.param("Use", "Only the owner can apply a suggestion", id="use"),
        pytest.param("Edit", "Only the owner can apply a suggestion", id="edit"),
        pytest.param("Discard", "private session", id="discard"),
    ],
)
async def test_stranger_in_private_session_suggestion_buttons(fake_discord, tmp_path, label, expected):
    """Carol presses Use / Edit / Discard on alice's private suggestion: refused, it stays pending."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True, suggestion=True)
        before = await snap(bot, tmp_path)
        assert expected in await _stranger_click(arena, label, arena.suggestion)
        assert (await arena.session()).suggestion is not None
        assert await snap(bot, tmp_path) == before


@pytest.mark.meant_pings(lambda fake: {f"user:{fake.users[1].id}"})
async def test_invited_member_pressing_use_is_told_what_was_refused(fake_discord, tmp_path):
    """An invited member may vote but not apply: the refusal names applying a suggestion, not 'continue'."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True, suggestion=True)
        await (
            await fake.run_slash(arena.alice, "session invite", {"member": arena.bob}, channel_id=arena.thread_id)
        ).response()
        assert arena.suggestion is not None
        h = await fake.click(arena.bob, arena.suggestion, custom_id(arena.suggestion, "Use"))
        text = await refusal(fake, h)
        assert "apply a suggestion" in text and "vote" in text
        assert (await arena.session()).suggestion is not None


async def test_stranger_reply_in_private_session_is_ignored(fake_discord, tmp_path):
    """Carol's feedback reply in a private thread: no pipeline call, no suggestion, no answer at all."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        before, count = await snap(bot, tmp_path), len(bot_messages(fake, arena.thread_id))
        await arena.say(arena.carol, f"make it gory {arena.mentions()}")
        await arena.say(arena.alice, "warmer light")  # the owner's reply is handled after carol's
        await fake.wait_for(lambda: arena.suggestions(), timeout=15)
        assert len(bot_messages(fake, arena.thread_id)) == count + 1
        assert (await snap(bot, tmp_path)).rows == before.rows
        assert_pings_only(fake)


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        pytest.param("session invite", {"member": "carol"}, "Only the owner can invite", id="invite"),
        pytest.param("session end", {}, "Only the owner", id="end"),
        pytest.param("session open", {}, "Only the owner can change who may vote", id="open"),
        pytest.param("session rules", {"quorum": 1}, "Only the owner", id="rules"),
    ],
)
async def test_stranger_session_commands_are_refused(fake_discord, tmp_path, command, options, expected):
    """Carol's /session invite, end, open and rules in alice's private thread: refused privately, nothing changes."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        opts = {k: (arena.carol if v == "carol" else v) for k, v in options.items()}
        before = await snap(bot, tmp_path)
        h = await fake.run_slash(arena.carol, command, opts, channel_id=arena.thread_id)
        assert expected in await refusal(fake, h)
        assert (await snap(bot, tmp_path)).rows == before.rows
        assert (await arena.session()).visibility.value == "private"


STRANGER_EXPLORER = [
    pytest.param("round", "Pick 1", "Only the owner", id="pick"),
    pytest.param("round", "Upscale 2", "Only the owner", id="upscale"),
    pytest.param("round", "Regenerate", "Only the owner", id="regenerate"),
    pytest.param("upscaled", "Variations", "private session", id="variations"),
    pytest.param("upscaled", "Branch from here", "private session", id="branch"),
]


@pytest.mark.parametrize(("where", "label", "expected"), STRANGER_EXPLORER)
async def test_stranger_in_private_explorer(fake_discord, tmp_path, where, label, expected):
    """Carol in alice's private Explorer: Pick, Upscale, Regenerate, and Variations / Branch on its upscale."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        alice, carol = fake.users[0], fake.users[2]
        await (await fake.run_slash(alice, "explore", {"prompt": "a harbour", "private": True})).response()
        thread = await wait_thread(fake)
        page = (await fake.wait_for(lambda: galleries(fake, thread.id, "round 1"), timeout=20))[0]
        target = page
        if where == "upscaled":
            await (await fake.click(alice, page, custom_id(page, "Upscale 1"))).response()
            done = lambda: [m for m in bot_messages(fake, thread.id) if m.content.startswith("**Upscaled**")]  # noqa: E731
            await fake.wait_for(done, timeout=20)
            target = done()[0]
        before = await snap(bot, tmp_path)
        text = await refusal(fake, await fake.click(carol, target, custom_id(target, label)))
        assert expected in text
        assert await snap(bot, tmp_path) == before
        assert len(fake.threads) == 1


async def test_stranger_in_private_concept_cannot_type_a_value(fake_discord, tmp_path):
    """Carol presses "Type a value" in alice's private Concept Builder: refused before any form opens."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        await (await fake.run_slash(fake.users[0], "concept", {"subject": "a cat", "private": True})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: any("Type a value" in labels for labels in _labels(fake, thread.id)), timeout=20)
        page = next(m for m in bot_messages(fake, thread.id) if "Type a value ✎" in [b.label for b in m.buttons])
        before = await snap(bot, tmp_path)
        h = await fake.click(fake.users[2], page, custom_id(page, "Type a value"))
        assert "private session" in await refusal(fake, h)
        assert h.modal is None
        assert await snap(bot, tmp_path) == before


def _labels(fake: FakeDiscord, thread_id: int) -> list[str]:
    return [" ".join(b.label or "" for b in m.buttons) for m in bot_messages(fake, thread_id)]
