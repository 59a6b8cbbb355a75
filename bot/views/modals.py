"""
The restart-proof submit handler of our modals (feedback, an edited prompt, a Concept Builder value).

The forms themselves are built in views/forms.py. Submits are handled from `on_interaction` by custom_id, not
by a Modal instance kept in memory, so a modal opened before a restart still works when it is sent after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import discord

from bot import feedback, render
from bot.custom_ids import ModalId, ModalKind
from bot.errors import guard
from bot.views.common import app, orch, require_here, uid
from bot.views.forms import (
    FEEDBACK_FIELD,
    NEGATIVE_FIELD,
    PROMPT_FIELD,
    VALUE_FIELD,
    FormModal,
    edit_modal,
    feedback_modal,
    field_modal,
)
from orchestrator.checks import check_prompt
from orchestrator.errors import InputError


def _walk(components: Any) -> Iterator[dict[str, Any]]:
    for c in components or ():
        if not isinstance(c, dict):
            continue
        if "custom_id" in c and "value" in c:
            yield c
        yield from _walk(c.get("components"))
        if isinstance(c.get("component"), dict):
            yield from _walk([c["component"]])


def submitted_values(interaction: discord.Interaction) -> dict[str, str]:
    """custom_id -> text of every input in a modal submit (rows or labels)."""
    data: Any = interaction.data or {}
    return {str(c["custom_id"]): str(c.get("value") or "") for c in _walk(data.get("components"))}


async def handle_submit(interaction: discord.Interaction) -> bool:
    """Answer a submit of one of our modals; False when the modal is not ours."""
    data: Any = interaction.data or {}
    mid = ModalId.parse(str(data.get("custom_id", "")))
    if mid is None:
        return False
    values = submitted_values(interaction)
    async with guard(interaction):
        svc = orch(interaction)
        user = uid(interaction)
        # A submit is trusted no more than a button: it must come from the thread of the session it names.
        await require_here(interaction, mid.session_id)
        match mid.kind:
            case ModalKind.FEEDBACK:
                text = values.get(FEEDBACK_FIELD, "").strip()
                if not text:
                    raise InputError("empty", user_message="The feedback is empty.")
                await interaction.response.defer(ephemeral=True, thinking=True)
                thread = interaction.channel
                if not isinstance(thread, discord.Thread):
                    raise InputError("no thread", user_message="Send feedback from the session's thread.")
                await feedback.suggest(app(interaction), thread, mid.session_id, interaction.user, text)
                await interaction.followup.send("Suggestion posted in the thread.", ephemeral=True)
            case ModalKind.EDIT:
                prompt = check_prompt(values.get(PROMPT_FIELD, "").strip(), svc.settings.limits)
                negative = values.get(NEGATIVE_FIELD, "").strip()
                session = await svc.apply_suggestion(
                    mid.session_id, user, prompt=prompt, negative=negative, require_pending=True
                )
                await interaction.response.send_message(render.applied_text(session, by=user, edited=True))
            case ModalKind.FIELD:
                value = values.get(VALUE_FIELD, "").strip()
                if not value:
                    raise InputError("empty", user_message="The value is empty.")
                app(interaction).budgets.typed_value(user)
                await interaction.response.defer(thinking=True)
                await svc.concept_set_field(mid.session_id, user, value)
                await interaction.followup.send(render.field_set_text(value, by=user))
    return True


__all__ = [
    "FEEDBACK_FIELD",
    "NEGATIVE_FIELD",
    "PROMPT_FIELD",
    "VALUE_FIELD",
    "FormModal",
    "edit_modal",
    "feedback_modal",
    "field_modal",
    "handle_submit",
    "submitted_values",
]
