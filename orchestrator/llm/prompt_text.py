"""Prompt text: tokens and (tag:1.2) weights, stem-aware matching, family-aware assembly, the rules engineer, diffs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from orchestrator.llm.changes import Changes, PromptDiff
from orchestrator.llm.lexicon import lexicon
from orchestrator.llm.prompt_checks import MAX_WEIGHT, MIN_WEIGHT, has_request_words
from orchestrator.llm.prompt_model import find_terms, parse_tag, term_of
from orchestrator.llm.tag_edits import remove_thing, tidy
from orchestrator.llm.tokens import (
    Token,
    parse_token,
    tokenize as tokenize,  # re-exported: callers read prompts through prompt_text
)
from orchestrator.models import Family

#: weights stack in 0.2 steps and stay within what SD checkpoints tolerate without artefacts (MIN/MAX_WEIGHT)
WEIGHT_STEP = 0.2
#: removed phrases longer than this are scene clauses, not concepts: they do not belong in a negative prompt
NEGATIVE_MAX_WORDS = 4

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_FILLER = {"a", "an", "the", "some", "of", "with", "and", "any", "very", "really"}
_FLUX_DOWN = "subtle "
_LEAD_WORDS = {"a", "an", "the", "on", "in", "at", "with", "by", "near", "under", "over", "and", "of", "along"}
_FLUX_UP = "pronounced "


def words(text: str) -> list[str]:
    """Lower-case words of a text."""
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """A crude stem so 'blur', 'blurry', 'blurred' and 'blurriness' meet (people/person too)."""
    w = word.lower()
    if w in ("people", "persons", "person", "humans", "human"):
        return "person"
    for suffix in ("iness", "ness", "ing", "ies", "ied", "ily", "ly", "ed", "es", "y", "s"):
        if len(w) - len(suffix) >= 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    # blurr -> blur, sunn -> sun: undouble a final consonant left by the suffix
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "aeiousl":
        w = w[:-1]
    return w


def stems(text: str) -> list[str]:
    """Stems of the content words of a text (articles and fillers dropped)."""
    return [stem(w) for w in words(text) if w not in _FILLER]


def normalize(text: str) -> str:
    """Lower case, weights and fillers stripped, single spaces: the identity used for matching and diffs."""
    return " ".join(w for w in words(parse_token(text).text) if w not in _FILLER)


def matches(token_text: str, phrase: str) -> bool:
    """True when the phrase's content words all occur (by stem) in order-free form in the token."""
    want = stems(phrase)
    if not want:
        return False
    have = stems(token_text)
    return all(w in have for w in want)


def contains_verbatim(prompt: str, phrase: str) -> bool:
    """Case-insensitive verbatim containment (a kept phrase must survive exactly)."""
    return phrase.strip().lower() in prompt.lower()


_CONNECTORS = {"with", "and", "featuring", "plus"}


def _strip_phrase(text: str, phrase: str) -> str:
    """Cut a phrase's words out of a longer scene clause, taking its 'with ...' clause along."""
    want = set(stems(phrase))
    ws = text.split()
    hits = [i for i, w in enumerate(ws) if stem(re.sub(r"[^a-zA-Z0-9']", "", w)) in want]
    if not hits:
        return text
    first, last = hits[0], hits[-1]
    # a "with people around" clause goes whole: from its connector up to the next connector
    conn = next((j for j in range(first - 1, max(-1, first - 4), -1) if ws[j].lower() in _CONNECTORS), None)
    if conn is not None:
        nxt = next((j for j in range(last + 1, len(ws)) if ws[j].lower() in _CONNECTORS), len(ws))
        out_words = ws[:conn] + ws[nxt:]
    else:
        out_words = [w for i, w in enumerate(ws) if i not in hits]
        if first > 0 and ws[first - 1].lower() in ("a", "an", "the", "some"):
            out_words.remove(ws[first - 1])
        if first == 0 or (ws[0].lower() in ("a", "an", "the", "some") and first == 1):
            # what is left of "people walking on the beach" is "beach", not "walking on the beach"
            while out_words and (out_words[0].lower() in _LEAD_WORDS or out_words[0].lower().endswith("ing")):
                out_words.pop(0)
    out = " ".join(out_words)
    return re.sub(r"\s*\b(with|and|of|in|featuring)\s*$", "", out).strip()


