"""Components under a finished image: Upscale 4x, Variations, Branch from here (a lineage select), Info."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot import render
from bot.custom_ids import BRANCH_SELECT_TEMPLATE, FINAL_TEMPLATE, BranchSelectId, FinalAction, FinalId
from bot.errors import guard
from bot.limits import MAX_SELECT_OPTIONS, SELECT_OPTION_DESCRIPTION, SELECT_OPTION_LABEL, truncate
from bot.views.common import app, defer_update, final_ref, orch, require_here, uid
from orchestrator.errors import InvalidState
from orchestrator.sessions.models import StageStatus, StageView

FINAL_LABELS: dict[FinalAction, tuple[str, discord.ButtonStyle]] = {
    FinalAction.UPSCALE: ("Upscale 4x", discord.ButtonStyle.primary),
    FinalAction.VARIATIONS: ("Variations", discord.ButtonStyle.secondary),
    FinalAction.BRANCH: ("Branch from here", discord.ButtonStyle.secondary),
    FinalAction.INFO: ("Info", discord.ButtonStyle.secondary),
}


def final_view(session_id: str, image_id: str, *, upscaled: bool = False) -> discord.ui.View:
    """One row of actions for a finished image (no second upscale of an upscale)."""
    view = discord.ui.View(timeout=None)
    for action, (text, style) in FINAL_LABELS.items():
        if upscaled and action is FinalAction.UPSCALE:
            continue
        view.add_item(FinalButton(FinalId(action, session_id, image_id), text, style, row=0))
    return view


async def parent_channel(interaction: discord.Interaction) -> discord.TextChannel:
    """The text channel that holds session threads: the thread's parent, or the channel itself."""
    channel = interaction.channel
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        if parent is None:
            fetched = await interaction.client.fetch_channel(channel.parent_id)
            parent = fetched if isinstance(fetched, discord.TextChannel) else None
        if isinstance(parent, discord.TextChannel):
            return parent
    if isinstance(channel, discord.TextChannel):
        return channel
    raise InvalidState("no channel", user_message="This works in a server text channel or a session thread.")


class FinalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=FINAL_TEMPLATE):
    """An action on one finished image."""

    def __init__(
        self,
        fid: FinalId,
        text: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(label=text or FINAL_LABELS[fid.action][0], style=style, custom_id=str(fid)), row=row
        )
        self.fid = fid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> FinalButton:
        button: Any = item
        return cls(FinalId.from_match(match), button.label or "", button.style, None)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await self._run(interaction)

    async def _run(self, interaction: discord.Interaction) -> None:
        svc = orch(interaction)
        sid, image_id, user = self.fid.session_id, self.fid.image_id, uid(interaction)
        await require_here(interaction, sid)
        match self.fid.action:
            case FinalAction.UPSCALE:
                existing = await svc.existing_upscale(sid, image_id)
                if existing is not None:
                    await interaction.response.send_message(
                        await already_upscaled_text(interaction, sid, existing), ephemeral=True
                    )
                    return
                await defer_update(interaction)
                await svc.upscale(sid, user, image_id)
            case FinalAction.VARIATIONS:
                async with app(interaction).budgets.start(user):
                    await interaction.response.defer(ephemeral=True, thinking=True)
                    new = await svc.variations(user, image_id)
                    thread = await app(interaction).relay.open_session(new, await parent_channel(interaction))
                await interaction.followup.send(f"Explorer started: {thread.mention}", ephemeral=True)
            case FinalAction.BRANCH:
                # Refuse before the lineage is shown, not when a member has picked from it.
                svc.check_vote(await svc.session(sid), user)
                await interaction.response.defer(ephemeral=True, thinking=True)
                view = await branch_view(interaction, sid, image_id)
                await interaction.followup.send("Branch a new Draft Grid from which image?", view=view, ephemeral=True)
            case FinalAction.INFO:
                await interaction.response.defer(ephemeral=True, thinking=True)
                info = await svc.image_info(image_id)
                await interaction.followup.send(embed=render.info_embed(info), ephemeral=True)


async def already_upscaled_text(interaction: discord.Interaction, session_id: str, stage: StageView) -> str:
    """Where the existing upscale of an image is (a link to its message), or that it is still rendering."""
    if stage.status is StageStatus.GENERATING:
        return "The 4x upscale of this image is on its way; it will appear in this thread."
    ref = await app(interaction).orch.message_ref(session_id, final_ref(stage.id, 1))
    channel = interaction.channel
    if ref is not None and isinstance(channel, discord.Thread):
        return f"This image is already upscaled: {channel.get_partial_message(int(ref)).jump_url}"
    return "This image is already upscaled: the 4x image is in this thread."


async def branch_view(interaction: discord.Interaction, session_id: str, image_id: str) -> discord.ui.View:
    """A select of the image and its ancestors (its lineage), newest first."""
    svc = orch(interaction)
    info = await svc.image_info(image_id)
    own_stage = (await svc.stage(info.stage_id)).name if info.stage_id else "image"
    choices = [(info.id, f"{own_stage} (this image) · seed {info.seed}")]
    choices += [(link.id, f"{link.stage_name} #{link.number} · seed {link.seed}") for link in info.lineage]
    options = [
        discord.SelectOption(
            label=truncate(text, SELECT_OPTION_LABEL),
            value=iid,
            description=truncate(info.prompt, SELECT_OPTION_DESCRIPTION) or None,
        )
        for iid, text in choices[:MAX_SELECT_OPTIONS]
    ]
    view = discord.ui.View(timeout=None)
    view.add_item(BranchSelect(BranchSelectId(session_id), options))
    return view


class BranchSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=BRANCH_SELECT_TEMPLATE):
    """Choose an image of the lineage; a new Draft Grid starts from it in its own thread."""

    def __init__(self, bid: BranchSelectId, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=str(bid),
                placeholder="Image to branch from",
                options=options or [discord.SelectOption(label="image", value="none")],
            )
        )
        self.bid = bid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> BranchSelect:
        select: Any = item
        return cls(BranchSelectId.from_match(match), list(select.options))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await require_here(interaction, self.bid.session_id)
            values = self.item.values
            if not values:
                await defer_update(interaction)
                return
            async with app(interaction).budgets.start(uid(interaction)):
                await interaction.response.defer(ephemeral=True, thinking=True)
                new = await orch(interaction).branch(self.bid.session_id, uid(interaction), values[0])
                thread = await app(interaction).relay.open_session(new, await parent_channel(interaction))
            await interaction.followup.send(f"New Draft Grid branched: {thread.mention}", ephemeral=True)
