"""
Checks over whole prompts: what a new prompt may not have that its old one did not.

Request words leaked into a prompt or its negative, orphaned articles and prepositions, duplicate or
contradictory tags, weights out of range. The pipeline refuses a model's answer that fails one, the rules keep
to them, and bench/feedback_quality.py scores every case by them.
"""

from __future__ import annotations

import itertools
import re

from orchestrator.llm.lexicon import (
    ARTICLES,
    CONJUNCTIONS,
    DETERMINERS,
    PREPOSITIONS,
    is_base_verb,
    lemma,
    lexicon,
    split_words,
)
from orchestrator.llm.prompt_model import ADVERB_PARTICLES, find_terms, parse_tag
from orchestrator.llm.tokens import tokenize

#: weights a checkpoint tolerates without artefacts (the rules engineer stays inside; checks enforce it)
MIN_WEIGHT = 0.5
MAX_WEIGHT = 1.5


def phrase_in(prompt: str, phrase: str) -> bool:
    """The phrase's words (by lemma, articles ignored) in this order inside one tag of the prompt."""
    want = [lemma(w) for w in split_words(phrase.replace("&", " and ")) if w not in ARTICLES]
    if not want:
        return False
    for t in tokenize(prompt):
        have = [lemma(w) for w in split_words(t.text.replace("-", " ")) if w not in ARTICLES]
        have2 = [lemma(w) for w in split_words(t.text) if w not in ARTICLES]
        for seq in (have, have2):
            n = len(want)
            if any(seq[i : i + n] == want for i in range(len(seq) - n + 1)):
                return True
        want2 = [lemma(w) for w in split_words(phrase.replace("-", " ")) if w not in ARTICLES]
        n = len(want2)
        if any(have[i : i + n] == want2 for i in range(len(have) - n + 1)):
            return True
    return False


def leaked_request_words(old_prompt: str, new_prompt: str) -> list[str]:
    """Request words ('should', 'make it', ...) in the new prompt that the old one did not have."""
    old = " ".join(split_words(old_prompt))
    new = " ".join(split_words(new_prompt))
    return [
        r
        for r in lexicon().request_words
        if re.search(rf"\b{re.escape(r)}\b", new) and not re.search(rf"\b{re.escape(r)}\b", old)
    ]


#: words that ask for something or point at the image: they belong to the request, never to a prompt's tag
REQUEST_ONLY_WORDS = frozenset(
    {"make", "let", "should", "please", "can", "could", "would", "must", "want", "it", "he", "she", "they", "him",
     "her", "them", "i", "me", "you", "we", "us"}
)  # fmt: skip
#: verbs that ask for an action of someone: "make the cat wear ...", "let the fox carry ...", "get him to smile"
_CAUSATIVES = frozenset({"make", "makes", "have", "let", "lets", "get", "help"})
#: "make it look like", "make her seem older": verbs of appearance, said of the picture and not done by the subject
APPEARANCE_VERBS = frozenset({"be", "look", "feel", "seem", "appear", "become", "turn", "get", "stay", "keep", "go"})


def request_verbs(feedback: str) -> frozenset[str]:
    """
    The verbs a request asks someone to do: 'wear' in 'make the cat wear a crown', 'smile' in 'get him to smile'.

    After a causative (make/have/let/get/help) come a pronoun or a short noun phrase, then the verb (after an
    optional "to"): a base-form verb followed by nothing, a determiner or a preposition.
    """
    ws = split_words(feedback)
    out: set[str] = set()
    for i, w in enumerate(ws):
        if w not in _CAUSATIVES or (w == "get" and ws[i + 1 : i + 2] == ["rid"]):
            continue
        # the verb follows its doer: a pronoun, or a noun phrase whose first word after the determiner is the noun
        first = i + 3 if ws[i + 1 : i + 2] and ws[i + 1] in (DETERMINERS | ARTICLES) - {"her"} else i + 2
        for k in range(first, min(i + 7, len(ws))):
            v = ws[k]
            if v == "to":
                continue
            if v in APPEARANCE_VERBS or v in DETERMINERS or v in PREPOSITIONS or v in CONJUNCTIONS:
                # "make it look like", "make it a dog", "have a dog in the corner": no action asked of anyone
                break
            if not is_base_verb(v):
                continue
            after = ws[k + 1] if k + 1 < len(ws) else None
            if after is None or after in DETERMINERS or after in PREPOSITIONS or after in lexicon().numbers:
                out.add(v)
                break
    return frozenset(out)


def has_request_words(text: str) -> bool:
    """A phrase with a word only a request uses ('make', 'should', a pronoun): no tag of either prompt."""
    ws = split_words(text)
    low = " ".join(ws)
    return any(w in REQUEST_ONLY_WORDS for w in ws) or any(
        " " in r and re.search(rf"\b{re.escape(r)}\b", low) for r in lexicon().request_words
    )


def negative_leaks(feedback: str, old_negative: str, new_negative: str) -> list[str]:
    """
    Words of the request in the new negative prompt that the old one did not have.

    Only content an operation produced may reach the negative prompt: no request words ('make', 'should',
    'please'), no pronouns, and no verb the request asked someone to do ('wear' of 'make the cat wear a crown').
    """
    old = set(split_words(old_negative))
    new = [w for w in dict.fromkeys(split_words(new_negative)) if w not in old]
    verbs = request_verbs(feedback)
    low = " ".join(split_words(new_negative))
    old_low = " ".join(split_words(old_negative))
    phrases = [
        r
        for r in lexicon().request_words
        if " " in r and re.search(rf"\b{re.escape(r)}\b", low) and not re.search(rf"\b{re.escape(r)}\b", old_low)
    ]
    return [*phrases, *(w for w in new if w in REQUEST_ONLY_WORDS or w in verbs)]


def orphans(prompt: str) -> list[str]:
    """Tags that end in (or are only) an article, preposition or conjunction, or have an article before one."""
    bad: list[str] = []
    for t in tokenize(prompt):
        ws = split_words(t.text)
        if not ws:
            continue
        dangling = ws[-1] in ARTICLES | CONJUNCTIONS | (PREPOSITIONS - ADVERB_PARTICLES - {"around"})
        doubled = any(a in ARTICLES and b in PREPOSITIONS | CONJUNCTIONS | ARTICLES for a, b in itertools.pairwise(ws))
        if dangling or doubled or ws[0] in CONJUNCTIONS:
            bad.append(t.text)
    return bad


def contradictions(old_prompt: str, new_prompt: str) -> list[str]:
    """Duplicate tags, two tags of one exclusive category (one of them new), weights out of range."""
    problems: list[str] = []
    old_keys = {" ".join(split_words(t.text)) for t in tokenize(old_prompt)}
    seen: dict[str, str] = {}
    by_cat: dict[str, list[str]] = {}
    for t in tokenize(new_prompt):
        key = " ".join(split_words(t.text))
        if key in seen:
            problems.append(f"duplicate tag {t.text!r}")
        seen[key] = t.text
        if not MIN_WEIGHT - 1e-6 <= t.weight <= MAX_WEIGHT + 1e-6:
            problems.append(f"weight {t.weight} of {t.text!r} out of range")
        tag = parse_tag(t.text)
        for name, cat in lexicon().categories.items():
            if cat.exclusive and find_terms(tag, name):
                by_cat.setdefault(name, []).append(key)
        if find_terms(tag, "background"):
            by_cat.setdefault("background", []).append(key)
    for name, keys in by_cat.items():
        if len(keys) > 1 and any(k not in old_keys for k in keys):
            problems.append(f"two {name} tags: {', '.join(keys)}")
    return problems
