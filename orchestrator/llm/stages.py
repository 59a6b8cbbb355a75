"""
The three Ollama stages (interpreter, vision analyzer, engineer): prompts, JSON schemas, validation.

The only module that reads raw Ollama replies; everything past it sees Changes, VisionComparison, EngineerAnswer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import ollama
import pydantic

from orchestrator.errors import LlmError
from orchestrator.llm.changes import Changes, ImageRef4Llm, IntentEntry, Scope, VisionComparison
from orchestrator.models import Family

log = logging.getLogger(__name__)

T = TypeVar("T")

#: answers longer than these are rambling, not a prompt; they count as invalid
MAX_ITEM_CHARS = 160
MAX_ITEMS = 24
MAX_PROMPT_CHARS = 1500
MAX_RATIONALE_CHARS = 1200
#: intent entries shown to the interpreter (older ones rarely matter and cost context)
INTENT_WINDOW = 6

_STR_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

INTERPRETER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "keep": _STR_LIST,
        "remove": _STR_LIST,
        "add": _STR_LIST,
        "modify": {"type": "object", "additionalProperties": {"type": "string"}},
        "emphasis_up": _STR_LIST,
        "emphasis_down": _STR_LIST,
        "negative_add": _STR_LIST,
        "scope": {"type": "string", "enum": ["global", "region"]},
        "target": {"type": ["string", "null"]},
        "borrow_from": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["keep", "remove", "add", "modify", "emphasis_up", "emphasis_down"],
}

ENGINEER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"},
        "rationale": {"type": "string"},
    },
    "required": ["prompt", "negative_prompt", "rationale"],
}

COMPARE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "selected_traits": _STR_LIST,
        "rejected_traits": _STR_LIST,
        "key_differences": {"type": "string"},
    },
    "required": ["selected_traits", "rejected_traits", "key_differences"],
}

DESCRIBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"description": {"type": "string"}},
    "required": ["description"],
}


def options_schema(n: int) -> dict[str, Any]:
    """Schema for n Concept Builder alternatives."""
    return {
        "type": "object",
        "properties": {"options": {"type": "array", "items": {"type": "string"}, "minItems": n, "maxItems": n}},
        "required": ["options"],
    }


INTERPRETER_SYSTEM = """You turn a user's feedback on AI-generated images into structured prompt edits.
Answer ONLY with JSON matching the schema. Fields:
- keep: phrases of the current prompt the user wants preserved exactly (copy them verbatim from the prompt)
- remove: things the user wants gone ("no people" -> "people"; "no blur" -> "blurry")
- add: new short prompt tags to add (e.g. "warmer light" -> "warm golden light", "warm color palette")
- modify: {old phrase of the prompt: replacement} ("make it a dog" on "a cat on a sofa" -> {"a cat": "a dog"})
- emphasis_up / emphasis_down: existing concepts to strengthen ("more fog") or weaken ("less fog")
- negative_add: tags for the negative prompt
- scope: "region" when the feedback is about one subject or area, else "global"; target: that subject or null
- borrow_from: image numbers the user points at ("more like #3" -> [3])
Use short Stable Diffusion style tags, not sentences. Leave lists empty when the feedback says nothing about them."""

_ENGINEER_STYLE = {
    True: "Write the prompt as comma-separated tags, most important first. Weight with (tag:1.2) to strengthen "
    "(at most 1.5) and (tag:0.8) to weaken.",
    False: "Write the prompt as one or two natural English sentences (Flux style). Never use weight syntax such "
    "as (tag:1.2); express emphasis with wording and position.",
}

ENGINEER_SYSTEM = """You are a prompt engineer for Stable Diffusion and Flux image models.
Apply the given structured changes to the current prompt mechanically and answer ONLY with JSON
{{"prompt", "negative_prompt", "rationale"}}.
Rules: every phrase in "keep" must appear verbatim in the new prompt; nothing in "remove" may remain
(put removed concepts into the negative prompt); add the "add" items where they read naturally; apply "modify"
replacements in place; keep the rest of the prompt unchanged. {style}
The rationale is one or two plain sentences for the user saying what changed and why."""

COMPARE_PROMPT = """The first {n_sel} image(s) were SELECTED by the user, the last {n_rej} were REJECTED.
Compare them. List short visual traits (style, lighting, palette, composition, subject details) common to the
selected images and absent from the rejected ones, then the traits of the rejected ones the user seems to dislike,
as short Stable Diffusion tags. Answer ONLY with JSON matching the schema."""


@dataclass(frozen=True, slots=True)
class EngineerAnswer:
    """The engineer stage's validated answer."""

    prompt: str
    negative_prompt: str
    rationale: str


