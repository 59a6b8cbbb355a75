"""Floods and budgets: replies and starts in bursts, cooldowns, and feedback while a refine already runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from bot.custom_ids import ModalId, ModalKind
from bot.relay import THREAD
from tests.bot.helpers import (
    bot_messages,
    custom_id,
    running_bot,
    stage_reply,
    start_ollama_for_feedback,
    wait_galleries,
    wait_thread,
)
from tests.bot.hostile.arena import assert_pings_only, config_for, open_arena, refusal, snap


async def test_a_flood_of_replies_makes_one_suggestion_and_one_notice(fake_discord, tmp_path):
    """15 replies by one member: one pipeline run (at most 3 model chats, not 30) and one suggestion, one short
    notice that says when; no pile-up."""
    fake = fake_discord
    ollama, llm = await start_ollama_for_feedback()
    try:
        async with running_bot(fake, config_for(tmp_path, llm=llm, feedback_cooldown_s=600.0)) as bot:
            arena = await open_arena(fake, bot, tmp_path)
            before = await snap(bot, tmp_path)
            for i in range(15):
                await arena.say(arena.bob, f"more drama {i} @everyone")
            await fake.wait_for(lambda: arena.suggestions(), timeout=15)
            notices = lambda: [m for m in bot_messages(fake, arena.thread_id) if "you can give more" in m.content]  # noqa: E731
            await fake.wait_for(notices, timeout=15)
            assert len(arena.suggestions()) == 1
            assert 1 <= len(ollama.chats()) <= 3, "one refine: interpreter, vision, engineer at most"
            assert len(notices()) == 1 and "in 10 min" in notices()[0].content
            assert (await snap(bot, tmp_path)).files == before.files
    finally:
        await ollama.stop()


async def test_a_flood_of_starts_makes_one_session(fake_discord, tmp_path):
    """Five /draft in a row by one member: one session; the others are refused privately with when to try again."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, session_cooldown_s=600.0)) as bot:
        first = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox"})
        await first.response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        before = await snap(bot, tmp_path)
        for _ in range(4):
            h = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox @everyone"})
            text = await refusal(fake, h)
            assert "you can start another in 10 min" in text
        assert len(fake.threads) == 1
        assert await snap(bot, tmp_path) == before
        # Another member is not held back by bob's cooldown.
        await (await fake.run_slash(fake.users[2], "draft", {"prompt": "a cat"})).response()
        await wait_thread(fake, 2)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


async def test_a_typo_does_not_cost_the_start_cooldown(fake_discord, tmp_path):
    """A start refused for a bad flag gives the cooldown back: the corrected command works at once."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, session_cooldown_s=600.0)) as bot:
        h = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox --ar 99:1"})
        assert "--ar" in await refusal(fake, h)
        await (await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox --ar 16:9"})).response()
        await wait_thread(fake)
        await bot.relay.wait_retries()


async def test_votes_stay_instant_under_cooldowns(fake_discord, tmp_path):
    """Budgets never slow votes: six toggles in a row under long cooldowns are all taken."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, feedback_cooldown_s=600.0, session_cooldown_s=600.0)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        page = arena.gallery
        for i in range(6):
            shown = "✓1 · 1" if i % 2 == 0 else "✓1"
            await (await fake.click(arena.bob, page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda shown=shown: shown in [c.label for c in page.all_components])
        stage = await bot.orch.current_stage(arena.session_id)
        assert stage.image(1).votes == {}, "an even number of presses withdraws the vote"


@dataclass
class GatedOllama:
    """A fake Ollama whose answers wait until the test lets them through."""

    server: Any
    settings: Any
    gate: asyncio.Event
    arrived: asyncio.Event


async def gated_ollama() -> GatedOllama:
    from orchestrator.config import LlmSettings
    from tests.fakes.fake_ollama import FakeOllama

    llm = LlmSettings()
    gate, arrived = asyncio.Event(), asyncio.Event()

    async def answer(body: dict[str, Any]) -> Any:
        arrived.set()
        await gate.wait()
        return stage_reply(llm, body)

    server = FakeOllama(handler=answer)
    await server.start()
    return GatedOllama(server, replace(llm, enabled=True, host=server.url, timeout_s=10), gate, arrived)


async def test_second_feedback_while_one_runs_is_refused_and_queued_refines_wait_by_edit(fake_discord, tmp_path):
    """One refine per session (a second member's feedback is refused privately, saying when); one for the whole bot:
    a refine in another session says "waiting for the model…" once and that same message becomes its suggestion."""
    fake = fake_discord
    ollama = await gated_ollama()
    try:
        async with running_bot(fake, config_for(tmp_path, llm=ollama.settings)) as bot:
            arena = await open_arena(fake, bot, tmp_path)
            await (await fake.run_slash(fake.users[2], "draft", {"prompt": "carol's own"})).response()
            other = await wait_thread(fake, 2)
            other_gallery = (await wait_galleries(fake, other.id, "drafts", 1))[0]

            await arena.say(arena.bob, "warmer light")
            await ollama.arrived.wait()
            # A second member's feedback for the same session, through the Feedback modal: refused privately.
            h = await arena.submit(arena.carol, ModalKind.FEEDBACK, {"feedback": "colder light"})
            assert "already being worked on" in await refusal(fake, h)

            # Feedback in carol's session waits for the model: one message says so.
            fb = await fake.click(fake.users[2], other_gallery, custom_id(other_gallery, "Feedback"))
            await fb.response()
            sub = await fake.submit_modal(
                fake.users[2],
                other.id,
                str(ModalId(ModalKind.FEEDBACK, await bot.orch.session_for_ref(THREAD, str(other.id)))),
                {"feedback": "more fog"},
                opened_by=fb,
            )
            waiting = lambda: [m for m in bot_messages(fake, other.id) if "waiting for the model" in m.content]  # noqa: E731
            await fake.wait_for(waiting, timeout=15)
            (note,) = waiting()
            ollama.gate.set()
            await fake.wait_for(lambda: note.embeds and note.embeds[0].get("title") == "Suggested prompt", timeout=15)
            await sub.response()
            assert not waiting(), "the waiting message became the suggestion (an edit, not a new message)"
            await fake.wait_for(lambda: arena.suggestions(), timeout=15)
            assert len(arena.suggestions()) == 1
            assert_pings_only(fake)
            await bot.relay.wait_retries()
    finally:
        await ollama.server.stop()
