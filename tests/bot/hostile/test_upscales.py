"""Upscales that would make nothing new: a second press links the first, a final upscaled already offers none."""

from __future__ import annotations

from orchestrator.config import LimitSettings
from tests.bot.helpers import bot_messages, custom_id, galleries, make_config, running_bot, wait_galleries, wait_thread
from tests.bot.hostile.arena import config_for, refusal, snap


async def test_second_upscale_of_an_image_links_the_first(fake_discord, tmp_path):
    """Upscale 1 twice in an Explorer round: one upscale stage; the second press links it privately."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        await (await fake.run_slash(fake.users[0], "explore", {"prompt": "a harbour"})).response()
        thread = await wait_thread(fake)
        page = (await fake.wait_for(lambda: galleries(fake, thread.id, "round 1"), timeout=20))[0]
        await (await fake.click(fake.users[0], page, custom_id(page, "Upscale 1"))).response()
        upscaled = lambda: [m for m in bot_messages(fake, thread.id) if m.content.startswith("**Upscaled**")]  # noqa: E731
        await fake.wait_for(upscaled, timeout=20)
        before = await snap(bot, tmp_path)
        h = await fake.click(fake.users[1], page, custom_id(page, "Upscale 1"))
        text = await refusal(fake, h)
        assert "already upscaled" in text and f"/{thread.id}/{upscaled()[0].id}" in text
        assert await snap(bot, tmp_path) == before
        assert len(upscaled()) == 1


async def test_final_with_automatic_upscale_offers_no_upscale_button(fake_discord, tmp_path):
    """With funnel.final_upscale the final's 4x copy comes by itself: its message offers no Upscale 4x."""
    fake = fake_discord
    config = make_config(tmp_path, drafts=2, final_upscale=True, limits=LimitSettings(session_cooldown_s=0.0))
    async with running_bot(fake, config) as bot:
        alice = fake.users[0]
        await (await fake.run_slash(alice, "draft", {"prompt": "a castle"})).response()
        thread = await wait_thread(fake)
        for stage in ("drafts", "refined", "polished"):
            page = (await wait_galleries(fake, thread.id, stage, 1))[0]
            await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda page=page: "✓1 · 1" in [c.label for c in page.all_components])
            await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
        finals = lambda: [  # noqa: E731
            m for m in bot_messages(fake, thread.id) if m.content.startswith(("**Final image**", "**Upscaled**"))
        ]
        await fake.wait_for(lambda: len(finals()) == 2, timeout=30)
        for message in finals():
            assert [b.label for b in message.buttons] == ["Variations", "Branch from here", "Info"]
        await bot.relay.settled()
