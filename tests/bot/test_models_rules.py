"""Through the fake Discord: checkpoint / LoRA options with autocomplete, and `/session rules` (quorum, deadline)."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.config import DEFAULT_CHECKPOINTS
from orchestrator.models import LoraSpec
from tests.bot.helpers import (
    bot_messages,
    custom_id,
    galleries,
    make_config,
    running_bot,
    stage_jobs,
    wait_galleries,
    wait_thread,
)

MY_XL = "dreamshaper_xl_v2.safetensors"
DETAIL = "detail_tweaker.safetensors"
GRAIN = "film_grain.safetensors"


def config_with_my_checkpoint(tmp_path, **kw):
    """The test farm where every simulated node also holds MY_XL."""
    cfg = make_config(tmp_path, **kw)
    held = (*sorted(set(DEFAULT_CHECKPOINTS.values())), MY_XL)
    return cfg.with_nodes(tuple(replace(n, sim=replace(n.sim, checkpoints=held)) for n in cfg.nodes if n.sim))


def field(embed, name: str) -> str:
    return next((f["value"] for f in embed["fields"] if f["name"] == name), "")


async def test_checkpoint_and_lora_autocomplete_from_the_gpus(fake_discord, tmp_path):
    """Choices come from what healthy GPUs report, filtered by what was typed; a typed weight is kept."""
    fake = fake_discord
    user = fake.users[0]
    async with running_bot(fake, config_with_my_checkpoint(tmp_path)) as bot:
        await fake.wait_for(lambda: MY_XL in bot.orch.known_models().checkpoints, timeout=10)
        choices = await fake.autocomplete(user, "draft", {"prompt": "x", "checkpoint": "XL"}, focused="checkpoint")
        values = [c["value"] for c in choices]
        assert set(values) == {MY_XL, "sd_xl_base_1.0.safetensors"}
        everything = await fake.autocomplete(user, "draft", {"prompt": "x", "checkpoint": ""}, focused="checkpoint")
        assert {c["value"] for c in everything} == set(bot.orch.known_models().checkpoints)
        assert 0 < len(everything) <= 25

        weighted = await fake.autocomplete(user, "draft", {"prompt": "x", "lora": "detail:0.5"}, focused="lora")
        assert [c["value"] for c in weighted] == [f"{DETAIL}:0.5"]
        second = await fake.autocomplete(user, "draft", {"prompt": "x", "lora": f"{DETAIL}, gra"}, focused="lora")
        assert [c["value"] for c in second] == [f"{DETAIL}, {GRAIN}"]
        none = await fake.autocomplete(user, "draft", {"prompt": "x", "lora": "nothing-like-it"}, focused="lora")
        assert none == []


async def test_draft_with_checkpoint_and_lora_uses_and_shows_them(fake_discord, tmp_path):
    """The options reach every job of the stage and the header embed names them."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, config_with_my_checkpoint(tmp_path, drafts=4)) as bot:
        options = {"prompt": "a harbour", "checkpoint": MY_XL, "lora": f"{DETAIL}:0.7, {GRAIN}"}
        await (await fake.run_slash(alice, "draft", options)).response()
        thread = await wait_thread(fake)
        header = fake.message(thread.starter_message_id).embeds[0]
        settings = field(header, "Settings")
        assert f"checkpoint: {MY_XL}" in settings and "family: sdxl" in settings
        assert f"LoRA: {DETAIL}:0.7, {GRAIN}" in settings
        await wait_galleries(fake, thread.id, "drafts", 1)
        session = (await bot.orch.active_sessions())[0]
        jobs = await stage_jobs(bot, (await bot.orch.current_stage(session.id)).id)
        assert len(jobs) == 4
        assert all(j.params.checkpoint == MY_XL for j in jobs)
        assert all(j.params.loras == (LoraSpec(DETAIL, 0.7, 0.7), LoraSpec(GRAIN)) for j in jobs)


async def test_checkpoint_no_gpu_has_is_refused_with_the_farms_list(fake_discord, tmp_path):
    """A checkpoint name nobody holds: a short ephemeral reply naming it, no thread."""
    fake = fake_discord
    async with running_bot(fake, make_config(tmp_path)) as bot:
        await fake.wait_for(lambda: bot.orch.known_models().checkpoints, timeout=10)
        h = await fake.run_slash(fake.users[0], "draft", {"prompt": "a fox", "checkpoint": "absent_xl.safetensors"})
        await h.response()
        await fake.wait_for(lambda: [m for m in h.messages if m.ephemeral], timeout=15)
        text = next(m.content for m in h.messages if m.ephemeral)
        assert "absent_xl.safetensors" in text and "Reference" not in text
        assert fake.threads == []


