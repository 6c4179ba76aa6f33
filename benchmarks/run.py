"""
C{python -m benchmarks}: shimd against containerd's Go shim, side by side.

One run starts its own containerd and measures both shims under it,
interleaved (A B, then B A, ...), so that whatever else the machine is doing
weighs on both alike, and reports each measure's median and 90th percentile
for each shim and the ratio shimd / Go of the medians, with the project's
targets passed or failed. Results go to C{benchmarks/results/<stamp>.json}
and C{latest.json}, with the machine they were taken on, and a chart of the
ratios to C{latest.png} (with matplotlib, which C{tox -e bench} installs).

Levels: C{--smoke} (one repetition of everything, tiny sizes: for the test
suite), C{--quick} (well under two minutes), and the default (about ten
minutes, for stable medians). C{--publish} also writes C{docs/benchmark.png}
and prints the table as reST for the README; C{--from-json PATH} reports a
saved run again without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import FrameType

from benchmarks import (
    breakdown,
    ctrmeasures,
    direct,
    machine,
    procfs,
    resources,
    statemeasures,
    stats,
)
from benchmarks.harness import GO_SHIM, SHIMD_SHIM, Bench, BenchError, missing
from benchmarks.report import (
    Measure,
    drawChart,
    drawDensity,
    restTable,
    textTable,
    writeJSON,
)

PACKAGE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIRECTORY = os.path.join(PACKAGE_DIRECTORY, "results")
PUBLISHED_CHART = os.path.join(os.path.dirname(PACKAGE_DIRECTORY), "docs/benchmark.png")
PUBLISHED_DENSITY = os.path.join(os.path.dirname(PACKAGE_DIRECTORY), "docs/density.png")
MIB = 1 << 20

#: The ratios shimd / Go to meet (at least, for a higher-is-better measure):
#: issue 4's, and issue 13's for density and start-up.
TARGETS = {
    "lifecycle": 1.15,
    "start": 1.15,
    "exec": 1.1,
    "remove": 1.10,
    "burst.start": 1.15,
    "burst.remove": 1.15,
    "state.p50": 1.5,
    "state.rps16": 1.0,
    "stdout": 1.0,
    "memory.single.rss": 1.5,
    "memory.many.pss": 1.0,
    "cpu.idle": 1.0,
}


@dataclass(frozen=True)
class Mode:
    """
    How much of everything a run does.
    """

    name: str
    warmups: int
    lifecycleRounds: int
    cycleRounds: int
    execsPerCycle: int
    burstRounds: int
    burstSize: int
    phaseRounds: int
    coldRounds: int
    stateRounds: int
    stateCalls: int
    rpsRounds: int
    rpsSeconds: float
    throughputRounds: int
    throughputBytes: int
    manyContainers: int
    mostContainers: int
    memorySamples: int
    cpuWindows: int
    cpuSeconds: float
    breakdownRounds: int


MODES = {
    "smoke": Mode(
        name="smoke",
        warmups=0,
        lifecycleRounds=1,
        cycleRounds=1,
        execsPerCycle=1,
        burstRounds=1,
        burstSize=2,
        phaseRounds=1,
        coldRounds=1,
        stateRounds=1,
        stateCalls=50,
        rpsRounds=1,
        rpsSeconds=0.2,
        throughputRounds=1,
        throughputBytes=1 * MIB,
        manyContainers=2,
        mostContainers=3,
        memorySamples=1,
        cpuWindows=1,
        cpuSeconds=0.5,
        breakdownRounds=1,
    ),
    "quick": Mode(
        name="quick",
        warmups=1,
        lifecycleRounds=6,
        cycleRounds=4,
        execsPerCycle=2,
        burstRounds=1,
        burstSize=10,
        phaseRounds=5,
        coldRounds=3,
        stateRounds=3,
        stateCalls=500,
        rpsRounds=1,
        rpsSeconds=1.0,
        throughputRounds=2,
        throughputBytes=64 * MIB,
        manyContainers=10,
        mostContainers=20,
        memorySamples=2,
        cpuWindows=1,
        cpuSeconds=3.0,
        breakdownRounds=2,
    ),
    "default": Mode(
        name="default",
        warmups=3,
        lifecycleRounds=120,
        cycleRounds=60,
        execsPerCycle=3,
        burstRounds=12,
        burstSize=10,
        phaseRounds=60,
        coldRounds=20,
        stateRounds=15,
        stateCalls=2000,
        rpsRounds=5,
        rpsSeconds=3.0,
        throughputRounds=7,
        throughputBytes=1024 * MIB,
        manyContainers=10,
        mostContainers=50,
        memorySamples=5,
        cpuWindows=5,
        cpuSeconds=10.0,
        breakdownRounds=50,
    ),
}


def _ms(samples: dict[str, list[float]]) -> dict[str, list[float]]:
    return {
        name: [value * 1000 for value in values] for name, values in samples.items()
    }


class Run:
    """
    One run: the sections in order, each adding its measures; a section
    that fails is recorded and the run goes on with the next.
    """

    def __init__(
        self, bench: Bench, mode: Mode, progress: Callable[[str], None]
    ) -> None:
        self.bench = bench
        self.mode = mode
        self.progress = progress
        self.measures: list[Measure] = []
        self.details: dict[str, object] = {}
        self.errors: list[str] = []
        self.sections: dict[str, float] = {}

    def add(
        self,
        key: str,
        label: str,
        unit: str,
        samples: dict[str, list[float]],
        higherIsBetter: bool = False,
        note: str = "",
        extra: dict[str, object] | None = None,
    ) -> None:
        self.measures.append(
            Measure(
                key,
                label,
                unit,
                samples,
                higherIsBetter=higherIsBetter,
                target=TARGETS.get(key),
                note=note,
                extra=extra or {},
            )
        )

    def section(self, name: str, body: Callable[[], None]) -> None:
        started = time.monotonic()
        self.progress(f"{name} ...")
        try:
            body()
        except Exception as e:
            problem = str(e) if isinstance(e, BenchError) else repr(e)
            self.errors.append(f"{name}: {problem}")
            self.progress(f"{name} FAILED: {problem}")
            if not isinstance(e, BenchError):
                self.progress(traceback.format_exc())
            try:
                self.bench.removeAll()
            except AssertionError as cleanup:
                self.progress(f"removing {name}'s containers: {cleanup}")
        elapsed = time.monotonic() - started
        self.sections[name] = round(elapsed, 1)
        self.progress(f"{name}: {elapsed:.1f} s (load {machine.loadAverage()[0]})")

    # Sections

    def warmUp(self) -> None:
        """
        Run a container per shim, and make sure shimd's fork server is up:
        its first start spawns one, which takes a moment to preload.
        """
        for shim in (SHIMD_SHIM, GO_SHIM):
            containerID = self.bench.newID(shim, "warm")
            self.bench.timed(
                *self.bench.runArguments(shim, containerID, ["/bin/true"], ["--rm"])
            )
        forked = False
        deadline = time.monotonic() + (3 if self.mode.name == "smoke" else 20)
        while not forked and time.monotonic() < deadline:
            containerID, _ = self.bench.runDetached(SHIMD_SHIM, "warm")
            try:
                pids = [
                    pid
                    for pid, owner in procfs.shimsByBundle(self.bench.bundles).items()
                    if owner == containerID
                ]
                forked = bool(pids) and procfs.isForkServer(procfs.parentOf(pids[0]))
            finally:
                self.bench.remove(containerID)
            if not forked:
                time.sleep(0.5)
        self.details["forkServerWarm"] = forked
        if not forked:
            self.progress("warning: shimd's daemons are not forked by a fork server")

    def lifecycle(self) -> None:
        samples = ctrmeasures.lifecycle(
            self.bench, self.mode.lifecycleRounds, self.mode.warmups
        )
        self.add("lifecycle", "lifecycle: ctr run --rm true", "ms", _ms(samples))

    def taskCycle(self) -> None:
        found = ctrmeasures.taskCycle(
            self.bench, self.mode.cycleRounds, self.mode.execsPerCycle
        )
        self.add("start", "start: ctr run -d", "ms", _ms(found["start"]))
        self.add("exec", "exec: ctr task exec true", "ms", _ms(found["exec"]))
        self.add("remove", "kill + delete: ctr task rm -f", "ms", _ms(found["remove"]))

    def bursts(self) -> None:
        size = self.mode.burstSize
        found = ctrmeasures.bursts(self.bench, self.mode.burstRounds, size)
        self.add(
            "burst.start",
            f"burst: {size} concurrent ctr run -d",
            "ms",
            _ms(found["start"]),
        )
        self.add(
            "burst.remove",
            f"burst: {size} concurrent ctr task rm -f",
            "ms",
            _ms(found["remove"]),
        )

    def phases(self) -> None:
        mode = self.mode
        found = direct.phases(
            self.bench, mode.phaseRounds, min(mode.coldRounds, mode.phaseRounds), 1
        )
        warm, cold = found.warm, found.cold
        labels = {
            "start": "phase: launcher start",
            "ready": "phase: start exit to Connect answered",
            "create": "phase: first Create (runc create)",
            "taskStart": "phase: Start (runc start)",
            "delete": "phase: Delete (runc delete)",
            "shutdown": "phase: Shutdown to shim gone",
            "action": "phase: delete action",
        }
        for phase, label in labels.items():
            self.add(f"phase.{phase}", label, "ms", _ms(warm[phase]))
        for phase in direct.COLD_PHASES:
            self.add(
                f"phase.cold.{phase}",
                labels[phase] + ", shimd cold",
                "ms",
                _ms({"shimd": cold[phase]["shimd"], "go": warm[phase]["go"]}),
                note="shimd with SHIMD_FORKSERVER=0, against the same Go samples",
            )
        self.details["phasesForked"] = found.forked

    def state(self) -> None:
        mode = self.mode
        targets = statemeasures.startTargets(self.bench)
        try:
            latency = statemeasures.latency(
                self.bench, targets, mode.stateRounds, mode.stateCalls
            )
            pooled = {
                name: {
                    "p50": stats.percentile(values, 0.5),
                    "p99": stats.percentile(values, 0.99),
                    "calls": len(values),
                }
                for name, values in latency["all"].items()
            }
            self.add(
                "state.p50",
                "State round trip p50",
                "us",
                latency["p50"],
                note=f"median over batches of {mode.stateCalls} calls",
                extra={"pooled": pooled},
            )
            self.add(
                "state.p99",
                "State round trip p99",
                "us",
                latency["p99"],
                note=f"median over batches of {mode.stateCalls} calls",
            )
            for clients in (1, 16):
                samples = statemeasures.requestsPerSecond(
                    self.bench, targets, clients, mode.rpsRounds, mode.rpsSeconds
                )
                self.add(
                    f"state.rps{clients}",
                    f"State requests/s, {clients} client{'s' * (clients > 1)}",
                    "req/s",
                    samples,
                    higherIsBetter=True,
                    note="one process and connection per client",
                )
        finally:
            self.bench.removeQuietly(
                [containerID for _, containerID in targets.values()]
            )

    def throughput(self) -> None:
        size = self.mode.throughputBytes
        samples = ctrmeasures.throughput(self.bench, self.mode.throughputRounds, size)
        self.add(
            "stdout",
            f"stdout throughput, {size // MIB} MiB",
            "MiB/s",
            samples,
            higherIsBetter=True,
        )

    def resources(self) -> None:
        mode = self.mode
        found = resources.resources(
            self.bench,
            mode.manyContainers,
            mode.mostContainers,
            mode.memorySamples,
            mode.cpuWindows,
            mode.cpuSeconds,
        )
        labels = {
            "single": "1 container",
            "many": f"{mode.manyContainers} containers, a shim each",
            "most": f"{mode.mostContainers} containers, a shim each",
            "grouped": f"{mode.manyContainers} containers in one shim",
        }
        for case, label in labels.items():
            info = found[case]
            assert isinstance(info, dict)
            for key in ("pss", "rss"):
                self.add(
                    f"memory.{case}.{key}",
                    f"memory {key.upper()} per container, {label}",
                    "MiB",
                    {name: [info[name][key] / MIB] for name in ("shimd", "go")},
                    note="shimd: its daemons and its fork server",
                    extra={
                        name: {k: v for k, v in info[name].items() if k not in ("rss",)}
                        for name in ("shimd", "go")
                    },
                )
        cpu = found["cpu"]
        assert isinstance(cpu, dict)
        self.add(
            "cpu.idle",
            f"idle CPU, {mode.manyContainers} containers",
            "ms/10s",
            cpu["samples"],
            note=(
                f"{mode.cpuWindows} windows of {mode.cpuSeconds:g} s; schedstat; "
                "shimd: its daemons and its fork server"
            ),
            extra={"ticks": cpu["ticks"], "forkServer": cpu["forkServer"]},
        )
        self.details["memory"] = found

    def breakdown(self) -> None:
        self.details["breakdown"] = breakdown.breakdown(
            self.bench, self.mode.breakdownRounds
        )


SECTIONS = (
    "lifecycle",
    "taskCycle",
    "bursts",
    "phases",
    "state",
    "throughput",
    "resources",
    "breakdown",
)


def runBenchmarks(
    mode: Mode,
    outputDirectory: str = RESULTS_DIRECTORY,
    chart: bool = True,
    publish: bool = False,
    only: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """
    Run the benchmark and write its results.

    @param only: run these sections alone (all when empty).
    @return: the results document, as written to JSON.
    """
    began = time.monotonic()

    def say(line: str) -> None:
        if progress is not None:
            progress(f"[{time.monotonic() - began:6.1f} s] {line}")

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    bench = Bench(say)
    run = Run(bench, mode, say)
    loadBefore = machine.loadAverage()
    document: dict[str, object] = {}
    try:
        say(f"containerd in {bench.containerd.baseDir}; mode {mode.name}")
        bench.start()
        run.section("warm-up", run.warmUp)
        for name in SECTIONS:
            if not only or name in only:
                run.section(name, getattr(run, name))
    finally:
        leaks = bench.close()
        document = {
            "stamp": stamp,
            "mode": mode.name,
            "parameters": asdict(mode),
            "machine": machine.describe(bench.environment()),
            "load": {"before": loadBefore, "after": machine.loadAverage()},
            "seconds": round(time.monotonic() - began, 1),
            "sections": run.sections,
            "measures": {m.key: m.asJSON() for m in run.measures},
            "details": run.details,
            "errors": run.errors,
            "leaks": leaks,
        }
        if leaks:
            say("cleaned up by force:\n  " + "\n  ".join(leaks))
    document["_path"] = writeJSON(document, outputDirectory, stamp)
    render(document, run.measures, outputDirectory, chart, publish)
    return document


def render(
    document: dict[str, object],
    measures: Sequence[Measure],
    outputDirectory: str,
    chart: bool,
    publish: bool,
) -> None:
    """
    Add the text and reST tables to a results document, and draw its chart
    to C{latest.png} in C{outputDirectory} (and C{docs/benchmark.png} when
    publishing).
    """
    document["_table"] = textTable(measures)
    document["_rest"] = restTable(measures)
    if chart:
        info = document["machine"]
        assert isinstance(info, dict)
        title = (
            f"shimd / Go shim, {document['mode']} run {document['stamp']}\n"
            f"{info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, "
            f"{info['containerd'].split()[-1]}"
        )
        charts = [os.path.join(outputDirectory, "latest.png")]
        if publish:
            charts.append(PUBLISHED_CHART)
        document["_chart"] = drawChart(measures, charts, title) or charts
        details = document.get("details")
        memory = details.get("memory") if isinstance(details, dict) else None
        curve = memory.get("curve") if isinstance(memory, dict) else None
        if curve:
            densities = [os.path.join(outputDirectory, "latest-density.png")]
            if publish:
                densities.append(PUBLISHED_DENSITY)
            drawn = drawDensity(curve, densities, f"memory, {document['mode']} run")
            document["_density"] = drawn or densities


def measuresFromJSON(document: dict[str, object]) -> list[Measure]:
    """
    The measures of a results document, as written by L{runBenchmarks}.
    """
    found = []
    measures = document["measures"]
    assert isinstance(measures, dict)
    for key, value in measures.items():
        found.append(
            Measure(
                key,
                value["label"],
                value["unit"],
                {name: shim["samples"] for name, shim in value["shims"].items()},
                higherIsBetter=value["higherIsBetter"],
                target=value["target"],
                note=value.get("note", ""),
                extra=value.get("extra", {}),
            )
        )
    return found


def rerender(path: str, outputDirectory: str, chart: bool, publish: bool) -> str:
    """
    The report of a results file written before, its chart drawn again.
    """
    with open(path) as f:
        document = json.load(f)
    document["_path"] = path
    render(document, measuresFromJSON(document), outputDirectory, chart, publish)
    return report(document, publish)


def formatBreakdown(details: dict[str, object]) -> str:
    """
    The lifecycle breakdown as a text table of medians, in ms.
    """
    found = details.get("breakdown")
    if not isinstance(found, dict):
        return ""
    segments = found["segments"]
    lines = [f"{'segment':44} {'shimd':>8} {'Go':>8} {'extra':>8}"]
    for key, label in breakdown.SEGMENTS:
        values = segments[key]
        if not values["shimd"] or not values["go"]:
            continue
        shimd = stats.median(values["shimd"]) * 1000
        go = stats.median(values["go"]) * 1000
        lines.append(f"{label:44} {shimd:8.1f} {go:8.1f} {shimd - go:+8.1f}")
    calls = found["runcCalls"]
    for name, counted in calls.items():
        text = ", ".join(f"{command} {n:g}" for command, n in counted.items())
        lines.append(f"runc calls per life, {name}: {text}")
    return "\n".join(lines)


def report(document: dict[str, object], publish: bool) -> str:
    """
    What the run prints at its end.
    """
    info = document["machine"]
    assert isinstance(info, dict)
    lines = [
        f"shimd vs Go shim, {document['mode']} run {document['stamp']} "
        f"({document['seconds']} s)",
        f"machine: {info['cpu']}, {info['cores']} cores, "
        f"{int(info['memory']) / (1 << 30):.0f} GiB, kernel {info['kernel']}, "
        f"{info['os']}, cgroups {info['cgroups']}",
        f"software: Python {info['python']}, {info['containerd']}, runc {info['runc']}",
        f"load average before {document['load']['before']}, "  # type: ignore[index]
        f"after {document['load']['after']}",  # type: ignore[index]
        "",
        str(document["_table"]),
        "",
    ]
    details = document["details"]
    assert isinstance(details, dict)
    memory = details.get("memory")
    if isinstance(memory, dict):
        for case in ("single", "many", "most", "grouped"):
            server = memory.get(case, {}).get("shimd", {}).get("forkServer")
            if server:
                lines.append(
                    f"shimd fork server ({case}): RSS {server['rss'] / MIB:.1f} MiB, "
                    f"PSS {server['pss'] / MIB:.1f} MiB, forked "
                    f"{server['forkedShims']} of the shims"
                )
    forked = details.get("phasesForked")
    if isinstance(forked, dict):
        lines.append(
            f"direct phases: {forked['forked']} of {forked['of']} warm shimd "
            "daemons forked by the fork server"
        )
    text = formatBreakdown(details)
    if text:
        lines += ["", "where a lifecycle goes (medians, ms):", text]
    errors = document["errors"]
    assert isinstance(errors, list)
    if errors:
        lines += ["", "ERRORS:", *errors]
    lines += ["", f"results: {document['_path']}"]
    for key, what in (("_chart", "chart"), ("_density", "density chart")):
        chart = document.get(key)
        if isinstance(chart, list):
            lines.append(f"{what}: " + ", ".join(chart))
        elif chart:
            lines.append(f"no {what}: {chart}")
    if publish:
        lines += ["", "reST table for README.rst:", "", str(document["_rest"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="shimd against containerd's Go shim, interleaved.",
    )
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="small counts, < 2 min")
    level.add_argument("--smoke", action="store_true", help="one of each, tiny")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/benchmark.png and print a reST table",
    )
    parser.add_argument("--output", default=RESULTS_DIRECTORY, help="results directory")
    parser.add_argument("--no-chart", action="store_true", help="draw no chart")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, default=[], help="run a section"
    )
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="run nothing: report the results in PATH again (e.g. with --publish)",
    )
    options = parser.parse_args(argv)
    if options.from_json:
        print(
            rerender(
                options.from_json, options.output, not options.no_chart, options.publish
            )
        )
        return 0
    lacking = missing()
    if lacking:
        print(f"benchmarks: this host lacks {', '.join(lacking)}", file=sys.stderr)
        return 2
    mode = MODES["smoke" if options.smoke else "quick" if options.quick else "default"]

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    document = runBenchmarks(
        mode,
        outputDirectory=options.output,
        chart=not options.no_chart,
        publish=options.publish,
        only=options.only,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(report(document, options.publish))
    return 1 if document["errors"] else 0
