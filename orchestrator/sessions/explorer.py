"""Explorer planning (pure): a round of variations around the current pick, or around a prompt at first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from orchestrator.config import StageRecipe
from orchestrator.models import Family, ImageRecord, JobSpec, Mode
from orchestrator.sessions.draft_grid import Render, Target, params_for, seed_at
from orchestrator.sessions.syntax import aspect_size, expand

SUBTLE_DENOISE = 0.35
STRONG_DENOISE = 0.7
#: styles tried when the prompt brings no `{a,b}` permutations of its own
STYLES: tuple[str, ...] = (
    "cinematic lighting",
    "watercolor painting",
    "35mm film photograph",
    "digital concept art",
    "oil painting",
    "ink sketch",
)
ASPECTS: tuple[str, ...] = ("16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "1:1")


class Kind(StrEnum):
    """One way of varying the pick."""

    SEED = "new seed"  #: same prompt and size, another seed
    SUBTLE = "subtle"  #: img2img from the pick, low denoise
    STRONG = "strong"  #: img2img from the pick, high denoise
    STYLE = "style"  #: another permutation or style of the prompt
    ASPECT = "aspect"  #: another aspect ratio, the pick's seed


@dataclass(frozen=True, slots=True)
class Pick:
    """What a round varies: the picked image (or a user's file) and how it was made."""

    path: str
    prompt: str
    family: Family
    seed: int
    aspect: str
    #: None for a user's own file
    image_id: str | None = None

    @classmethod
    def of_image(cls, image: ImageRecord, family: Family, aspect: str, *, prompt: str | None = None) -> Pick:
        """A delivered image as the pick of a round (its own prompt unless one is given)."""
        return cls(image.path, image.prompt if prompt is None else prompt, family, image.seed, aspect, image.id)

    def to_dict(self) -> dict[str, Any]:
        """As kept in session and stage data (JSON)."""
        return {
            "path": self.path,
            "prompt": self.prompt,
            "family": self.family.value,
            "seed": self.seed,
            "aspect": self.aspect,
            "image_id": self.image_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pick:
        """The inverse of to_dict."""
        return cls(**{**d, "family": Family(d["family"])})


@dataclass(frozen=True, slots=True)
class Variation:
    """One planned image of a round and the label a front end shows under it."""

    spec: JobSpec
    label: str


def kinds(count: int, *, has_pick: bool, has_prompt: bool = True) -> list[Kind]:
    """The kinds of a round in order: around a pick img2img leads; from a prompt, seeds, styles and aspects."""
    # Without a prompt only the image carries the content, so every variation is img2img from the pick.
    if has_pick and not has_prompt:
        cycle = [Kind.SUBTLE, Kind.STRONG, Kind.STYLE]
    elif has_pick:
        cycle = [Kind.SUBTLE, Kind.STRONG, Kind.SEED, Kind.STYLE, Kind.ASPECT]
    else:
        cycle = [Kind.SEED, Kind.STYLE, Kind.SEED, Kind.ASPECT]
    return [cycle[i % len(cycle)] for i in range(count)]


def style_variants(prompt: str) -> list[str]:
    """The prompt's own permutations when it has `{a,b}`, else the prompt with each built-in style."""
    variants = list(expand(prompt))
    if len(variants) > 1:
        return variants
    return [f"{variants[0]}, {s}" if variants[0] else s for s in STYLES]


def plan_round(
    recipe: StageRecipe,
    target: Target,
    render: Render,
    *,
    prompt: str,
    aspect: str,
    pick: Pick | None,
    count: int,
    base_seed: int,
    max_side: int,
) -> list[Variation]:
    """`count` variations; `recipe` is already resolved to the round's family and aspect."""
    plain = expand(prompt)[0]
    styles = style_variants(prompt)
    other_aspects = [a for a in ASPECTS if a != aspect]
    counters = dict.fromkeys(Kind, 0)
    out: list[Variation] = []
    for i, kind in enumerate(kinds(count, has_pick=pick is not None, has_prompt=bool(plain))):
        nth = counters[kind]
        counters[kind] += 1
        seed = seed_at(base_seed, i)
        r = recipe
        text = plain
        label = kind.value
        if kind is Kind.STYLE:
            text = styles[nth % len(styles)]
            label = f"style: {text}"
        elif kind is Kind.ASPECT:
            ar = other_aspects[nth % len(other_aspects)]
            w, h = aspect_size(ar, recipe.family, max_side)
            r = replace(recipe, width=w, height=h)
            label = f"aspect {ar}"
            if pick is not None:
                seed = pick.seed
        p = params_for(r, render, text, seed)
        parent = None
        if pick is not None and kind in (Kind.SUBTLE, Kind.STRONG, Kind.STYLE):
            denoise = SUBTLE_DENOISE if kind is Kind.SUBTLE else STRONG_DENOISE
            p = p.with_(mode=Mode.IMG2IMG, init_image=pick.path, denoise=denoise)
            parent = pick.image_id
        elif pick is not None:
            parent = pick.image_id
        spec = JobSpec(p, recipe.task, target.session_id, target.stage_id, target.user_id, parent, i + 1)
        out.append(Variation(spec, label))
    return out
