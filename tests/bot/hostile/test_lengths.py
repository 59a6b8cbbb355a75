"""Lengths: negative prompts and the Edit modal held to our limits."""

from __future__ import annotations

import pytest

from bot.custom_ids import ModalKind
from tests.bot.helpers import custom_id, running_bot
from tests.bot.hostile.arena import config_for, open_arena, refusal, snap

NEGATIVE = ", ".join(f"ugly thing {i}" for i in range(60))  # ~770 characters


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"prompt": f"a fox --no {NEGATIVE}"}, id="no-flag"),
        pytest.param({"prompt": "a fox", "negative": NEGATIVE}, id="negative-option"),
    ],
)
async def test_long_negative_prompts_are_refused(fake_discord, tmp_path, options):
    """A negative prompt over the limit, by `--no` or the option: refused with the numbers, nothing created."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        before = await snap(bot, tmp_path)
        text = await refusal(fake, await fake.run_slash(fake.users[1], "draft", options))
        assert f"{len(NEGATIVE)} characters; the limit is 500" in text
        assert await snap(bot, tmp_path) == before and fake.threads == []
        await bot.relay.wait_retries()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"prompt": "a fox", "negative": NEGATIVE}, "the limit is 500", id="edit-negative"),
        pytest.param({"prompt": "a fox " * 400, "negative": ""}, "over 1500 characters", id="edit-prompt"),
    ],
)
async def test_edit_modal_lengths_are_enforced(fake_discord, tmp_path, values, expected):
    """An Edit submit with a prompt or negative over the limit (a client can skip Discord's max_length): refused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        before, session = await snap(bot, tmp_path), await arena.session()
        h = await arena.submit(arena.alice, ModalKind.EDIT, values)
        assert expected in await refusal(fake, h)
        after = await arena.session()
        assert (after.prompt, after.negative_prompt) == (session.prompt, session.negative_prompt)
        assert after.suggestion is not None
        assert await snap(bot, tmp_path) == before


async def test_edit_modal_offers_our_limits(fake_discord, tmp_path):
    """The Edit modal's inputs carry our own prompt limits, so Discord refuses an over-long value itself."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        assert arena.suggestion is not None
        h = await fake.click(arena.alice, arena.suggestion, custom_id(arena.suggestion, "Edit"))
        await h.response()
        assert h.modal is not None
        inputs = {}
        for row in h.modal["components"]:
            inner = row.get("component") or row["components"][0]
            inputs[inner["custom_id"]] = inner["max_length"]
        assert inputs == {"prompt": 1500, "negative": 500}
