"""
Where a container's life goes, for each shim: C{ctr run --rm ... /bin/true}
through containerd, cut into segments by the times at which the shim binary
(C{start}, C{delete}) and runc (C{create}, C{start}, C{delete}) begin and
end.

Both are timed by thin bash wrappers: C{ctr run --runtime WRAPPER} runs the
shim binary through one, and the shims find another first on their C{PATH}
as C{runc} (L{WrappedContainerd}). Each wrapper
notes C{$EPOCHREALTIME} before and after the real program and its
arguments. A wrapper costs a bash start (a few milliseconds) before the
program it wraps; that lands in the segments before C{start} and before
each runc command, for both shims alike.

The segments of one life, in order:

  - C{ctr to start}: C{ctr} runs, containerd makes the container and the
    bundle, and runs the shim binary;
  - C{start}: the launcher;
  - C{start to runc create}: the daemon gets ready, containerd connects and
    calls C{Create}, the shim prepares the container (options, stdio);
  - C{runc create};
  - C{create to runc start}: the rest of C{Create}, its answer, containerd
    and C{ctr} call C{Start};
  - C{runc start};
  - C{start to runc delete}: C{/bin/true} runs and exits, the shim reaps it
    and publishes the exit, C{ctr} sees it and calls C{Delete};
  - C{runc delete};
  - C{runc delete to ctr exit}: the rest of C{Delete}, C{Shutdown}, the
    shim's exit, containerd removing the bundle and the container.

The binary's C{delete} action, which containerd runs when the shim's
connection closes (after C{Shutdown}), is timed too: when it begins after
C{runc delete}, how long it takes, and how long after its end C{ctr} exits
(C{ctr run --rm} waits for it, in containerd's teardown).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Sequence

from benchmarks.harness import SHIMS, Bench, BenchContainerd, BenchError, rounds
from tests.e2e.containerd import TestNamespace

SEGMENTS = (
    ("ctrToStart", "ctr to shim start"),
    ("start", "shim start (launcher)"),
    ("startToCreate", "start exit to runc create"),
    ("runcCreate", "runc create"),
    ("createToStart", "runc create to runc start"),
    ("runcStart", "runc start"),
    ("startToDelete", "runc start to runc delete"),
    ("runcDelete", "runc delete"),
    ("deleteToExit", "runc delete to ctr exit"),
    ("total", "total (ctr run --rm)"),
    ("action", "delete action (background)"),
    ("actionAfter", "delete action begins after runc delete"),
    ("actionToExit", "delete action end to ctr exit"),
)

WRAPPER = """#!/bin/bash
started=$EPOCHREALTIME
{program} "$@"
status=$?
ended=$EPOCHREALTIME
printf -v arguments ' %q' "$@"
printf '%s %s %s %s%s\\n' {kind} "$started" "$ended" "$status" "$arguments" >> {log}
exit $status
"""

RUNC_COMMANDS = frozenset(
    {"create", "start", "delete", "kill", "state", "exec", "ps", "pause", "resume"}
)


def _writeWrapper(path: str, program: str, kind: str, log: str) -> None:
    with open(path, "w") as f:
        f.write(WRAPPER.format(program=program, kind=kind, log=log))
    os.chmod(path, stat.S_IRWXU)


def _which(name: str, environ: dict[str, str]) -> str:
    for directory in environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(f"{name} is not on PATH")


class Event:
    """
    One wrapped command: what ran, from when to when (wall clock, seconds).
    """

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.kind = fields[0]
        self.begin = float(fields[1])
        self.end = float(fields[2])
        self.status = int(fields[3])
        self.arguments = fields[4:]

    @property
    def command(self) -> str:
        """
        runc's subcommand, or the shim binary's action.
        """
        if self.kind == "shim":
            return self.arguments[-1] if self.arguments else ""
        for argument in self.arguments:
            if argument in RUNC_COMMANDS:
                return argument
        return ""

    def concerns(self, containerID: str) -> bool:
        return containerID in self.arguments


def _first(events: Sequence[Event], kind: str, command: str, after: float) -> Event:
    for event in events:
        if event.kind == kind and event.command == command and event.begin >= after:
            return event
    raise BenchError(f"no {kind} {command} in the wrappers' log")


def segments(events: Sequence[Event], began: float, ended: float) -> dict[str, float]:
    """
    Cut one life into L{SEGMENTS}, in seconds.
    """
    start = _first(events, "shim", "start", began)
    create = _first(events, "runc", "create", start.end)
    runcStart = _first(events, "runc", "start", create.end)
    delete = _first(events, "runc", "delete", runcStart.end)
    action = _first(events, "shim", "delete", delete.end)
    return {
        "ctrToStart": start.begin - began,
        "start": start.end - start.begin,
        "startToCreate": create.begin - start.end,
        "runcCreate": create.end - create.begin,
        "createToStart": runcStart.begin - create.end,
        "runcStart": runcStart.end - runcStart.begin,
        "startToDelete": delete.begin - runcStart.end,
        "runcDelete": delete.end - delete.begin,
        "deleteToExit": ended - delete.end,
        "total": ended - began,
        "action": action.end - action.begin,
        "actionAfter": action.begin - delete.end,
        "actionToExit": ended - action.end,
    }


class WrappedContainerd(BenchContainerd):
    """
    A private containerd whose C{PATH} finds the runc wrapper first: C{ctr}
    sets the runc binary option (C{--runc-binary}) only for the runtime
    C{io.containerd.runc.v2}, so both shims are made to find the wrapper as
    C{runc} on the C{PATH} they inherit from containerd.
    """

    def __init__(self, baseDir: str, wrappers: str) -> None:
        super().__init__(baseDir)
        self.wrappers = wrappers

    def environment(self) -> dict[str, str]:
        environ = super().environment()
        environ["PATH"] = f"{self.wrappers}{os.pathsep}{environ['PATH']}"
        return environ


def breakdown(bench: Bench, count: int) -> dict[str, object]:
    """
    C{count} interleaved wrapped lives per shim, under a containerd of their
    own (L{WrappedContainerd}).

    @return: C{"segments"}: C{{segment: {shim name: [seconds]}}};
        C{"runcCalls"}: C{{shim name: {subcommand: calls per life}}}, every
        runc command the shim (and its C{delete} action) ran.
    """
    directory = os.path.join(bench.scratch, "wrapped")
    wrappers = os.path.join(directory, "bin")
    os.makedirs(wrappers)
    log = os.path.join(directory, "events.log")
    _writeWrapper(
        os.path.join(wrappers, "runc"), _which("runc", bench.environment()), "runc", log
    )
    shimWrappers = {}
    for shim in SHIMS:
        path = os.path.join(wrappers, f"containerd-shim-{shim.name}-wrapped")
        _writeWrapper(path, shim.binary, "shim", log)
        shimWrappers[shim.name] = path
    containerd = WrappedContainerd(os.path.join(directory, "containerd"), wrappers)
    os.makedirs(containerd.baseDir)
    namespace = TestNamespace(containerd, f"{bench.namespace.name}-wrapped")
    try:
        containerd.start()
        containerd.ctr("namespaces", "create", namespace.name)
        return _lives(bench, namespace, shimWrappers, log, count)
    finally:
        try:
            namespace.cleanUp()
        except AssertionError as e:
            bench.progress(f"breakdown cleanup: {e}")
        containerd.destroy()


def _lives(
    bench: Bench,
    namespace: TestNamespace,
    shimWrappers: dict[str, str],
    log: str,
    count: int,
) -> dict[str, object]:
    found: dict[str, dict[str, list[float]]] = {
        key: {shim.name: [] for shim in SHIMS} for key, _ in SEGMENTS
    }
    calls: dict[str, dict[str, int]] = {shim.name: {} for shim in SHIMS}
    environ = namespace.containerd.environment()
    for _, order in rounds(count):
        for shim in order:
            containerID = bench.newID(shim, "wrapped")
            namespace.ids.add(containerID)
            if os.path.exists(log):
                os.unlink(log)
            began = time.time()
            result = subprocess.run(
                namespace.ctrCommand(
                    "run",
                    "--rm",
                    "--runtime",
                    shimWrappers[shim.name],
                    "--rootfs",
                    bench.rootfs,
                    containerID,
                    "/bin/true",
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=environ,
                timeout=120,
            )
            ended = time.time()
            if result.returncode != 0:
                raise BenchError(
                    f"wrapped ctr run of {shim.label}: "
                    + result.stderr.decode("utf-8", "replace").strip()
                )
            events = _waitForAction(log, containerID)
            for key, value in segments(events, began, ended).items():
                found[key][shim.name].append(value)
            for event in events:
                if event.kind == "runc":
                    name = event.command
                    calls[shim.name][name] = calls[shim.name].get(name, 0) + 1
    perLife = {
        name: {command: n / count for command, n in sorted(counted.items())}
        for name, counted in calls.items()
    }
    return {"segments": found, "runcCalls": perLife}


def _waitForAction(log: str, containerID: str, timeout: float = 15.0) -> list[Event]:
    """
    The wrappers' events of one life, once its C{delete} action has ended.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(log) as f:
                events = [Event(line) for line in f if line.strip()]
        except FileNotFoundError:
            events = []
        mine = [e for e in events if e.concerns(containerID)]
        if any(e.kind == "shim" and e.command == "delete" for e in mine):
            return sorted(mine, key=lambda e: e.begin)
        if time.monotonic() > deadline:
            raise BenchError(f"no delete action for {containerID} in {timeout} s")
        time.sleep(0.02)
