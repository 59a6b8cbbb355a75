"""Pure vote arithmetic: tallies, the ranked selection, quorum, and the proportional split of the next stage."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class VoteLike(Protocol):
    """Anything with the three fields of a vote (db.Vote fits)."""

    @property
    def image_id(self) -> str:
        """The image voted on."""
        ...

    @property
    def user_id(self) -> str:
        """Who voted."""
        ...

    @property
    def value(self) -> int:
        """+1 (select) or -1 (reject)."""
        ...


def tallies(votes: Iterable[VoteLike]) -> dict[str, int]:
    """Sum of votes per image id."""
    out: dict[str, int] = {}
    for v in votes:
        out[v.image_id] = out.get(v.image_id, 0) + v.value
    return out


def votes_by_image(votes: Iterable[VoteLike]) -> dict[str, dict[str, int]]:
    """Image id -> user id -> value."""
    out: dict[str, dict[str, int]] = {}
    for v in votes:
        out.setdefault(v.image_id, {})[v.user_id] = v.value
    return out


def distinct_voters(votes: Iterable[VoteLike]) -> int:
    """How many different people voted."""
    return len({v.user_id for v in votes})


def rank_selection(tally_by_number: Mapping[int, int]) -> tuple[int, ...]:
    """Numbers with a positive tally, highest tally first, then lower number first."""
    return tuple(n for n, t in sorted(tally_by_number.items(), key=lambda kv: (-kv[1], kv[0])) if t > 0)


def rejected(tally_by_number: Mapping[int, int]) -> tuple[int, ...]:
    """Numbers with a negative tally, most rejected first."""
    return tuple(n for n, t in sorted(tally_by_number.items(), key=lambda kv: (kv[1], kv[0])) if t < 0)


def allocate(count: int, weights: Sequence[tuple[K, int]]) -> dict[K, int]:
    """
    Spread `count` children over ranked parents in proportion to their weights (largest remainder).

    `weights` is in rank order; ties in remainders go to the better-ranked parent. Every parent
    gets at least one child when count allows; when it does not, the best-ranked `count` get one.
    Parents that get nothing are left out of the result.
    """
    if count <= 0 or not weights:
        return {}
    keys = [k for k, _ in weights]
    w = [max(1, int(x)) for _, x in weights]
    if count <= len(keys):
        return dict.fromkeys(keys[:count], 1)
    total = sum(w)
    quotas = [count * x / total for x in w]
    alloc = [int(q) for q in quotas]
    rest = count - sum(alloc)
    by_remainder = sorted(range(len(keys)), key=lambda i: (-(quotas[i] - alloc[i]), i))
    for i in by_remainder[:rest]:
        alloc[i] += 1
    # Every selected image gets a child: take from the largest share (the worst-ranked of equals) first.
    for i in range(len(keys)):
        while alloc[i] == 0:
            donor = max(range(len(keys)), key=lambda j: (alloc[j], j))
            alloc[donor] -= 1
            alloc[i] += 1
    return {k: n for k, n in zip(keys, alloc, strict=True) if n > 0}
