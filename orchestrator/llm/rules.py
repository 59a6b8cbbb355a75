"""The rule-based feedback interpreter: plain-English feedback -> Changes, with no language model."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from orchestrator.llm.changes import Changes, Scope
from orchestrator.llm.prompt_text import matches, option_variants, tokenize, words
from orchestrator.llm.vocab import ADJECTIVES, ASPECT_NOUNS, LOOKS, OPPOSITES, QUALITY_TAGS, STYLE_NOUNS

#: phrases whose "and" is part of the phrase, not a list separator
_COMPOUNDS = ("black and white", "salt and pepper", "rock and roll", "light and shadow", "sword and shield")
_QUOTE = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<![\w])'([^']+)'(?![\w])")
_BORROW = re.compile(
    r"(?:\b(?:more\s+|a\s+bit\s+more\s+)?(?:like|similar\s+to|closer\s+to|same\s+as|as\s+in|based\s+on|go\s+with)\s+"
    r"(?:the\s+)?(?:#\s*|number\s+|no\.?\s*|image\s+|pic(?:ture)?\s+|one\s+)?|#\s*|\bnumber\s+|\bimage\s+)(\d{1,3})\b"
)
_STRONG = re.compile(r"\b(really|very|much|way|a lot|lots|super|extremely|so much|tons)\b|!!|[A-Z]{4,}")
_WEAK = re.compile(r"\b(a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of)\b")
_INTENSIFIERS = re.compile(
    r"\b(?:really|very|extremely|so much|a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of|even|just|"
    r"quite|super|(?:much|way|a lot)(?= (?:more|less|too|\w+er)\b))\b(?!\s*$)"
)
_FIX = re.compile(
    r"^(?:fix|repair|correct)\s+(?:the\s+)?(.+)$|^(?:the\s+)?(.+?)\s+(?:looks?|is|are)\s+(?:weird|wrong|off|broken|"
    r"deformed|bad|messed up|strange|mangled)$"
)
_LEADING = re.compile(
    r"^(?:please|pls|plz|can you|could you|would you|maybe|perhaps|i think|i'd like|i would like|i want you to|"
    r"let's|lets|try to|try|just|also|and|but|so|ok|okay|now|then|we need to|you should|should|kindly|hmm|"
    r"i'd prefer|i prefer|how about|what about|go for)\s+"
)
_TRAILING = re.compile(r"\s+(?:please|pls|too|as well|instead|a bit|a little|in it|to it|in there|anymore|overall)$")
_ARTICLE = re.compile(r"^(?:the|a|an|some|any|all|those|these|that|this|of the|more of the)\s+")
_GROUP_COMMA = "\x1f"
_SPLIT = re.compile(r"\s*[,;.!?\n]+\s*|\s+(?:and|or|nor|but|also|plus|then|while|&)\s+")
_SENTIMENT = {
    "nice", "good", "great", "cool", "perfect", "love it", "awesome", "ok", "okay", "thanks", "thank you", "wow",
    "lol", "yes", "no", "hmm", "meh", "amazing", "beautiful", "more", "less", "it", "this", "that", "one", "better",
    "again", "same", "fine", "so", "please", "very", "really", "much", "like", "good job", "almost", "close",
    "not sure", "i'm not sure", "im not sure", "unsure", "idk", "dunno", "i don't know", "not bad",
}  # fmt: skip
_PREPOSITIONS = {
    "on", "in", "at", "with", "under", "by", "near", "beside", "behind", "over", "sitting", "standing", "wearing",
    "holding", "walking", "running", "lying", "flying", "during", "from", "into", "inside", "against", "above",
    "below", "underneath", "next", "surrounded", "made", "of", "and", "floating", "looking",
}  # fmt: skip

_KEEP = re.compile(
    r"^(?:keep|preserve|retain|maintain|leave|don't change|do not change|don't touch|do not touch|don't lose|"
    r"do not lose|stick with|stay with|hold on to)\s+(.+?)(?:\s+(?:as is|as it is|the same|unchanged|intact|alone|"
    r"untouched|as they are|like that|exactly))?$"
)
_LIKE = re.compile(
    r"^(?:i\s+)?(?:like|love|liked|loved|adore)\s+(?:the\s+|how the\s+)(.+?)(?:\s+(?:is|are|looks?).*)?$"
)
_PRAISE = re.compile(r"^(?:the\s+)?(.+?)\s+(?:is|are|looks?|look)\s+(?:perfect|great|good|nice|fine|right|spot on)$")
_DISLIKE = re.compile(r"^(?:i\s+)?(?:don't like|do not like|dislike|hate|not a fan of)\s+(?:the\s+|how the\s+)?(.+)$")
_REPLACE = re.compile(
    r"^(?:replace|swap|switch|change|turn|transform|exchange)\s+(?:out\s+)?(.+?)\s+(?:with|for|to|into)\s+(.+)$"
)
_INSTEAD = re.compile(r"^(.+?)\s+instead of\s+(.+)$")
_INSTEAD_FIRST = re.compile(r"^instead of\s+(.+?)\s+(?:use|have|make it|do)?\s*(.+)$")
_MAKE_IT = re.compile(
    r"^(?:make|render|paint|draw|do|have|turn)\s+(?:it|this|them|everything|all|the (?:image|picture|scene|whole thing|"
    r"whole image|photo|shot))\s+(?:into\s+|look\s+|feel\s+|seem\s+|more\s+|be\s+)*(.+)$"
)
_MAKE_THE = re.compile(r"^(?:make|turn|paint|color|colour)\s+(?:the|his|her|their|its)\s+(.+?)\s+(.+)$")
_REMOVE = re.compile(
    r"^(?:no|without|remove|get rid of|lose|drop|delete|take out|take away|ditch|eliminate|erase|no more|"
    r"don't want|do not want|don't include|do not include|don't add|avoid|cut out|kill|nix|exclude|skip|"
    r"don't need|do not need|don't show|do not show|hide|not)\s+(.+)$"
)
_GO = re.compile(r"^(?:the\s+)?(.+?)\s+(?:has to go|must go|should go|needs to go|can go|is distracting|"
                 r"are distracting|is ugly|are ugly|ruins it|is annoying|is pointless|is unnecessary)$")  # fmt: skip
_TOO_MUCH = re.compile(r"^(?:the\s+)?(.+?)\s+(?:is|are)\s+(?:too much|too strong|overpowering|too loud|too heavy)$")
_LESS = re.compile(
    r"^(?:less|fewer|reduce|tone down|lower|decrease|dial back|dial down|weaker|not so much|not as much|"
    r"not so|not as|not that|soften|subtler|subtle|minimi[sz]e|smaller)\s+(.+)$"
)
_TOO = re.compile(r"^(?:it'?s\s+|its\s+|it is\s+|the (?:image|picture|scene) is\s+|(?:the\s+)?\w+\s+(?:is|are)\s+)?"
                  r"too\s+(?:much\s+|many\s+)?(.+)$")  # fmt: skip
_MORE = re.compile(
    r"^(?:more|increase|boost|enhance|emphasi[sz]e|stronger|strengthen|amp up|crank up|pump up|extra|bigger|"
    r"heavier|intensify|push|bring out|highlight|focus on|up the|turn up|larger|louder|denser)\s+(.+)$"
)
_ADD = re.compile(
    r"^(?:add|with|include|put|insert|give it|give him|give her|give them|place|throw in|let's have|"
    r"i want|i'd like|we need|needs|need|there should be|there needs to be|show|have|bring in|introduce|"
    r"could use|it needs|it could use|want|plus)\s+(.+)$"
)


@dataclass
class _Acc:
    """Accumulates one interpretation (mutable while parsing, frozen into Changes at the end)."""

    keep: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    modify: dict[str, str] = field(default_factory=dict)
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    borrow: list[int] = field(default_factory=list)

    def freeze(self) -> Changes:
        def uniq(xs: Iterable[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for x in xs if x))

        target = self.targets[0] if self.targets else None
        return Changes(
            keep=uniq(self.keep),
            remove=uniq(r for r in self.remove if r not in self.keep),
            add=uniq(a for a in self.add if a not in self.remove),
            modify=self.modify,
            # a duplicate is meaningful here: each occurrence is one more weight step
            emphasis_up=tuple(self.up),
            emphasis_down=tuple(self.down),
            negative_add=uniq(self.negative),
            scope=Scope.REGION if target else Scope.GLOBAL,
            target=target,
            borrow_from=tuple(dict.fromkeys(self.borrow)),
        )


def subject_head(prompt: str) -> str | None:
    """The subject's head noun phrase: 'a cat' in 'masterpiece, a cat on a sofa, blurry'."""
    for t in tokenize(prompt):
        if t.text.lower() in QUALITY_TAGS or t.text.lower().startswith("score_"):
            continue
        ws = t.text.split()
        head: list[str] = []
        for w in ws:
            if re.sub(r"[^a-z]", "", w.lower()) in _PREPOSITIONS and head:
                break
            head.append(w)
        return " ".join(head) if head else None
    return None


