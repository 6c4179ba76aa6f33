"""
The results of a run: measures with their samples, the shimd / Go ratio,
the targets, and their presentation as a text table, JSON, a PNG chart of
the ratios, and a reST table for the README.

Samples are kept in the unit they are shown in (ms, µs, MiB/s, MiB ...), so
that the JSON reads as the table does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import stats


@dataclass
class Measure:
    """
    One measure of both shims.

    @ivar higherIsBetter: whether a larger number is better (throughput);
        otherwise smaller is (times, memory, CPU).
    @ivar target: the ratio shimd / Go to reach: at most this when smaller
        is better, at least this when higher is; L{None} for none.
    """

    key: str
    label: str
    unit: str
    samples: dict[str, list[float]]
    higherIsBetter: bool = False
    target: float | None = None
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def summary(self, name: str) -> dict[str, float | int] | None:
        values = self.samples.get(name) or []
        return stats.summarise(values) if values else None

    @property
    def ratio(self) -> float | None:
        """
        shimd's median over Go's.
        """
        shimd, go = self.summary("shimd"), self.summary("go")
        if shimd is None or go is None:
            return None
        return stats.ratio(shimd["median"], go["median"])

    @property
    def passed(self) -> bool | None:
        """
        Whether the target is met; L{None} without a target or a ratio.
        """
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        if self.higherIsBetter:
            return ratio >= self.target
        return ratio <= self.target

    def targetText(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higherIsBetter else '<='} {self.target:g}x"

    def asJSON(self) -> dict[str, object]:
        ratio = self.ratio
        return {
            "label": self.label,
            "unit": self.unit,
            "higherIsBetter": self.higherIsBetter,
            "target": self.target,
            "ratio": None if ratio is None or math.isinf(ratio) else ratio,
            "passed": self.passed,
            "note": self.note,
            "shims": {
                name: {**(self.summary(name) or {}), "samples": values}
                for name, values in self.samples.items()
            },
            **({"extra": self.extra} if self.extra else {}),
        }


def number(value: float | None) -> str:
    """
    A number with three significant digits or so.
    """
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _verdict(measure: Measure) -> str:
    passed = measure.passed
    if passed is None:
        return ""
    return "PASS" if passed else "FAIL"


def rows(measures: Sequence[Measure]) -> list[list[str]]:
    """
    The table: one row per measure.
    """
    table = []
    for measure in measures:
        shimd, go = measure.summary("shimd"), measure.summary("go")
        table.append(
            [
                f"{measure.label} [{measure.unit}]",
                number(shimd["median"] if shimd else None),
                number(shimd["p90"] if shimd else None),
                number(go["median"] if go else None),
                number(go["p90"] if go else None),
                number(measure.ratio) + ("x" if measure.ratio is not None else ""),
                measure.targetText(),
                _verdict(measure),
            ]
        )
    return table


HEADINGS = ["measure", "shimd p50", "shimd p90", "Go p50", "Go p90", "ratio"]
HEADINGS += ["target", ""]


def textTable(measures: Sequence[Measure]) -> str:
    """
    The table in plain text, aligned.
    """
    table = [HEADINGS, *rows(measures)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADINGS))]
    lines = []
    for index, row in enumerate(table):
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def restTable(measures: Sequence[Measure]) -> str:
    """
    The table as a reST simple table, ready to paste into README.rst.
    """
    headings = ["Measure", "shimd", "Go", "shimd / Go", "Target"]
    table = [headings]
    for row, measure in zip(rows(measures), measures, strict=True):
        target = measure.targetText()
        verdict = _verdict(measure)
        table.append(
            [
                row[0],
                row[1],
                row[3],
                row[5],
                f"{target} ({verdict.lower()})" if target else "",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(headings))]
    rule = "  ".join("=" * width for width in widths)
    lines = [rule]
    for index, row in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)


def writeJSON(document: dict[str, object], directory: str, stamp: str) -> str:
    """
    Write C{<directory>/<stamp>.json} and C{<directory>/latest.json}.

    @return: the stamped file's path.
    """
    os.makedirs(directory, exist_ok=True)
    text = json.dumps(document, indent=1, sort_keys=False) + "\n"
    path = os.path.join(directory, f"{stamp}.json")
    for target in (path, os.path.join(directory, "latest.json")):
        temporary = target + ".tmp"
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, target)
    return path


def drawChart(
    measures: Sequence[Measure], paths: Sequence[str], title: str
) -> str | None:
    """
    A horizontal bar per measure with a ratio: shimd / Go on a log scale,
    from the line at 1.0, each target marked; green where the target is met (or
    shimd is at least as good, without a target), red where it is not.

    @return: L{None}, or why no chart was drawn (no matplotlib).
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.patches import (  # type: ignore[import-not-found, unused-ignore]
            Patch,
        )
        from matplotlib.ticker import (  # type: ignore[import-not-found, unused-ignore]
            FixedLocator,
            NullFormatter,
        )
    except ImportError:
        return "matplotlib is not installed (tox -e bench has it)"
    shown = [m for m in measures if m.ratio is not None and not math.isinf(m.ratio)]
    labels = [
        m.label + (" (higher is better)" if m.higherIsBetter else "") for m in shown
    ]
    ratios = [m.ratio for m in shown if m.ratio is not None]
    colours = []
    for measure, value in zip(shown, ratios, strict=True):
        passed = measure.passed
        if passed is None:
            passed = value >= 1.0 if measure.higherIsBetter else value <= 1.0
            colours.append("#8fbf8f" if passed else "#e0a0a0")
        else:
            colours.append("#2e8b57" if passed else "#c0392b")
    figure, axes = plt.subplots(figsize=(9, 0.32 * len(shown) + 2.2))
    positions = list(range(len(shown)))[::-1]
    positive = [r for r in ratios if r > 0]
    low = min([*positive, *(m.target or 1.0 for m in shown), 1.0]) / 1.5
    high = max([*positive, *(m.target or 1.0 for m in shown), 1.0]) * 1.5
    # A ratio of 0 (shimd used nothing) has no place on a log scale: its bar
    # runs to the left edge, and its label says 0.
    shownRatios = [max(r, low) for r in ratios]
    axes.barh(positions, [r - 1.0 for r in shownRatios], color=colours, left=1.0)
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    axes.axvline(1.0, color="black", linewidth=1)
    for position, measure, value, drawn in zip(
        positions, shown, ratios, shownRatios, strict=True
    ):
        if measure.target is not None:
            axes.plot(
                [measure.target, measure.target],
                [position - 0.45, position + 0.45],
                color="black",
                linewidth=2.5,
            )
        axes.text(drawn * 1.03, position, f"{value:.2f}x", va="center", fontsize=7)
    ticks = [
        t
        for t in (0.05, 0.1, 0.2, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500)
        if low <= t <= high
    ]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticklabels([f"{t:g}" for t in ticks], fontsize=8)
    axes.set_yticks(positions)
    axes.set_yticklabels(labels, fontsize=8)
    axes.set_ylim(-0.7, len(shown) - 0.3)
    axes.set_xlabel("shimd / Go, ratio of the medians (log scale)", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(axis="x", which="major", alpha=0.3)
    axes.legend(
        handles=[
            Patch(color="#2e8b57", label="target met"),
            Patch(color="#c0392b", label="target missed"),
            Patch(color="#8fbf8f", label="no target, shimd as good or better"),
            Patch(color="#e0a0a0", label="no target, shimd worse"),
            Patch(color="black", label="target"),
        ],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9 / (0.32 * len(shown) + 1.6)),
        ncol=3,
        frameon=False,
    )
    _save(plt, figure, paths)
    return None


def drawDensity(
    curve: Mapping[str, Sequence[Sequence[float]]], paths: Sequence[str], title: str
) -> str | None:
    """
    Total PSS against the number of containers (a shim each), a line per
    shim, shimd's with its fork server counted in.

    @param curve: C{{shim name: [[containers, bytes], ...]}}.
    @return: L{None}, or why no chart was drawn (no matplotlib).
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "matplotlib is not installed (tox -e bench has it)"
    labels = {"shimd": "shimd (daemons + fork server)", "go": "Go shim"}
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for name, points in curve.items():
        containers = [point[0] for point in points]
        mebibytes = [point[1] / (1 << 20) for point in points]
        axes.plot(containers, mebibytes, marker="o", label=labels.get(name, name))
        for x, y in zip(containers, mebibytes, strict=True):
            axes.annotate(
                f"{y:.0f}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    axes.set_xlabel("containers, a shim each", fontsize=8)
    axes.set_ylabel("total PSS [MiB]", fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(plt, figure, paths)
    return None


def _save(plt: Any, figure: Any, paths: Sequence[str]) -> None:
    """
    Write a chart to each of C{paths}, and let matplotlib forget it.
    """
    figure.tight_layout()
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=110)
    plt.close(figure)