def _clean_phrase(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(",.;")).strip()


#: an innermost {a,b} permutation group, with the article before it (which goes when the whole group goes)
_GROUP = re.compile(r"(?:\b(a|an|the)\s+)?\{([^{}]*)\}", re.IGNORECASE)


def group_options(phrase: str) -> list[str]:
    """'{cat,dog}' -> ['cat', 'dog']: a phrase that is one permutation group names each of its options."""
    m = _GROUP.fullmatch(phrase.strip())
    if m is None or m.group(1):
        return [phrase]
    return [o.strip() for o in m.group(2).split(",") if o.strip()] or [phrase]


def option_variants(text: str) -> list[tuple[str, str]]:
    """(option, the text with its group replaced by that option) for every option of every {a,b} group."""
    out: list[tuple[str, str]] = []
    for m in _GROUP.finditer(text):
        article = f"{m.group(1)} " if m.group(1) else ""
        for option in (o.strip() for o in m.group(2).split(",")):
            if option:
                out.append((option, text[: m.start()] + article + option + text[m.end() :]))
    return out


def _rewrite_options(text: str, phrase: str, rewrite: Callable[[str], str | None]) -> str | None:
    """`text` with every {a,b} option matching `phrase` rewritten (None drops it); None when no option matched."""
    changed = False

    def group(m: re.Match[str]) -> str:
        nonlocal changed
        options = [o.strip() for o in m.group(2).split(",")]
        out: list[str] = []
        for o in options:
            if o and matches(parse_token(o).text, phrase):
                changed = True
                new = rewrite(o)
                if new:
                    out.append(new)
            else:
                out.append(o)
        if out == options:
            return m.group(0)
        article = f"{m.group(1)} " if m.group(1) else ""
        if not out:
            return ""
        return article + (out[0] if len(out) == 1 else "{" + ",".join(out) + "}")

    result = _GROUP.sub(group, text)
    return re.sub(r"\s+", " ", result).strip() if changed else None


@dataclass(frozen=True, slots=True)
class Engineered:
    """The rules engineer's output: new prompt and negative plus the steps it took (its rationale)."""

    prompt: str
    negative_prompt: str
    steps: tuple[str, ...]

    @property
    def rationale(self) -> str:
        """The steps as one sentence list."""
        return "; ".join(self.steps) + "." if self.steps else "No change was asked for."


def assemble(tokens: Sequence[Token], family: Family, added: Iterable[Token] = ()) -> str:
    """Tokens -> prompt text: comma-separated tags, or Flux prose with new items in one 'with ...' clause."""
    added = list(added)
    if family.uses_tags:
        return ", ".join(t.render(family) for t in [*tokens, *added])
    base = ", ".join(t.text for t in tokens)
    if added:
        items = [re.sub(r"^(with|and)\s+", "", t.text) for t in added]
        clause = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        base = f"{base}, with {clause}" if base else clause
    base = base.strip()
    return (base[0].upper() + base[1:] + ("" if base.endswith(".") else ".")) if base else ""


def _find(tokens: Sequence[Token], phrase: str) -> int | None:
    target = normalize(phrase)
    for i, t in enumerate(tokens):
        if normalize(t.text) == target:
            return i
    for i, t in enumerate(tokens):
        if matches(t.text, phrase):
            return i
    return None


