"""
Tests on the phrases a feedback clause names: a thing, one noun phrase, adjectives, a pose, the subject.

Each checks a phrase against the lexicon and, where it says so, the prompt; none holds state. The clause readers
(rule_readers.py) and the clause patterns (rules.py) decide with them what a clause asks for.
"""

from __future__ import annotations

import re

from orchestrator.llm.lexicon import (
    DETERMINERS,
    article_for,
    base_adjective,
    is_noun,
    is_plural,
    is_verb_only,
    lemma,
    lexicon,
    parts_of_speech,
    split_words,
)
from orchestrator.llm.prompt_model import Role, find_phrase, parse_tag, term_of
from orchestrator.llm.prompt_text import stem, tokenize
from orchestrator.llm.rule_text import tidy_clause
from orchestrator.llm.vocab import ADJECTIVES, QUALITY_TAGS

#: a pattern for words that point at the subject or the whole image ('it', 'her', 'the character')
SUBJECT = (
    r"(?:it|him|her|them|he|she|they|this|that|the (?:subject|character|person|animal|guy|thing|image|"
    r"picture|scene|whole thing|whole image|photo|shot))"
)
#: a leading article or determiner, stripped from a thing before it is looked up or written into the prompt
ARTICLE = re.compile(r"^(?:the|a|an|some|any|all|those|these|that|this|of the|more of the|his|her|their|its)\s+")
_CONTEXT_PP = re.compile(r"\s+(?:on|of|in|for|to)\s+(?:the\s+)?(?:\w+'s\s+)?\w+$")


def subject_head(prompt: str) -> str | None:
    """The subject's head noun phrase: 'a red fox' in 'masterpiece, a red fox sitting in snow, blurry'."""
    for t in tokenize(prompt):
        if t.text.lower() in QUALITY_TAGS or t.text.lower().startswith("score_"):
            continue
        tag = parse_tag(t.text)
        if not tag.phrases:
            return None
        np = tag.phrases[0]
        return " ".join(tag.words[np.start : np.end])
    return None


def adjective_list(text: str) -> list[str] | None:
    """'orange and fluffy' -> ['orange', 'fluffy']; 'matte black' -> ['matte black']; None when not all adjectives."""
    text = text.strip()
    if not text:
        return None
    if text.lower() in lexicon().modifier_class:
        return [text.lower()]
    parts = [p for p in re.split(r"\s*(?:,|\band\b|&)\s*", text) if p]
    out: list[str] = []
    for p in parts:
        if p in lexicon().modifier_class or p in ADJECTIVES:
            out.append(p)
            continue
        ws = p.split()
        if not ws or not all(w in lexicon().modifier_class or w in ADJECTIVES or _adjective_only(w) for w in ws):
            return None
        out.append(p)
    return out or None


def _adjective_only(word: str) -> bool:
    # "spotted", "bigger": adjectives even where they are verb forms too; "green" (also a noun) is curated
    pos = parts_of_speech(word)
    return "ADJ" in pos and ("NOUN" not in pos or word.endswith("er"))


def plain(what: str) -> str:
    """'look more like a photo' -> 'a photo'; 'bigger than the cat' -> 'bigger' (the comparison only explains)."""
    what = tidy_clause(what)
    what = re.sub(r"^(?:look|feel|seem|be|appear)\s+(?:more\s+)?", "", what)
    what = re.sub(r"^(?:into|like)\s+", "", what)
    return re.sub(r"\s+(?:than|like|as in|similar to)\s+.*$", "", what)


def one_phrase(text: str) -> bool:
    """One noun phrase and nothing else: "bridge", "owl's eyes", "her hair" (not "bridge golden like the")."""
    tag = parse_tag(text)
    return len(tag.phrases) == 1 and tag.phrases[0].start == 0 and tag.phrases[0].end == len(tag.words)


def has_noun(text: str) -> bool:
    """
    A phrase with a noun head that is no colour or other curated adjective ("a koala", not "glow blue").

    The phrase must start as a noun phrase does: "at night" is no thing to swap in.
    """
    tag = parse_tag(text)
    if not tag.roles or tag.roles[0] not in (Role.DET, Role.MOD, Role.HEAD):
        return False
    heads = [w.lower() for p in tag.phrases for w in tag.words[p.head_start : p.end]]
    return any(is_noun(w) and w not in lexicon().modifier_class for w in heads)


def pose_verb(text: str) -> str | None:
    """The pose or expression the subject takes: "smile", "smile more", "smiling" ("make it pop" is no pose)."""
    ws = re.sub(r"\s+(?:more|a lot|again|too|please)$", "", text.strip()).split()
    if len(ws) == 1 and is_verb_only(ws[0]) and lemma(ws[0]) in lexicon().pose_verbs:
        return ws[0]
    return None


def is_thing(text: str) -> bool:
    """Whether the phrase has a word beyond determiners and "more"/"less"/"it"/"this"/"that"."""
    ws = split_words(text)
    return bool(ws) and not all(w in DETERMINERS or w in ("more", "less", "it", "this", "that") for w in ws)


def names_subject(who: str, prompt: str) -> bool:
    """Whether `who` names the prompt's subject ("the dog" of "a husky in snow")."""
    head = subject_head(prompt)
    return bool(head) and find_phrase(parse_tag(head or ""), who, loose=True) is not None


def with_article(phrase: str) -> str:
    """The phrase with its article back: "party hat" -> "a party hat"; plurals and mass nouns stay bare."""
    ws = phrase.split()
    if not ws or ws[0] in DETERMINERS or is_plural(ws[-1]):
        return phrase
    return f"{article_for(ws[0])} {phrase}"


def base_phrase(text: str) -> str:
    """Comparatives said of a new thing mean its plain form: "bigger waves" -> "big waves"."""
    ws = text.split()
    return " ".join(base_adjective(w) if i < len(ws) - 1 and w.endswith("er") else w for i, w in enumerate(ws))


def term_inside(clause: str) -> tuple[str, str] | None:
    """A category term with a pointer to what it is about: "close up on the lion's face", "shot from above"."""
    stripped = _CONTEXT_PP.sub("", clause)
    stripped = re.sub(r"^(?:shot|seen|viewed|view)\s+", "", stripped)
    return term_of(stripped) if stripped != clause or stripped else None


def in_prompt(term: str, prompt: str) -> bool:
    """Whether one tag of the prompt holds every word of the term (by lemma)."""
    want = [lemma(w) for w in split_words(term)]
    return any(all(w in [lemma(x) for x in split_words(t.text)] for w in want) for t in tokenize(prompt))


def modifier_by_stem(prompt: str, word: str) -> str | None:
    """The prompt's modifier made of the word ("misty" for "mist"), if any."""
    for t in tokenize(prompt):
        tag = parse_tag(t.text)
        for w, role in zip(tag.words, tag.roles, strict=True):
            if role is Role.MOD and stem(w) == stem(word):
                return w.lower()
    return None


def has_modifier(text: str, word: str) -> bool:
    """Whether the tag has the word (by lemma) as a modifier."""
    tag = parse_tag(text)
    target = lemma(word)
    return any(r is Role.MOD and lemma(w.lower()) == target for w, r in zip(tag.words, tag.roles, strict=True))
