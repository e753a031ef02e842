"""Unit conversion table for the ``convert_units`` cleansing step.

Each unit maps to the base unit of its dimension (K, m, kg, Pa, m/s) by
``base = (value - zero) * factor``, where ``zero`` is the unit's reading at a reference point
shared by the dimension (0 °C for temperature, nothing for the others). Factors are exact
fractions, so a conversion is one vectorised ``(x - zero_from) * scale + zero_to`` with a
correctly rounded ``scale``: 212 degF gives exactly 100 degC.

>>> conversion("degF", "degC")
Conversion(zero_from=32.0, scale=0.5555555555555556, zero_to=0.0)
>>> df = pl.DataFrame({"t": [212.0, 32.0], "d": [1.0, 26.2]})
>>> df.select(convert(pl.col("t"), "degF", "degC"), convert(pl.col("d"), "mi", "km")).rows()
[(100.0, 1.609344), (0.0, 42.1648128)]
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import polars as pl

from loopline.errors import ContractError


@dataclass(frozen=True)
class Unit:
    """One unit: its dimension and the affine map ``base = (value - zero) * factor``."""

    dimension: str
    factor: Fraction
    zero: Fraction = Fraction(0)


def _u(dimension: str, factor: str, zero: str = "0") -> Unit:
    return Unit(dimension, Fraction(factor), Fraction(zero))


UNITS: dict[str, Unit] = {
    # temperature: base kelvin above the freezing point of water (0 degC = 32 degF = 273.15 K)
    "K": _u("temperature", "1", "273.15"),
    "degC": _u("temperature", "1"),
    "degF": _u("temperature", "5/9", "32"),
    # length (base: metre)
    "mm": _u("length", "0.001"),
    "cm": _u("length", "0.01"),
    "m": _u("length", "1"),
    "km": _u("length", "1000"),
    "in": _u("length", "0.0254"),
    "ft": _u("length", "0.3048"),
    "mi": _u("length", "1609.344"),
    # mass (base: kilogram)
    "g": _u("mass", "0.001"),
    "kg": _u("mass", "1"),
    "lb": _u("mass", "0.45359237"),
    "oz": _u("mass", "0.028349523125"),
    # pressure (base: pascal); psi = lbf / in^2 = 0.45359237 * 9.80665 / 0.0254^2 Pa
    "Pa": _u("pressure", "1"),
    "hPa": _u("pressure", "100"),
    "kPa": _u("pressure", "1000"),
    "bar": _u("pressure", "100000"),
    "psi": Unit("pressure", Fraction("0.45359237") * Fraction("9.80665") / Fraction("0.0254") ** 2),
    # speed (base: metre per second)
    "m/s": _u("speed", "1"),
    "km/h": _u("speed", "5/18"),
    "mph": _u("speed", "0.44704"),
}


@dataclass(frozen=True)
class Conversion:
    """``to = (from - zero_from) * scale + zero_to``."""

    zero_from: float
    scale: float
    zero_to: float


def known_units() -> str:
    """The known units grouped by dimension, for error messages.

    >>> known_units().split("; ")[0]
    'temperature: K, degC, degF'
    """
    groups: dict[str, list[str]] = {}
    for name, unit in UNITS.items():
        groups.setdefault(unit.dimension, []).append(name)
    return "; ".join(f"{dim}: {', '.join(names)}" for dim, names in groups.items())


def _unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise ContractError(
            f"unknown unit {name!r}; known units: {known_units()}",
            unit=name,
            hint="use one of the known units (names are case-sensitive)",
        ) from None


def conversion(from_unit: str, to_unit: str) -> Conversion:
    """The affine map from one unit to another of the same dimension.

    Unknown units, or units of different dimensions, raise :class:`ContractError`.
    """
    source, target = _unit(from_unit), _unit(to_unit)
    if source.dimension != target.dimension:
        raise ContractError(
            f"cannot convert {from_unit!r} ({source.dimension}) to {to_unit!r} "
            f"({target.dimension}); known units: {known_units()}",
            from_unit=from_unit,
            to_unit=to_unit,
            hint="convert between two units of one dimension",
        )
    return Conversion(
        zero_from=float(source.zero),
        scale=float(source.factor / target.factor),
        zero_to=float(target.zero),
    )


def convert(value: pl.Expr, from_unit: str, to_unit: str) -> pl.Expr:
    """A Float64 expression converting ``value`` from one unit to another.

    >>> pl.DataFrame({"t": [0.0]}).select(convert(pl.col("t"), "degC", "K")).item()
    273.15
    """
    conv = conversion(from_unit, to_unit)
    out = value.cast(pl.Float64)
    if conv.zero_from:
        out = out - conv.zero_from
    if conv.scale != 1.0:
        out = out * conv.scale
    if conv.zero_to:
        out = out + conv.zero_to
    return out
