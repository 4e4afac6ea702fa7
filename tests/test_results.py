"""Pure result functions: dominance, Pareto fronts, feasibility, hypervolume, pareto records."""

from __future__ import annotations

import pytest

from hwsearch.results import TrialRecord, hypervolume, is_feasible, non_dominated, pareto_front, pareto_records


def test_pareto_front_of_accuracy_latency_points() -> None:
    pts = [(0.90, 1.0), (0.95, 2.0), (0.85, 1.5), (0.95, 2.5), (0.80, 0.5), (0.90, 1.0)]
    # (0.85, 1.5) is dominated by (0.90, 1.0); (0.95, 2.5) by (0.95, 2.0); the duplicate keeps the first
    assert pareto_front(pts) == [4, 0, 1]
    assert non_dominated([(1, 1, 1), (1, 1, 2), (0, 0, 0)], (True, False, False)) == [0, 2]


def test_feasibility() -> None:
    assert is_feasible({"a": 1.0, "b": 9.0}, {"a": 1.0})
    assert not is_feasible({"a": 1.01}, {"a": 1.0})
    assert not is_feasible({}, {"a": 1.0}) and is_feasible({}, {})


def test_hypervolume_matches_hand_computed_staircase() -> None:
    pts = [(0.9, 1.0), (0.95, 2.0), (0.8, 0.5)]
    # slices by latency: [0.5,1.0)*0.8 + [1.0,2.0)*0.9 + [2.0,3.0)*0.95, above accuracy 0
    assert hypervolume(pts, (0.0, 3.0)) == pytest.approx(0.5 * 0.8 + 1.0 * 0.9 + 1.0 * 0.95)
    assert hypervolume(pts + [(0.85, 1.5)], (0.0, 3.0)) == pytest.approx(hypervolume(pts, (0.0, 3.0)))  # dominated adds nothing
    assert hypervolume(pts, (0.9, 3.0)) == pytest.approx(1.0 * 0.05)
    assert hypervolume([], (0.0, 1.0)) == 0.0 and hypervolume([(0.5, 2.0)], (0.0, 1.0)) == 0.0


def _rec(n: int, acc: float | None, lat: float, state: str = "COMPLETE", budget: float = 2.0) -> TrialRecord:
    return TrialRecord(n, state, acc, {"d": lat}, feasible=state == "COMPLETE" and lat <= budget)


def test_pareto_records_keep_only_feasible_non_dominated_complete_trials() -> None:
    recs = [_rec(0, 0.9, 1.0), _rec(1, 0.99, 3.0), _rec(2, 0.85, 1.5), _rec(3, None, 0.1, "FAIL"), _rec(4, 0.95, 1.8), _rec(5, 0.7, 0.4)]
    front = pareto_records(recs, ("accuracy", "latency_ms:d"))
    assert [r.number for r in front] == [5, 0, 4]  # 1 is infeasible, 2 dominated, 3 failed
    entry = front[0].pareto_entry()
    assert set(entry) == {"trial", "accuracy", "latency_ms", "size_bytes", "params", "macs", "policy"} and entry["latency_ms"] == {"d": 0.4}
