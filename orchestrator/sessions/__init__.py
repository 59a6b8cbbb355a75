"""Funnel sessions: Draft Grid, Concept Builder and Explorer, group votes and the prompt syntax."""

from orchestrator.sessions.models import (
    CONCEPT_FIELDS,
    ConceptState,
    Flow,
    ImageInfo,
    LineageLink,
    Role,
    Session,
    SessionSettings,
    SessionState,
    StageImage,
    StageStatus,
    StageView,
    Suggestion,
    Visibility,
    VoteResult,
)
from orchestrator.sessions.syntax import PromptFlags, aspect_size, expand, parse_prompt

__all__ = [
    "CONCEPT_FIELDS",
    "ConceptState",
    "Flow",
    "ImageInfo",
    "LineageLink",
    "PromptFlags",
    "Role",
    "Session",
    "SessionSettings",
    "SessionState",
    "StageImage",
    "StageStatus",
    "StageView",
    "Suggestion",
    "Visibility",
    "VoteResult",
    "aspect_size",
    "expand",
    "parse_prompt",
]
