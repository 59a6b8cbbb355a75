"""Operations feedback asks for, over the prompt model, and their compilation into Changes for the engineer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from orchestrator.llm.changes import Changes, Scope
from orchestrator.llm.lexicon import lexicon, modifier_class
from orchestrator.llm.prompt_checks import contradictions, leaked_request_words, negative_leaks
from orchestrator.llm.prompt_model import (
    Role,
    categories_of,
    find_phrase,
    is_place_tag,
    only_modifiers_of,
    parse_tag,
    quality_tag,
)
from orchestrator.llm.prompt_text import contains_verbatim, matches, option_variants, tokenize, words
from orchestrator.llm.tag_edits import attach, drop_modifier, relocate, replace_phrase, set_modifiers
from orchestrator.llm.vocab import ADJECTIVES, LOOKS, OPPOSITES


@dataclass(frozen=True, slots=True)
class SetAttribute:
    """'change the car to green', 'make the dog bigger': adjectives for a named thing (None: the subject)."""

    target: str | None
    adjectives: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DropAttribute:
    """'make it less cozy': one adjective leaves the thing it describes."""

    word: str


@dataclass(frozen=True, slots=True)
class Swap:
    """'make it a labrador', 'replace X with Y': a thing (None: the subject) becomes another."""

    target: str | None
    new: str


@dataclass(frozen=True, slots=True)
class Attach:
    """'he should wear a scarf', 'make her hold a lantern': a phrase joins a thing (None: the subject)."""

    target: str | None
    phrase: str


@dataclass(frozen=True, slots=True)
class Relocate:
    """'put him on a snowy mountain': the subject's setting changes."""

    preposition: str
    place: str


@dataclass(frozen=True, slots=True)
class Restyle:
    """'make it a pencil sketch', 'in color', 'at night': the term of an exclusive category, replacing the old one."""

    category: str
    term: str


@dataclass(frozen=True, slots=True)
class Look:
    """'warmer', 'moodier': a curated look (tags to add, contradicting tags to drop, negatives)."""

    key: str
    strong: bool = False


@dataclass(frozen=True, slots=True)
class Add:
    """A new thing in the picture."""

    phrase: str
    strong: bool = False


@dataclass(frozen=True, slots=True)
class Remove:
    """A thing that must go (and into the negative prompt)."""

    thing: str


@dataclass(frozen=True, slots=True)
class Weight:
    """More or less of something already there: steps > 0 strengthen, < 0 weaken."""

    thing: str
    steps: int


@dataclass(frozen=True, slots=True)
class Keep:
    """A phrase the user likes: it must survive verbatim."""

    phrase: str


@dataclass(frozen=True, slots=True)
class Fix:
    """'fix the hands': negatives for a broken detail."""

    thing: str


@dataclass(frozen=True, slots=True)
class Borrow:
    """'more like #3': take tags (and the seed) from another image of the stage."""

    number: int


Operation = (
    SetAttribute
    | DropAttribute
    | Swap
    | Attach
    | Relocate
    | Restyle
    | Look
    | Add
    | Remove
    | Weight
    | Keep
    | Fix
    | Borrow
)