def _replace_in(text: str, old: str, new: str) -> str | None:
    # whole-phrase replacement first (absorbing the article before it), then a one-word head by stem
    new = new.strip()
    new_has_article = re.match(r"^(a|an|the)\s", new, re.IGNORECASE) is not None
    old_core = re.sub(r"^(a|an|the)\s+", "", old.strip(), flags=re.IGNORECASE)
    pat = re.compile(rf"\b(?:(a|an|the)\s+)?{re.escape(old_core)}\b", re.IGNORECASE)
    m = pat.search(text)
    if m:
        if not m.group(1) and new_has_article and m.start() == 0 and m.end() == len(text):
            new = re.sub(r"^(a|an|the)\s+", "", new, flags=re.IGNORECASE)
        elif m.group(1) and not new_has_article:
            new = f"{m.group(1)} {new}"
        return text[: m.start()] + new + text[m.end() :]
    old_words = words(old_core)
    if len(old_words) == 1:
        target = stem(old_words[0])
        parts = text.split()
        for i, w in enumerate(parts):
            if stem(re.sub(r"[^a-zA-Z0-9']", "", w)) == target:
                if new_has_article and i > 0 and parts[i - 1].lower() in ("a", "an", "the"):
                    i -= 1
                    del parts[i]
                parts[i] = new
                return " ".join(parts)
    return None


def _flux_plain(t: Token) -> Token:
    return Token(t.text, 1.0)


def apply_changes(
    prompt: str,
    negative: str,
    changes: Changes,
    family: Family,
    *,
    borrowed: Sequence[str] = (),
    extra_negative: Sequence[str] = (),
) -> Engineered:
    """The rules engineer: apply Changes to a prompt, family-aware, keeping 'keep' and dropping 'remove'."""
    tokens = tokenize(prompt)
    if not family.uses_tags:
        tokens = [_flux_plain(t) for t in tokens]
    neg = tokenize(negative)
    added: list[Token] = []
    steps: list[str] = []
    kept = [k for k in changes.keep if k.strip()]

    def protected(text: str) -> bool:
        return any(contains_verbatim(text, k) for k in kept)

    # 1. modify: replace in place so the subject keeps its position (SD weighs early tokens more)
    for old, new in changes.modify.items():
        i = _find(tokens, old)
        if i is not None and not new.strip() and normalize(tokens[i].text) == normalize(old):
            # an emptied tag (a bare "blue" when the subject became green) goes
            del tokens[i]
            steps.append(f"dropped {old!r}")
            continue
        replaced = _replace_in(tokens[i].text, old, new) if i is not None else None
        if i is not None and replaced is not None:
            tokens[i] = replace(tokens[i], text=replaced if "{" in replaced else tidy(replaced, keep_leading_prep=True))
        else:
            added.append(Token(new))
        steps.append(f"changed {old!r} to {new!r}")

    # 2. remove: an option of a {a,b} group leaves its group; otherwise drop short tokens and cut the words out of
    # long scene clauses; concepts go to the negative
    for phrase in [o for p in changes.remove for o in group_options(p)]:
        hit = False
        for i in range(len(tokens) - 1, -1, -1):
            t = tokens[i]
            if not matches(t.text, phrase):
                continue
            if protected(t.text):
                # a kept phrase in the same tag stays: only the named thing may go ("no cars, just the road")
                rest = remove_thing(t.text, phrase)
                if rest and all(contains_verbatim(rest, k) for k in kept if contains_verbatim(t.text, k)):
                    tokens[i] = replace(t, text=rest)
                    hit = True
                continue
            hit = True
            dropped = _rewrite_options(t.text, phrase, lambda _: None) if "{" in t.text else None
            if dropped is not None:
                if words(dropped):
                    tokens[i] = replace(t, text=dropped)
                else:
                    del tokens[i]
                continue
            # the prompt model takes out just the named thing and keeps the phrase grammatical ("a desk with a
            # laptop and a lamp" - lamp -> "a desk with a laptop"); a thing it cannot place falls back to words
            rest = remove_thing(t.text, phrase)
            if rest is None:
                short = len(words(t.text)) <= len(words(phrase)) + 2 or (i > 0 and len(words(t.text)) <= 3)
                rest = "" if short else _strip_phrase(t.text, phrase)
            if rest:
                tokens[i] = replace(t, text=rest)
            else:
                del tokens[i]
        # only a thing goes to the negative prompt, never the words of the request that named it
        if len(words(phrase)) <= NEGATIVE_MAX_WORDS and _find(neg, phrase) is None and not has_request_words(phrase):
            neg.append(Token(_negative_form(phrase)))
        steps.append(f"removed {phrase!r}" if hit else f"kept {phrase!r} out")

    # 3. add (with borrowed tokens from a picked image); an added concept leaves the negative prompt
    for phrase in [*changes.add, *borrowed]:
        phrase = _clean_phrase(phrase)
        if not phrase or _find(tokens, phrase) is not None or _find(added, phrase) is not None:
            continue
        restyled = _restyle(tokens, phrase, protected)
        if restyled is None:
            added.append(Token(phrase))
        for j in range(len(neg) - 1, -1, -1):
            if matches(neg[j].text, phrase) or matches(phrase, neg[j].text):
                del neg[j]
        steps.append(restyled or f"added {phrase!r}")

    # 4. keep: a kept phrase of the old prompt must survive verbatim (one the prompt never had is a visual
    # property the user likes, not a token to invent)
    for k in kept:
        if contains_verbatim(prompt, k) and not any(contains_verbatim(t.text, k) for t in [*tokens, *added]):
            added.append(Token(_clean_phrase(k)))
            steps.append(f"kept {k!r}")

    # 5. emphasis
    for direction, phrases in ((1, changes.emphasis_up), (-1, changes.emphasis_down)):
        for phrase in phrases:
            steps.append(_emphasise(tokens, added, phrase, direction, family))

    # 6. negatives asked for directly or suggested by the vision comparison
    for phrase in [*changes.negative_add, *extra_negative]:
        phrase = _clean_phrase(phrase)
        fresh = _find(neg, phrase) is None and _find([*tokens, *added], phrase) is None
        if phrase and fresh and not has_request_words(phrase):
            neg.append(Token(phrase))
            steps.append(f"negative {phrase!r}")

    if not family.uses_tags:
        neg = [_flux_plain(t) for t in neg]
    tokens, added = _unique(tokens, added)
    new_prompt = assemble(tokens, family, added)
    new_negative = ", ".join(t.render(family) for t in neg)
    return Engineered(new_prompt, new_negative, tuple(dict.fromkeys(steps)))


