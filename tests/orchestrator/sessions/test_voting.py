"""Vote arithmetic: tallies, ranking, and the proportional split of the next stage."""

from __future__ import annotations

from orchestrator.db import Vote
from orchestrator.sessions.voting import allocate, distinct_voters, rank_selection, rejected, tallies


def test_tallies_and_distinct_voters():
    votes = [Vote("s", "a", "u1", 1), Vote("s", "a", "u2", 1), Vote("s", "b", "u1", -1), Vote("s", "c", "u3", 1)]
    assert tallies(votes) == {"a": 2, "b": -1, "c": 1}
    assert distinct_voters(votes) == 3


def test_selection_is_positive_tallies_best_first_then_lower_number():
    assert rank_selection({1: 1, 2: 3, 3: 0, 4: -2, 5: 1}) == (2, 1, 5)
    assert rejected({1: 1, 2: -1, 3: -3}) == (3, 2)


def test_allocation_follows_tallies_with_largest_remainder():
    assert allocate(8, [("a", 3), ("b", 1), ("c", 1)]) == {"a": 5, "b": 2, "c": 1}
    assert allocate(8, [("a", 2), ("b", 1), ("c", 1)]) == {"a": 4, "b": 2, "c": 2}
    assert allocate(3, [("a", 1)]) == {"a": 3}
    assert sum(allocate(8, [(i, 1) for i in range(3)]).values()) == 8


def test_every_selected_image_gets_one_when_count_allows():
    shares = allocate(4, [("a", 10), ("b", 1), ("c", 1), ("d", 1)])
    assert shares == {"a": 1, "b": 1, "c": 1, "d": 1}
    shares = allocate(5, [("a", 20), ("b", 1), ("c", 1)])
    assert sum(shares.values()) == 5 and min(shares.values()) >= 1 and shares["a"] == 3


def test_fewer_children_than_parents_go_to_the_best_ranked():
    assert allocate(1, [("a", 2), ("b", 5)]) == {"a": 1}
    assert allocate(2, [("x", 1), ("y", 1), ("z", 1)]) == {"x": 1, "y": 1}
    assert allocate(0, [("x", 1)]) == {}
    assert allocate(3, []) == {}


def test_sessions_package_exports_what_it_lists():
    import orchestrator.sessions as pkg

    assert all(hasattr(pkg, name) for name in pkg.__all__)
    assert {"Flow", "Session", "StageView", "VoteResult", "ImageInfo", "parse_prompt"} <= set(pkg.__all__)
