"""Helpers for bot tests: a small simulated farm + orchestrator, the product bot on the fake, and waiters."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.client import ImGenBot
from orchestrator.config import (
    DiscordSettings,
    LimitSettings,
    LlmSettings,
    StageRecipe,
    StorageSettings,
    load_config,
)
from orchestrator.db import Database
from orchestrator.models import Family, Job, TaskKind
from orchestrator.service import Orchestrator
from tests.fakes.discord_models import FakeMessage, FakeThread
from tests.fakes.fake_discord import FakeDiscord, running_client

REPO = Path(__file__).resolve().parents[2]
TIME_SCALE = 0.002


def small_stages(drafts: int = 20, steps: int = 4) -> tuple[StageRecipe, ...]:
    """Draft Grid stages with the default shape but few steps, so a whole funnel takes a moment."""
    return (
        StageRecipe("drafts", drafts, Family.SD15, 512, 512, steps, TaskKind.DRAFT),
        StageRecipe("refined", 4, Family.SDXL, 1024, 1024, 4, TaskKind.STANDARD, denoise=0.6),
        StageRecipe("polished", 2, Family.SDXL, 1024, 1024, 4, TaskKind.QUALITY, denoise=0.45),
        StageRecipe("final", 1, Family.SDXL, 1024, 1024, 4, TaskKind.PREMIUM, denoise=0.35),
    )


def make_config(
    data_dir: Path,
    *,
    progress_interval_s: float = 0.05,
    drafts: int = 20,
    steps: int = 4,
    final_upscale: bool = True,
    llm: LlmSettings | None = None,
    limits: LimitSettings | None = None,
    max_edit_age_s: float = 3300.0,
    post_retries: int = 3,
) -> Any:
    """The repo's simulated farm with a tmp data dir, small stages and a fast progress interval."""
    config = load_config(REPO / "config", env={})
    s = config.settings
    return config.with_settings(
        storage=StorageSettings(data_dir=data_dir),
        funnel=replace(
            s.funnel,
            stages=small_stages(drafts, steps),
            final_upscale=final_upscale,
            concept_options=3,
            explorer_count=3,
        ),
        # Refused posts are tried again almost at once: tests wait on the outcome, never on the backoff.
        discord=DiscordSettings(
            progress_interval_s=progress_interval_s,
            max_edit_age_s=max_edit_age_s,
            post_retries=post_retries,
            post_retry_s=0.01,
        ),
        # No Ollama in tests unless a test passes the fake's host: the rules path answers.
        llm=llm or LlmSettings(enabled=False),
        # No cooldowns unless a test asks for them: most tests act faster than any member would.
        limits=limits or replace(s.limits, feedback_cooldown_s=0.0, session_cooldown_s=0.0),
        health=replace(s.health, interval_s=0.5),
    )


def make_orchestrator(config: Any, time_scale: float = TIME_SCALE) -> Orchestrator:
    """An unstarted orchestrator on the simulated farm (the bot starts it in setup_hook)."""
    return Orchestrator(config, sim=True, time_scale=time_scale, ephemeral_ports=True)


def make_bot(config: Any, fake: FakeDiscord, time_scale: float = TIME_SCALE) -> ImGenBot:
    """The product bot, syncing commands to the fake's guild at once."""
    return ImGenBot(make_orchestrator(config, time_scale), guild_id=fake.guild_id, guild_ready_timeout=0.01)


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, config: Any, time_scale: float = TIME_SCALE) -> AsyncIterator[ImGenBot]:
    """The product bot logged in to the fake, its relay resumed; closed (orchestrator stopped) on exit."""
    bot = make_bot(config, fake, time_scale)
    async with running_client(fake, bot, timeout=20):
        await asyncio.wait_for(bot.relay.resumed.wait(), 20)
        yield bot
    # Discord would have refused these: the renderers must never exceed a limit.
    refused = [e for e in fake.errors if e.status == 400 and e.code != 30046]
    assert not refused, f"the fake refused requests like Discord would: {refused}"


# --------------------------------------------------------------------------- waiting on the fake


async def stage_jobs(bot: ImGenBot, stage_id: str) -> list[Job]:
    """A stage's jobs, read through a Database of the test's own on the bot's DB file (the facade has no DB)."""
    db = Database(bot.orch.settings.storage.db_path)
    await db.open()
    try:
        return await db.stage_jobs(stage_id)
    finally:
        await db.close()


