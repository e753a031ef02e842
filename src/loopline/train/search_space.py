"""Search spaces: parse the ``search_space`` syntax, then grid, sample or suggest from it.

The syntax of :class:`~loopline.config.training.CandidateConfig` ``search_space``, keyed
by the estimator's own parameter names:

- ``{int: [low, high]}`` — integers, both ends included; ``log: true`` spreads them
  evenly on a log scale (``low >= 1``);
- ``{float: [low, high]}`` — reals; ``log: true`` for a log scale (``low > 0``);
- ``{choice: [a, b, ...]}`` or a plain list ``[a, b, ...]`` — one of the values.

A grid takes every choice and :data:`GRID_POINTS` points of each range (evenly spaced,
on a log scale when ``log``); random search draws ranges uniformly (log-uniformly) and
choices with equal chance; Optuna uses the matching ``suggest_*`` call.

>>> dims = parse_space({"max_depth": {"int": [2, 8]}, "C": {"float": [0.01, 1], "log": True},
...                     "criterion": ["gini", "entropy"]})
>>> len(grid_points(dims)), grid_points(dims)[0]
(18, {'max_depth': 2, 'C': 0.01, 'criterion': 'gini'})
>>> sample_points(dims, n=2, seed=0) == sample_points(dims, n=2, seed=0)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.errors import TrainError

if TYPE_CHECKING:
    import optuna

GRID_POINTS = 3
_SYNTAX = "{int: [low, high]}, {float: [low, high], log: true}, {choice: [...]} or a list"


@dataclass(frozen=True)
class IntRange:
    """Integers from ``low`` to ``high`` inclusive, optionally on a log scale."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """Reals from ``low`` to ``high``, optionally on a log scale."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values."""

    options: tuple[Any, ...]


Dimension = IntRange | FloatRange | Choice


def parse_space(space: Mapping[str, Any]) -> dict[str, Dimension]:
    """Parse a ``search_space`` mapping; bad entries end in a :class:`TrainError`."""
    return {name: _parse_dimension(name, spec) for name, spec in space.items()}


def _parse_dimension(name: str, spec: Any) -> Dimension:
    if isinstance(spec, list | tuple):
        return _choice(name, spec)
    if not isinstance(spec, Mapping):
        raise _bad(name, f"got the fixed value {spec!r}", "put fixed values in 'params'")
    kinds = [key for key in ("int", "float", "choice") if key in spec]
    extra = sorted(set(spec) - {"int", "float", "choice", "log"})
    if len(kinds) != 1 or extra:
        raise _bad(name, f"got {dict(spec)!r}", f"write one of {_SYNTAX}")
    kind = kinds[0]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _bad(name, f"'log' must be true or false, got {log!r}", "write log: true")
    if kind == "choice":
        if log:
            raise _bad(name, "'log' applies to int and float ranges only", "drop 'log'")
        if not isinstance(spec["choice"], list | tuple):
            raise _bad(name, f"'choice' needs a list, got {spec['choice']!r}", _SYNTAX)
        return _choice(name, spec["choice"])
    bounds = spec[kind]
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list | tuple)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        raise _bad(name, f"'{kind}' needs [low, high] as {kind}s, got {bounds!r}", _SYNTAX)
    low, high = bounds
    if low > high:
        raise _bad(name, f"low {low} is above high {high}", "write [low, high]")
    if log and low <= 0:
        raise _bad(name, f"a log scale needs low > 0, got {low}", "raise low or drop 'log'")
    if kind == "int":
        return IntRange(int(low), int(high), log)
    return FloatRange(float(low), float(high), log)


def _choice(name: str, options: list[Any] | tuple[Any, ...]) -> Choice:
    if not options:
        raise _bad(name, "the list of choices is empty", "give at least one value")
    return Choice(tuple(options))


def _bad(name: str, problem: str, hint: str) -> TrainError:
    return TrainError(f"bad search space for {name!r}: {problem}", param=name, hint=hint)


def grid_values(dim: Dimension, points: int = GRID_POINTS) -> list[Any]:
    """The grid of one dimension: every choice, or ``points`` points across a range.

    >>> grid_values(IntRange(8, 128, log=True)), grid_values(FloatRange(0.0, 1.0))
    ([8, 32, 128], [0.0, 0.5, 1.0])
    """
    if isinstance(dim, Choice):
        return list(dim.options)
    spread = np.geomspace if dim.log else np.linspace
    values = spread(dim.low, dim.high, points)
    if isinstance(dim, IntRange):
        return sorted({round(float(v)) for v in values})
    return [float(v) for v in values]


def grid_points(dims: Mapping[str, Dimension]) -> list[dict[str, Any]]:
    """Every combination of :func:`grid_values`, in a fixed order (first key varies last)."""
    points: list[dict[str, Any]] = [{}]
    for name, dim in dims.items():
        points = [{**point, name: value} for point in points for value in grid_values(dim)]
    return points


def sample_points(dims: Mapping[str, Dimension], *, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random points; the same ``seed`` gives the same points.

    A space made only of choices is sampled without replacement (at most its grid size).
    """
    if all(isinstance(dim, Choice) for dim in dims.values()):
        grid = grid_points(dims)
        order = np.random.default_rng(seed).permutation(len(grid))[:n]
        return [grid[i] for i in order]
    rng = np.random.default_rng(seed)
    return [{name: _draw(dim, rng) for name, dim in dims.items()} for _ in range(n)]


def _draw(dim: Dimension, rng: np.random.Generator) -> Any:
    if isinstance(dim, Choice):
        return dim.options[int(rng.integers(len(dim.options)))]
    if isinstance(dim, FloatRange):
        if dim.log:
            return float(math.exp(rng.uniform(math.log(dim.low), math.log(dim.high))))
        return float(rng.uniform(dim.low, dim.high))
    if dim.log:
        # log-uniform over [low, high + 1) then floor: every integer has a fair share.
        drawn = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high + 1)))
        return min(int(drawn), dim.high)
    return int(rng.integers(dim.low, dim.high + 1))


def suggest(trial: optuna.Trial, name: str, dim: Dimension) -> Any:
    """Ask an Optuna trial for a value of ``dim``."""
    if isinstance(dim, IntRange):
        return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, FloatRange):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    if all(
        option is None or isinstance(option, bool | int | float | str) for option in dim.options
    ):
        return trial.suggest_categorical(name, list(dim.options))
    # Optuna stores only plain values: choose by label and map back.
    labels = {repr(option): option for option in dim.options}
    return labels[str(trial.suggest_categorical(name, list(labels)))]
