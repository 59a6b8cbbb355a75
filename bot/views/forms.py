"""
The forms a member fills in: feedback, an edit of a suggested prompt, a Concept Builder value.

Building them is separate from answering them (views/modals.py), so the views that open a form do not import
what a submit leads to (feedback -> suggestion -> forms runs one way).
"""

from __future__ import annotations

from typing import Any

import discord

from bot.custom_ids import ModalId, ModalKind
from bot.limits import MODAL_TITLE, TEXT_INPUT_LABEL, TEXT_INPUT_VALUE, truncate

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