class RuleInterpreter:
    """Turns feedback into Changes with hand-written patterns (the fallback and the no-LLM default)."""

    def interpret(self, feedback: str, prompt: str = "", stage_numbers: Collection[int] = ()) -> Changes:
        """Parse feedback about an image made from `prompt`; "#N" only counts for N in stage_numbers (if given)."""
        acc = _Acc()
        text, quotes = _extract_quotes(feedback)
        for m in _BORROW.finditer(text):
            n = int(m.group(1))
            if not stage_numbers or n in stage_numbers:
                acc.borrow.append(n)
        text = _BORROW.sub(" ", text)
        shout = "!!" in feedback
        low = text.lower()
        for comp in _COMPOUNDS:
            low = low.replace(comp, comp.replace(" and ", "_and_"))
        # "remove {cat,dog}" names a permutation group: its commas do not separate clauses
        low = re.sub(r"\{[^{}]*\}", lambda m: m.group(0).replace(",", _GROUP_COMMA), low)
        pos = 0
        last_kind: str | None = None
        seps: list[re.Match[str] | None] = [*_SPLIT.finditer(low), None]
        for sep in seps:
            end = sep.start() if sep else len(low)
            clause = low[pos:end].replace("_and_", " and ").replace(_GROUP_COMMA, ",")
            joined_by_and = sep is not None and sep.group(0).strip() in {"and", "or", "nor", "&", "plus"}
            # "!!" strengthens the clause it ends (or all, when it ends the whole message)
            bang = "!!" in (sep.group(0) if sep else "") or (sep is None and shout and "!!" not in low[:end])
            last_kind = self._clause(clause, quotes, prompt, acc, bang, last_kind)
            if not joined_by_and:
                last_kind = None if last_kind not in ("remove", "keep", "add") else last_kind
            pos = sep.end() if sep else len(low)
        return acc.freeze()

    # ------------------------------------------------------------------ one clause

    def _clause(
        self, raw: str, quotes: list[str], prompt: str, acc: _Acc, shout: bool, inherit: str | None
    ) -> str | None:
        clause = raw.strip()
        strong = shout or bool(_STRONG.search(clause)) or bool(re.search(r"[A-Z]{4,}", clause))
        weak = bool(_WEAK.search(clause))
        clause = _tidy(clause)
        if not clause or clause in _SENTIMENT:
            return inherit

        def phrase(s: str) -> str:
            return _restore(_ARTICLE.sub("", _tidy(s)), quotes)

        if m := _KEEP.match(clause):
            acc.keep.append(phrase(m.group(1)))
            return "keep"
        if m := _LIKE.match(clause) or _PRAISE.match(clause):
            acc.keep.append(phrase(m.group(1)))
            return "keep"
        if m := _DISLIKE.match(clause):
            acc.remove.append(phrase(m.group(1)))
            return "remove"
        if m := _INSTEAD_FIRST.match(clause):
            self._modify(phrase(m.group(1)), _restore(_tidy(m.group(2)), quotes), prompt, acc)
            return "modify"
        if m := _INSTEAD.match(clause):
            self._modify(phrase(m.group(2)), _restore(_tidy(m.group(1)), quotes), prompt, acc)
            return "modify"
        if m := _MAKE_IT.match(clause):
            self._make_it(_restore(m.group(1), quotes), prompt, acc, strong, weak)
            return "make"
        if m := _FIX.match(clause):
            thing = phrase(m.group(1) or m.group(2))
            acc.negative.extend((f"bad {thing}", f"deformed {thing}"))
            acc.targets.append(thing)
            return "fix"
        if m := _REPLACE.match(clause):
            self._modify(phrase(m.group(1)), _restore(_tidy(m.group(2)), quotes), prompt, acc)
            return "modify"
        if m := _MAKE_THE.match(clause):
            self._make_the(phrase(m.group(1)), _restore(m.group(2), quotes), prompt, acc)
            return "modify"
        if m := _GO.match(clause):
            acc.remove.append(phrase(m.group(1)))
            return "remove"
        if m := _TOO_MUCH.match(clause):
            acc.down.append(phrase(m.group(1)))
            return "less"
        if (m := _LESS.match(clause)) or (m := _TOO.match(clause)):
            self._less(phrase(m.group(1)), prompt, acc, strong)
            return "less"
        if m := _REMOVE.match(clause):
            acc.remove.append(phrase(m.group(1)))
            return "remove"
        if m := _MORE.match(clause):
            self._more(phrase(m.group(1)), prompt, acc, strong, weak)
            return "more"
        if m := _ADD.match(clause):
            acc.add.append(phrase(m.group(1)))
            if strong:
                acc.up.append(phrase(m.group(1)))
            return "add"
        # a bare phrase: an adjective ("warmer light"), an inherited verb ("no people and cars"), or a new thing
        if self._adjective(clause, prompt, acc, strong, weak, quotes):
            return "look"
        p = phrase(clause)
        if inherit == "remove":
            acc.remove.append(p)
        elif inherit == "keep":
            acc.keep.append(p)
        elif quotes and _has_quote(clause):
            (acc.keep if any(matches(t.text, p) for t in tokenize(prompt)) else acc.add).append(p)
        elif len(words(p)) <= 6 and not re.match(r"^(?:i|it|this|that|we|you|he|she|they)\b", p):
            acc.add.append(p)
            if strong:
                acc.up.append(p)
        else:
            return inherit
        return inherit or "add"

    # ------------------------------------------------------------------ helpers

    def _look(self, key: str, prompt: str, acc: _Acc, strong: bool) -> None:
        look = LOOKS[key]
        acc.add.extend(look.add)
        acc.negative.extend(look.negative)
        toks = tokenize(prompt)

        def conflicts(text: str, c: str) -> bool:
            return text.lower() == c or (matches(text, c) and len(words(text)) <= len(words(c)) + 1)

        for c in look.conflicts:
            for t in toks:
                variants = option_variants(t.text)
                if variants:
                    # "{warm,cold} light" against "warmer": only the cold option goes, the group stays a choice
                    acc.remove.extend(option for option, text in variants if conflicts(text, c))
                elif conflicts(t.text, c):
                    acc.remove.append(t.text)
        if strong:
            acc.up.append(look.add[0])

    def _adjective(self, clause: str, prompt: str, acc: _Acc, strong: bool, weak: bool, quotes: list[str]) -> bool:
        ws = clause.split()
        if not ws:
            return False
        two = " ".join(ws[:2])
        if two in ADJECTIVES:
            key, rest = ADJECTIVES[two], ws[2:]
        elif ws[0] in ADJECTIVES:
            key, rest = ADJECTIVES[ws[0]], ws[1:]
        else:
            return False
        if not rest or all(w in ASPECT_NOUNS for w in rest) or ws[0] in ("more",):
            self._look(key, prompt, acc, strong and not weak)
        else:
            # "darker sky": a change to one region of the image
            thing = _restore(" ".join(rest), quotes)
            self._region(thing, f"{key} {thing}", prompt, acc)
        return True

    def _region(self, thing: str, new: str, prompt: str, acc: _Acc) -> None:
        acc.targets.append(thing)
        for t in tokenize(prompt):
            if matches(t.text, thing) and len(words(t.text)) <= len(words(thing)) + 2:
                acc.modify[t.text] = new
                return
        acc.add.append(new)

    def _modify(self, old: str, new: str, prompt: str, acc: _Acc) -> None:
        new = re.sub(r"^(?:a|an)\s+(?=\w)", lambda m: m.group(0), new).strip()
        if old in ("it", "this", "the image", "everything"):
            self._make_it(new, prompt, acc, False, False)
            return
        acc.modify[old] = new
        head = subject_head(prompt)
        if not head or not matches(head, old):
            acc.targets.append(old)

    def _make_it(self, what: str, prompt: str, acc: _Acc, strong: bool, weak: bool) -> None:
        what = _tidy(what)
        ws = what.split()
        if not ws:
            return
        if self._adjective(what, prompt, acc, strong, weak, []):
            return
        if any(w.rstrip("s") in STYLE_NOUNS for w in ws):
            acc.add.append(_ARTICLE.sub("", what))
            return
        if ws[0] in ("a", "an") or len(ws) <= 3:
            head = subject_head(prompt)
            if head and not matches(head, what):
                acc.modify[head] = what if ws[0] in ("a", "an") or not head.startswith(("a ", "an ")) else f"a {what}"
                return
        acc.add.append(_ARTICLE.sub("", what))

    def _make_the(self, thing: str, what: str, prompt: str, acc: _Acc) -> None:
        what = _tidy(what)
        if what.startswith(("a ", "an ", "into ")):
            self._modify(thing, re.sub(r"^into\s+", "", what), prompt, acc)
            return
        key = ADJECTIVES.get(what) or ADJECTIVES.get(what.split()[0]) if what else None
        adj = key if key and what.endswith("er") else what
        self._region(thing, f"{adj} {thing}", prompt, acc)

    def _less(self, what: str, prompt: str, acc: _Acc, strong: bool) -> None:
        ws = what.split()
        key = ADJECTIVES.get(" ".join(ws[:2])) or (ADJECTIVES.get(ws[0]) if ws else None)
        rest = ws[1:]
        if key and key in OPPOSITES and all(w in ASPECT_NOUNS for w in rest):
            self._look(OPPOSITES[key], prompt, acc, strong)
            for t in LOOKS[key].add:
                if any(matches(p.text, t) for p in tokenize(prompt)):
                    acc.remove.append(t)
            return
        acc.down.append(what)
        if strong:
            acc.down.append(what)

    def _more(self, what: str, prompt: str, acc: _Acc, strong: bool, weak: bool) -> None:
        ws = what.split()
        key = ADJECTIVES.get(" ".join(ws[:2])) or (ADJECTIVES.get(ws[0]) if ws else None)
        if key and all(w in ASPECT_NOUNS for w in ws[1:]):
            self._look(key, prompt, acc, strong and not weak)
            return
        acc.up.append(what)
        if strong:
            acc.up.append(what)


def _extract_quotes(text: str) -> tuple[str, list[str]]:
    quotes: list[str] = []

    def sub(m: re.Match[str]) -> str:
        quotes.append(next(g for g in m.groups() if g is not None))
        return f" qq{len(quotes) - 1}qq "

    return _QUOTE.sub(sub, text), quotes


def _has_quote(s: str) -> bool:
    return bool(re.search(r"qq\d+qq", s))


def _restore(s: str, quotes: list[str]) -> str:
    # a quoted phrase comes back exactly as typed (case and all)
    out = re.sub(r"\s*qq(\d+)qq\s*", lambda m: f" {quotes[int(m.group(1))]} ", s)
    return re.sub(r"\s+", " ", out).strip()


def _tidy(clause: str) -> str:
    c = re.sub(r"\s+", " ", clause.strip().strip("\"'“”.,;:!?-")).strip()
    c = c.replace("\u2019", "'")
    prev = None
    while prev != c:
        prev = c
        c = _LEADING.sub("", c)
        c = _TRAILING.sub("", c)
        c = _INTENSIFIERS.sub(" ", c)
        c = re.sub(r"\s+", " ", c).strip()
    return c
