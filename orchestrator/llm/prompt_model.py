"""
The prompt model: tags parsed into noun phrases with modifiers and categories, and what can be asked of them.

Each tag is parsed into noun phrases (determiner, modifiers, head) joined by prepositions, conjunctions and
participles, with a category where one is known. Edits are made on this structure (tag_edits.py), which renders a
tag back without orphaned articles or prepositions; prompt_checks.py judges whole prompts by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.llm.lexicon import (
    CONJUNCTIONS,
    DETERMINERS,
    PREPOSITIONS,
    is_noun,
    lemma,
    lexicon,
    modifier_class,
    parts_of_speech,
    split_words,
)
from orchestrator.llm.vocab import QUALITY_TAGS

#: words that only say which aspect a category term is about ("stormy weather", "side view shot")
GENERIC_WORDS = frozenset(
    {"day", "time", "style", "shot", "lighting", "light", "sky", "weather", "colors", "color", "tones", "tone",
     "palette", "look", "vibe", "vibes", "feel", "season", "scene", "image", "picture", "version", "colours",
     "colour", "instead", "in", "a", "an", "the", "of", "it", "effect", "mode", "angle"}
)  # fmt: skip


#: prepositions that can stand alone at the end of a phrase ("a city from above", "a path going up")
ADVERB_PARTICLES = frozenset({"above", "below", "behind", "outside", "inside", "underneath", "beneath", "nearby", "up"})


class Role(StrEnum):
    """What a word does in its tag."""

    DET = "det"
    MOD = "mod"
    HEAD = "head"
    PREP = "prep"
    CONJ = "conj"
    VERB = "verb"


@dataclass(frozen=True, slots=True)
class NounPhrase:
    """Word indices of one noun phrase in its tag: [start, det_end) determiners, [det_end, head_start) modifiers."""

    start: int
    det_end: int
    head_start: int
    end: int


@dataclass(frozen=True, slots=True)
class Tag:
    """One prompt tag as words with roles and noun phrases."""

    words: tuple[str, ...]
    roles: tuple[Role, ...]
    phrases: tuple[NounPhrase, ...]

    @property
    def text(self) -> str:
        """The tag as text."""
        return " ".join(self.words)

    def lemmas(self, start: int = 0, end: int | None = None) -> tuple[str, ...]:
        """Lemmas of words [start, end)."""
        return tuple(lemma(w) for w in self.words[start:end])

    def head(self, np: NounPhrase) -> tuple[str, ...]:
        """The head noun(s) of a phrase as lemmas."""
        return self.lemmas(np.head_start, np.end)

    def modifiers(self, np: NounPhrase) -> tuple[str, ...]:
        """The modifier words of a phrase."""
        return tuple(w.lower() for w in self.words[np.det_end : np.head_start])


def clean_word(word: str) -> str:
    """The word in lower case without the punctuation around it."""
    return re.sub(r"^[^\w&']+|[^\w']+$", "", word.lower())


def _is_head_word(word: str) -> bool:
    # a noun that is not also an adjective or a curated modifier: "sports" in "sports car", not "golden"
    pos = parts_of_speech(word)
    return is_noun(word) and "ADJ" not in pos and word not in lexicon().modifier_class


def _is_participle(word: str) -> bool:
    return word.endswith(("ing", "ed")) and "VERB" in parts_of_speech(word) and len(word) > 4


def parse_tag(text: str) -> Tag:
    """Words -> roles and noun phrases (a shallow chunker: enough to edit one thing without breaking the rest)."""
    words = tuple(text.split())
    clean = [clean_word(w) for w in words]
    numbers = lexicon().numbers
    roles: list[Role | None] = []
    for i, w in enumerate(clean):
        prev_content = bool(roles) and roles[-1] is None
        nxt = clean[i + 1] if i + 1 < len(clean) else None
        if w in DETERMINERS or (w in numbers and w not in ("few", "many", "several", "lone", "single")):
            roles.append(Role.DET)
        elif w in PREPOSITIONS and not (w == "like" and i == 0):
            roles.append(Role.PREP)
        elif w in CONJUNCTIONS:
            roles.append(Role.CONJ)
        elif _is_participle(w) and (prev_content or (i == 0 and nxt in DETERMINERS)):
            # after a noun ("a man wearing a hat", "a car parked outside"): a verb, not a modifier
            roles.append(Role.VERB)
        else:
            roles.append(None)
    final: list[Role] = []
    i = 0
    while i < len(roles):
        role = roles[i]
        if role is not None:
            final.append(role)
            i += 1
            continue
        j = i
        while j < len(roles) and roles[j] is None:
            j += 1
        # a run of content words: a compound head at its end ("sports car"), modifiers before it
        run = [Role.MOD] * (j - i)
        run[-1] = Role.HEAD
        k = j - 2
        while k >= i and _is_head_word(clean[k]):
            run[k - i] = Role.HEAD
            k -= 1
        final.extend(run)
        i = j
    phrases: list[NounPhrase] = []
    i = 0
    while i < len(final):
        if final[i] in (Role.DET, Role.MOD, Role.HEAD):
            start = i
            while i < len(final) and final[i] is Role.DET:
                i += 1
            det_end = i
            while i < len(final) and final[i] is Role.MOD:
                i += 1
            head_start = i
            while i < len(final) and final[i] is Role.HEAD:
                i += 1
            if i > head_start:
                phrases.append(NounPhrase(start, det_end, head_start, i))
        else:
            i += 1
    return Tag(words, tuple(final), tuple(phrases))


# ---------------------------------------------------------------------- finding things


def kinds_of(word: str) -> frozenset[str]:
    """The specific nouns a general word can mean, itself included ('dog' -> dog, retriever, husky, ...)."""
    base = lemma(word)
    return frozenset({base, *lexicon().kinds.get(base, frozenset())})


def find_phrase(tag: Tag, thing: str, *, loose: bool = False) -> NounPhrase | None:
    """The noun phrase of `tag` that names `thing` (its head by lemma; its other content words among the phrase's)."""
    want = [lemma(w) for w in split_words(thing) if w not in DETERMINERS and w not in lexicon().numbers]
    if not want:
        return None
    head, rest = want[-1], want[:-1]
    for np in tag.phrases:
        heads = tag.head(np)
        words = set(tag.lemmas(np.det_end, np.end))
        names = {head} | (kinds_of(head) if loose else set())
        if any(h in names for h in heads) and all(r in words for r in rest):
            return np
    return None


def quality_tag(text: str) -> bool:
    """Boilerplate like 'masterpiece' or 'score_9': never the subject."""
    low = text.strip().lower()
    return low in QUALITY_TAGS or low.startswith("score_")


# ---------------------------------------------------------------------- categories


def find_terms(tag: Tag, category: str) -> list[tuple[int, int]]:
    """Word spans of `tag` that are terms of a category (longest term first, no overlaps)."""
    lx = lexicon()
    if category == "background":
        return [
            (np.det_end, np.end) for np in tag.phrases if tag.head(np)[-1:] and tag.head(np)[-1] in lx.background_heads
        ]
    cat = lx.categories[category]
    lem = tag.lemmas()
    spans: list[tuple[int, int]] = []
    taken: set[int] = set()
    for term in cat.terms:
        n = len(term)
        for i in range(len(lem) - n + 1):
            # "snow leopard", "autumn leaves": a term inside a compound noun names the thing, not the weather
            compound = (
                tag.roles[i + n - 1] is Role.HEAD
                and i + n < len(lem)
                and tag.roles[i + n] is Role.HEAD
                and clean_word(tag.words[i + n]) not in GENERIC_WORDS | FRAME_NOUNS
            )
            if lem[i : i + n] == term and not taken.intersection(range(i, i + n)) and not compound:
                spans.append((i, i + n))
                taken.update(range(i, i + n))
    return sorted(spans)


def categories_of(text: str) -> list[str]:
    """Categories a tag is wholly about: 'oil painting' -> medium; 'a cat at night' -> none (a subject tag)."""
    tag = parse_tag(text)
    content = [i for i, r in enumerate(tag.roles) if r is not Role.DET]
    out: list[str] = []
    for name in [*lexicon().categories, "background"]:
        spans = find_terms(tag, name)
        covered = {i for s, e in spans for i in range(s, e)}
        rest = [i for i in content if i not in covered and clean_word(tag.words[i]) not in GENERIC_WORDS]
        if spans and (not rest or (name == "background" and len(tag.phrases) == 1)):
            out.append(name)
    return out


def term_of(text: str) -> tuple[str, str] | None:
    """(category, the term as spelled) when a short phrase is a category term or a word for one."""
    low = " ".join(split_words(text.replace("&", " and ")))
    # "in color", "like a charcoal sketch", "as a photo": the term is what follows
    low = re.sub(r"^(?:in|into|as|like|to|at|during|by)\s+(?:a\s+|an\s+|the\s+)?(?=\S)", "", low)
    lx = lexicon()
    for name, mapping in lx.category_words.items():
        if low in mapping:
            return name, mapping[low]
    for name in lx.categories:
        cats = categories_of(low)
        if name in cats:
            tag = parse_tag(low)
            s, e = find_terms(tag, name)[0]
            return name, lx.categories[name].spelled.get(tag.lemmas(s, e), " ".join(tag.words[s:e]))
    if "background" in categories_of(low):
        return "background", re.sub(r"^(?:a|an|the)\s+", "", low)
    return None


# ---------------------------------------------------------------------- the subject


#: nouns of a picture itself: in "portrait of a man" the subject is the man
FRAME_NOUNS = frozenset(
    {"portrait", "photo", "photograph", "picture", "painting", "image", "drawing", "sketch", "illustration",
     "render", "shot", "closeup", "close-up", "view", "scene", "study"}
)  # fmt: skip


def subject_phrase(tag: Tag) -> NounPhrase | None:
    """The phrase a tag is about: its first, or the one after 'of' when the first names the picture itself."""
    if not tag.phrases:
        return None
    first = tag.phrases[0]
    if tag.head(first)[-1] in FRAME_NOUNS and first.end < len(tag.words) and clean_word(tag.words[first.end]) == "of":
        after = next((p for p in tag.phrases if p.start == first.end + 1), None)
        if after is not None:
            return after
    return first


# ---------------------------------------------------------------------- questions about one tag or phrase


def is_place_tag(text: str) -> bool:
    """A tag that is only a place ('office', 'a busy street')."""
    tag = parse_tag(text)
    return (
        len(tag.phrases) == 1
        and tag.head(tag.phrases[0])[-1:] != ()
        and tag.head(tag.phrases[0])[-1] in lexicon().places
    )


def only_modifiers_of(text: str, cls: str) -> bool:
    """A tag made only of adjectives of one class ('blue', 'red and gold')."""
    ws = [w for w in split_words(text) if w not in CONJUNCTIONS]
    return bool(ws) and all(modifier_class(w) == cls for w in ws)


_NOT_IN_TAGS = frozenset(
    {"more", "less", "too", "very", "much", "again", "enough", "really", "looks", "look", "seems", "seem", "feels",
     "feel", "is", "are", "was", "were", "be", "been", "would", "could", "should", "can", "will", "not", "than",
     "why", "what", "how", "if", "because", "but", "maybe", "try"}
)  # fmt: skip


def is_clean_phrase(text: str) -> bool:
    """A noun phrase fit to be a prompt tag: content words, no pronoun, no request word, no bare verb."""
    ws = split_words(text)
    if not ws or len(ws) > 8:
        return False
    pronouns = {"i", "me", "you", "it", "he", "she", "we", "they", "him", "her", "them", "us", "this", "that",
                "something", "anything", "everything", "nothing", "someone", "stuff", "whatever"}  # fmt: skip
    if any(w in pronouns for w in ws) and not (ws[0] in ("her", "his", "their") and len(ws) > 1):
        return False
    # words of a request or a description of the image, not of a thing in it
    if any(w in _NOT_IN_TAGS for w in ws):
        return False
    low = " ".join(ws)
    if any(re.search(rf"\b{re.escape(r)}\b", low) for r in lexicon().request_words):
        return False
    tag = parse_tag(text)
    if not tag.phrases:
        return False
    for i, w in enumerate(ws):
        pos = parts_of_speech(w)
        if pos and pos <= {"VERB", "AUX", "ADV"} and not _is_participle(w) and tag.roles[i] is not Role.PREP:
            return False
    return True
