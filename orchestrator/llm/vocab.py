"""
Built-in vocabularies: feedback adjectives mapped to SD tokens, and Concept Builder options.

The words live in data/looks.yaml and data/concepts.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.llm.lexicon import data


@dataclass(frozen=True, slots=True)
class Look:
    """What one feedback adjective means for a prompt: tokens to add, tokens it contradicts, negatives."""

    add: tuple[str, ...]
    #: existing prompt tokens that say the opposite and must go
    conflicts: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()


_LOOKS = data("looks.yaml")

#: canonical adjective -> Look; keys are the base forms the interpreter reduces comparatives to
LOOKS: dict[str, Look] = {
    str(k): Look(
        add=tuple(str(x) for x in v["add"]),
        conflicts=tuple(str(x) for x in v.get("conflicts", ())),
        negative=tuple(str(x) for x in v.get("negative", ())),
    )
    for k, v in _LOOKS["looks"].items()
}

#: the ways people say the adjectives above (comparatives, synonyms) -> canonical key
ADJECTIVES: dict[str, str] = {str(k): str(v) for k, v in _LOOKS["adjectives"].items()}

#: "less X" / "too X" -> the look that means the opposite
OPPOSITES: dict[str, str] = {str(k): str(v) for k, v in _LOOKS["opposites"].items()}

#: nouns after an adjective that only say which aspect it is about ("warmer light", "darker tones")
ASPECT_NOUNS: frozenset[str] = frozenset(str(x) for x in _LOOKS["aspect_nouns"])

#: tokens that are quality boilerplate, never the subject
QUALITY_TAGS: frozenset[str] = frozenset(str(x) for x in _LOOKS["quality_tags"])

#: Concept Builder fields and good alternatives for each (the rules path of concept_options)
CONCEPT_VOCAB: dict[str, tuple[str, ...]] = {
    str(k): tuple(str(x) for x in v) for k, v in data("concepts.yaml")["concepts"].items()
}

for _key, _look in LOOKS.items():
    if not _look.add:
        raise ValueError(f"look {_key!r} in looks.yaml adds nothing")
