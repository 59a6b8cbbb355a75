"""
Modals (feedback, edit a suggested prompt, type a Concept Builder value) and their restart-proof submit handler.

Submits are handled from `on_interaction` by custom_id, not by a Modal instance kept in memory, so a
modal opened before a restart still works when it is sent after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import discord

from bot import feedback, render
from bot.custom_ids import ModalId, ModalKind
from bot.errors import guard
from bot.limits import MODAL_TITLE, TEXT_INPUT_LABEL, TEXT_INPUT_VALUE, truncate
from bot.views.common import app, require_here, sessions, uid
from orchestrator.errors import InputError

FEEDBACK_FIELD = "feedback"
PROMPT_FIELD = "prompt"
NEGATIVE_FIELD = "negative"
VALUE_FIELD = "value"
#: a typed-in modal lives at most this long in discord.py's store (the submit itself is handled by custom_id)
MODAL_TIMEOUT_S = 900.0


class FormModal(discord.ui.Modal):
    """A plain form: its submit is handled by `handle_submit` through on_interaction."""

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        # Deliberately empty: handle_submit answers (it also works after a restart, when this object is gone).
        return


def _modal(kind: ModalKind, session_id: str, title: str, *inputs: discord.ui.TextInput[Any]) -> FormModal:
    modal = FormModal(
        title=truncate(title, MODAL_TITLE), custom_id=str(ModalId(kind, session_id)), timeout=MODAL_TIMEOUT_S
    )
    for item in inputs:
        modal.add_item(item)
    return modal


def feedback_modal(session_id: str) -> FormModal:
    """The gallery's Feedback button: free text for the prompt pipeline."""
    return _modal(
        ModalKind.FEEDBACK,
        session_id,
        "Feedback on these images",
        discord.ui.TextInput(
            label="What should change?",
            custom_id=FEEDBACK_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder="warmer light, no people, more like #3",
            max_length=1000,
        ),
    )


def edit_modal(session_id: str, prompt: str, negative: str, *, max_prompt: int, max_negative: int) -> FormModal:
    """Edit a suggested prompt before using it; Discord itself holds the inputs to our prompt limits."""
    prompt_max = min(TEXT_INPUT_VALUE, max_prompt)
    negative_max = min(TEXT_INPUT_VALUE, max_negative)
    return _modal(
        ModalKind.EDIT,
        session_id,
        "Edit the suggested prompt",
        discord.ui.TextInput(
            label="Prompt",
            custom_id=PROMPT_FIELD,
            style=discord.TextStyle.paragraph,
            default=truncate(prompt, prompt_max),
            max_length=prompt_max,
        ),
        discord.ui.TextInput(
            label="Negative prompt",
            custom_id=NEGATIVE_FIELD,
            style=discord.TextStyle.paragraph,
            default=truncate(negative, negative_max) or None,
            required=False,
            max_length=negative_max,
        ),
    )


def field_modal(session_id: str, field: str) -> FormModal:
    """Concept Builder: type the value of the field the round explores."""
    return _modal(
        ModalKind.FIELD,
        session_id,
        f"Your own {field}",
        discord.ui.TextInput(
            label=truncate(f"{field.title()} (locks this field)", TEXT_INPUT_LABEL),
            custom_id=VALUE_FIELD,
            max_length=200,
        ),
    )


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
        svc = sessions(interaction)
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
                prompt = values.get(PROMPT_FIELD, "").strip()
                if not prompt:
                    raise InputError("empty", user_message="The prompt is empty.")
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
