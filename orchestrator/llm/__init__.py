"""The feedback pipeline: feedback text (+ picked images) -> a refined prompt, by Ollama or by the built-in rules."""

from __future__ import annotations

from orchestrator.llm.changes import (
    Changes,
    ImageRef4Llm,
    IntentEntry,
    PromptDiff,
    RefineRequest,
    RefineResult,
    Scope,
    Source,
    VisionComparison,
)
from orchestrator.llm.pipeline import CONCEPT_FIELDS, FeedbackPipeline, OllamaHealth, resolve_host, undo, vocab_options
from orchestrator.llm.prompt_text import apply_changes, diff
from orchestrator.llm.rules import RuleInterpreter

__all__ = [
    "CONCEPT_FIELDS",
    "Changes",
    "FeedbackPipeline",
    "ImageRef4Llm",
    "IntentEntry",
    "OllamaHealth",
    "PromptDiff",
    "RefineRequest",
    "RefineResult",
    "RuleInterpreter",
    "Scope",
    "Source",
    "VisionComparison",
    "apply_changes",
    "diff",
    "resolve_host",
    "undo",
    "vocab_options",
]
