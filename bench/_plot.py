"""The ``--plot`` helper the area benchmarks share: rate and p99 latency against concurrency.

matplotlib is imported only when a plot is written, so the scripts run without it unless
``--plot`` is given (``pip install -e '.[bench]'`` installs it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: One sweep point: (concurrency, rate per second, p99 latency in ms or None when unmeasured).
Point = tuple[float, float, float | None]

DPI = 110
SIZE_IN = (10.0, 4.2)


def parse_concurrency(text: str, *, option: str = "--concurrency") -> list[int]:
    """``"1,4,16,64"`` -> ``[1, 4, 16, 64]``; anything else stops with a message naming it."""
    values = []
    for part in text.split(","):
        item = part.strip()
        if not item.isdigit() or int(item) < 1:
            raise SystemExit(
                f"{option}: {item!r} is not a positive integer; expected a comma-separated "
                "list of positive integers such as 1,4,16,64"
            )
        values.append(int(item))
    return sorted(set(values))


def check_plot_path(path: str | None, *, option: str = "--plot") -> Path | None:
    """Fail before any benchmark runs when the plot cannot be written (wrong suffix, no
    matplotlib, missing directory)."""
    if path is None:
        return None
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise SystemExit(f"{option}: {path!r} does not end in .png; expected a PNG file path")
    if not target.parent.is_dir():
        raise SystemExit(f"{option}: directory {str(target.parent)!r} of {path!r} does not exist")
    _pyplot()
    return target


def load_average() -> str:
    """The 1 / 5 / 15 minute load average, formatted for a title or a log line."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


class Machine:
    """CPU count and load average at the start of a run; ``describe()`` adds the end."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 0
        self.start = load_average()
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.end: str | None = None

    def finish(self) -> str:
        self.end = load_average()
        return self.end

    def describe(self) -> str:
        end = self.end if self.end is not None else self.finish()
        return (
            f"{self.cpus} CPUs (shared), load average {self.start} at start, "
            f"{end} at end (1/5/15 min), {self.started}"
        )


def shape(series: Mapping[str, Sequence[Point]]) -> dict[str, tuple[list[float], ...]]:
    """Per label: x sorted ascending, with the rates and the p99s (NaN where unmeasured).

    Stops with a message naming the label when a series is empty or a concurrency is not
    positive (the x axis is logarithmic).
    """
    shaped = {}
    for label, points in series.items():
        if not points:
            raise SystemExit(f"plot series {label!r} has no points")
        ordered = sorted(points, key=lambda p: p[0])
        for x, rate, _ in ordered:
            if x <= 0:
                raise SystemExit(f"plot series {label!r}: concurrency {x!r} is not positive")
            if rate < 0:
                raise SystemExit(f"plot series {label!r}: rate {rate!r} is negative")
        xs = [float(p[0]) for p in ordered]
        rates = [float(p[1]) for p in ordered]
        p99s = [float("nan") if p[2] is None else float(p[2]) for p in ordered]
        shaped[label] = (xs, rates, p99s)
    return shaped


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which is not installed; install it with "
            "`pip install 'matplotlib>=3.8'` (or `pip install -e '.[bench]'`)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(
    path: Path | str,
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    machine: Machine,
    x_label: str = "concurrent connections (wrk -c, log scale)",
    rate_label: str = "requests per second",
    latency_label: str = "p99 latency (ms)",
) -> Path:
    """Two panels (rate, p99 latency) against concurrency on a log x axis; one PNG."""
    shaped = shape(series)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=SIZE_IN)
    for label, (xs, rates, p99s) in shaped.items():
        left.plot(xs, rates, marker="o", label=label)
        right.plot(xs, p99s, marker="o", label=label)
    ticks = sorted({x for xs, _, _ in shaped.values() for x in xs})
    for ax, ylabel in ((left, rate_label), (right, latency_label)):
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel(x_label)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    fig.suptitle(f"{title}\n{machine.describe()}", fontsize="medium")
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target, dpi=DPI)
    plt.close(fig)
    print(f"plot written: {target} ({target.stat().st_size // 1024} KiB)", flush=True)
    return target


def print_points(series: Mapping[str, Sequence[Point]], *, rate: str, unit: str = "ms") -> None:
    """The plotted figures as text (one line per series), so a run's log carries them too."""
    for label, points in shape(series).items():
        xs, rates, p99s = points
        rows = zip(xs, rates, p99s, strict=True)
        cells = ", ".join(f"{x:g}: {r:.0f} {rate} p99 {p:.1f} {unit}" for x, r, p in rows)
        print(f"  {label}: {cells}", flush=True)
