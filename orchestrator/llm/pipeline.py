"""Runs the feedback stages over Ollama and falls back to the rules when Ollama is missing, slow or wrong."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import httpx
import ollama

from orchestrator.config import LlmSettings
from orchestrator.errors import LlmError
from orchestrator.llm.changes import (
    Changes,
    ImageRef4Llm,
    IntentEntry,
    RefineRequest,
    RefineResult,
    Source,
    VisionComparison,
)
from orchestrator.llm.operations import broken_invariant
from orchestrator.llm.prompt_text import apply_changes, borrow_tokens, diff, matches, tokenize
from orchestrator.llm.rules import RuleInterpreter
from orchestrator.llm.stages import (
    FeedbackInterpreter,
    PromptEngineer,
    StageCall,
    VisionAnalyzer,
    suggest_options,
)
from orchestrator.llm.vocab import CONCEPT_VOCAB
from orchestrator.store import downscaled_jpeg

log = logging.getLogger(__name__)

DEFAULT_PORT = 11434
#: a missing Ollama must fail fast: refused connections are instant, but an unroutable host needs this bound
CONNECT_TIMEOUT_S = 2.0
CONCEPT_FIELDS = tuple(CONCEPT_VOCAB)

ImageLoader = Callable[[Path, int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class OllamaHealth:
    """Whether Ollama answers, its version and which configured models it lacks."""

    reachable: bool
    version: str | None = None
    missing_models: tuple[str, ...] = ()
    error: str | None = None


def resolve_host(host: str | None) -> str:
    """settings.host, else $OLLAMA_HOST, else localhost:11434 -> a base URL (the ollama client's own rules)."""
    raw = (host or os.environ.get("OLLAMA_HOST") or "").strip() or f"127.0.0.1:{DEFAULT_PORT}"
    if "://" not in raw:
        raw = "http://" + raw
    scheme, rest = raw.split("://", 1)
    hostport = rest.split("/", 1)[0]
    if not re.search(r":\d+$", hostport) or hostport.endswith("]"):
        hostport = f"{hostport}:{DEFAULT_PORT}"
    hostport = hostport.replace("0.0.0.0", "127.0.0.1")
    return f"{scheme}://{hostport}"


def _jpeg_sync(path: Path, max_side: int) -> bytes:
    from PIL import Image

    with Image.open(path) as src:
        return downscaled_jpeg(src, max_side, quality=85)


async def load_jpeg(path: Path, max_side: int) -> bytes:
    """Default image loader: downscale to max_side and encode JPEG, off the event loop."""
    return await asyncio.to_thread(_jpeg_sync, path, max_side)


def undo(entries: Sequence[IntentEntry]) -> tuple[str, str] | None:
    """The (prompt, negative) before the last refinement, or None when there is nothing to undo."""
    if not entries:
        return None
    last = entries[-1]
    return last.old_prompt, last.old_negative


def _model_names(tags: ollama.ListResponse) -> set[str]:
    names: set[str] = set()
    for m in tags.models:
        if m.model:
            names.add(m.model)
            # "minicpm-v" in settings means "minicpm-v:latest" to Ollama
            if m.model.endswith(":latest"):
                names.add(m.model.removesuffix(":latest"))
    return names


class FeedbackPipeline:
    """Feedback text (+ picked images) -> a refined prompt, by Ollama when it works and by the rules otherwise."""

    def __init__(
        self,
        settings: LlmSettings,
        *,
        client: ollama.AsyncClient | None = None,
        image_loader: ImageLoader | None = None,
    ) -> None:
        self.settings = settings
        self.host = resolve_host(settings.host)
        self._client = client
        self._load = image_loader or load_jpeg
        self.rules = RuleInterpreter()

    @contextlib.asynccontextmanager
    async def _ollama(self) -> AsyncIterator[ollama.AsyncClient]:
        # an injected client belongs to the caller; otherwise one per operation, so nothing outlives a call
        if self._client is not None:
            yield self._client
            return
        timeout = httpx.Timeout(self.settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.settings.timeout_s))
        client = ollama.AsyncClient(host=self.host, timeout=timeout)
        try:
            yield client
        finally:
            await client.close()  # type: ignore[no-untyped-call]

    def _call(self, client: ollama.AsyncClient) -> StageCall:
        return StageCall(client=client, host=self.host, timeout_s=self.settings.timeout_s)

    # ------------------------------------------------------------------ refine

    async def refine(self, req: RefineRequest) -> RefineResult:
        """One piece of feedback -> a refined prompt; never raises for LLM trouble (the rules answer instead)."""
        # the rules parse with lemminflect's tables (loaded on first use) and edit the prompt model: CPU work,
        # so it runs off the event loop
        if not self.settings.enabled:
            return await asyncio.to_thread(self.refine_rules, req)
        try:
            return await self._refine_ollama(req)
        except LlmError as e:
            log.info("feedback pipeline fell back to rules: %s", e)
            return await asyncio.to_thread(self.refine_rules, req, fallback_reason=str(e))
        except Exception:
            log.exception("unexpected error in the Ollama feedback pipeline")
            reason = "unexpected error in the language-model pipeline"
            return await asyncio.to_thread(self.refine_rules, req, fallback_reason=reason)

    def refine_rules(
        self,
        req: RefineRequest,
        *,
        changes: Changes | None = None,
        extra_negative: Sequence[str] = (),
        fallback_reason: str | None = None,
    ) -> RefineResult:
        """The rule-based path (also the engineer of last resort when an LLM broke keep/remove)."""
        numbers = {i.number for i in req.stage_images}
        not_understood: tuple[str, ...] = ()
        if changes is None:
            reading = self.rules.read(req.feedback, req.prompt, numbers)
            changes, not_understood = reading.changes, reading.not_understood
        borrowed, seed = self._borrow(req, changes)
        out = apply_changes(
            req.prompt, req.negative_prompt, changes, req.family, borrowed=borrowed, extra_negative=extra_negative
        )
        rationale = out.rationale
        if changes.borrow_from and seed is not None:
            rationale = rationale.rstrip(".") + f"; borrowed from #{changes.borrow_from[0]} and its seed {seed}."
        if not_understood:
            # a clause no rule maps changes nothing; saying so beats pasting the request into the prompt
            said = "; ".join(f'"{c}"' for c in not_understood)
            done = rationale if out.steps or (changes.borrow_from and seed is not None) else ""
            rationale = (done.rstrip(".") + ". " if done else "") + f"I did not understand: {said}."
        return RefineResult(
            prompt=out.prompt,
            negative_prompt=out.negative_prompt,
            rationale=rationale[0].upper() + rationale[1:],
            changes=changes,
            source=Source.RULES,
            diff=diff(req.prompt, out.prompt, req.negative_prompt, out.negative_prompt),
            fallback_reason=fallback_reason,
            seed=seed,
        )

    @staticmethod
    def _borrow(req: RefineRequest, changes: Changes) -> tuple[tuple[str, ...], int | None]:
        by_number = {i.number: i for i in req.stage_images}
        borrowed: list[str] = []
        seed: int | None = None
        for n in changes.borrow_from:
            img = by_number.get(n)
            if img is None:
                continue
            seed = img.seed if seed is None else seed
            borrowed.extend(t for t in borrow_tokens(req.prompt, img.prompt) if t not in borrowed)
        # borrowing never re-adds what this feedback removes
        borrowed = [b for b in borrowed if not any(matches(b, r) for r in changes.remove)]
        return tuple(borrowed), seed

    async def _refine_ollama(self, req: RefineRequest) -> RefineResult:
        s = self.settings
        async with self._ollama() as client:
            call = self._call(client)
            changes = await FeedbackInterpreter(call, s.interpreter_model).interpret(
                feedback=req.feedback,
                prompt=req.prompt,
                negative=req.negative_prompt,
                selected=req.selected,
                rejected=req.rejected,
                stage_images=req.stage_images,
                intent=req.intent,
            )
            numbers = {i.number for i in req.stage_images}
            changes = _only_known_images(changes, numbers)
            vision = await self._compare(call, req.selected, req.rejected)
            borrowed, seed = self._borrow(req, changes)
            answer = await PromptEngineer(call, s.engineer_model).engineer(
                prompt=req.prompt,
                negative=req.negative_prompt,
                changes=changes,
                family=req.family,
                vision=vision,
                borrowed=borrowed,
            )
        prompt, negative = answer.prompt, answer.negative_prompt
        if not req.family.uses_tags:
            prompt = re.sub(r"\(([^():]+):\s*[0-9.]+\)", r"\1", prompt)
        if vision is not None:
            # rejected traits become negative candidates even when the engineer forgot them
            negative = _merge_negative(negative, vision.rejected_traits, prompt)
        broken = await asyncio.to_thread(
            partial(
                broken_invariant,
                req.prompt,
                prompt,
                changes,
                feedback=req.feedback,
                old_negative=req.negative_prompt,
                new_negative=negative,
            )
        )
        if broken:
            log.warning("engineer model=%s broke an invariant: %s", s.engineer_model, broken)
            return await asyncio.to_thread(
                self.refine_rules,
                req,
                changes=changes,
                extra_negative=vision.rejected_traits if vision is not None else (),
                fallback_reason=f"{s.engineer_model} {broken}; the rules engineer applied the changes",
            )
        return RefineResult(
            prompt=prompt,
            negative_prompt=negative,
            rationale=answer.rationale or "The language model applied your feedback.",
            changes=changes,
            source=Source.OLLAMA,
            diff=diff(req.prompt, prompt, req.negative_prompt, negative),
            fallback_reason=None,
            seed=seed,
        )

    async def _compare(
        self, call: StageCall, selected: Sequence[ImageRef4Llm], rejected: Sequence[ImageRef4Llm]
    ) -> VisionComparison | None:
        sel = [i.path for i in selected if i.path is not None][: self.settings.vision_max_images]
        rej = [i.path for i in rejected if i.path is not None][: self.settings.vision_max_images]
        if not sel or not rej:
            return None
        side = self.settings.vision_max_side
        try:
            sel_b = await asyncio.gather(*(self._load(p, side) for p in sel))
            rej_b = await asyncio.gather(*(self._load(p, side) for p in rej))
        except OSError as e:
            raise LlmError(f"could not read an image for the vision model ({type(e).__name__})") from None
        return await VisionAnalyzer(call, self.settings.vision_model).compare(sel_b, rej_b)

    # ------------------------------------------------------------------ health and concepts

    async def health(self) -> OllamaHealth:
        """Reach /api/version and /api/tags; list configured models Ollama does not have."""
        s = self.settings
        try:
            async with self._ollama() as client:
                async with asyncio.timeout(s.timeout_s):
                    tags = await client.list()
                    version = await self._version()
        except (ConnectionError, httpx.HTTPError, TimeoutError) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else f"Ollama not reachable at {self.host}"
            return OllamaHealth(reachable=False, error=reason)
        except ollama.ResponseError as e:
            return OllamaHealth(reachable=False, error=f"Ollama answered HTTP {e.status_code}")
        have = _model_names(tags)
        wanted = dict.fromkeys((s.interpreter_model, s.engineer_model, s.vision_model))
        missing = tuple(m for m in wanted if m not in have and f"{m}:latest" not in have)
        return OllamaHealth(reachable=True, version=version, missing_models=missing)

    async def _version(self) -> str | None:
        # the ollama client has no version call; this is the same plain GET it would make
        timeout = httpx.Timeout(self.settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.settings.timeout_s))
        async with httpx.AsyncClient(base_url=self.host, timeout=timeout) as http:
            r = await http.get("/api/version")
            r.raise_for_status()
            data = r.json()
        v = data.get("version") if isinstance(data, dict) else None
        return v if isinstance(v, str) else None

    async def concept_options(
        self, field: str, subject: str, locked: Mapping[str, str], n: int
    ) -> tuple[tuple[str, ...], Source]:
        """Concept Builder: n alternatives for one field, by Ollama or from the built-in vocabulary."""
        if field not in CONCEPT_VOCAB:
            raise ValueError(f"unknown concept field {field!r}; expected one of {', '.join(CONCEPT_FIELDS)}")
        if n < 1:
            return (), Source.RULES
        if self.settings.enabled:
            try:
                async with self._ollama() as client:
                    opts = await suggest_options(
                        self._call(client), self.settings.interpreter_model, field, subject, locked, n
                    )
                return opts, Source.OLLAMA
            except LlmError as e:
                log.warning("concept options fell back to the vocabulary: %s", e)
        return vocab_options(field, subject, locked, n), Source.RULES


def vocab_options(field: str, subject: str, locked: Mapping[str, str], n: int) -> tuple[str, ...]:
    """Pick n options for a field from the built-in vocabulary, rotated by subject so subjects differ."""
    pool = [o.format(s=_bare(subject) or "subject") for o in CONCEPT_VOCAB[field]]
    current = locked.get(field)
    pool = [o for o in pool if o != current]
    start = zlib.crc32(f"{field}:{subject}".encode()) % len(pool)
    rotated = pool[start:] + pool[:start]
    return tuple(rotated[:n])


def _bare(subject: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", subject.strip(), flags=re.IGNORECASE)


def _only_known_images(changes: Changes, numbers: set[int]) -> Changes:
    if not changes.borrow_from:
        return changes
    return replace(changes, borrow_from=tuple(n for n in changes.borrow_from if n in numbers))


def _merge_negative(negative: str, traits: Sequence[str], prompt: str) -> str:
    have = [t.text for t in tokenize(negative)]
    prompt_tokens = tokenize(prompt)
    for trait in traits:
        if not any(matches(h, trait) for h in have) and not any(matches(p.text, trait) for p in prompt_tokens):
            have.append(trait)
    return ", ".join(have)
