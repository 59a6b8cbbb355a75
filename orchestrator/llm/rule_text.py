"""
Feedback text made ready for the clause patterns: normalised, quotes set aside, filler trimmed.

Typos and short forms become the words the patterns know, quoted phrases are set aside and restored exactly as
typed, and politeness, filler and intensifiers are trimmed from each clause, so that rules.py matches only clean
clauses.
"""

from __future__ import annotations

import re
from functools import cache

from orchestrator.llm.lexicon import (
    lexicon,
)

_QUOTE = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<![\w])'([^']+)'(?![\w])")
_INTENSIFIERS = re.compile(
    r"\b(?:really|very|extremely|so much|a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of|even|just|"
    r"quite|super|(?:much|way|a lot)(?= (?:more|less|too|\w+er)\b))\b(?!\s*$)"
)
_LEADING = re.compile(
    r"^(?:please|pls|plz|can you|could you|would you|maybe|perhaps|i think|i want you to|"
    r"let's|lets|try to|try|just|also|and|but|so|ok|okay|now|then|we need to|you should|kindly|hmm+|"
    r"i'd prefer|i prefer|how about|what about|go for|actually|oh|ah|yeah|yes|no,|hey|only|rather|i'd rather have|"
    r"i'd rather|i would rather)\s+"
)
_TRAILING = re.compile(
    r"\s+(?:please|pls|too|as well|instead|a bit|a little|in it|to it|in there|anymore|overall|next to it|"
    r"for me|if possible|if you can|thanks|thank you|though|maybe|again|at all|completely|entirely|altogether|"
    r"for now|somehow|i guess|i think|i suppose|perhaps|or something|if that makes sense|lol|haha)$"
)


def normalise_feedback(text: str) -> str:
    """Lower case, plain apostrophes, "not so much" as "less", and typos replaced by the words the patterns know."""
    low = text.lower().replace("\u2019", "'").replace(" & ", " and ")
    low = re.sub(r"\bnot (?:so|as|that) (?:much|many)\b", "less", low)
    synonyms = lexicon().synonyms
    # typos and short forms ("remvoe", "colorfull", "dont") become the words the patterns know
    return re.sub(r"[a-z']+", lambda m: synonyms.get(m.group(0), m.group(0)), low)


def extract_quotes(text: str) -> tuple[str, list[str]]:
    """The text with each quoted phrase replaced by a placeholder (qqNqq), and the phrases in order."""
    quotes: list[str] = []

    def sub(m: re.Match[str]) -> str:
        quotes.append(next(g for g in m.groups() if g is not None))
        return f" qq{len(quotes) - 1}qq "

    return _QUOTE.sub(sub, text), quotes


def restore_quotes(s: str, quotes: list[str]) -> str:
    """Put the quoted phrases back into `s`, exactly as typed (case and all)."""
    out = re.sub(r"\s*qq(\d+)qq\s*", lambda m: f" {quotes[int(m.group(1))]} ", s)
    return re.sub(r"\s+", " ", out).strip()


def tidy_clause(clause: str) -> str:
    """A clause without politeness, filler and intensifiers ("please make it a bit warmer" -> "make it warmer")."""
    c = re.sub(r"\s+", " ", clause.strip().strip("\"'“”.,;:!?-")).strip()
    prev = None
    while prev != c:
        prev = c
        c = _LEADING.sub("", c)
        c = _TRAILING.sub("", c)
        c = _INTENSIFIERS.sub(_intensifier, c)
        c = re.sub(r"\s+", " ", c).strip().strip("?!.")
    return c


@cache
def _countable_things() -> frozenset[str]:
    lx = lexicon()
    return lx.wearables | lx.places | frozenset(lx.kinds) | frozenset(w for ws in lx.kinds.values() for w in ws)


def _intensifier(m: re.Match[str]) -> str:
    # "a little warmer" softens; "a little jacket", "a little house" is an article and a size of a thing
    if m.group(0) == "a little":
        following = m.string[m.end() :].split()
        if following and following[0] in _countable_things():
            return m.group(0)
    return " "
