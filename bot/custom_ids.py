"""
The one format of every component custom_id: `imgen:<kind>:<fields...>`, at most 100 characters.

A custom_id carries the ids a click needs; everything else is read from the DB at click time, so
buttons keep working after a restart (discord.py DynamicItem templates below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bot.limits import CUSTOM_ID_MAX

PREFIX = "imgen"
#: ids are uuid hex (32) in practice; allow dashes and up to 36 so a uuid string fits too
ID = r"[0-9A-Za-z_-]{1,36}"
_ID_RE = re.compile(ID)


class Control(StrEnum):
    """Buttons of a gallery's control row (and the Concept Builder's "type a value")."""

    CONTINUE = "next"
    REGENERATE = "regen"
    FEEDBACK = "fb"
    END = "end"
    FIELD = "field"


class FinalAction(StrEnum):
    """Buttons under a final image."""

    UPSCALE = "up"
    VARIATIONS = "var"
    BRANCH = "br"
    INFO = "info"


class SuggestionAction(StrEnum):
    """Buttons under a suggested prompt."""

    USE = "use"
    EDIT = "edit"
    DISCARD = "drop"


class ModalKind(StrEnum):
    """Modals the bot opens."""

    FEEDBACK = "fb"
    EDIT = "edit"
    FIELD = "field"


def _alts(enum: type[StrEnum]) -> str:
    return "|".join(re.escape(m.value) for m in enum)


VOTE_TEMPLATE = rf"{PREFIX}:v:(?P<value>[sr]):(?P<session_id>{ID}):(?P<image_id>{ID})"
CONTROL_TEMPLATE = rf"{PREFIX}:c:(?P<action>{_alts(Control)}):(?P<session_id>{ID}):(?P<stage_id>{ID})"
PICK_TEMPLATE = rf"{PREFIX}:p:(?P<session_id>{ID}):(?P<image_id>{ID})"
FINAL_TEMPLATE = rf"{PREFIX}:f:(?P<action>{_alts(FinalAction)}):(?P<session_id>{ID}):(?P<image_id>{ID})"
SUGGESTION_TEMPLATE = rf"{PREFIX}:s:(?P<action>{_alts(SuggestionAction)}):(?P<session_id>{ID})"
BRANCH_SELECT_TEMPLATE = rf"{PREFIX}:b:(?P<session_id>{ID})"
MODAL_TEMPLATE = rf"{PREFIX}:m:(?P<kind>{_alts(ModalKind)}):(?P<session_id>{ID})"


def _check(*ids: str) -> None:
    for i in ids:
        if not _ID_RE.fullmatch(i):
            raise ValueError(f"id {i!r} cannot go into a custom_id")


def _done(custom_id: str) -> str:
    # Discord rejects custom_ids over 100 characters; fail here, where the bug is.
    if not 1 <= len(custom_id) <= CUSTOM_ID_MAX:
        raise ValueError(f"custom_id too long ({len(custom_id)}): {custom_id}")
    return custom_id


@dataclass(frozen=True, slots=True)
class VoteId:
    """A Select (+1) or Reject (-1) toggle of one image."""

    session_id: str
    image_id: str
    value: int

    def __str__(self) -> str:
        _check(self.session_id, self.image_id)
        v = "s" if self.value > 0 else "r"
        return _done(f"{PREFIX}:v:{v}:{self.session_id}:{self.image_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> VoteId:
        """Parse a match of VOTE_TEMPLATE."""
        return cls(m["session_id"], m["image_id"], 1 if m["value"] == "s" else -1)


@dataclass(frozen=True, slots=True)
class ControlId:
    """A control-row button of one stage's gallery."""

    action: Control
    session_id: str
    stage_id: str

    def __str__(self) -> str:
        _check(self.session_id, self.stage_id)
        return _done(f"{PREFIX}:c:{self.action.value}:{self.session_id}:{self.stage_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> ControlId:
        """Parse a match of CONTROL_TEMPLATE."""
        return cls(Control(m["action"]), m["session_id"], m["stage_id"])


@dataclass(frozen=True, slots=True)
class PickId:
    """A Pick button of a Concept Builder or Explorer round."""

    session_id: str
    image_id: str

    def __str__(self) -> str:
        _check(self.session_id, self.image_id)
        return _done(f"{PREFIX}:p:{self.session_id}:{self.image_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> PickId:
        """Parse a match of PICK_TEMPLATE."""
        return cls(m["session_id"], m["image_id"])


@dataclass(frozen=True, slots=True)
class FinalId:
    """An action button under a finished image."""

    action: FinalAction
    session_id: str
    image_id: str

    def __str__(self) -> str:
        _check(self.session_id, self.image_id)
        return _done(f"{PREFIX}:f:{self.action.value}:{self.session_id}:{self.image_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> FinalId:
        """Parse a match of FINAL_TEMPLATE."""
        return cls(FinalAction(m["action"]), m["session_id"], m["image_id"])


@dataclass(frozen=True, slots=True)
class SuggestionId:
    """Use / Edit / Discard under a suggested prompt (the pending suggestion lives in the session)."""

    action: SuggestionAction
    session_id: str

    def __str__(self) -> str:
        _check(self.session_id)
        return _done(f"{PREFIX}:s:{self.action.value}:{self.session_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> SuggestionId:
        """Parse a match of SUGGESTION_TEMPLATE."""
        return cls(SuggestionAction(m["action"]), m["session_id"])


@dataclass(frozen=True, slots=True)
class BranchSelectId:
    """The select listing a final image's lineage to branch from."""

    session_id: str

    def __str__(self) -> str:
        _check(self.session_id)
        return _done(f"{PREFIX}:b:{self.session_id}")

    @classmethod
    def from_match(cls, m: re.Match[str]) -> BranchSelectId:
        """Parse a match of BRANCH_SELECT_TEMPLATE."""
        return cls(m["session_id"])


@dataclass(frozen=True, slots=True)
class ModalId:
    """A modal bound to a session."""

    kind: ModalKind
    session_id: str

    def __str__(self) -> str:
        _check(self.session_id)
        return _done(f"{PREFIX}:m:{self.kind.value}:{self.session_id}")

    @classmethod
    def parse(cls, custom_id: str) -> ModalId | None:
        """The modal id, or None when `custom_id` is not one of ours."""
        m = re.fullmatch(MODAL_TEMPLATE, custom_id)
        return cls(ModalKind(m["kind"]), m["session_id"]) if m else None


ALL_TEMPLATES: tuple[str, ...] = (
    VOTE_TEMPLATE,
    CONTROL_TEMPLATE,
    PICK_TEMPLATE,
    FINAL_TEMPLATE,
    SUGGESTION_TEMPLATE,
    BRANCH_SELECT_TEMPLATE,
    MODAL_TEMPLATE,
)
