"""Gallery components: per-image Select/Reject toggles, Pick buttons and the control row, all DynamicItems."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import discord

from bot import render
from bot.custom_ids import (
    CONTROL_TEMPLATE,
    PICK_TEMPLATE,
    VOTE_TEMPLATE,
    Control,
    ControlId,
    FinalAction,
    FinalId,
    PickId,
    VoteId,
)
from bot.errors import guard
from bot.limits import MAX_BUTTONS_PER_ROW, chunks, label
from bot.views import forms
from bot.views.common import defer_update, orch, require_here, uid
from bot.views.final import FinalButton
from orchestrator.errors import InvalidState, NotAllowed
from orchestrator.sessions.models import Flow, Session, StageView


class GalleryMode(StrEnum):
    """What the buttons under a gallery do."""

    VOTE = "vote"  #: Draft Grid stages: select / reject toggles
    CONCEPT = "concept"  #: Concept Builder rounds: pick one option
    EXPLORER = "explorer"  #: Explorer rounds: pick one, or upscale any


def mode_for(session: Session) -> GalleryMode:
    """The gallery mode of a session's flow."""
    return {
        Flow.DRAFT_GRID: GalleryMode.VOTE,
        Flow.CONCEPT: GalleryMode.CONCEPT,
        Flow.EXPLORER: GalleryMode.EXPLORER,
    }[session.flow]


CONTROL_LABELS: dict[Control, tuple[str, discord.ButtonStyle]] = {
    Control.CONTINUE: ("Continue ▶", discord.ButtonStyle.primary),
    Control.REGENERATE: ("Regenerate ↻", discord.ButtonStyle.secondary),
    Control.FEEDBACK: ("Feedback ✎", discord.ButtonStyle.secondary),
    Control.END: ("End ■", discord.ButtonStyle.danger),
    Control.FIELD: ("Type a value ✎", discord.ButtonStyle.primary),
}

MODE_CONTROLS: dict[GalleryMode, tuple[Control, ...]] = {
    GalleryMode.VOTE: (Control.CONTINUE, Control.REGENERATE, Control.FEEDBACK, Control.END),
    GalleryMode.CONCEPT: (Control.FIELD, Control.REGENERATE, Control.END),
    GalleryMode.EXPLORER: (Control.REGENERATE, Control.FEEDBACK, Control.END),
}


def gallery_view(session_id: str, stage: StageView, page: render.GalleryPage, mode: GalleryMode) -> discord.ui.View:
    """The buttons of one gallery message: at most 4 rows for its (<= 10) images + 1 control row."""
    view = discord.ui.View(timeout=None)
    row = 0
    groups = chunks(list(page.images), MAX_BUTTONS_PER_ROW)
    if mode is GalleryMode.VOTE:
        # 10 images: ✓1..✓5, ✗1..✗5, ✓6..✓10, ✗6..✗10 (Discord: 5 buttons per row, 5 rows per message)
        for group in groups:
            for img in group:
                ups, _ = render.vote_counts(img)
                style = discord.ButtonStyle.success if ups else discord.ButtonStyle.secondary
                view.add_item(VoteButton(VoteId(session_id, img.image.id, 1), render.select_label(img), style, row))
            row += 1
            for img in group:
                _, downs = render.vote_counts(img)
                style = discord.ButtonStyle.danger if downs else discord.ButtonStyle.secondary
                view.add_item(VoteButton(VoteId(session_id, img.image.id, -1), render.reject_label(img), style, row))
            row += 1
    else:
        for group in groups:
            for img in group:
                view.add_item(PickButton(PickId(session_id, img.image.id), label(f"Pick {img.number}"), row))
            row += 1
        if mode is GalleryMode.EXPLORER:
            for group in groups:
                for img in group:
                    fid = FinalId(FinalAction.UPSCALE, session_id, img.image.id)
                    view.add_item(FinalButton(fid, label(f"Upscale {img.number}"), row=row))
                row += 1
    for action in MODE_CONTROLS[mode]:
        text, style = CONTROL_LABELS[action]
        view.add_item(ControlButton(ControlId(action, session_id, stage.id), text, style, row))
    return view


async def _current(interaction: discord.Interaction, session_id: str, stage_id: str) -> None:
    stage = await orch(interaction).current_stage(session_id)
    if stage.id != stage_id:
        raise InvalidState("old gallery", user_message="This gallery is from an earlier stage; use the latest one.")


async def require_voter(interaction: discord.Interaction, session_id: str) -> Session:
    """The session, if the user may take part; else NotAllowed with how to ask for an invite."""
    svc = orch(interaction)
    session = await svc.session(session_id)
    if not svc.may_vote(session, uid(interaction)):
        raise NotAllowed(
            "private",
            user_message=f"This is a private session: ask {render.mention(session.owner_id)} to invite you "
            "(`/session invite`).",
        )
    return session


class VoteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=VOTE_TEMPLATE):
    """Select (+1) or Reject (-1) one image; pressing again withdraws the vote."""

    def __init__(
        self,
        vid: VoteId,
        text: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(discord.ui.Button(label=text or "vote", style=style, custom_id=str(vid)), row=row)
        self.vid = vid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        button: Any = item
        return cls(VoteId.from_match(match), button.label or "", button.style, None)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await require_here(interaction, self.vid.session_id)
            # The tally on the buttons updates through the coalescing editor (VotesChanged), not here.
            await defer_update(interaction)
            await orch(interaction).toggle(self.vid.session_id, self.vid.image_id, uid(interaction), self.vid.value)


class PickButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=PICK_TEMPLATE):
    """Pick one image of a Concept Builder or Explorer round."""

    def __init__(self, pid: PickId, text: str = "Pick", row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=text, style=discord.ButtonStyle.primary, custom_id=str(pid)), row=row)
        self.pid = pid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PickButton:
        button: Any = item
        return cls(PickId.from_match(match), button.label or "Pick", None)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await require_here(interaction, self.pid.session_id)
            await defer_update(interaction)
            await orch(interaction).pick(self.pid.session_id, uid(interaction), self.pid.image_id)


class ControlButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CONTROL_TEMPLATE):
    """Continue, Regenerate, Feedback, End (and the Concept Builder's "type a value")."""

    def __init__(
        self,
        cid: ControlId,
        text: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(discord.ui.Button(label=text or cid.action.value, style=style, custom_id=str(cid)), row=row)
        self.cid = cid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ControlButton:
        button: Any = item
        return cls(ControlId.from_match(match), button.label or "", button.style, None)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await self._run(interaction)

    async def _run(self, interaction: discord.Interaction) -> None:
        svc = orch(interaction)
        sid, user = self.cid.session_id, uid(interaction)
        await require_here(interaction, sid)
        match self.cid.action:
            case Control.FEEDBACK:
                await require_voter(interaction, sid)
                await interaction.response.send_modal(forms.feedback_modal(sid))
            case Control.FIELD:
                session = await require_voter(interaction, sid)
                current = session.concept.current_field if session.concept else None
                if not current:
                    raise InvalidState("no field", user_message="Every field is already locked.")
                await interaction.response.send_modal(forms.field_modal(sid, current))
            case Control.CONTINUE:
                await defer_update(interaction)
                await _current(interaction, sid, self.cid.stage_id)
                await svc.advance(sid, user)
            case Control.REGENERATE:
                await defer_update(interaction)
                await _current(interaction, sid, self.cid.stage_id)
                await svc.regenerate(sid, user)
            case Control.END:
                await defer_update(interaction)
                await svc.end(sid, user)