async def test_quorum_rule_advances_without_continue(fake_discord, tmp_path):
    """Owner sets `/session rules quorum:2`; two people vote; the next stage's gallery appears by itself."""
    fake = fake_discord
    alice, bob, carol = fake.users[:3]
    async with running_bot(fake, make_config(tmp_path, drafts=4)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "a windmill"})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 1))[0]

        refused = await fake.run_slash(bob, "session rules", {"quorum": 2}, channel_id=thread.id)
        cb = await refused.response()
        assert cb.ephemeral and "Only the owner" in cb.data["content"]

        h = await fake.run_slash(alice, "session rules", {"quorum": 2, "deadline_minutes": 30}, channel_id=thread.id)
        cb = await h.response()
        assert not cb.ephemeral
        assert "once 2 people have voted" in cb.data["content"] and "30 min" in cb.data["content"]

        status = await (await fake.run_slash(carol, "session status", channel_id=thread.id)).response()
        rules = field(status.data["embeds"][0], "Rules")
        assert "once 2 people have voted" in rules and "30 min after each stage" in rules

        await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
        assert galleries(fake, thread.id, "refined") == []
        await (await fake.click(bob, page, custom_id(page, "✓2"))).response()
        # Nobody pressed Continue: the quorum moved the session on.
        refined = await wait_galleries(fake, thread.id, "refined", 1)
        assert len(refined[0].attachments) == 4
        session = (await bot.orch.active_sessions())[0]
        assert session.stage_name == "refined"

        cleared = await (await fake.run_slash(alice, "session rules", {}, channel_id=thread.id)).response()
        assert "cleared the rules" in cleared.data["content"]
        session = await bot.orch.session(session.id)
        assert session.settings.quorum is None and session.settings.deadline_s is None
        assert any("set the rules" in m.content for m in bot_messages(fake, thread.id))


async def test_explore_and_concept_take_checkpoint_and_lora_options(fake_discord, tmp_path):
    """The same options and autocomplete on /explore and /concept; a malformed LoRA is refused in words."""
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, config_with_my_checkpoint(tmp_path)) as bot:
        await fake.wait_for(lambda: MY_XL in bot.orch.known_models().checkpoints, timeout=10)
        for command, first in (("explore", {"prompt": "x"}), ("concept", {"subject": "x"})):
            choices = await fake.autocomplete(alice, command, {**first, "checkpoint": "dream"}, focused="checkpoint")
            assert [c["value"] for c in choices] == [MY_XL]
            loras = await fake.autocomplete(alice, command, {**first, "lora": "grain:0.4"}, focused="lora")
            assert [c["value"] for c in loras] == [f"{GRAIN}:0.4"]

        bad = await fake.run_slash(alice, "explore", {"prompt": "a fox", "lora": f"{DETAIL}:9"})
        await bad.response()
        await fake.wait_for(lambda: [m for m in bad.messages if m.ephemeral], timeout=15)
        assert "between -4 and 4" in next(m.content for m in bad.messages if m.ephemeral)
        assert fake.threads == []

        options = {"prompt": "a lighthouse", "checkpoint": MY_XL, "lora": f"{GRAIN}:0.4"}
        await (await fake.run_slash(alice, "explore", options)).response()
        thread = await wait_thread(fake)
        assert f"checkpoint: {MY_XL}" in field(fake.message(thread.starter_message_id).embeds[0], "Settings")
        session = (await bot.orch.active_sessions())[0]
        await fake.wait_for(lambda: [m for m in bot_messages(fake, thread.id) if m.attachments], timeout=30)
        jobs = await stage_jobs(bot, (await bot.orch.current_stage(session.id)).id)
        assert jobs and all(j.params.checkpoint == MY_XL for j in jobs)
        assert all(j.params.loras == (LoraSpec(GRAIN, 0.4, 0.4),) for j in jobs)


async def test_deadline_rule_advances_in_discord_without_continue(fake_discord, tmp_path):
    """A stage whose deadline passes continues by itself; its next gallery is posted as if Continue was pressed."""
    fake = fake_discord
    alice, bob = fake.users[:2]
    async with running_bot(fake, make_config(tmp_path, drafts=4)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "a windmill"})).response()
        thread = await wait_thread(fake)
        page = (await wait_galleries(fake, thread.id, "drafts", 1))[0]
        await (await fake.click(bob, page, custom_id(page, "✓3"))).response()
        session = (await bot.orch.active_sessions())[0]
        # The slash command's shortest deadline is half a minute; the service takes any positive one.
        await bot.orch.set_rules(session.id, str(alice.id), deadline_s=0.2)
        refined = await wait_galleries(fake, thread.id, "refined", 1)
        assert len(refined[0].attachments) == 4
        session = await bot.orch.session(session.id)
        assert session.stage_name == "refined"


async def test_a_deadline_with_nothing_selected_says_so_in_the_thread(fake_discord, tmp_path):
    fake = fake_discord
    alice = fake.users[0]
    async with running_bot(fake, make_config(tmp_path, drafts=4)) as bot:
        await (await fake.run_slash(alice, "draft", {"prompt": "a windmill"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        session = (await bot.orch.active_sessions())[0]
        await bot.orch.set_rules(session.id, str(alice.id), deadline_s=0.2)
        await fake.wait_for(
            lambda: any("deadline passed" in m.content for m in bot_messages(fake, thread.id)), timeout=20
        )
        note = next(m.content for m in bot_messages(fake, thread.id) if "deadline passed" in m.content)
        assert "Nothing is selected" in note
        assert (await bot.orch.session(session.id)).stage_name == "drafts", "the session waits for a selection"
