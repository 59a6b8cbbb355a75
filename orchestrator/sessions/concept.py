"""Concept Builder planning (pure): one field per round, other fields and the seed held, then a final render."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.config import StageRecipe
from orchestrator.errors import InputError
from orchestrator.models import JobSpec
from orchestrator.sessions.draft_grid import Render, Target, params_for
from orchestrator.sessions.models import CONCEPT_FIELDS

MAX_FIELD_CHARS = 200


def next_field(locked: Mapping[str, str]) -> str | None:
    """The first field not locked yet, in CONCEPT_FIELDS order; None when all are."""
    return next((f for f in CONCEPT_FIELDS if not locked.get(f)), None)


def compose(fields: Mapping[str, str]) -> str:
    """The prompt the fields make: subject first, then the others in their fixed order."""
    return ", ".join(v.strip() for f in CONCEPT_FIELDS if (v := fields.get(f, "")) and v.strip())


def clean_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Keep known, non-empty fields; InputError names an unknown field or an over-long value."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        key = name.strip().lower()
        if key not in CONCEPT_FIELDS:
            raise InputError(
                f"unknown field {name}",
                user_message=f"Unknown concept field {name!r}; fields are {', '.join(CONCEPT_FIELDS)}.",
            )
        out[key] = clean_value(value)
    return {k: v for k, v in out.items() if v}


def clean_value(value: str) -> str:
    """A field value as the user typed it, trimmed; InputError when it is too long."""
    text = " ".join(value.split())
    if len(text) > MAX_FIELD_CHARS:
        raise InputError("field too long", user_message=f"A field value is at most {MAX_FIELD_CHARS} characters.")
    return text


def plan_round(
    recipe: StageRecipe,
    target: Target,
    render: Render,
    *,
    field: str,
    options: Sequence[str],
    locked: Mapping[str, str],
    seed: int,
) -> list[JobSpec]:
    """One image per option for `field`; every image shares the seed so only the field differs."""
    specs = []
    for i, option in enumerate(options):
        prompt = compose({**locked, field: option})
        p = params_for(recipe, render, prompt, seed)
        specs.append(JobSpec(p, recipe.task, target.session_id, target.stage_id, target.user_id, None, i + 1))
    return specs


def plan_final(recipe: StageRecipe, target: Target, render: Render, *, locked: Mapping[str, str], seed: int) -> JobSpec:
    """The final render of the composed prompt with the premium recipe (txt2img)."""
    p = params_for(recipe, render, compose(locked), seed)
    return JobSpec(p, recipe.task, target.session_id, target.stage_id, target.user_id, None, 1)
