"""
How big the stress tests run, and where their figures go.

C{SHIMD_STRESS=full} selects the full counts (C{tox -e stress}); anything
else, or nothing, the CI cut.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from twisted.logger import Logger

STRESS_VARIABLE = "SHIMD_STRESS"
REPORT_VARIABLE = "SHIMD_STRESS_REPORT"

_log = Logger(namespace="tests.stress")


def full() -> bool:
    """
    Whether the full stress counts were asked for.
    """
    return os.environ.get(STRESS_VARIABLE, "") == "full"


def scaled(ci: int, stress: int) -> int:
    """
    C{stress} under C{SHIMD_STRESS=full}, else C{ci}.
    """
    return stress if full() else ci


def report(test: str, **figures: Any) -> None:
    """
    Record a test's figures: in the test log, and as one JSON line in the
    file C{$SHIMD_STRESS_REPORT} names, if any.
    """
    record = {"test": test, "mode": "full" if full() else "ci", **figures}
    line = json.dumps(record, sort_keys=True)
    _log.info("stress figures: {line}", line=line)
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class Stopwatch:
    """
    Elapsed wall time, for the figures (never for assertions).
    """

    def __init__(self) -> None:
        self._start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self._start, 1)
