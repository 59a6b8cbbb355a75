"""Use / Edit / Discard under a suggested prompt; the suggestion itself is read from the session (DB)."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot import render
from bot.custom_ids import SUGGESTION_TEMPLATE, SuggestionAction, SuggestionId
from bot.errors import guard
from bot.views import forms
from bot.views.common import orch, require_here, uid
from orchestrator.errors import InvalidState

SUGGESTION_LABELS: dict[SuggestionAction, tuple[str, discord.ButtonStyle]] = {
    SuggestionAction.USE: ("Use", discord.ButtonStyle.success),
    SuggestionAction.EDIT: ("Edit", discord.ButtonStyle.primary),
    SuggestionAction.DISCARD: ("Discard", discord.ButtonStyle.secondary),
}


def suggestion_view(session_id: str) -> discord.ui.View:
    """The three buttons under a suggestion."""
    view = discord.ui.View(timeout=None)
    for action, (text, style) in SUGGESTION_LABELS.items():
        view.add_item(SuggestionButton(SuggestionId(action, session_id), text, style))
    return view


class SuggestionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=SUGGESTION_TEMPLATE):
    """Apply, edit or drop the session's pending suggestion."""

    def __init__(
        self, sid: SuggestionId, text: str = "", style: discord.ButtonStyle = discord.ButtonStyle.secondary
    ) -> None:
        super().__init__(
            discord.ui.Button(label=text or SUGGESTION_LABELS[sid.action][0], style=style, custom_id=str(sid))
        )
        self.sid = sid

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SuggestionButton:
        button: Any = item
        return cls(SuggestionId.from_match(match), button.label or "", button.style)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            svc = orch(interaction)
            session_id, user = self.sid.session_id, uid(interaction)
            await require_here(interaction, session_id)
            match self.sid.action:
                case SuggestionAction.USE:
                    session = await svc.apply_suggestion(session_id, user)
                    await interaction.response.edit_message(
                        content=render.applied_text(session, by=user, edited=False), view=None
                    )
                case SuggestionAction.EDIT:
                    session = await svc.session(session_id)
                    # Refuse before the modal opens, not after someone typed a whole prompt into it.
                    svc.check_advance(session, user, "apply a suggestion in this private session")
                    if session.suggestion is None:
                        raise InvalidState("none", user_message="There is no pending suggestion any more.")
                    s = session.suggestion
                    lim = svc.settings.limits
                    modal = forms.edit_modal(
                        session_id,
                        s.prompt,
                        s.negative_prompt,
                        max_prompt=lim.max_prompt_chars,
                        max_negative=lim.max_negative_chars,
                    )
                    await interaction.response.send_modal(modal)
                case SuggestionAction.DISCARD:
                    await svc.discard_suggestion(session_id, user)
                    await interaction.response.edit_message(content=f"Discarded by {render.mention(user)}.", view=None)
