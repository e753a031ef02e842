"""Search-space syntax: parsing, grids, seeded sampling and Optuna suggestions."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from loopline.errors import TrainError
from loopline.train.search_space import (
    Choice,
    FloatRange,
    IntRange,
    grid_points,
    grid_values,
    parse_space,
    sample_points,
    suggest,
)


def test_every_form_of_the_syntax_parses() -> None:
    dims = parse_space(
        {
            "a": {"int": [1, 5]},
            "b": {"int": [8, 128], "log": True},
            "c": {"float": [0.1, 0.9]},
            "d": {"float": [1e-4, 1.0], "log": True},
            "e": {"choice": ["gini", "entropy"]},
            "f": [None, 8, 16],
        }
    )
    assert dims == {
        "a": IntRange(1, 5),
        "b": IntRange(8, 128, log=True),
        "c": FloatRange(0.1, 0.9),
        "d": FloatRange(1e-4, 1.0, log=True),
        "e": Choice(("gini", "entropy")),
        "f": Choice((None, 8, 16)),
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (31, "fixed value"),
        ({"int": [5, 1]}, "above high"),
        ({"int": [1.5, 3]}, "needs \\[low, high\\]"),
        ({"int": [1, 2, 3]}, "needs \\[low, high\\]"),
        ({"float": [0.0, 1.0], "log": True}, "log scale needs low > 0"),
        ({"float": [0.1, 1.0], "log": "yes"}, "'log' must be"),
        ({"int": [1, 3], "float": [1.0, 2.0]}, "got"),
        ({"uniform": [1, 3]}, "got"),
        ({"choice": []}, "empty"),
        ({"choice": "abc"}, "needs a list"),
        ({"choice": [1, 2], "log": True}, "'log' applies"),
        ([], "empty"),
    ],
)
def test_bad_entries_name_the_parameter_and_hint(spec: Any, message: str) -> None:
    with pytest.raises(TrainError, match=message) as caught:
        parse_space({"num_leaves": spec})
    assert caught.value.fields["param"] == "num_leaves"
    assert caught.value.hint


def test_grid_takes_every_choice_and_three_points_per_range() -> None:
    assert grid_values(IntRange(2, 10)) == [2, 6, 10]
    assert grid_values(FloatRange(0.01, 1.0, log=True)) == pytest.approx([0.01, 0.1, 1.0])
    assert grid_values(IntRange(1, 2)) == [1, 2]  # duplicates after rounding collapse
    points = grid_points({"a": Choice((1, 2)), "b": FloatRange(0.0, 1.0)})
    assert points == [
        {"a": 1, "b": 0.0},
        {"a": 1, "b": 0.5},
        {"a": 1, "b": 1.0},
        {"a": 2, "b": 0.0},
        {"a": 2, "b": 0.5},
        {"a": 2, "b": 1.0},
    ]


def test_samples_stay_inside_their_ranges_and_repeat_under_a_seed() -> None:
    dims = parse_space(
        {
            "n": {"int": [8, 128], "log": True},
            "k": {"int": [1, 3]},
            "lr": {"float": [1e-3, 0.3], "log": True},
            "kind": ["a", "b"],
        }
    )
    points = sample_points(dims, n=200, seed=5)
    assert points == sample_points(dims, n=200, seed=5)
    assert points != sample_points(dims, n=200, seed=6)
    assert all(8 <= p["n"] <= 128 and isinstance(p["n"], int) for p in points)
    assert {p["k"] for p in points} == {1, 2, 3}  # both ends are reachable
    assert all(1e-3 <= p["lr"] <= 0.3 for p in points)
    assert {p["kind"] for p in points} == {"a", "b"}
    # log scale: as many draws below the geometric middle (~32) as above it
    below = sum(p["n"] < 32 for p in points)
    assert 70 < below < 130


def test_a_space_of_choices_is_sampled_without_replacement() -> None:
    dims = parse_space({"a": [1, 2, 3], "b": ["x", "y"]})
    points = sample_points(dims, n=50, seed=0)
    assert len(points) == 6
    assert sorted((p["a"], p["b"]) for p in points) == sorted(
        (p["a"], p["b"]) for p in grid_points(dims)
    )


def test_optuna_suggestions_cover_every_dimension_kind() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dims = parse_space(
        {
            "n": {"int": [8, 128], "log": True},
            "lr": {"float": [1e-3, 0.3], "log": True},
            "depth": [None, 4, 8],
            "shape": {"choice": [(1, 2), (3, 4)]},  # not a plain value: chosen by label
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        seen.append({name: suggest(trial, name, dim) for name, dim in dims.items()})
        return 0.0

    study.optimize(objective, n_trials=30)
    assert all(8 <= p["n"] <= 128 for p in seen)
    assert all(1e-3 <= p["lr"] <= 0.3 for p in seen)
    assert {p["depth"] for p in seen} == {None, 4, 8}
    assert {p["shape"] for p in seen} == {(1, 2), (3, 4)}
