"""Live previews: the newest frame a GPU sends shows on the stage's progress message while the stage renders."""

from __future__ import annotations

from dataclasses import replace

from tests.bot.helpers import make_config, progress_messages, running_bot, wait_galleries, wait_thread


def preview_files(message) -> list[str]:
    return [a.filename for a in message.attachments if a.filename.startswith("preview.")]


async def test_progress_message_shows_a_live_preview_until_the_gallery_comes(fake_discord, tmp_path):
    fake = fake_discord
    # 40 steps: the simulated GPUs send a preview every 4 steps, several per image.
    async with running_bot(fake, make_config(tmp_path, drafts=8, steps=40), time_scale=0.05):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: progress_messages(fake, thread.id, "drafts"), timeout=20)
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: preview_files(progress) == ["preview.jpg"], timeout=30)
        assert progress.attachments[0].content[:2] == b"\xff\xd8", "the node's JPEG frame, as sent"
        await wait_galleries(fake, thread.id, "drafts", 1, timeout=60)
        # Done: the preview goes (the gallery below has the images), the text stays.
        await fake.wait_for(lambda: "8/8" in progress.content and not progress.attachments, timeout=20)


async def test_live_previews_can_be_turned_off(fake_discord, tmp_path):
    fake = fake_discord
    config = make_config(tmp_path, drafts=4, steps=40)
    config = config.with_settings(discord=replace(config.settings.discord, live_previews=False))
    async with running_bot(fake, config, time_scale=0.05):
        await (await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1, timeout=60)
        progress = progress_messages(fake, thread.id, "drafts")[0]
        await fake.wait_for(lambda: "4/4" in progress.content, timeout=20)
        assert progress.edits, "the progress message was edited live"
        assert not progress.attachments
        assert not any(edit.get("attachments") for _, edit in progress.edits), "no preview was ever uploaded"