class InvalidAnswer(ValueError):
    """An Ollama reply that is not valid JSON or does not fit the schema."""


# ---------------------------------------------------------------------- validation (pure)


def _obj(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidAnswer("the answer is not a JSON object")
    return data


def _str_list(d: Mapping[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    if key not in d:
        if required:
            raise InvalidAnswer(f"missing key {key!r}")
        return ()
    v = d[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidAnswer(f"{key!r} is not a list of strings")
    if len(v) > MAX_ITEMS or any(len(x) > MAX_ITEM_CHARS for x in v):
        raise InvalidAnswer(f"{key!r} is too long")
    return tuple(dict.fromkeys(x.strip() for x in v if x.strip()))


def _str(d: Mapping[str, Any], key: str, limit: int, *, allow_empty: bool = True) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise InvalidAnswer(f"{key!r} is missing or not a string")
    v = v.strip()
    if len(v) > limit:
        raise InvalidAnswer(f"{key!r} is longer than {limit} characters")
    if not v and not allow_empty:
        raise InvalidAnswer(f"{key!r} is empty")
    return v


def parse_changes(data: Any) -> Changes:
    """Validate the interpreter's JSON into Changes."""
    d = _obj(data)
    modify = d.get("modify", {})
    if not isinstance(modify, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in modify.items()):
        raise InvalidAnswer("'modify' is not an object of strings")
    if len(modify) > MAX_ITEMS or any(len(k) > MAX_ITEM_CHARS or len(v) > MAX_ITEM_CHARS for k, v in modify.items()):
        raise InvalidAnswer("'modify' is too long")
    scope = d.get("scope", "global")
    if scope not in ("global", "region"):
        raise InvalidAnswer("'scope' is not global or region")
    target = d.get("target")
    if target is not None and (not isinstance(target, str) or len(target) > MAX_ITEM_CHARS):
        raise InvalidAnswer("'target' is not a short string")
    borrow = d.get("borrow_from", [])
    if not isinstance(borrow, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in borrow):
        raise InvalidAnswer("'borrow_from' is not a list of integers")
    return Changes(
        keep=_str_list(d, "keep", required=True),
        remove=_str_list(d, "remove", required=True),
        add=_str_list(d, "add", required=True),
        modify={k.strip(): v.strip() for k, v in modify.items() if k.strip()},
        emphasis_up=_str_list(d, "emphasis_up", required=True),
        emphasis_down=_str_list(d, "emphasis_down", required=True),
        negative_add=_str_list(d, "negative_add", required=False),
        scope=Scope(scope),
        target=target.strip() or None if isinstance(target, str) else None,
        borrow_from=tuple(dict.fromkeys(borrow)),
    )


def parse_engineer(data: Any) -> EngineerAnswer:
    """Validate the engineer's JSON."""
    d = _obj(data)
    return EngineerAnswer(
        prompt=_str(d, "prompt", MAX_PROMPT_CHARS, allow_empty=False),
        negative_prompt=_str(d, "negative_prompt", MAX_PROMPT_CHARS),
        rationale=_str(d, "rationale", MAX_RATIONALE_CHARS),
    )


def parse_comparison(data: Any) -> VisionComparison:
    """Validate the vision comparison's JSON."""
    d = _obj(data)
    return VisionComparison(
        selected_traits=_str_list(d, "selected_traits", required=True),
        rejected_traits=_str_list(d, "rejected_traits", required=True),
        key_differences=_str(d, "key_differences", MAX_RATIONALE_CHARS),
    )


def parse_description(data: Any) -> str:
    """Validate a one-image description."""
    return _str(_obj(data), "description", MAX_RATIONALE_CHARS, allow_empty=False)


def parse_options(data: Any, n: int) -> tuple[str, ...]:
    """Validate n distinct Concept Builder options."""
    opts = _str_list(_obj(data), "options", required=True)
    if len(opts) < n:
        raise InvalidAnswer(f"asked for {n} distinct options, got {len(opts)}")
    return opts[:n]


# ---------------------------------------------------------------------- one structured call


async def ask_json(
    client: ollama.AsyncClient,
    *,
    host: str,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any],
    parse: Callable[[Any], T],
    timeout_s: float,
) -> T:
    """One structured-output chat: schema in `format`, validated, retried once, bounded; LlmError says why."""
    try:
        async with asyncio.timeout(timeout_s):
            problem = ""
            for attempt in (1, 2):
                resp = await client.chat(
                    model=model,
                    messages=list(messages),
                    format=dict(schema),
                    stream=False,
                    options={"temperature": 0.2},
                )
                content = resp.message.content or ""
                try:
                    return parse(json.loads(content))
                except (json.JSONDecodeError, InvalidAnswer) as e:
                    problem = str(e)
                    log.warning("model=%s answer %d invalid: %s", model, attempt, problem)
            raise LlmError(f"{model} answered invalid JSON twice ({problem})")
    except TimeoutError:
        raise LlmError(f"{model} did not answer within {timeout_s:g} s") from None
    except ConnectionError:
        raise LlmError(f"Ollama not reachable at {host}") from None
    except ollama.ResponseError as e:
        if e.status_code == 404:
            raise LlmError(f"model {model} is not installed on Ollama (ollama pull {model})") from None
        raise LlmError(f"Ollama answered HTTP {e.status_code} for {model}: {str(e.error)[:200]}") from None
    except httpx.TimeoutException:
        raise LlmError(f"Ollama at {host} did not answer in time") from None
    except httpx.HTTPError as e:
        raise LlmError(f"Ollama not reachable at {host} ({type(e).__name__})") from None
    except pydantic.ValidationError:
        raise LlmError(f"Ollama sent a reply for {model} that is not a chat response") from None


# ---------------------------------------------------------------------- stages


def _intent_lines(intent: Sequence[IntentEntry]) -> str:
    if not intent:
        return "(none yet)"
    lines = []
    for e in intent[-INTENT_WINDOW:]:
        lines.append(f"- feedback {e.feedback!r} -> changes {json.dumps(e.changes.to_dict())}")
    return "\n".join(lines)


def _image_lines(images: Sequence[ImageRef4Llm]) -> str:
    return "\n".join(f"#{i.number}: {i.prompt}" for i in images) or "(none)"


@dataclass(frozen=True, slots=True)
class StageCall:
    """What every stage needs to reach Ollama."""

    client: ollama.AsyncClient
    host: str
    timeout_s: float

    async def ask(
        self, model: str, messages: Sequence[Mapping[str, Any]], schema: Mapping[str, Any], parse: Callable[[Any], T]
    ) -> T:
        """One structured call to `model` through this client (see ask_json)."""
        return await ask_json(
            self.client,
            host=self.host,
            model=model,
            messages=messages,
            schema=schema,
            parse=parse,
            timeout_s=self.timeout_s,
        )


class FeedbackInterpreter:
    """Stage 1: feedback text (+ what was picked, + the intent so far) -> Changes."""

    def __init__(self, call: StageCall, model: str) -> None:
        self.call, self.model = call, model

    async def interpret(
        self,
        *,
        feedback: str,
        prompt: str,
        negative: str,
        selected: Sequence[ImageRef4Llm],
        rejected: Sequence[ImageRef4Llm],
        stage_images: Sequence[ImageRef4Llm],
        intent: Sequence[IntentEntry],
    ) -> Changes:
        """Ask the interpreter model for structured changes."""
        user = (
            f"Current prompt: {prompt}\nNegative prompt: {negative or '(none)'}\n"
            f"Selected images: {[i.number for i in selected]}\nRejected images: {[i.number for i in rejected]}\n"
            f"Images of this stage and their prompts:\n{_image_lines(stage_images)}\n"
            f"Earlier feedback in this session:\n{_intent_lines(intent)}\n\nUser feedback: {feedback}"
        )
        messages = [{"role": "system", "content": INTERPRETER_SYSTEM}, {"role": "user", "content": user}]
        return await self.call.ask(self.model, messages, INTERPRETER_SCHEMA, parse_changes)


class VisionAnalyzer:
    """Stage 2 (optional): what distinguishes the selected images from the rejected ones."""

    def __init__(self, call: StageCall, model: str) -> None:
        self.call, self.model = call, model

    async def describe(self, image_jpeg: bytes) -> str:
        """One image -> a short description of composition, style, lighting and mood."""
        messages = [
            {
                "role": "user",
                "content": "Describe the composition, style, lighting, palette and mood of this image in two "
                "sentences. Answer ONLY with JSON matching the schema.",
                "images": [base64.b64encode(image_jpeg).decode()],
            }
        ]
        return await self.call.ask(self.model, messages, DESCRIBE_SCHEMA, parse_description)

    async def compare(self, selected: Sequence[bytes], rejected: Sequence[bytes]) -> VisionComparison:
        """Selected vs rejected JPEGs (already downscaled) -> traits of each side."""
        images = [base64.b64encode(b).decode() for b in [*selected, *rejected]]
        messages = [
            {
                "role": "user",
                "content": COMPARE_PROMPT.format(n_sel=len(selected), n_rej=len(rejected)),
                "images": images,
            }
        ]
        return await self.call.ask(self.model, messages, COMPARE_SCHEMA, parse_comparison)


class PromptEngineer:
    """Stage 3: current prompt + Changes (+ vision traits) -> new prompt, negative prompt, rationale."""

    def __init__(self, call: StageCall, model: str) -> None:
        self.call, self.model = call, model

    async def engineer(
        self,
        *,
        prompt: str,
        negative: str,
        changes: Changes,
        family: Family,
        vision: VisionComparison | None,
        borrowed: Sequence[str],
    ) -> EngineerAnswer:
        """Ask the engineer model to apply the changes, family-aware."""
        parts = [
            f"Model family: {family.value}",
            f"Current prompt: {prompt}",
            f"Current negative prompt: {negative or '(none)'}",
            f"Structured changes: {json.dumps(changes.to_dict())}",
        ]
        if borrowed:
            parts.append(f"Tags to borrow from the image the user pointed at: {list(borrowed)}")
        if vision is not None:
            parts.append(f"Traits of the images the user selected: {list(vision.selected_traits)}")
            parts.append(f"Traits of the rejected images (negative prompt candidates): {list(vision.rejected_traits)}")
            parts.append(f"Key differences: {vision.key_differences}")
        system = ENGINEER_SYSTEM.format(style=_ENGINEER_STYLE[family.uses_tags])
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]
        return await self.call.ask(self.model, messages, ENGINEER_SCHEMA, parse_engineer)


async def suggest_options(
    call: StageCall, model: str, field: str, subject: str, locked: Mapping[str, str], n: int
) -> tuple[str, ...]:
    """Concept Builder over Ollama: n distinct alternatives for one field of the concept."""
    locked_text = ", ".join(f"{k}: {v}" for k, v in locked.items()) or "(nothing locked yet)"
    user = (
        f"We are building an image concept. Subject: {subject}. Locked so far: {locked_text}.\n"
        f"Suggest {n} distinct, vivid alternatives for the {field} of the image, each a short Stable Diffusion "
        "phrase that fits the locked fields. Answer ONLY with JSON matching the schema."
    )
    return await call.ask(model, [{"role": "user", "content": user}], options_schema(n), lambda d: parse_options(d, n))
