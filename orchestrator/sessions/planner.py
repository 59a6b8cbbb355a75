"""Turns a stage's description (kind, index, data) into job specs, using the flow planners."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from orchestrator.config import Settings, StageRecipe
from orchestrator.db import Database, SessionRow, StageRow
from orchestrator.errors import InputError, InvalidState
from orchestrator.models import Family, JobSpec, LoraSpec
from orchestrator.sessions import concept, draft_grid, explorer
from orchestrator.sessions.models import Flow, SessionSettings
from orchestrator.sessions.syntax import expand

# Stage kinds, kept in StageRow.data["kind"].
STAGE = "stage"  #: a Draft Grid recipe stage
ROUND = "round"  #: a Concept Builder or Explorer round
FINAL = "final"  #: the Concept Builder's final render
UPSCALE = "upscale"  #: a one-image upscale

MAX_LORAS = 4
#: LoRA weights outside this range only make noise
LORA_WEIGHT = (-4.0, 4.0)


class Planner:
    """Plans any stage of any flow from the session row and the stage's data."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def specs(self, row: SessionRow, kind: str, idx: int, data: dict[str, Any], stage_id: str) -> list[JobSpec]:
        """The job specs of a stage of `kind` at `idx`, from its data (Explorer rounds add their labels to it)."""
        ss = SessionSettings.from_dict(row.settings)
        stages = self.settings.funnel.stages
        max_side = self.settings.limits.max_side
        target = draft_grid.Target(row.id, stage_id, row.owner_id)
        seed = int(data["seed"])
        if kind == UPSCALE:
            image = await self.db.image(data["image_id"])
            job = await self.db.get_job(data["image_id"])
            if image is None or job is None:
                raise InvalidState("gone", user_message="That image no longer exists.")
            return [draft_grid.plan_upscale(image, job.params.family, target, self.settings.upscale_model)]
        if kind == STAGE:
            recipe = draft_grid.resolve_recipe(stages[idx], ss, max_side)
            prompts = expand(row.prompt, limit=self.settings.limits.max_count)
            if not data.get("parents"):
                count = ss.count or recipe.count
                init = data.get("init_image")
                return draft_grid.plan_first(
                    recipe, target, self.render(row, recipe), prompts=prompts, count=count, base_seed=seed,
                    init_image=init,
                )  # fmt: skip
            parents = []
            for image_id, n in data["parents"]:
                image = await self.db.image(image_id)
                if image is None:
                    raise InvalidState("gone", user_message="A selected image no longer exists.")
                parents.append(draft_grid.Parent(image, int(n)))
            render = self.render(row, recipe)
            return draft_grid.plan_next(recipe, target, render, prompts=prompts, parents=parents, base_seed=seed)
        if kind == FINAL:
            recipe = draft_grid.resolve_recipe(stages[-1], ss, max_side)
            locked = row.data["concept"]["locked"]
            return [concept.plan_final(recipe, target, self.render(row, recipe), locked=locked, seed=seed)]
        if Flow(row.flow) is Flow.CONCEPT:
            recipe = draft_grid.resolve_recipe(stages[0], ss, max_side)
            return concept.plan_round(
                recipe, target, self.render(row, recipe), field=data["field"], options=data["options"],
                locked=row.data["concept"]["locked"], seed=seed,
            )  # fmt: skip
        pick = explorer.Pick.from_dict(data["pick"]) if data.get("pick") else None
        family = ss.family or (pick.family if pick else stages[0].family)
        aspect = pick.aspect if pick else ss.aspect
        base = recipe_for(stages, family)
        recipe = draft_grid.resolve_recipe(base, ss.with_(family=family, aspect=aspect), max_side)
        variations = explorer.plan_round(
            recipe, target, self.render(row, recipe), prompt=row.prompt, aspect=aspect, pick=pick,
            count=ss.count or self.settings.funnel.explorer_count, base_seed=seed, max_side=max_side,
        )  # fmt: skip
        data["labels"] = [v.label for v in variations]
        return [v.spec for v in variations]

    def render(self, row: SessionRow, recipe: StageRecipe) -> draft_grid.Render:
        """Checkpoint for the recipe's family (the user's own for the session's family), negative prompt, LoRAs."""
        ss = SessionSettings.from_dict(row.settings)
        checkpoint = self.settings.checkpoint_for(recipe.family)
        if ss.checkpoint and recipe.family is ss.family:
            checkpoint = ss.checkpoint
        return draft_grid.Render(row.negative_prompt, checkpoint, ss.loras)

    def family_of(self, row: SessionRow, st: StageRow | None) -> Family:
        """The family the next images of the session will most likely use (for the feedback pipeline)."""
        ss = SessionSettings.from_dict(row.settings)
        stages = self.settings.funnel.stages
        if ss.family is not None:
            return ss.family
        if st is not None and st.data.get("kind") == STAGE and st.idx + 1 < len(stages):
            return stages[st.idx + 1].family
        return stages[-1].family


def recipe_for(stages: tuple[StageRecipe, ...], family: Family) -> StageRecipe:
    """The first recipe of that (speed) family, else the first one with its family replaced."""
    for r in stages:
        if r.family.speed_family is family.speed_family:
            return dataclasses.replace(r, family=family)
    return dataclasses.replace(stages[0], family=family)


def aspect_of(width: int, height: int) -> str:
    """The listed aspect ratio closest to a size."""
    ratio = width / height
    return min(explorer.ASPECTS, key=lambda a: abs(math.log(ratio * int(a.split(":")[1]) / int(a.split(":")[0]))))


def check_loras(loras: Sequence[LoraSpec]) -> tuple[LoraSpec, ...]:
    """The LoRAs of a session, or InputError for too many, an empty name or a weight out of range."""
    out = tuple(loras)
    if len(out) > MAX_LORAS:
        raise InputError("too many loras", user_message=f"At most {MAX_LORAS} LoRAs per session.")
    low, high = LORA_WEIGHT
    for lo in out:
        if not lo.name.strip():
            raise InputError("lora name", user_message="A LoRA needs a name (NAME or NAME:WEIGHT).")
        if not (low <= lo.strength_model <= high and low <= lo.strength_clip <= high):
            raise InputError(
                "lora weight",
                user_message=f"LoRA `{lo.name}`: the weight must be between {low:g} and {high:g}.",
            )
    return out
