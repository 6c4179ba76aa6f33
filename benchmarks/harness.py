"""
The two shims under comparison and the private containerd they run under.

L{Bench} owns everything a run makes: its own containerd (from
L{tests.e2e.containerd}, CRI disabled, root and state under C{/tmp}), one
containerd namespace for the containers started through C{ctr}, and the
scratch directory of the bundles the benchmark drives directly. L{Bench.close}
removes all of it, whatever state a failed measure left behind.

Every measure runs the shims interleaved: L{rounds} yields, for each round,
the two shims in the order they run in, the first place alternating between
rounds, so that a slow patch of the machine (other work on it) falls on both
alike.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tests.e2e import host
from tests.e2e.containerd import (
    TASK_PLUGIN_DIR,
    CtrResult,
    CtrTimeout,
    PrivateContainerd,
    TestNamespace,
)
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD, Runtime, missingPrerequisites


class BenchContainerd(PrivateContainerd):
    """
    The private containerd of a run. The shims inherit its environment,
    which is ours less C{PYTHONDONTWRITEBYTECODE}: a shell that sets it
    would have every shimd launcher compile its modules from source each
    time, which no installed shimd does.
    """

    def environment(self) -> dict[str, str]:
        environ = super().environment()
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        return environ


class BenchError(Exception):
    """
    A step of a measure failed; the message says which and why.
    """


@dataclass(frozen=True)
class Shim:
    """
    A shim under comparison.

    @ivar name: its key in the results (C{shimd} or C{go}).
    @ivar label: its name in the printed table.
    @ivar runtime: the e2e harness's description of it.
    """

    name: str
    label: str
    runtime: Runtime

    @property
    def binary(self) -> str:
        """
        The shim executable's absolute path.
        """
        path = self.runtime.binaryPath()
        if path is None:
            raise BenchError(f"{self.runtime.binaryName} is not installed")
        return path

    @property
    def ctrRuntime(self) -> str:
        """
        What to give C{ctr run --runtime}.
        """
        return self.runtime.runtimeArgument


SHIMD_SHIM = Shim("shimd", "shimd", SHIMD)
GO_SHIM = Shim("go", "Go", GO)
SHIMS = (SHIMD_SHIM, GO_SHIM)


def rounds(count: int) -> Iterator[tuple[int, tuple[Shim, Shim]]]:
    """
    C{count} rounds of both shims, A B then B A, and so on.
    """
    for index in range(count):
        yield index, SHIMS if index % 2 == 0 else SHIMS[::-1]


def missing() -> list[str]:
    """
    What the host lacks to run the benchmark; empty when nothing.
    """
    found: list[str] = []
    for runtime in (SHIMD, GO):
        found += [m for m in missingPrerequisites(runtime) if m not in found]
    return found


class Bench:
    """
    A private containerd, a namespace in it, and the helpers every measure
    uses.

    @ivar containerd: our containerd.
    @ivar namespace: the namespace of the containers started through C{ctr}.
    @ivar rootfs: the busybox root file system every container runs.
    @ivar scratch: a directory of our own, removed at L{close}.
    """

    def __init__(self, progress: Callable[[str], None] = lambda line: None) -> None:
        self.progress = progress
        self.scratch = tempfile.mkdtemp(prefix="shimd-bench-", dir="/tmp")
        self.containerd = BenchContainerd(os.path.join(self.scratch, "containerd"))
        os.makedirs(self.containerd.baseDir)
        self.namespace = TestNamespace(self.containerd, f"bench-{os.getpid()}")
        self.rootfs = busyboxRootfs()
        self._ids = itertools.count(1)
        self._cleanups: list[Callable[[], None]] = []

    def start(self) -> None:
        """
        Start containerd and make the namespace.
        """
        self.containerd.start()
        self.ctrOK("namespaces", "create", self.namespace.name, namespaced=False)

    def addCleanup(self, cleanup: Callable[[], None]) -> None:
        """
        Run C{cleanup} at L{close}, before containerd goes (last added, first
        run).
        """
        self._cleanups.append(cleanup)

    def close(self) -> list[str]:
        """
        Remove every container, the namespace, containerd and the scratch
        directory.

        @return: what had to be removed by force (leaks of a failed measure,
            or of a shim).
        """
        problems: list[str] = []
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as e:
                problems.append(f"cleanup: {e}")
        if self.containerd.process is not None:
            try:
                self.namespace.cleanUp()
            except AssertionError as e:
                problems.append(str(e))
        self.containerd.destroy()
        for mountPoint in host.mountsUnder(self.scratch):
            subprocess.run(["umount", "-l", mountPoint], check=False)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return problems

    # ctr

    def newID(self, shim: Shim, tag: str) -> str:
        """
        A container id nobody used in this run.
        """
        containerID = f"{shim.name}-{tag}-{next(self._ids)}"
        self.namespace.ids.add(containerID)
        return containerID

    def ctrCommand(self, *args: str) -> list[str]:
        """
        The argv of C{ctr} in our namespace.
        """
        return self.namespace.ctrCommand(*args)

    def environment(self) -> dict[str, str]:
        """
        The environment for C{ctr} and the shims.
        """
        return self.containerd.environment()

    def ctr(self, *args: str, timeout: float = 120.0) -> CtrResult:
        """
        Run C{ctr} in our namespace.
        """
        return self.namespace.ctr(*args, timeout=timeout)

    def ctrOK(self, *args: str, namespaced: bool = True, timeout: float = 120) -> str:
        """
        Run C{ctr}, which must succeed.

        @return: its output.
        @raise BenchError: when it fails.
        """
        try:
            if namespaced:
                result = self.ctr(*args, timeout=timeout)
            else:
                result = self.containerd.ctr(*args, timeout=timeout)
        except CtrTimeout as e:
            raise BenchError(str(e)) from None
        if result.code != 0:
            raise BenchError(
                f"ctr {' '.join(args)}: exit {result.code}: {result.err.strip()}"
            )
        return result.out

    def timed(self, *args: str, timeout: float = 120.0) -> float:
        """
        Run C{ctr}, which must succeed, and time it.

        @return: its wall time in seconds.
        """
        argv = self.ctrCommand(*args)
        started = time.perf_counter()
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self.environment(),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"ctr {' '.join(args)}: no exit in {timeout} s") from None
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise BenchError(
                f"ctr {' '.join(args)}: exit {result.returncode}: "
                + result.stderr.decode("utf-8", "replace").strip()
            )
        return elapsed

    def runArguments(
        self,
        shim: Shim,
        containerID: str,
        command: Sequence[str],
        options: Sequence[str] = (),
    ) -> list[str]:
        """
        The arguments of C{ctr run} for a busybox container of C{shim}.
        """
        return [
            "run",
            "--runtime",
            shim.ctrRuntime,
            *options,
            "--rootfs",
            self.rootfs,
            containerID,
            *command,
        ]

    def runDetached(
        self, shim: Shim, tag: str, options: Sequence[str] = ()
    ) -> tuple[str, float]:
        """
        C{ctr run -d} a container that sleeps, and time it: C{ctr run -d}
        returns once the task is started.

        @return: its id and the time taken.
        """
        containerID = self.newID(shim, tag)
        elapsed = self.timed(
            *self.runArguments(
                shim, containerID, ["/bin/sleep", "100000"], ["-d", *options]
            )
        )
        return containerID, elapsed

    def remove(self, containerID: str) -> float:
        """
        Kill and delete a task (C{ctr task rm -f}: SIGKILL, wait for the
        exit, delete), timed, then delete its container (not timed).
        """
        elapsed = self.timed("task", "rm", "-f", containerID)
        self.ctrOK("containers", "rm", containerID)
        return elapsed

    def removeQuietly(self, containerIDs: Sequence[str]) -> None:
        """
        Remove tasks and containers if they are there, ignoring failures.
        """
        for containerID in containerIDs:
            try:
                self.ctr("task", "rm", "-f", containerID, timeout=60)
                self.ctr("containers", "rm", containerID, timeout=60)
            except CtrTimeout:
                pass

    def removeAll(self) -> None:
        """
        Remove every task and container of the namespace.
        """
        tasks = self.ctr("task", "ls", "-q").out.split()
        containers = self.ctr("containers", "ls", "-q").out.split()
        self.removeQuietly(sorted(set(tasks) | set(containers)))

    # The bundles containerd makes

    @property
    def bundles(self) -> str:
        """
        The directory of our namespace's bundles.
        """
        return os.path.join(self.containerd.state, TASK_PLUGIN_DIR, self.namespace.name)

    def bundle(self, containerID: str) -> str:
        return os.path.join(self.bundles, containerID)

    def shimAddress(self, containerID: str) -> str:
        """
        The address of the shim serving a task, from its bundle.
        """
        return host.bundleShimAddress(self.bundle(containerID))
