"""Prompt tokens: comma-separated pieces of a prompt and their (tag:1.2) attention weights."""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.models import Family

_WEIGHTED = re.compile(r"^\((.+):\s*([0-9]*\.?[0-9]+)\)$")


@dataclass(frozen=True, slots=True)
class Token:
    """One comma-separated piece of a prompt and its attention weight (1.0 = plain)."""

    text: str
    weight: float = 1.0

    def render(self, family: Family) -> str:
        """The token as the family writes it: (tag:1.2) for tag families, plain text for Flux."""
        if not family.uses_tags or abs(self.weight - 1.0) < 1e-6:
            return self.text
        return f"({self.text}:{self.weight:.1f})"


def _split_top_level(text: str, seps: str) -> list[str]:
    # commas inside (a, b:1.2) groups must not split the group
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_token(raw: str) -> Token:
    """'(tag:1.2)' -> Token('tag', 1.2); '((tag))' -> 1.21; '[tag]' -> 0.9; plain text -> 1.0."""
    text = raw.strip()
    m = _WEIGHTED.match(text)
    if m:
        return Token(m.group(1).strip(), round(float(m.group(2)), 2))
    weight = 1.0
    while len(text) > 2 and text[0] == "(" and text[-1] == ")":
        text, weight = text[1:-1].strip(), weight * 1.1
    while len(text) > 2 and text[0] == "[" and text[-1] == "]":
        text, weight = text[1:-1].strip(), weight / 1.1
    return Token(text, round(weight, 2))


def tokenize(prompt: str) -> list[Token]:
    """Split a prompt into weighted tokens (commas; also sentence ends, so Flux prose splits into clauses)."""
    tokens = []
    for part in _split_top_level(prompt, ",;\n"):
        for sentence in re.split(r"(?<=[a-z0-9)\]])\.\s+|\.$", part):
            if sentence.strip():
                tokens.append(parse_token(sentence.strip().rstrip(".")))
    return [t for t in tokens if t.text]