@dataclass
class _Compiler:
    """Applies operations to a working copy of the prompt's tags and collects the Changes they amount to."""

    prompt: str
    tags: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    borrow: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tags = [t.text for t in tokenize(self.prompt)]
        self.origin = list(self.tags)

    # ------------------------------------------------------------------ where things are

    def subject(self) -> int | None:
        """The first tag that names something (not quality boilerplate, not a style or time term)."""
        for i, t in enumerate(self.tags):
            if t and "{" not in t and not quality_tag(t) and not categories_of(t) and parse_tag(t).phrases:
                return i
        return None

    def locate(self, thing: str) -> int | None:
        """The tag naming the thing: by its own head first, then by a general word for it ('dog' -> retriever)."""
        for loose in (False, True):
            for i, t in enumerate(self.tags):
                if t and "{" not in t and find_phrase(parse_tag(t), thing, loose=loose) is not None:
                    return i
        return None

    def is_subject(self, i: int | None) -> bool:
        return i is not None and i == self.subject()

    # ------------------------------------------------------------------ operations

    def run(self, op: Operation) -> None:
        match op:
            case SetAttribute(target, adjectives):
                self._set(target, adjectives)
            case DropAttribute(word):
                self._drop(word)
            case Swap(target, new):
                self._swap(target, new)
            case Attach(target, phrase):
                self._attach(target, phrase)
            case Relocate(prep, place):
                self._relocate(prep, place)
            case Restyle(_, term):
                self.add.append(term)
            case Look(key, strong):
                self._look(key, strong)
            case Add(phrase, strong):
                self.add.append(phrase)
                if strong:
                    self.up.append(phrase)
            case Remove(thing):
                self.remove.append(thing)
            case Weight(thing, steps):
                (self.up if steps > 0 else self.down).extend([thing] * abs(steps))
            case Keep(phrase):
                self.keep.append(phrase)
            case Fix(thing):
                self.negative.extend((f"bad {thing}", f"deformed {thing}"))
                self.targets.append(thing)
            case Borrow(number):
                self.borrow.append(number)

    def _edit(self, i: int, new: str | None) -> bool:
        if new is None or new == self.tags[i]:
            return False
        self.tags[i] = new
        return True

    def _set(self, target: str | None, adjectives: Sequence[str]) -> None:
        i = self.subject() if target is None else self.locate(target)
        owner, _, part = (target or "").partition("'s ")
        if i is None and part and self.locate(owner) is not None:
            # "the gnome's hat should be blue" on a prompt without a hat: the gnome gets a blue hat
            self._attach(owner, f"with {' '.join([*adjectives, part])}")
            return
        if i is None:
            if target:
                # a thing the prompt lacks: added with its qualities, or given more of them when already added
                j = next((k for k, a in enumerate(self.add) if find_phrase(parse_tag(a), target) is not None), None)
                new = set_modifiers(self.add[j], target, adjectives) if j is not None else None
                if j is not None and new:
                    self.add[j] = new
                else:
                    self.add.append(" ".join([*adjectives, target]))
                self.targets.append(target)
            return
        if not self._edit(i, set_modifiers(self.tags[i], target, adjectives)):
            return
        if not self.is_subject(i) and target:
            self.targets.append(target)
        if self.is_subject(i):
            # a bare "blue" tag describes the subject: a new colour for the subject replaces it
            classes = {modifier_class(a) for a in adjectives} - {"other"}
            for j, t in enumerate(self.tags):
                if j != i and any(only_modifiers_of(t, c) for c in classes):
                    self.tags[j] = ""

    def _drop(self, word: str) -> None:
        for i, t in enumerate(self.tags):
            if self._edit(i, drop_modifier(t, word)):
                return
        key = ADJECTIVES.get(word)
        if key and key in OPPOSITES:
            self._look(OPPOSITES[key], False)
            for tag in LOOKS[key].add:
                if any(matches(p.text, tag) for p in tokenize(self.prompt)):
                    self.remove.append(tag)
        elif any(matches(t, word) for t in self.tags):
            self.down.append(word)

    def _swap(self, target: str | None, new: str) -> None:
        i = self.subject() if target is None else self.locate(target)
        if i is None or not self._edit(i, replace_phrase(self.tags[i], target, new)):
            self.add.append(new)
            if target:
                self.remove.append(target)
            return
        if target and not self.is_subject(i):
            self.targets.append(target)

    def _attach(self, target: str | None, phrase: str) -> None:
        i = self.subject() if target is None else self.locate(target)
        if i is None or not self._edit(i, attach(self.tags[i], target, phrase)):
            self.add.append(phrase)

    def _relocate(self, prep: str, place: str) -> None:
        s = self.subject()
        if s is None:
            self.add.append(f"{prep} {place}")
            return
        tag = parse_tag(self.tags[s])
        lx = lexicon()
        has_place = any(
            r is Role.PREP
            and tag.words[k].lower() in ("in", "on", "at", "by", "near", "under", "inside", "outside")
            and any(p.start == k + 1 and not set(tag.head(p)) & lx.wearables for p in tag.phrases)
            for k, r in enumerate(tag.roles)
        )
        if not has_place:
            for j, t in enumerate(self.tags):
                if j != s and t and is_place_tag(t):
                    self.tags[j] = " ".join(w for w in place.split() if w.lower() not in ("a", "an", "the"))
                    return
        self._edit(s, relocate(self.tags[s], prep, place))

    def _look(self, key: str, strong: bool) -> None:
        look = LOOKS[key]
        self.add.extend(look.add)
        self.negative.extend(look.negative)

        def conflicts(text: str, c: str) -> bool:
            return text.lower() == c or (matches(text, c) and len(words(text)) <= len(words(c)) + 1)

        for c in look.conflicts:
            for t in tokenize(self.prompt):
                variants = option_variants(t.text)
                if variants:
                    # "{warm,cold} light" against "warmer": only the cold option goes, the group stays a choice
                    self.remove.extend(option for option, text in variants if conflicts(text, c))
                elif conflicts(t.text, c):
                    self.remove.append(t.text)
        if strong:
            self.up.append(look.add[0])

    # ------------------------------------------------------------------ result

    def changes(self) -> Changes:
        def uniq(xs: Iterable[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for x in xs if x))

        modify = dict(_smallest_edit(self.prompt, o, t) for o, t in zip(self.origin, self.tags, strict=True) if o != t)
        keep = uniq(self.keep)
        target = self.targets[0] if self.targets else None
        return Changes(
            keep=keep,
            remove=uniq(r for r in self.remove if r not in keep),
            add=uniq(a for a in self.add if a not in self.remove),
            modify=modify,
            # a duplicate is meaningful here: each occurrence is one more weight step
            emphasis_up=tuple(self.up),
            emphasis_down=tuple(self.down),
            negative_add=uniq(self.negative),
            scope=Scope.REGION if target else Scope.GLOBAL,
            target=target,
            borrow_from=tuple(dict.fromkeys(self.borrow)),
        )