def _restyle(tokens: list[Token], phrase: str, protected: Callable[[str], bool]) -> str | None:
    """
    A term of an exclusive category (medium, time, background, ...) replaces the prompt's term of it in place.

    Appending it would leave a contradiction; None when the prompt has no term of that category.
    """
    found = term_of(phrase)
    if found is None:
        return None
    category, term = found
    if category != "background" and not lexicon().categories[category].exclusive:
        return None
    first: str | None = None
    for i in range(len(tokens) - 1, -1, -1):
        t = tokens[i]
        if "{" in t.text or protected(t.text):
            continue
        tag = parse_tag(t.text)
        spans = find_terms(tag, category)
        if not spans:
            continue
        ws = list(tag.words)
        if first is None:
            first = " ".join(ws[spans[0][0] : spans[0][1]])
        else:
            spans.insert(0, (0, 0))
        for s, e in reversed(spans[1:]):
            del ws[s:e]
        if spans[0] != (0, 0):
            s, e = spans[0]
            ws[s:e] = (phrase if category == "background" else term).split()
        text = tidy(" ".join(ws), keep_leading_prep=True)
        if text and any(ch.isalnum() for ch in text):
            tokens[i] = replace(t, text=text)
        else:
            del tokens[i]
    if first is None:
        return None
    return f"replaced {first!r} with {phrase!r}"


def _unique(tokens: list[Token], added: list[Token]) -> tuple[list[Token], list[Token]]:
    # the same tag twice says nothing more; weights stay inside what a checkpoint tolerates
    seen: set[str] = set()
    out: tuple[list[Token], list[Token]] = ([], [])
    for pool, dest in ((tokens, out[0]), (added, out[1])):
        for t in pool:
            key = " ".join(words(t.text))
            if key and key in seen:
                continue
            seen.add(key)
            dest.append(replace(t, weight=round(min(MAX_WEIGHT, max(MIN_WEIGHT, t.weight)), 2)))
    return out


_NEGATIVE_FORMS = {"blur": "blurry", "noise": "noisy", "grain": "grainy", "watermark": "watermark", "text": "text"}


