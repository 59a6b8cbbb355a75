"""/draft, /concept, /explore: validate -> Orchestrator.create_session(SessionRequest) -> header and thread."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.budgets import StartTicket
from bot.errors import PUBLIC_DEFER
from bot.limits import AUTOCOMPLETE_CHOICES, CHOICE_NAME, truncate
from orchestrator.errors import InputError, InvalidState
from orchestrator.models import Family, LoraSpec
from orchestrator.sessions.models import Flow, SessionRequest

if TYPE_CHECKING:
    from bot.client import ImGenBot

ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
#: what Discord's attachment metadata may say; only a hint (it follows the file name), the bytes decide
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
CHECKPOINT_HELP = "Checkpoint for the stages of its family (autocompletes from the GPUs)"
LORA_HELP = "LoRA as NAME or NAME:WEIGHT; several separated by commas (autocompletes from the GPUs)"
#: Discord refuses choice values over 100 characters
CHOICE_VALUE = 100


def parse_family(value: str | None) -> Family | None:
    """A family name from a command option, or InputError listing the accepted ones."""
    if value is None or not value.strip():
        return None
    try:
        return Family(value.strip().lower())
    except ValueError:
        accepted = ", ".join(f.value for f in Family)
        raise InputError("family", user_message=f"Unknown family `{value}`; use one of: {accepted}.") from None


def parse_loras(value: str | None) -> tuple[LoraSpec, ...]:
    """LoRAs from a command option: `name`, `name:0.8`, several separated by commas; InputError when malformed."""
    if value is None or not value.strip():
        return ()
    out = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            out.append(LoraSpec.parse(part))
        except ValueError:
            raise InputError("lora", user_message=f"LoRA `{part.strip()}`: use NAME or NAME:WEIGHT.") from None
    return tuple(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def model_choices(
    names: Sequence[str], typed: str, *, prefix: str = "", suffix: str = ""
) -> list[app_commands.Choice[str]]:
    """Model files containing what the user typed (case-insensitive), those starting with it first."""
    needle = typed.strip().lower()
    hits = [n for n in names if needle in n.lower()]
    hits.sort(key=lambda n: (not n.lower().startswith(needle), n.lower()))
    choices = []
    for name in hits:
        value = f"{prefix}{name}{suffix}"
        if len(value) > CHOICE_VALUE:
            continue
        choices.append(app_commands.Choice(name=truncate(value, CHOICE_NAME), value=value))
    return choices[:AUTOCOMPLETE_CHOICES]


class CreateCog(commands.Cog):
    """Commands that start a session."""

    def __init__(self, bot: ImGenBot) -> None:
        self.bot = bot

    @staticmethod
    def _channel(interaction: discord.Interaction) -> discord.TextChannel:
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise InvalidState("channel", user_message="Start sessions in a server text channel, not in a thread.")
        return channel

    async def _start(
        self,
        interaction: discord.Interaction,
        req: SessionRequest,
        *,
        title: str | None = None,
        ticket: StartTicket | None = None,
    ) -> None:
        channel = self._channel(interaction)
        if req.server_id is None and interaction.guild_id is not None:
            req = dataclasses.replace(req, server_id=str(interaction.guild_id))
        if ticket is None:
            async with self.bot.budgets.start(req.owner_id) as ticket:
                await self._create(interaction, channel, req, title)
        else:
            await self._create(interaction, channel, req, title)

    async def _create(
        self, interaction: discord.Interaction, channel: discord.TextChannel, req: SessionRequest, title: str | None
    ) -> None:
        # Defer within Discord's 3 s: creating a session plans and queues a whole stage.
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
            interaction.extras[PUBLIC_DEFER] = True
        session = await self.bot.orch.create_session(req)
        header = await interaction.followup.send(embed=render.header_embed(session), wait=True)
        interaction.extras.pop(PUBLIC_DEFER, None)
        await self.bot.relay.open_session(session, channel, header, title=title)

    @app_commands.command(name="draft", description="Draft Grid: 20 fast drafts, vote, refine, polish, final image.")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9, --seed 42, --no text, --steps 12, --count 8",
        negative="What to keep out of the image",
        family="Model family (autocompletes from the GPUs)",
        count="How many drafts",
        aspect="Aspect ratio, e.g. 16:9",
        private="Only you and people you invite can vote",
        checkpoint=CHECKPOINT_HELP,
        lora=LORA_HELP,
    )
    @app_commands.guild_only()
    async def draft(
        self,
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        family: str | None = None,
        count: int | None = None,
        aspect: str | None = None,
        private: bool = False,
        checkpoint: str | None = None,
        lora: str | None = None,
    ) -> None:
        req = SessionRequest(
            Flow.DRAFT_GRID,
            str(interaction.user.id),
            prompt,
            negative=negative,
            family=parse_family(family),
            count=count,
            aspect=aspect,
            private=private,
            checkpoint=checkpoint,
            loras=parse_loras(lora),
        )
        await self._start(interaction, req)

    @app_commands.command(name="concept", description="Concept Builder: settle subject, style, lighting… one by one.")
    @app_commands.describe(
        subject="The subject to build a concept around",
        private="Only you and invited people vote",
        checkpoint=CHECKPOINT_HELP,
        lora=LORA_HELP,
    )
    @app_commands.guild_only()
    async def concept(
        self,
        interaction: discord.Interaction,
        subject: str,
        private: bool = False,
        checkpoint: str | None = None,
        lora: str | None = None,
    ) -> None:
        user = str(interaction.user.id)
        loras = parse_loras(lora)
        req = SessionRequest(Flow.CONCEPT, user, subject, private=private, checkpoint=checkpoint, loras=loras)
        await self._start(interaction, req)

    @app_commands.command(
        name="explore", description="Explorer: variations around a prompt or an image, round by round."
    )
    @app_commands.describe(
        prompt="A prompt to explore (or leave empty and attach an image)",
        image="An image to explore from",
        private="Only you and people you invite can pick",
        checkpoint=CHECKPOINT_HELP,
        lora=LORA_HELP,
    )
    @app_commands.guild_only()
    async def explore(
        self,
        interaction: discord.Interaction,
        prompt: str | None = None,
        image: discord.Attachment | None = None,
        private: bool = False,
        checkpoint: str | None = None,
        lora: str | None = None,
    ) -> None:
        if not prompt and image is None:
            raise InputError("explore", user_message="Give a prompt or attach an image.")
        loras = parse_loras(lora)
        user = str(interaction.user.id)
        if image is None:
            req = SessionRequest(Flow.EXPLORER, user, prompt or "", private=private, checkpoint=checkpoint, loras=loras)
            await self._start(interaction, req)
            return
        # Every check that costs nothing comes before the download: the place, the cooldown, the declared
        # size and the member's quota. The bytes then go to the quarantine, never straight into the store.
        self._channel(interaction)
        uploads = self.bot.orch.uploads
        async with self.bot.budgets.start(user) as ticket:
            declared = (image.content_type or "").split(";")[0].strip().lower()
            if declared and declared not in IMAGE_TYPES:
                raise InputError("image", user_message="Attach a PNG, JPEG or WebP image.")
            await uploads.check_size(user, image.size)
            await interaction.response.defer(thinking=True)
            interaction.extras[PUBLIC_DEFER] = True
            ticket.keep()
            upload = await uploads.receive(user, await image.read())
            try:
                # Image only: its alt text when it has one; else no prompt, and every variation is img2img from it.
                text = prompt or (image.description or "").strip()
                title = None if prompt else f"Explorer · {image.filename}"
                req = SessionRequest(
                    Flow.EXPLORER,
                    user,
                    text,
                    private=private,
                    image_path=upload.path,
                    checkpoint=checkpoint,
                    loras=loras,
                )
                await self._start(interaction, req, title=title, ticket=ticket)
            finally:
                # Accepted: the session copied it into the member's inputs. Refused: nothing may stay.
                await uploads.discard(upload)

    @draft.autocomplete("family")
    async def family_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Families some healthy GPU can run, with the checkpoint each uses."""
        nodes = [n for n in self.bot.orch.farm_status() if n.healthy]
        choices = []
        for fam in Family:
            gpus = sum(1 for n in nodes if fam.value in n.capabilities)
            if not gpus or not fam.value.startswith(current.lower().strip()):
                continue
            checkpoint = self.bot.orch.settings.checkpoint_for(fam)
            name = truncate(f"{fam.value} · {checkpoint} · {gpus} GPU{'s' if gpus != 1 else ''}", CHOICE_NAME)
            choices.append(app_commands.Choice(name=name, value=fam.value))
        return choices[:AUTOCOMPLETE_CHOICES]

    @draft.autocomplete("aspect")
    async def aspect_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Common aspect ratios."""
        return [app_commands.Choice(name=a, value=a) for a in ASPECTS if a.startswith(current.strip())][
            :AUTOCOMPLETE_CHOICES
        ]

    @concept.autocomplete("checkpoint")
    @explore.autocomplete("checkpoint")
    @draft.autocomplete("checkpoint")
    async def checkpoint_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Checkpoints the healthy GPUs report, matching what was typed."""
        return model_choices(self.bot.orch.known_models().checkpoints, current)

    @concept.autocomplete("lora")
    @explore.autocomplete("lora")
    @draft.autocomplete("lora")
    async def lora_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """LoRAs the healthy GPUs report, for the last comma-separated entry; a typed `:weight` is kept."""
        done, comma, last = current.rpartition(",")
        prefix = f"{done.rstrip()}, " if comma else ""
        name, colon, weight = last.strip().rpartition(":")
        weight = weight.strip()
        if not colon or (weight and not _is_number(weight)):
            name, weight = last.strip(), ""
        suffix = f":{weight}" if weight else ""
        return model_choices(self.bot.orch.known_models().loras, name, prefix=prefix, suffix=suffix)
