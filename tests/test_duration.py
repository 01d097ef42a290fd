"""Durations: runbook text to seconds, and seconds to short human text."""

from __future__ import annotations

import pytest

from ojd.duration import DurationError, format_duration, parse_duration
from ojd.errors import OjError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("500ms", 0.5),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5s", 1.5),
        (".5m", 30),
        ("10", 10),
        (" 2.5 ", 2.5),
        ("3H", 10800),
        (45, 45),
        (0.25, 0.25),
    ],
)
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["soon", "", "  ", "5x", "s", "1h30", "m5", "-5s", "1e3", "5 m s", "1,5s", "1h-2m"]
)
def test_unparsable(text: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    message = str(e.value)
    assert message == f'invalid duration {text!r}; use e.g. "30s", "5m", "1h30m"'
    assert "\n" not in message


@pytest.mark.parametrize("value", ["0s", "0", 0, -3, -0.5, "0ms", float("inf"), float("nan")])
def test_not_positive(value: str | float) -> None:
    with pytest.raises(DurationError, match=r"^invalid duration .*: it must be more than zero; "):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_wrong_type(value: object) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


def test_error_types() -> None:
    assert issubclass(DurationError, ValueError)
    assert issubclass(DurationError, OjError)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.45, "450ms"),
        (0.9999, "999ms"),
        (1, "1s"),
        (12.7, "12s"),
        (59.99, "59s"),
        (60, "1m"),
        (185, "3m 5s"),
        (3600, "1h"),
        (7800, "2h 10m"),
        (7859, "2h 10m"),
        (86400, "1d"),
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
        (400 * 86400, "400d"),
        (-185, "-3m 5s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_round_trip() -> None:
    for text in ["450ms", "12s", "3m", "2h", "3d"]:
        assert format_duration(parse_duration(text)) == text
