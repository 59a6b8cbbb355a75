"""Every user-facing error becomes a short ephemeral reply through the fake Discord; nothing public is left behind."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.config import LimitSettings
from tests.bot.helpers import custom_id, make_config, running_bot, wait_galleries, wait_thread


def ephemeral_texts(handle) -> list[str]:
    return [m.content for m in handle.messages if m.ephemeral] + (
        [handle.callback.data.get("content", "")] if handle.callback and handle.callback.ephemeral else []
    )


async def error_of(fake, handle, timeout: float = 15) -> str:
    """The ephemeral error text an interaction got (a deferred public reply is removed first)."""
    await handle.response(timeout)
    await fake.wait_for(lambda: ephemeral_texts(handle), timeout=timeout)
    return ephemeral_texts(handle)[0]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"prompt": "x" * 1600}, "the limit is 1500"),
        ({"prompt": "a fox", "count": 500}, "Count"),
        ({"prompt": "a fox", "family": "dalle"}, "Unknown family"),
        ({"prompt": "a fox --ar 99:1"}, "--ar"),
    ],
)
async def test_input_errors_are_ephemeral_and_start_nothing(fake_discord, tmp_path, options, expected):
    """Prompt too long, count out of range, bad family or flag: a specific ephemeral reply, no thread."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)):
        h = await fake.run_slash(fake.users[0], "draft", options)
        text = await error_of(fake, h)
        assert expected in text
        assert "Reference" not in text
        assert fake.threads == []
        # The public "thinking…" reply was removed, so nothing public says anything about it.
        assert not [m for m in fake.messages(fake.channel_id) if not m.ephemeral and m.author.id == fake.bot_user.id]


async def test_no_capable_gpu_for_the_family(fake_discord, tmp_path):
    """A family no node can run is refused with a clear message."""
    fake = fake_discord
    config = make_config(tmp_path)
    config = config.with_nodes(tuple(n for n in config.nodes if "flux" not in n.capabilities))
    async with running_bot(fake, config):
        text = await error_of(fake, await fake.run_slash(fake.users[0], "draft", {"prompt": "a fox", "family": "flux"}))
        assert "GPU" in text or "flux" in text
        assert fake.threads == []


async def test_per_user_session_cap(fake_discord, tmp_path):
    """Past the per-user active-session cap, a clear message instead of a new session."""
    fake = fake_discord
    config = make_config(tmp_path)
    config = config.with_settings(
        limits=replace(config.settings.limits or LimitSettings(), max_active_sessions_per_user=1)
    )
    async with running_bot(fake, config):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "first"})).response()
        await wait_thread(fake)
        text = await error_of(fake, await fake.run_slash(fake.users[0], "draft", {"prompt": "second"}))
        assert "session" in text.lower()
        assert len(fake.threads) == 1


async def test_stranger_in_a_private_session_is_told_how_to_get_in(fake_discord, tmp_path):
    """A vote from someone not invited: ephemeral "private session" naming the owner and /session invite."""
    fake = fake_discord
    alice, bob = fake.users[:2]
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "secret garden", "private": True})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 2))[0]
        text = await error_of(fake, await fake.click(bob, page, custom_id(page, "✓1")))
        assert "private" in text and str(alice.id) in text and "invite" in text
        sid = (await bot.orch.active_sessions())[0].id
        stage = await bot.orch.current_stage(sid)
        assert all(not im.votes for im in stage.images), "the refused vote was not counted"


async def test_unknown_command_context_gives_a_clear_message(fake_discord, tmp_path):
    """/session outside a session thread says where it works."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)):
        text = await error_of(fake, await fake.run_slash(fake.users[0], "session status"))
        assert "session's thread" in text
