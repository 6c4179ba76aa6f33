"""
Summaries of benchmark samples: medians, percentiles and the shimd / Go ratio.

The benchmark runs on a machine that other work shares, so every number it
reports is a robust statistic (median, high percentile) over interleaved
samples, never a mean, which one stalled sample can move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """
    The C{fraction} quantile of C{samples} (0.5 is the median), interpolated
    linearly between the closest ranks.

    @raise ValueError: when there are no samples.
    """
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return float(ordered[lower])
    weight = position - lower
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def median(samples: Sequence[float]) -> float:
    """
    The median of C{samples}.
    """
    return percentile(samples, 0.5)


def summarise(samples: Sequence[float]) -> dict[str, float | int]:
    """
    The summary kept for one shim's samples of one measure.
    """
    return {
        "count": len(samples),
        "median": median(samples),
        "p90": percentile(samples, 0.9),
        "min": float(min(samples)),
        "max": float(max(samples)),
    }


def ratio(shimd: float, go: float) -> float:
    """
    C{shimd / go}, defined when either is zero: equal zeros are 1.0, a zero
    denominator under a positive numerator is infinity.
    """
    if go == 0:
        return 1.0 if shimd == 0 else math.inf
    return shimd / go