def _negative_form(phrase: str) -> str:
    # SD negatives are conventionally adjectives for artefacts ("blurry", "noisy")
    w = words(phrase)
    if len(w) == 1 and w[0] in _NEGATIVE_FORMS:
        return _NEGATIVE_FORMS[w[0]]
    return re.sub(r"^(the|a|an|any|all)\s+", "", _clean_phrase(phrase), flags=re.IGNORECASE)


def _emphasise(tokens: list[Token], added: list[Token], phrase: str, direction: int, family: Family) -> str:
    for pool in (tokens, added):
        for j, t in enumerate(pool):
            if "{" in t.text:
                said: list[str] = []
                rewritten = _rewrite_options(t.text, phrase, partial(_emphasise_option, direction, family, said))
                if rewritten is not None:
                    pool[j] = replace(t, text=rewritten)
                    return said[0]
    pool, i = tokens, _find(tokens, phrase)
    if i is None:
        pool, i = added, _find(added, phrase)
    if i is None:
        if direction < 0:
            return f"{phrase!r} was not in the prompt"
        pool, i = added, len(added)
        added.append(Token(_clean_phrase(phrase)))
    t = pool[i]
    if family.uses_tags:
        step = WEIGHT_STEP * direction
        weight = round(min(MAX_WEIGHT, max(MIN_WEIGHT, t.weight + step)), 2)
        pool[i] = Token(t.text, weight)
        return f"{'strengthened' if direction > 0 else 'weakened'} {t.text!r} to {weight:.1f}"
    # Flux has no weight syntax: emphasis is wording and position (earlier = stronger)
    text = re.sub(rf"^({_FLUX_UP}|{_FLUX_DOWN})", "", t.text)
    del pool[i]
    if direction > 0:
        tokens.insert(min(1, len(tokens)), Token(_FLUX_UP + text))
        return f"put {text!r} up front"
    added.append(Token(_FLUX_DOWN + text))
    return f"toned down {text!r}"


def _emphasise_option(direction: int, family: Family, said: list[str], option: str) -> str:
    # one option of a {a,b} group: weighted in place, so the group still expands to one prompt per option
    t = parse_token(option)
    if family.uses_tags:
        weight = round(min(MAX_WEIGHT, max(MIN_WEIGHT, t.weight + WEIGHT_STEP * direction)), 2)
        said.append(f"{'strengthened' if direction > 0 else 'weakened'} {t.text!r} to {weight:.1f}")
        return Token(t.text, weight).render(family)
    text = re.sub(rf"^({_FLUX_UP}|{_FLUX_DOWN})", "", t.text)
    said.append(f"{'stressed' if direction > 0 else 'toned down'} {text!r}")
    return (_FLUX_UP if direction > 0 else _FLUX_DOWN) + text


def diff(old_prompt: str, new_prompt: str, old_negative: str = "", new_negative: str = "") -> PromptDiff:
    """Token-level diff of prompts; a weight change shows as the new weighted token added and the old removed."""

    def keyed(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for t in tokenize(text):
            shown = t.render(Family.SDXL)
            key = f"{normalize(t.text)}@{t.weight:.2f}"
            out.setdefault(key, re.sub(r"^(with|and)\s+", "", shown))
        return out

    a, b = keyed(old_prompt), keyed(new_prompt)
    na, nb = keyed(old_negative), keyed(new_negative)
    return PromptDiff(
        added=tuple(v for k, v in b.items() if k not in a),
        removed=tuple(v for k, v in a.items() if k not in b),
        negative_added=tuple(v for k, v in nb.items() if k not in na),
        negative_removed=tuple(v for k, v in na.items() if k not in nb),
    )


def borrow_tokens(own_prompt: str, other_prompt: str, limit: int = 4) -> tuple[str, ...]:
    """Tokens of another image's prompt that this prompt lacks (what 'like #3' can borrow)."""
    own = {normalize(t.text) for t in tokenize(own_prompt)}
    out: list[str] = []
    for t in tokenize(other_prompt):
        if normalize(t.text) and normalize(t.text) not in own and t.text not in out:
            out.append(t.text)
    return tuple(out[:limit])