def _smallest_edit(prompt: str, old: str, new: str) -> tuple[str, str]:
    """
    The changed words of a tag as a whole noun phrase ('a cat' -> 'a dog'), else the whole tag.

    Changes read as what changed; the whole tag is used when those words are not unique in the prompt.
    """
    ow, nw = old.split(), new.split()
    if not new.strip():
        return old, new
    p = 0
    while p < min(len(ow), len(nw)) and ow[p].lower() == nw[p].lower():
        p += 1
    q = 0
    while q < min(len(ow), len(nw)) - p and ow[-1 - q].lower() == nw[-1 - q].lower():
        q += 1
    tag = parse_tag(old)
    before = next((np for np in tag.phrases if np.end == p), None) if p + q == len(ow) else None
    if before is not None:
        # words inserted after a noun phrase ("a cat" -> "a cat wearing a crown") change that phrase
        o, n = " ".join(ow[before.start : p]), " ".join(nw[before.start : len(nw) - q])
    else:
        # widen to the phrase: the noun after changed modifiers, the article before the change
        while q > 0 and (p >= len(ow) - q or tag.roles[len(ow) - q - 1] != "head"):
            q -= 1
        while p > 0 and ow[p - 1].lower() in ("a", "an", "the"):
            p -= 1
        o, n = " ".join(ow[p : len(ow) - q]), " ".join(nw[p : len(nw) - q])
    if not o or not n:
        return old, new
    hits = sum(
        len(re.findall(rf"(?<![\w'-]){re.escape(o.lower())}(?![\w'-])", t.text.lower())) for t in tokenize(prompt)
    )
    return (o, n) if hits == 1 else (old, new)


def subject_of(prompt: str) -> str | None:
    """The head noun(s) of the prompt's subject ('retriever' in 'masterpiece, a golden retriever on a beach')."""
    c = _Compiler(prompt)
    i = c.subject()
    if i is None:
        return None
    tag = parse_tag(c.tags[i])
    return " ".join(tag.words[tag.phrases[0].head_start : tag.phrases[0].end]) if tag.phrases else None


def names(text: str, thing: str) -> bool:
    """
    A tag names the thing: a noun phrase with its head, or its content words by stem ('blur' in 'blurry').

    'no X' and 'without X' do not count.
    """
    if text.lower().startswith(("no ", "without ")):
        return False
    return find_phrase(parse_tag(text), thing) is not None or matches(text, thing)


def broken_invariant(
    old_prompt: str,
    new_prompt: str,
    changes: Changes,
    *,
    feedback: str = "",
    old_negative: str = "",
    new_negative: str = "",
) -> str | None:
    """
    What a new prompt (from the language model) breaks of the Changes, judged on the prompt model; None if nothing.

    The same model the rules engineer edits with: a kept phrase survives verbatim, a removed thing is named by no tag,
    the subject is still there unless the changes replace or remove it, no request words (in the prompt, nor in the
    negative prompt together with the verbs the feedback asked someone to do), no contradicting tags.
    """
    for k in changes.keep:
        if contains_verbatim(old_prompt, k) and not contains_verbatim(new_prompt, k):
            return f"dropped the kept phrase {k!r}"
    new_tags = [t.text for t in tokenize(new_prompt)]
    for r in changes.remove:
        if any(names(t, r) for t in new_tags):
            return f"left the removed {r!r} in the prompt"
    subject = subject_of(old_prompt)
    touched = [*changes.remove, *changes.modify.keys()]
    untouched = subject and not any(matches(x, subject) or matches(subject, x) for x in touched)
    if untouched and not any(find_phrase(parse_tag(t), subject or "") is not None for t in new_tags):
        return f"dropped the subject {subject!r}"
    leaked = leaked_request_words(old_prompt, new_prompt)
    if leaked:
        return f"pasted request words ({', '.join(leaked)}) into the prompt"
    leaked = negative_leaks(feedback, old_negative, new_negative)
    if leaked:
        return f"pasted request words ({', '.join(leaked)}) into the negative prompt"
    clashes = [c for c in contradictions(old_prompt, new_prompt) if c.startswith("two ")]
    if clashes:
        return f"left {clashes[0]}"
    return None


def compile_operations(prompt: str, operations: Sequence[Operation]) -> Changes:
    """Operations over the prompt model -> the Changes the engineer applies (modify holds whole edited tags)."""
    c = _Compiler(prompt)
    for op in operations:
        c.run(op)
    return c.changes()
