"""Draft Grid planning (pure): a stage's job specs from its recipe, the prompt and the selected parents."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchestrator.config import StageRecipe
from orchestrator.errors import InvalidState
from orchestrator.families import sampling_defaults
from orchestrator.models import MAX_SEED, Family, GenerationParams, ImageRecord, JobSpec, LoraSpec, Mode, TaskKind
from orchestrator.sessions.models import SessionSettings
from orchestrator.sessions.syntax import aspect_size

#: denoise when a Draft Grid starts from a user's image instead of text
FROM_IMAGE_DENOISE = 0.7


@dataclass(frozen=True, slots=True)
class Target:
    """Who and where the planned jobs belong to."""

    session_id: str
    stage_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Render:
    """The shared render settings of a stage: checkpoint, negative prompt, LoRAs."""

    negative: str
    checkpoint: str
    loras: tuple[LoraSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Parent:
    """A selected image the next stage grows from, and how many children it gets."""

    image: ImageRecord
    children: int


def seed_at(base: int, offset: int) -> int:
    """The seed `offset` places after `base`, wrapping at 2**32."""
    return (base + offset) % (MAX_SEED + 1)


def resolve_recipe(recipe: StageRecipe, ss: SessionSettings, max_side: int) -> StageRecipe:
    """The recipe with the session's family, aspect and steps applied (size keeps the recipe's scale)."""
    family = ss.family or recipe.family
    scale = math.sqrt(recipe.width * recipe.height) / recipe.family.native_size
    width, height = aspect_size(ss.aspect, family, max_side, scale=scale)
    return replace(recipe, family=family, width=width, height=height, steps=ss.steps or recipe.steps)


def params_for(recipe: StageRecipe, render: Render, prompt: str, seed: int) -> GenerationParams:
    """Txt2img parameters of one image of a stage."""
    defaults = sampling_defaults(recipe.family)
    return GenerationParams(
        prompt=prompt,
        family=recipe.family,
        checkpoint=render.checkpoint,
        negative_prompt=render.negative,
        width=recipe.width,
        height=recipe.height,
        steps=recipe.steps,
        cfg=defaults.cfg if defaults.fixed else recipe.cfg,
        sampler=recipe.sampler,
        scheduler=defaults.scheduler if defaults.fixed else recipe.scheduler,
        seed=seed,
        loras=render.loras,
    )


def plan_first(
    recipe: StageRecipe,
    target: Target,
    render: Render,
    *,
    prompts: Sequence[str],
    count: int,
    base_seed: int,
    init_image: str | None = None,
) -> list[JobSpec]:
    """The first stage: `count` images over the prompt's permutations, txt2img (img2img from a user's image)."""
    specs = []
    for i in range(count):
        p = params_for(recipe, render, prompts[i % len(prompts)], seed_at(base_seed, i))
        if init_image is not None:
            p = p.with_(mode=Mode.IMG2IMG, init_image=init_image, denoise=FROM_IMAGE_DENOISE)
        specs.append(JobSpec(p, recipe.task, target.session_id, target.stage_id, target.user_id, None, i + 1))
    return specs


def child_prompt(parent_prompt: str, prompts: Sequence[str], k: int) -> str:
    """A child keeps its parent's permutation while the session prompt still makes it; else the new prompt."""
    return parent_prompt if parent_prompt in prompts else prompts[k % len(prompts)]


def plan_next(
    recipe: StageRecipe,
    target: Target,
    render: Render,
    *,
    prompts: Sequence[str],
    parents: Sequence[Parent],
    base_seed: int,
) -> list[JobSpec]:
    """A refining stage: each parent's children are img2img from it with the recipe's denoise."""
    specs: list[JobSpec] = []
    for k, parent in enumerate(parents):
        if not parent.image.path:
            raise InvalidState(
                "parent pruned",
                user_message=f"Image #{parent.image.index} was pruned when the session moved on; select another.",
            )
        for _ in range(parent.children):
            n = len(specs)
            prompt = child_prompt(parent.image.prompt, prompts, k)
            p = params_for(recipe, render, prompt, seed_at(base_seed, n)).with_(
                mode=Mode.IMG2IMG, init_image=parent.image.path, denoise=recipe.denoise
            )
            specs.append(
                JobSpec(p, recipe.task, target.session_id, target.stage_id, target.user_id, parent.image.id, n + 1)
            )
    return specs


def plan_upscale(image: ImageRecord, family: Family, target: Target, upscale_model: str) -> JobSpec:
    """A one-image upscale of a delivered image (the parent's family decides nothing but the record)."""
    if not image.path:
        raise InvalidState("pruned", user_message="That image's full-size file was pruned; it cannot be upscaled.")
    p = GenerationParams(
        prompt=image.prompt,
        family=family,
        checkpoint=image.checkpoint,
        negative_prompt=image.negative_prompt,
        width=image.width,
        height=image.height,
        steps=1,
        seed=image.seed,
        mode=Mode.UPSCALE,
        init_image=image.path,
        upscale_model=upscale_model,
    )
    return JobSpec(p, TaskKind.UPSCALE, target.session_id, target.stage_id, target.user_id, image.id, 1)
