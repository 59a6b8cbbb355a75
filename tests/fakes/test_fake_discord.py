"""Self-tests of the Discord fake: a tiny discord.py bot defined here runs against it for real."""

from __future__ import annotations

import asyncio
import io
import re

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.fake_discord import DiscordErrorLogGuard, FakeDiscord, FakeFile, running_client


class VoteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"t:vote:(?P<n>\d+)"):
    """A restart-proof button: its state is in the custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Vote {n}", custom_id=f"t:vote:{n}", style=discord.ButtonStyle.grey))
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(VoteButton(self.n + 1))
        await interaction.response.edit_message(content=f"votes: {self.n + 1}", view=view)


class NoteModal(discord.ui.Modal, title="Note"):
    note = discord.ui.TextInput(label="Your note", custom_id="t:note")

    def __init__(self, bot: TinyBot) -> None:
        super().__init__()
        self.bot = bot

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.bot.notes.append(self.note.value)
        await interaction.response.send_message(f"noted: {self.note.value}", ephemeral=True)


class TinyBot(commands.Bot):
    """A throwaway bot exercising what the product bot will do."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.01)
        self.guild_id = guild_id
        self.seen: list[discord.Message] = []
        self.notes: list[str] = []
        self.failures: list[Exception] = []
        self.seen_event = asyncio.Event()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(VoteButton)
        bot = self

        @app_commands.command(description="Draft images")
        @app_commands.describe(prompt="What to draw")
        async def draft(interaction: discord.Interaction, prompt: str, count: int = 12) -> None:
            await interaction.response.defer(thinking=True)
            files = [discord.File(io.BytesIO(b"png%d" % i), filename=f"img{i}.png") for i in range(count)]
            first = await interaction.followup.send(f"drafts for {prompt}", files=files[:10], wait=True)
            await interaction.followup.send("more", files=files[10:], wait=True)
            # A followup's WebhookMessage has no guild in discord.py: start the thread through the channel.
            thread = await interaction.channel.create_thread(name=prompt[:90], message=first, auto_archive_duration=60)
            view = discord.ui.View(timeout=None)
            view.add_item(VoteButton(0))
            await thread.send("vote here", view=view)

        @draft.autocomplete("prompt")
        async def prompt_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=f"{current} {s}", value=f"{current} {s}") for s in ("at dusk", "at dawn")]

        @app_commands.command(description="Leave a note")
        async def note(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(NoteModal(bot))

        @app_commands.command(description="Too many files")
        async def toomany(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            files = [discord.File(io.BytesIO(b"x"), filename=f"f{i}.png") for i in range(11)]
            try:
                await interaction.followup.send(files=files)
            except discord.HTTPException as exc:
                bot.failures.append(exc)
                await interaction.followup.send("too many", ephemeral=True)

        @app_commands.command(description="Fail after a public defer")
        async def oops(interaction: discord.Interaction) -> None:
            # The product's error path: drop the public "thinking…" reply, answer privately instead.
            await interaction.response.defer(thinking=True)
            await interaction.delete_original_response()
            await interaction.followup.send("that went wrong", ephemeral=True)
            await interaction.followup.send("and a second note", ephemeral=True)

        session = app_commands.Group(name="session", description="Session tools")

        @session.command(description="Invite someone")
        async def invite(interaction: discord.Interaction, member: discord.Member, sketch: discord.Attachment) -> None:
            data = await sketch.read()
            await interaction.response.send_message(f"invited {member.name} with {len(data)} bytes", ephemeral=True)

        guild = discord.Object(self.guild_id)
        for cmd in (draft, note, toomany, oops, session):
            self.tree.add_command(cmd, guild=guild)
        await self.tree.sync(guild=guild)
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if not message.author.bot:
            self.seen.append(message)
            self.seen_event.set()


@pytest.fixture
async def fake():
    fake = FakeDiscord()
    await fake.start()
    guard = DiscordErrorLogGuard()
    with fake.patch_discord(), guard.installed():
        yield fake
    await fake.stop()
    assert not guard.records, guard.report()
    assert not fake.unknown_routes
    assert not fake.internal_errors


@pytest.fixture
async def bot(fake):
    client = TinyBot(fake.guild_id)
    async with running_client(fake, client):
        yield client


async def test_login_ready_and_guild_create(fake, bot):
    """The real discord.py logs in, gets READY and a full guild with the channels and members."""
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and not guild.unavailable
    assert guild.get_channel(fake.channel_id).name == "imagine"
    assert bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    assert guild.me.guild_permissions.send_messages
    assert fake.identify_payloads[0]["intents"] & discord.Intents(message_content=True).value


async def test_command_sync_global_and_guild(fake, bot):
    """tree.sync() per guild and globally land in the fake; the guild has the five commands."""
    names = sorted(c["name"] for c in fake.guild_commands[fake.guild_id])
    assert names == ["draft", "note", "oops", "session", "toomany"]
    assert fake.global_commands == []
    draft = next(c for c in fake.guild_commands[fake.guild_id] if c["name"] == "draft")
    assert draft["options"][0]["autocomplete"] is True


async def test_slash_defer_followups_thread_and_dynamic_button(fake, bot):
    """Defer, two followups holding 12 images (10 + 2), a thread from the reply, a button click that edits."""
    handle = await fake.run_slash(fake.users[0], "draft", {"prompt": "a lighthouse"})
    callback = await handle.response()
    assert callback.type == 5
    await handle.wait_followups(2)
    first, second = handle.followups
    assert first is handle.original and not first.loading
    assert [len(first.attachments), len(second.attachments)] == [10, 2]
    assert first.attachments[3].content == b"png3" and first.attachments[3].filename == "img3.png"
    thread = await fake.wait_for(lambda: fake.threads[0] if fake.threads else None)
    assert thread.starter_message_id == first.id and thread.name == "a lighthouse"
    assert thread.auto_archive_duration == 60
    vote = await fake.wait_for(lambda: next(iter(fake.messages(thread.id)), None))
    assert [b.custom_id for b in vote.buttons] == ["t:vote:0"]

    click = await fake.click(fake.users[1], vote, "t:vote:0")
    assert (await click.response()).type == 7
    assert vote.content == "votes: 1" and vote.buttons[0].label == "Vote 1"
    assert len(vote.edits) == 1 and fake.edit_log[-1][2] == vote.id
    assert not fake.errors


async def test_followup_after_deleting_the_thinking_reply_is_a_new_message(fake, bot):
    """As on Discord: once the deferred reply is deleted, each followup creates its own message."""
    handle = await fake.run_slash(fake.users[0], "oops", {})
    assert (await handle.response()).type == 5
    await handle.wait_followups(2)
    original = handle.original
    first, second = handle.followups
    assert original is not None and original.deleted
    assert first is not original and second is not original and first is not second
    assert first.ephemeral and first.content == "that went wrong" and not first.loading
    assert second.content == "and a second note"
    assert not fake.errors, "no 404 for editing the deleted reply"


async def test_autocomplete_choices(fake, bot):
    """Autocomplete returns the bot's choices for the focused option."""
    choices = await fake.autocomplete(fake.users[0], "draft", {"prompt": "cat"}, focused="prompt")
    assert [c["value"] for c in choices] == ["cat at dusk", "cat at dawn"]


async def test_modal_round_trip(fake, bot):
    """A command opens a modal; submitting it reaches on_submit, which answers ephemerally."""
    handle = await fake.run_slash(fake.users[2], "note")
    callback = await handle.response()
    assert callback.type == 9 and handle.modal["custom_id"]
    submit = await fake.submit_modal(
        fake.users[2], None, handle.modal["custom_id"], {"t:note": "warmer"}, opened_by=handle
    )
    assert (await submit.response()).ephemeral
    assert bot.notes == ["warmer"]
    assert submit.original.content == "noted: warmer"
    assert submit.original not in fake.messages()


async def test_subcommand_with_member_and_attachment_options(fake, bot):
    """`/session invite member:@bob sketch:<file>` resolves the member and serves the attachment bytes."""
    bob = fake.user("bob")
    handle = await fake.run_slash(
        fake.users[0], "session invite", {"member": bob}, attachments={"sketch": FakeFile("s.png", b"12345")}
    )
    await handle.response()
    assert handle.original.content == "invited bob with 5 bytes" and handle.ephemeral


async def test_user_message_in_thread_reaches_on_message(fake, bot):
    """A user typing in a thread: MESSAGE_CREATE arrives in on_message with its content."""
    handle = await fake.run_slash(fake.users[0], "draft", {"prompt": "fox", "count": 1})
    thread = await fake.wait_for(lambda: fake.threads[0] if fake.threads else None)
    await handle.wait_followups(2)
    await fake.say(fake.users[1], thread.id, "warmer light please")
    await asyncio.wait_for(bot.seen_event.wait(), 5)
    assert bot.seen[0].content == "warmer light please"
    assert isinstance(bot.seen[0].channel, discord.Thread)


async def test_eleven_attachments_rejected_with_400(fake, bot):
    """11 files: the fake answers 400 like Discord, and discord.py raises HTTPException in the bot."""
    handle = await fake.run_slash(fake.users[0], "toomany")
    await fake.wait_for(lambda: bot.failures)
    assert bot.failures[0].status == 400 and bot.failures[0].code == 50035
    assert fake.errors[0].errors["attachments"]["_errors"]
    fake.errors.clear()
    await handle.wait_followups(1)


async def test_limits_on_channel_messages(fake, bot):
    """Content > 2000, > 5 rows, custom_id > 100 and duplicated custom_ids are all 400s."""
    channel = bot.get_channel(fake.channel_id)
    with pytest.raises(discord.HTTPException) as exc:
        await channel.send("x" * 2001)
    assert exc.value.status == 400
    long_id = discord.ui.View()
    long_id.add_item(discord.ui.Button(label="a", custom_id="x" * 101))
    with pytest.raises(discord.HTTPException):
        await channel.send("hi", view=long_id)
    embed = discord.Embed(title="t" * 257)
    with pytest.raises(discord.HTTPException):
        await channel.send(embed=embed)
    assert len(fake.errors) == 3
    assert fake.messages() == []


async def test_injected_429_on_edit_is_retried(fake, bot):
    """A 429 (with Via) on a message edit is retried by discord.py; the edit lands once."""
    msg = await bot.get_channel(fake.channel_id).send("progress 0%")
    fake.inject_429(r"PATCH /channels/\d+/messages/\d+", times=1, retry_after=0.01)
    await msg.edit(content="progress 50%")
    assert fake.rate_limited_count == 1
    stored = fake.message(msg.id)
    assert stored.content == "progress 50%" and len(stored.edits) == 1


async def test_old_message_edit_fails_with_30046(fake, bot):
    """make_message_old makes edits fail with Discord's 30046."""
    msg = await bot.get_channel(fake.channel_id).send("status")
    fake.make_message_old(msg.id)
    with pytest.raises(discord.HTTPException) as exc:
        await msg.edit(content="later")
    assert exc.value.code == 30046
    fake.errors.clear()


async def test_edit_keeps_listed_attachments(fake, bot):
    """On edit, `attachments` lists what to keep; new files are added."""
    channel = bot.get_channel(fake.channel_id)
    files = [discord.File(io.BytesIO(b"a"), "a.png"), discord.File(io.BytesIO(b"b"), "b.png")]
    msg = await channel.send("two", files=files)
    await msg.edit(attachments=[msg.attachments[1], discord.File(io.BytesIO(b"c"), "c.png")])
    assert [a.filename for a in fake.message(msg.id).attachments] == ["b.png", "c.png"]


async def test_typing_counted_and_unknown_route_recorded(fake, bot):
    """Typing is counted per channel; a route the fake does not know is recorded (and 404s)."""
    channel = bot.get_channel(fake.channel_id)
    await channel.typing()
    assert fake.typing[fake.channel_id] == 1
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(1)
    with pytest.raises(discord.NotFound):
        await bot.http.request(discord.http.Route("GET", "/stickers/{id}", id=5))
    assert fake.unknown_routes == [("GET", "/stickers/5")]
    fake.unknown_routes.clear()
    fake.errors.clear()


async def test_429_on_followup_edit_retried_and_select_round_trip(fake, bot):
    """A 429 on a webhook edit is retried; a select interaction carries its values to the bot."""
    got: list[list[str]] = []

    class Pick(discord.ui.View):
        @discord.ui.select(custom_id="t:pick", options=[discord.SelectOption(label=s) for s in ("a", "b", "c")])
        async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            got.append(select.values)
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"picked {select.values[0]}")

    bot.add_view(Pick(timeout=None))
    msg = await bot.get_channel(fake.channel_id).send("choose", view=Pick(timeout=None))
    fake.inject_429(r"PATCH /webhooks/\d+/[^/]+/messages/@original", retry_after=0.01)
    handle = await fake.select(fake.users[0], msg.id, "t:pick", ["b"])
    assert (await handle.response()).type == 6
    stored = await fake.wait_for(lambda: fake.message(msg.id).edits and fake.message(msg.id))
    assert got == [["b"]] and stored.content == "picked b"
    assert fake.rate_limited_count == 1 and not fake.errors


async def test_file_over_upload_limit_rejected(fake, bot):
    """A file larger than attachment_size_limit is refused (413, code 40005) as Discord does."""
    fake.attachment_size_limit = 4
    with pytest.raises(discord.HTTPException) as exc:
        await bot.get_channel(fake.channel_id).send(file=discord.File(io.BytesIO(b"12345"), "big.png"))
    assert exc.value.status == 413 and exc.value.code == 40005
    fake.errors.clear()


async def test_more_limits_discord_enforces(fake, bot):
    """Embed totals over 6000, 26 fields, 11 embeds, 6 buttons in a row, an 81-character label: all 400s."""
    channel = bot.get_channel(fake.channel_id)
    big = [discord.Embed(description="d" * 4000), discord.Embed(description="d" * 2001)]
    many_fields = discord.Embed(title="f")
    for i in range(26):
        many_fields.add_field(name=str(i), value="v")
    wide = {"type": 1, "components": [{"type": 2, "style": 1, "label": "b", "custom_id": f"w{i}"} for i in range(6)]}
    long_label = discord.ui.View()
    long_label.add_item(discord.ui.Button(label="l" * 81, custom_id="long"))
    for kwargs in ({"embeds": big}, {"embed": many_fields}, {"embeds": [discord.Embed(title="e")] * 11}):
        with pytest.raises((discord.HTTPException, ValueError)):
            await channel.send(**kwargs)
    with pytest.raises(discord.HTTPException):
        await channel.send("hi", view=long_label)
    with pytest.raises(discord.HTTPException):
        await bot.http.send_message(
            fake.channel_id, params=discord.http.MultipartParameters({"components": [wide]}, None, None)
        )
    assert fake.messages() == []
    fake.errors.clear()


async def test_fail_posts_switch_answers_the_next_posts_with_the_chosen_status(fake, bot):
    """fail_posts(channel, 2, 503): the next two posts there fail, the third passes; other channels are untouched."""
    channel = bot.get_channel(fake.channel_id)
    fake.fail_posts(fake.channel_id, times=2, status=503)
    for _ in range(2):
        with pytest.raises(discord.DiscordServerError):
            await channel.send("one")
    await bot.get_channel(fake.other_channel_id).send("elsewhere")
    await channel.send("three")
    assert [m.content for m in fake.messages()] == ["three"]
    assert fake.failed_posts == [(fake.channel_id, 503), (fake.channel_id, 503)]
    fake.fail_posts(None, times=1, status=413, code=40005, with_files=True)
    await channel.send("no file: not counted")
    with pytest.raises(discord.HTTPException) as exc:
        await channel.send(file=discord.File(io.BytesIO(b"png"), "a.png"))
    assert exc.value.status == 413 and exc.value.code == 40005
    fake.errors.clear()


async def test_pings_follow_allowed_mentions(fake, bot):
    """The fake decides who a message notifies as Discord does: default all, none, or only the listed user."""
    channel = bot.get_channel(fake.channel_id)
    alice, bob = fake.users[:2]
    text = f"@everyone <@&{fake.bot_role_id}> {alice.mention} {bob.mention}"
    await channel.send(text, allowed_mentions=discord.AllowedMentions.all())
    await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
    await channel.send(text, allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[bob]))
    await channel.send(discord.utils.escape_mentions(text), allowed_mentions=discord.AllowedMentions.all())
    everything, nothing, only_bob, escaped = fake.messages()
    assert everything.pings == {"everyone", f"role:{fake.bot_role_id}", f"user:{alice.id}", f"user:{bob.id}"}
    assert nothing.pings == set()
    assert only_bob.pings == {f"user:{bob.id}"}
    assert escaped.pings == set()