async def wait_thread(fake: FakeDiscord, count: int = 1, timeout: float = 20) -> FakeThread:
    """The count-th thread, once it exists."""
    await fake.wait_for(lambda: len(fake.threads) >= count, timeout=timeout)
    return fake.threads[count - 1]


def bot_messages(fake: FakeDiscord, channel_id: int) -> list[FakeMessage]:
    """Messages the bot posted in a channel or thread."""
    return [m for m in fake.messages(channel_id) if m.author.id == fake.bot_user.id]


def galleries(fake: FakeDiscord, thread_id: int, stage: str) -> list[FakeMessage]:
    """Gallery messages of a stage (by their header line), in order."""
    return [m for m in bot_messages(fake, thread_id) if m.content.startswith(f"**{stage}** · #")]


def progress_messages(fake: FakeDiscord, thread_id: int, stage: str) -> list[FakeMessage]:
    """Progress messages of a stage."""
    return [m for m in bot_messages(fake, thread_id) if m.content.startswith(f"**{stage}** · stage")]


def finals(fake: FakeDiscord, thread_id: int) -> list[FakeMessage]:
    """Final-image and upscale messages."""
    return [
        m
        for m in bot_messages(fake, thread_id)
        if m.content.startswith("**Final image**") or m.content.startswith("**Upscaled**")
    ]


async def wait_galleries(
    fake: FakeDiscord, thread_id: int, stage: str, pages: int, timeout: float = 30
) -> list[FakeMessage]:
    """Wait until a stage's gallery messages are all posted."""
    await fake.wait_for(lambda: len(galleries(fake, thread_id, stage)) >= pages, timeout=timeout)
    return galleries(fake, thread_id, stage)


def custom_id(message: FakeMessage, label: str) -> str:
    """The custom_id of the button with this exact label (tallies included) or label prefix."""
    buttons = [c for c in message.all_components if c.custom_id]
    exact = [c for c in buttons if c.label == label]
    if exact:
        return str(exact[0].custom_id)
    pref = [c for c in buttons if (c.label or "").startswith(label)]
    assert pref, f"no button {label!r} in {[c.label for c in buttons]}"
    return str(pref[0].custom_id)


def labels(message: FakeMessage) -> list[str]:
    """Every button label of a message, row by row."""
    return [c.label or "" for c in message.all_components if c.custom_id]


def rows(message: FakeMessage) -> list[list[str]]:
    """Button labels per action row."""
    return [[c.label or "" for c in row.walk() if c.custom_id] for row in message.components]


SEL = re.compile(r"^✓(\d+)(?: · (\d+))?$")


#: what the fake Ollama answers for "warmer light, no people" (interpreter, vision, engineer)
OLLAMA_CHANGES = {
    "keep": [],
    "remove": ["people on the pier"],
    "add": ["warm golden light"],
    "modify": {},
    "emphasis_up": [],
    "emphasis_down": [],
    "negative_add": ["people"],
}
OLLAMA_VISION = {"selected_traits": ["warm palette"], "rejected_traits": ["crowds"], "key_differences": "warmth"}
OLLAMA_PROMPT = {
    "prompt": "a lighthouse at dusk, warm golden light, empty pier",
    "negative_prompt": "people",
    "rationale": "Warmer light as asked, and the people are gone.",
}


def stage_reply(llm: LlmSettings, body: dict[str, Any]) -> Any:
    """The canned answer of the pipeline stage an Ollama request is for (told apart by its model)."""
    from tests.fakes.fake_ollama import Reply

    model = body.get("model")
    if model == llm.interpreter_model:
        return Reply.json(OLLAMA_CHANGES)
    if model == llm.vision_model:
        return Reply.json(OLLAMA_VISION)
    return Reply.json(OLLAMA_PROMPT)


async def start_ollama_for_feedback() -> tuple[Any, LlmSettings]:
    """A started fake Ollama answering every pipeline stage, and LLM settings pointing at it."""
    from tests.fakes.fake_ollama import FakeOllama

    llm = LlmSettings()

    def answer(body: dict[str, Any]) -> Any:
        return stage_reply(llm, body)

    server = FakeOllama(handler=answer)
    await server.start()
    return server, replace(llm, enabled=True, host=server.url, timeout_s=5)
