from __future__ import annotations

import polars as pl
import pytest

from loopline.errors import ContractError
from loopline.ingest.units import UNITS, conversion, convert, known_units


def _convert(values: list[float], from_unit: str, to_unit: str) -> list[float]:
    df = pl.DataFrame({"x": values})
    return df.select(convert(pl.col("x"), from_unit, to_unit)).to_series().to_list()


def test_fahrenheit_to_celsius_hits_the_fixed_points_exactly() -> None:
    assert _convert([212.0, 32.0, -40.0], "degF", "degC") == [100.0, 0.0, -40.0]


def test_celsius_to_fahrenheit_and_kelvin() -> None:
    assert _convert([100.0, 0.0, -40.0], "degC", "degF") == [212.0, 32.0, -40.0]
    assert _convert([0.0, -273.15], "degC", "K") == [273.15, 0.0]


def test_miles_to_kilometres_and_back() -> None:
    assert _convert([1.0, 26.2], "mi", "km") == [1.609344, 42.1648128]
    assert _convert([1.609344], "km", "mi") == [1.0]


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "value", "expected"),
    [
        ("ft", "in", 1.0, 12.0),
        ("m", "mm", 1.5, 1500.0),
        ("cm", "m", 250.0, 2.5),
        ("lb", "oz", 1.0, 16.0),
        ("kg", "g", 2.0, 2000.0),
        ("lb", "kg", 1.0, 0.45359237),
        ("bar", "kPa", 1.0, 100.0),
        ("hPa", "Pa", 1013.25, 101325.0),
        ("psi", "Pa", 1.0, 6894.757293168361),
        ("km/h", "m/s", 36.0, 10.0),
        ("mph", "km/h", 60.0, 96.56064),
    ],
)
def test_linear_conversions(from_unit: str, to_unit: str, value: float, expected: float) -> None:
    assert _convert([value], from_unit, to_unit) == [pytest.approx(expected, rel=1e-12)]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_every_unit_round_trips_through_its_base(unit: str) -> None:
    base = {"temperature": "K", "length": "m", "mass": "kg", "pressure": "Pa", "speed": "m/s"}
    there = _convert([12.5, -3.0], unit, base[UNITS[unit].dimension])
    back = _convert(there, base[UNITS[unit].dimension], unit)
    assert back == [pytest.approx(12.5, rel=1e-12), pytest.approx(-3.0, rel=1e-12)]


def test_nulls_stay_null_and_integers_become_floats() -> None:
    df = pl.DataFrame({"x": [1, None]})
    out = df.select(convert(pl.col("x"), "km", "m")).to_series()
    assert out.dtype == pl.Float64
    assert out.to_list() == [1000.0, None]


def test_unknown_unit_lists_the_known_units() -> None:
    with pytest.raises(ContractError, match="unknown unit 'furlong'") as info:
        conversion("furlong", "m")
    assert info.value.fields == {"unit": "furlong"}
    assert "length: mm, cm, m, km, in, ft, mi" in str(info.value)


def test_units_of_different_dimensions_do_not_convert() -> None:
    with pytest.raises(ContractError, match=r"cannot convert 'kg' \(mass\) to 'm' \(length\)") as e:
        conversion("kg", "m")
    assert "speed: m/s, km/h, mph" in str(e.value)


def test_known_units_groups_by_dimension() -> None:
    assert known_units() == (
        "temperature: K, degC, degF; length: mm, cm, m, km, in, ft, mi; "
        "mass: g, kg, lb, oz; pressure: Pa, hPa, kPa, bar, psi; speed: m/s, km/h, mph"
    )
