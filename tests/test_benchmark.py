# -*- test-case-name: tests.test_benchmark -*-
"""
Tests for L{benchmarks}: the statistics and the report, and a run of the
whole machinery at its smallest level (C{--smoke}) against a private
containerd, which checks that every measure comes out with numbers for both
shims. No test here asserts anything about timings: the machine is shared,
and speed is what the benchmark reports, not what the suite checks.
"""

from __future__ import annotations

import json
import math
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from benchmarks import breakdown, report, stats
from benchmarks.harness import SHIMS, missing, rounds
from benchmarks.run import MODES, SECTIONS, TARGETS, runBenchmarks

EXPECTED_MEASURES = {
    "lifecycle",
    "start",
    "exec",
    "remove",
    "burst.start",
    "burst.remove",
    "phase.start",
    "phase.ready",
    "phase.create",
    "phase.taskStart",
    "phase.delete",
    "phase.shutdown",
    "phase.action",
    "phase.cold.start",
    "phase.cold.ready",
    "state.p50",
    "state.p99",
    "state.rps1",
    "state.rps16",
    "stdout",
    "memory.single.pss",
    "memory.single.rss",
    "memory.many.pss",
    "memory.many.rss",
    "memory.most.pss",
    "memory.most.rss",
    "memory.grouped.pss",
    "memory.grouped.rss",
    "cpu.idle",
}


class StatsTests(SynchronousTestCase):
    """
    L{stats}: percentiles and ratios.
    """

    def test_percentile(self) -> None:
        samples = [5.0, 1.0, 3.0, 2.0, 4.0]
        self.assertEqual(stats.median(samples), 3.0)
        self.assertEqual(stats.percentile(samples, 0.0), 1.0)
        self.assertEqual(stats.percentile(samples, 1.0), 5.0)
        self.assertAlmostEqual(stats.percentile(samples, 0.9), 4.6)
        self.assertEqual(stats.median([1.0, 2.0]), 1.5)
        self.assertRaises(ValueError, stats.percentile, [], 0.5)

    def test_ratio(self) -> None:
        self.assertEqual(stats.ratio(3.0, 2.0), 1.5)
        self.assertEqual(stats.ratio(0.0, 0.0), 1.0)
        self.assertTrue(math.isinf(stats.ratio(1.0, 0.0)))


class RoundsTests(SynchronousTestCase):
    """
    L{rounds} interleaves the shims, alternating who goes first.
    """

    def test_alternates(self) -> None:
        orders = [order for _, order in rounds(4)]
        self.assertEqual(orders[0], SHIMS)
        self.assertEqual(orders[1], SHIMS[::-1])
        self.assertEqual(orders[2], SHIMS)
        self.assertEqual(orders[3], SHIMS[::-1])


class ReportTests(SynchronousTestCase):
    """
    L{report.Measure}: ratio, targets, and the tables.
    """

    def test_lowerIsBetter(self) -> None:
        measure = report.Measure(
            "lifecycle",
            "lifecycle",
            "ms",
            {"shimd": [30.0, 10.0, 20.0], "go": [10.0, 10.0, 10.0]},
            target=2.0,
        )
        self.assertEqual(measure.ratio, 2.0)
        self.assertIs(measure.passed, True)
        measure.samples["shimd"] = [21.0]
        self.assertIs(measure.passed, False)

    def test_higherIsBetter(self) -> None:
        measure = report.Measure(
            "stdout",
            "stdout",
            "MiB/s",
            {"shimd": [90.0], "go": [100.0]},
            higherIsBetter=True,
            target=1.0,
        )
        self.assertIs(measure.passed, False)
        measure.samples["shimd"] = [110.0]
        self.assertIs(measure.passed, True)

    def test_tables(self) -> None:
        measures = [
            report.Measure(
                "a", "alpha", "ms", {"shimd": [2.0], "go": [1.0]}, target=1.5
            ),
            report.Measure("b", "beta", "us", {"shimd": [1.0], "go": [2.0]}),
        ]
        text = report.textTable(measures)
        self.assertIn("alpha [ms]", text)
        self.assertIn("2.00x", text)
        self.assertIn("FAIL", text)
        rest = report.restTable(measures)
        lines = rest.splitlines()
        self.assertEqual(lines[0], lines[2])
        self.assertEqual(lines[0], lines[-1])
        self.assertIn("<= 1.5x (fail)", rest)

    def test_json(self) -> None:
        measure = report.Measure("a", "alpha", "ms", {"shimd": [1.0], "go": [0.0]})
        document = measure.asJSON()
        self.assertIsNone(document["ratio"])
        json.dumps(document)


