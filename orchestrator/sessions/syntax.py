"""The prompt syntax every front end shares: Midjourney-style flags and `{a,b}` permutations."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from orchestrator.checks import check_negative, check_prompt
from orchestrator.config import LimitSettings
from orchestrator.errors import InputError
from orchestrator.models import MAX_SEED, Family

#: widest aspect ratio accepted either way (a 4:1 banner)
MAX_RATIO = 4.0
ACCEPTED = (
    "--ar W:H (e.g. 16:9), --seed N, --no TEXT (e.g. --no text, watermark), --steps N, "
    f"--family {'|'.join(f.value for f in Family)}, --count N"
)
FLAG_NAMES: dict[str, str] = {
    "ar": "ar",
    "aspect": "ar",
    "seed": "seed",
    "no": "no",
    "steps": "steps",
    "family": "family",
    "count": "count",
}
# A flag starts a word: "--name". Phones turn "--" into an em dash, so accept that too.
_FLAG = re.compile(r"(?:^|(?<=\s))(?:--|\u2014)([A-Za-z][\w-]*)")
_ASPECT = re.compile(r"^\s*(\d{1,3})\s*[:x/]\s*(\d{1,3})\s*$")


@dataclass(frozen=True, slots=True)
class PromptFlags:
    """A prompt with its flags taken out; None means the flag was not given."""

    prompt: str
    negative: str | None = None
    aspect: str | None = None
    seed: int | None = None
    steps: int | None = None
    family: Family | None = None
    count: int | None = None


def _bad(message: str) -> InputError:
    return InputError(message, user_message=f"{message} Accepted: {ACCEPTED}.")


def _int(flag: str, value: str, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _bad(f"--{flag} expects a whole number, got {value!r}.") from None
    if not low <= n <= high:
        raise _bad(f"--{flag} must be between {low} and {high}, got {n}.")
    return n


def parse_aspect(text: str) -> tuple[int, int]:
    """'16:9' -> (16, 9); raises InputError for anything else or a ratio wider than 4:1."""
    m = _ASPECT.match(text)
    if not m:
        raise _bad(f"--ar expects W:H such as 16:9, got {text!r}.")
    w, h = int(m[1]), int(m[2])
    if w == 0 or h == 0 or max(w / h, h / w) > MAX_RATIO:
        raise _bad(f"--ar must be between 1:{MAX_RATIO:g} and {MAX_RATIO:g}:1, got {text}.")
    return w, h


def aspect_size(aspect: str, family: Family, max_side: int = 2048, *, scale: float = 1.0) -> tuple[int, int]:
    """Width and height for an aspect ratio near the family's native pixel count, multiples of 64."""
    w, h = parse_aspect(aspect)
    pixels = (family.native_size * scale) ** 2
    ratio = w / h
    width = math.sqrt(pixels * ratio)
    height = width / ratio
    # Shrink both sides together when one would pass the limit, so the ratio holds.
    over = max(width, height) / max_side
    if over > 1:
        width, height = width / over, height / over

    def snap(v: float) -> int:
        return int(min(max(64, round(v / 64) * 64), max_side // 64 * 64))

    return snap(width), snap(height)


def parse_prompt(text: str, limits: LimitSettings, *, allow_empty: bool = False) -> PromptFlags:
    """Take the flags out of a prompt; InputError for unknown flags, missing values or values out of range."""
    # allow_empty: an Explorer from an image alone has no prompt; the image carries the content.
    matches = list(_FLAG.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    values: dict[str, str] = {}
    negatives: list[str] = []
    for i, m in enumerate(matches):
        name = m[1].lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end].strip()
        flag = FLAG_NAMES.get(name)
        if flag is None:
            raise _bad(f"Unknown flag --{m[1]}.")
        if not value:
            raise _bad(f"--{name} needs a value.")
        if flag == "no":
            negatives.append(value.strip(" ,"))
        elif flag in values:
            raise _bad(f"--{name} is given twice.")
        else:
            values[flag] = value
    prompt = check_prompt(_tidy(prompt), limits, allow_empty=allow_empty)
    family = None
    if "family" in values:
        try:
            family = Family(values["family"].lower())
        except ValueError:
            raise _bad(f"--family {values['family']!r} is not a model family.") from None
    aspect = None
    if "ar" in values:
        w, h = parse_aspect(values["ar"])
        aspect = f"{w}:{h}"
    negative = tidy_negative(", ".join(n for n in negatives if n), limits) if negatives else None
    return PromptFlags(
        prompt=prompt,
        negative=negative or None,
        aspect=aspect,
        seed=_int("seed", values["seed"], 0, MAX_SEED) if "seed" in values else None,
        steps=_int("steps", values["steps"], 1, limits.max_steps) if "steps" in values else None,
        family=family,
        count=_int("count", values["count"], 1, limits.max_count) if "count" in values else None,
    )


def tidy_negative(text: str | None, limits: LimitSettings) -> str:
    """A negative prompt a person typed, tidied; InputError when it is over `max_negative_chars`."""
    return check_negative(_tidy(text or ""), limits)


def clip_negative(text: str, limit: int) -> str:
    """A negative prompt a machine merged (vision traits, an earlier image's), cut at a term boundary to `limit`."""
    tidy = _tidy(text)
    if len(tidy) <= limit:
        return tidy
    cut = tidy[: limit + 1]
    comma = cut.rfind(",")
    return _tidy(cut[:comma] if comma > 0 else tidy[:limit])


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip(" ,")


def _group(text: str) -> tuple[int, int, list[str]] | None:
    """The first top-level `{...}`: its span and its top-level options; InputError when braces do not balance."""
    depth = 0
    start = -1
    cuts: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            if depth == 0:
                raise InputError("unbalanced }", user_message="A '}' in the prompt has no matching '{'.")
            depth -= 1
            if depth == 0:
                bounds = [start, *cuts, i]
                return start, i, [text[a + 1 : b] for a, b in itertools.pairwise(bounds)]
        elif ch == "," and depth == 1:
            cuts.append(i)
    if depth:
        raise InputError("unbalanced {", user_message="A '{' in the prompt has no matching '}'.")
    return None


def _expand(text: str, limit: int) -> list[str]:
    group = _group(text)
    if group is None:
        return [text]
    a, b, options = group
    rests = _expand(text[b + 1 :], limit)
    out: list[str] = []
    for option in options:
        for head in _expand(option.strip(), limit):
            out += [text[:a] + head + rest for rest in rests]
            if len(out) > limit:
                raise _too_many(limit)
    return out


def expand(prompt: str, limit: int = 40) -> tuple[str, ...]:
    """Every permutation of `{a,b}` groups (nested groups too), option order kept, without duplicates."""
    out: list[str] = []
    for text in _expand(prompt, limit):
        tidy = _tidy(text)
        if tidy not in out:
            out.append(tidy)
    return tuple(out)


def _too_many(limit: int) -> InputError:
    return InputError(
        "too many permutations",
        user_message=f"The {{a,b}} groups make more than {limit} prompts; use fewer options.",
    )


def count_permutations(prompt: str) -> int:
    """How many prompts expand() makes of this prompt (without building them when there are no braces)."""
    if "{" not in prompt and "}" not in prompt:
        return 1
    return len(expand(prompt, limit=10_000))


__all__ = [
    "ACCEPTED",
    "PromptFlags",
    "aspect_size",
    "check_negative",
    "clip_negative",
    "count_permutations",
    "expand",
    "parse_aspect",
    "parse_prompt",
    "tidy_negative",
]
