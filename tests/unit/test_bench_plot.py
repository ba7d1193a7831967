"""bench/_plot.py's pure part: the --concurrency parser and the series shaping (no matplotlib)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from bench._plot import check_plot_path, parse_concurrency, shape

ROOT = Path(__file__).resolve().parents[2]


def test_parse_concurrency_sorts_and_drops_repeats() -> None:
    assert parse_concurrency("64, 1,16,4,16") == [1, 4, 16, 64]


@pytest.mark.parametrize("text", ["1,x", "0,4", "4,-1", "", "1,,4", "2.5"])
def test_parse_concurrency_names_the_bad_value(text: str) -> None:
    with pytest.raises(SystemExit) as excinfo:
        parse_concurrency(text)
    message = str(excinfo.value)
    assert message.startswith("--concurrency: ")
    assert "expected a comma-separated list of positive integers" in message


def test_parse_concurrency_quotes_the_offending_item() -> None:
    with pytest.raises(SystemExit, match=r"'x' is not a positive integer"):
        parse_concurrency("1,x,4")


def test_shape_sorts_by_concurrency_and_marks_missing_p99() -> None:
    shaped = shape({"a": [(16, 300.0, 5.0), (1, 100.0, None), (4, 200.0, 2.5)]})
    xs, rates, p99s = shaped["a"]
    assert xs == [1.0, 4.0, 16.0]
    assert rates == [100.0, 200.0, 300.0]
    assert math.isnan(p99s[0])
    assert p99s[1:] == [2.5, 5.0]


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ({"empty": []}, "plot series 'empty' has no points"),
        ({"zero": [(0, 1.0, 1.0)]}, "plot series 'zero': concurrency 0 is not positive"),
        ({"neg": [(1, -2.0, 1.0)]}, "plot series 'neg': rate -2.0 is negative"),
    ],
)
def test_shape_rejects_what_a_log_axis_cannot_show(
    series: dict[str, list[tuple[float, float, float | None]]], expected: str
) -> None:
    with pytest.raises(SystemExit, match=expected):
        shape(series)


def test_plot_path_must_be_a_png_in_an_existing_directory(tmp_path: Path) -> None:
    assert check_plot_path(None) is None
    with pytest.raises(SystemExit, match=r"--plot: 'out\.svg' does not end in \.png"):
        check_plot_path("out.svg")
    missing = tmp_path / "nowhere" / "x.png"
    with pytest.raises(SystemExit, match="does not exist"):
        check_plot_path(str(missing))


def test_importing_the_helper_does_not_import_matplotlib() -> None:
    """The bench scripts run without matplotlib unless --plot is given."""
    code = "import sys, bench._plot; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