class BreakdownTests(SynchronousTestCase):
    """
    L{breakdown.segments} cuts a life by the wrappers' events.
    """

    def test_segments(self) -> None:
        lines = [
            "shim 10.0 10.5 0 -id c1 start",
            "runc 10.6 11.0 0 --root r create --bundle b c1",
            "runc 11.2 11.3 0 start c1",
            "runc 11.5 11.6 0 delete c1",
            "shim 11.7 11.9 0 -id c1 -bundle b delete",
            "runc 11.75 11.8 0 delete --force c1",
        ]
        events = [breakdown.Event(line) for line in lines]
        found = breakdown.segments(events, 9.9, 12.0)
        self.assertEqual(
            set(found), {key for key, _ in breakdown.SEGMENTS}, "every segment"
        )
        self.assertAlmostEqual(found["start"], 0.5)
        self.assertAlmostEqual(found["startToCreate"], 0.1)
        self.assertAlmostEqual(found["runcDelete"], 0.1)
        self.assertAlmostEqual(found["action"], 0.2)
        self.assertAlmostEqual(found["actionToExit"], 0.1)
        self.assertAlmostEqual(found["total"], 2.1)


class SmokeRunTests(SynchronousTestCase):
    """
    The benchmark's machinery at its smallest level, for real.
    """

    timeout = 600

    def setUp(self) -> None:
        lacking = missing()
        if lacking:
            raise SkipTest("the benchmark needs: " + ", ".join(lacking))

    def test_everyMeasure(self) -> None:
        """
        A smoke run produces every measure, each with numbers for shimd and
        for the Go shim and a ratio, and the lifecycle breakdown; it writes
        its results as JSON.
        """
        output = self.mktemp()
        document = runBenchmarks(MODES["smoke"], outputDirectory=output, chart=False)
        self.assertEqual(document["errors"], [])
        measures = document["measures"]
        assert isinstance(measures, dict)
        self.assertEqual(set(measures), EXPECTED_MEASURES)
        self.assertLessEqual(set(TARGETS), EXPECTED_MEASURES)
        for key, measure in measures.items():
            for name in ("shimd", "go"):
                summary = measure["shims"][name]
                for statistic in ("median", "p90"):
                    self.assertIsInstance(summary[statistic], float, (key, name))
                    self.assertTrue(math.isfinite(summary[statistic]), (key, name))
            self.assertIsNotNone(measure["ratio"], key)
        details = document["details"]
        assert isinstance(details, dict)
        segments = details["breakdown"]["segments"]
        for key, _ in breakdown.SEGMENTS:
            for name in ("shimd", "go"):
                self.assertEqual(len(segments[key][name]), 1, (key, name))
        memory = details["memory"]
        self.assertEqual(
            {name: [p[0] for p in points] for name, points in memory["curve"].items()},
            {name: [1, 2, 3] for name in ("shimd", "go")},
        )
        for case in ("single", "many", "most", "grouped"):
            shimd = memory[case]["shimd"]
            self.assertGreaterEqual(shimd["pss"], shimd["daemons"]["pss"], case)
            self.assertGreaterEqual(shimd["rss"], shimd["daemons"]["rss"], case)
        sections = document["sections"]
        assert isinstance(sections, dict)
        self.assertEqual(set(sections), {"warm-up", *SECTIONS})
        with open(os.path.join(output, "latest.json")) as f:
            written = json.load(f)
        self.assertEqual(set(written["measures"]), EXPECTED_MEASURES)
        for field in ("cpu", "cores", "kernel", "python", "containerd", "runc"):
            self.assertIn(field, written["machine"])
