"""
End-to-end tests on a unified (cgroup v2) host, through C{ctr}: each
capability that touches the container's cgroup once (create, start, exec,
kill and delete; metrics; a memory limit update (C{Update} on the shim's socket:
ctr has no C{task update}); pause and resume; the OOM
killer; the process list), with runc's cgroupfs driver and once more with
its systemd driver, against shimd and against the Go shim.

With the systemd driver the container's cgroups path has the form
C{slice:prefix:name} and runc makes the cgroup a transient systemd scope,
C{/slice/prefix-name.scope}. ctr selects the driver for the Go shim with
C{--runc-systemd-cgroup}, which it accepts for the C{io.containerd.runc.v2}
runtime only; shimd is given the same runc option, C{SystemdCgroup = true},
in the file C{--runtime-config-path} names (C{runtimeoptions.v1.Options}).

These tests skip on a v1 or hybrid host, and the systemd ones where systemd
is not PID 1; C{tools/hosts.sh sid-vm} runs them in a virtual machine that
has both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from shimd.runc.cgroups.mode import cgroupMode
from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import parseProcessList, waitUntil
from tests.e2e.runtimes import GO, SHIMD

MiB = 1024 * 1024

# The slice runc's systemd driver puts the test containers' scopes in.
SLICE = "system.slice"


def unifiedProblem() -> str | None:
    """
    Why this host is no cgroup v2 host, or L{None} when it is one.
    """
    mode = cgroupMode()
    if mode != "v2":
        return (
            f"needs a unified cgroup v2 host ({host.CGROUP_ROOT} is not a cgroup2"
            " mount here); tools/hosts.sh sid-vm has one"
        )
    return None


def systemdProblem() -> str | None:
    """
    Why runc's systemd cgroup driver cannot work here, or L{None} when it
    can: it needs systemd as the init system.
    """
    if not os.path.isdir("/run/systemd/system"):
        return (
            "needs systemd as the init system (no /run/systemd/system);"
            " tools/hosts.sh sid-vm has it"
        )
    return None


def readCgroupFile(cgroup: str, name: str) -> str:
    """
    A file of cgroup C{cgroup} (a path such as C{/NS/ID}) on the cgroup2
    mount.
    """
    with open(os.path.join(host.CGROUP_ROOT, cgroup.lstrip("/"), name)) as f:
        return f.read().strip()


class CgroupV2TestsMixin(E2EMixin):
    """
    A task's cgroup on a unified host.

    @cvar systemd: whether runc uses its systemd cgroup driver.
    """

    systemd = False

    def setUp(self) -> None:
        problem = unifiedProblem() or (systemdProblem() if self.systemd else None)
        if problem is not None:
            raise SkipTest(problem)
        super().setUp()

    def scopePrefix(self) -> str:
        """
        The prefix of the systemd scopes of this test's containers, unique
        to the runtime and the test's namespace.
        """
        return f"shimd-{self.namespace.name}"

    def containerCgroup(self, containerID: str) -> str:
        """
        The cgroup the container must be in: C{/NAMESPACE/ID} (what ctr asks
        for) with the cgroupfs driver, the scope runc creates for
        C{slice:prefix:ID} with the systemd driver.
        """
        if self.systemd:
            return f"/{SLICE}/{self.scopePrefix()}-{containerID}.scope"
        return super().containerCgroup(containerID)

    def cgroupOptions(self, containerID: str) -> list[str]:
        """
        The C{ctr run} options that select runc's cgroup driver for a
        container: none for cgroupfs; for systemd, a C{slice:prefix:name}
        cgroups path and the C{SystemdCgroup} runc option.
        """
        if not self.systemd:
            return []
        options = ["--cgroup", f"{SLICE}:{self.scopePrefix()}:{containerID}"]
        if self.runtime is GO:
            return [*options, "--runc-systemd-cgroup"]
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("SystemdCgroup = true\n")
        return [*options, "--runtime-config-path", path]

    def start(
        self, containerID: str, *command: str, options: Sequence[str] = ()
    ) -> int:
        """
        C{ctr run -d} a busybox container with our cgroup driver, check that
        its init process is in the cgroup it must be in, and return its pid.
        """
        pid = self.runDetached(
            containerID,
            *command,
            options=[*self.cgroupOptions(containerID), *options],
        )
        self.assertEqual(
            host.cgroupsOf(pid), {"": self.containerCgroup(containerID)}, pid
        )
        return pid

    def test_lifecycle(self) -> None:
        """
        A container is created and started in its own cgroup (with the
        systemd driver: the scope runc creates), an exec runs, SIGKILL stops
        it with status 137, and deleting it removes the cgroup.
        """
        pid = self.start("life", "/bin/sleep", "1000")
        cgroup = self.containerCgroup("life")
        self.assertIn(str(pid), readCgroupFile(cgroup, "cgroup.procs").split())
        events = self.recordEvents()
        result = self.execute("life", "probe", "/bin/echo", "alive")
        self.assertEqual((result.code, result.out), (0, "alive\n"), result.err)
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "life"))
        self.waitForStatus("life", "STOPPED")
        exit = events.waitFor(
            lambda e: e.topic == "/tasks/exit" and e.payload.get("pid") == pid,
            30,
            "the exit of life's init",
        )
        self.assertEqual(exit.payload.get("exit_status"), 137, exit.payload)
        self.assertCtr(self.ctr("task", "rm", "life"), what="ctr task rm")
        self.assertCtr(self.ctr("containers", "rm", "life"), what="ctr c rm")
        directory = os.path.join(host.CGROUP_ROOT, cgroup.lstrip("/"))
        waitUntil(
            lambda: not os.path.exists(directory), 30, f"{directory} to be removed"
        )

    def test_metrics(self) -> None:
        """
        C{ctr task metrics} shows the container's cgroup v2 metrics
        (C{io.containerd.cgroups.v2.Metrics}) with real figures: its pid
        count, memory limit and non-zero memory and cpu usage.
        """
        self.start(
            "measured", "/bin/sleep", "1000", options=["--memory-limit", str(64 * MiB)]
        )
        result = self.ctr("task", "metrics", "--format", "json", "measured")
        self.assertCtr(result, what="ctr task metrics --format json")
        metrics = json.loads(result.out)
        self.assertEqual(metrics["pids"].get("current"), 1, metrics)
        self.assertEqual(metrics["memory"].get("usage_limit"), 64 * MiB, metrics)
        self.assertGreater(metrics["memory"].get("usage", 0), 0, metrics)
        self.assertGreater(metrics["memory"].get("anon", 0), 0, metrics)
        self.assertGreater(metrics["cpu"].get("usage_usec", 0), 0, metrics)
        self.assertEqual(
            readCgroupFile(self.containerCgroup("measured"), "memory.max"),
            str(64 * MiB),
        )

    @inlineCallbacks
    def test_updateMemoryLimit(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{Update} on the shim's socket changes the container's
        C{memory.max}, and the metrics show the new limit.
        """
        self.start(
            "updated", "/bin/sleep", "1000", options=["--memory-limit", str(64 * MiB)]
        )
        cgroup = self.containerCgroup("updated")
        self.assertEqual(readCgroupFile(cgroup, "memory.max"), str(64 * MiB))
        yield self.updateResources("updated", {"memory": {"limit": 48 * MiB}})
        self.assertEqual(readCgroupFile(cgroup, "memory.max"), str(48 * MiB))
        result = self.ctr("task", "metrics", "--format", "json", "updated")
        self.assertCtr(result, what="ctr task metrics")
        self.assertEqual(json.loads(result.out)["memory"].get("usage_limit"), 48 * MiB)
        self.assertEqual(self.statusOf("updated"), "RUNNING")

    def test_pauseAndResume(self) -> None:
        """
        C{ctr task pause} freezes the container's cgroup (C{cgroup.freeze},
        C{frozen 1} in C{cgroup.events}), says PAUSED and publishes
        C{/tasks/paused}; C{ctr task resume} thaws it, says RUNNING and
        publishes C{/tasks/resumed}; the container works afterwards.
        """
        pid = self.start("frozen", "/bin/sleep", "1000")
        cgroup = self.containerCgroup("frozen")
        events = self.recordEvents()
        self.assertCtr(self.ctr("task", "pause", "frozen"), what="ctr task pause")
        self.assertEqual(self.taskStatus("frozen"), (pid, "PAUSED"))
        self.assertEqual(readCgroupFile(cgroup, "cgroup.freeze"), "1")
        self.assertIn("frozen 1", readCgroupFile(cgroup, "cgroup.events").splitlines())
        events.waitForTopic("frozen", "/tasks/paused")
        self.assertCtr(self.ctr("task", "resume", "frozen"), what="ctr task resume")
        self.assertEqual(self.taskStatus("frozen"), (pid, "RUNNING"))
        self.assertEqual(readCgroupFile(cgroup, "cgroup.freeze"), "0")
        self.assertIn("frozen 0", readCgroupFile(cgroup, "cgroup.events").splitlines())
        events.waitForTopic("frozen", "/tasks/resumed")
        result = self.execute("frozen", "after", "/bin/echo", "thawed")
        self.assertEqual((result.code, result.out), (0, "thawed\n"))

    def test_outOfMemory(self) -> None:
        """
        A container that exceeds its memory limit is killed by the kernel:
        the shim sees it in C{memory.events}, publishes C{/tasks/oom}, and
        the container exits with status 137.
        """
        events = self.recordEvents()
        result = self.runContainer(
            "hungry",
            "/bin/tail",
            "/dev/zero",
            options=[*self.cgroupOptions("hungry"), "--memory-limit", str(32 * MiB)],
            timeout=120,
        )
        self.assertEqual((result.code, result.out), (137, ""), result.err)
        oom = self.waitForOOM(events, "hungry")
        self.assertEqual(oom.payload, {"container_id": "hungry"})
        exit = events.waitForTopic("hungry", "/tasks/exit")
        self.assertEqual(exit.payload["exit_status"], 137)
        self.assertOOMBeforeExit(events, "hungry")

    def test_processList(self) -> None:
        """
        C{ctr task ps} (C{Pids}) lists exactly the processes of the
        container's cgroup: its init and a detached exec.
        """
        pid = self.start("listed", "/bin/sleep", "1000")
        self.assertCtr(
            self.ctr(
                "task",
                "exec",
                "-d",
                "--exec-id",
                "lister",
                "listed",
                "/bin/sleep",
                "999",
            ),
            what="ctr task exec -d",
        )
        cgroup = self.containerCgroup("listed")
        waitUntil(
            lambda: len(readCgroupFile(cgroup, "cgroup.procs").split()) == 2,
            30,
            "the exec to be in the cgroup",
        )
        result = self.ctr("task", "ps", "listed")
        self.assertCtr(result, what="ctr task ps")
        processes = parseProcessList(result.out)
        inCgroup = [int(p) for p in readCgroupFile(cgroup, "cgroup.procs").split()]
        self.assertEqual(sorted(processes), sorted(inCgroup), result.out)
        self.assertIn(pid, processes)
        # ProcessDetails{ExecID:lister} up to containerd 1.7, exec_id:"lister"
        # from 2.0.
        self.assertIn("lister", "".join(processes.values()))


class CgroupV2TestsGo(CgroupV2TestsMixin, TestCase):
    runtime = GO


class CgroupV2TestsShimd(CgroupV2TestsMixin, TestCase):
    runtime = SHIMD


class SystemdCgroupTestsGo(CgroupV2TestsMixin, TestCase):
    runtime = GO
    systemd = True


class SystemdCgroupTestsShimd(CgroupV2TestsMixin, TestCase):
    runtime = SHIMD
    systemd = True
