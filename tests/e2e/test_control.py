"""
End-to-end tests of controlling a running task: pause and resume, process
listing, metrics, resource updates and the OOM killer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import parseMetricsTable, parseProcessList
from tests.e2e.runtimes import GO, SHIMD

MiB = 1024 * 1024


def readCgroupFile(pid: int, controller: str, name: str) -> str:
    """
    A file of the cgroup v1 C{controller} cgroup of process C{pid}.
    """
    with open(os.path.join(host.v1CgroupDirectory(pid, controller), name)) as f:
        return f.read().strip()


class ControlTestsMixin(E2EMixin):
    """
    Operations on a running task.
    """

    def test_pauseAndResume(self) -> None:
        """
        C{ctr task pause} freezes the container's cgroup, C{ctr task ls}
        says PAUSED and C{/tasks/paused} is published; C{ctr task resume}
        thaws it, says RUNNING and publishes C{/tasks/resumed}. The container
        works afterwards.
        """
        pid = self.runDetached("frozen", "/bin/sleep", "1000")
        events = self.recordEvents()
        self.assertCtr(self.ctr("task", "pause", "frozen"), what="ctr task pause")
        self.assertEqual(self.taskStatus("frozen"), (pid, "PAUSED"))
        self.assertEqual(readCgroupFile(pid, "freezer", "freezer.state"), "FROZEN")
        paused = events.waitForTopic("frozen", "/tasks/paused")
        self.assertEqual(paused.payload, {"container_id": "frozen"})
        self.assertCtr(self.ctr("task", "resume", "frozen"), what="ctr task resume")
        self.assertEqual(self.taskStatus("frozen"), (pid, "RUNNING"))
        self.assertEqual(readCgroupFile(pid, "freezer", "freezer.state"), "THAWED")
        resumed = events.waitForTopic("frozen", "/tasks/resumed")
        self.assertEqual(resumed.payload, {"container_id": "frozen"})
        self.assertEqual(events.topics("frozen"), ["/tasks/paused", "/tasks/resumed"])
        result = self.execute("frozen", "after", "/bin/echo", "thawed")
        self.assertEqual((result.code, result.out), (0, "thawed\n"))

    def test_processList(self) -> None:
        """
        C{ctr task ps} lists exactly the container's processes: the init pid
        with no details, and an exec's pid with C{ProcessDetails} naming its
        exec id (so the shim answers C{Pids} with
        C{containerd.runc.v1.ProcessDetails} for execs).
        """
        pid = self.runDetached("listed", "/bin/sleep", "1000")
        events = self.recordEvents()
        self.assertCtr(
            self.ctr(
                "task",
                "exec",
                "-d",
                "--exec-id",
                "lister",
                "listed",
                "/bin/sleep",
                "1000",
            ),
            what="ctr task exec -d",
        )
        execPid = events.waitForTopic("listed", "/tasks/exec-started").payload["pid"]
        result = self.ctr("task", "ps", "listed")
        self.assertCtr(result, what="ctr task ps")
        processes = parseProcessList(result.out)
        self.assertEqual(sorted(processes), sorted([pid, execPid]), result.out)
        self.assertEqual(sorted(processes), sorted(self.processesOf("listed")))
        self.assertEqual(processes[pid], "-")
        # containerd 1.x's ctr prints the Go struct, 2.x's the message.
        self.assertRegex(
            processes[execPid], r'ProcessDetails\{ExecID:lister|exec_id:"lister"'
        )

    def test_metrics(self) -> None:
        """
        C{ctr task metrics} shows the cgroup v1 metrics of the container
        (C{io.containerd.cgroups.v1.Metrics}): its memory limit and usage,
        cpu usage per cpu, and the pid count, both as a table and as JSON.
        """
        pid = self.runDetached(
            "measured", "/bin/sleep", "1000", options=["--memory-limit", str(64 * MiB)]
        )
        result = self.ctr("task", "metrics", "measured")
        self.assertCtr(result, what="ctr task metrics")
        table = parseMetricsTable(result.out)
        self.assertEqual(
            sorted(table),
            sorted(
                [
                    "memory.usage_in_bytes",
                    "memory.limit_in_bytes",
                    "memory.stat.cache",
                    "cpuacct.usage",
                    "cpuacct.usage_percpu",
                    "pids.current",
                    "pids.limit",
                ]
            ),
            result.out,
        )
        self.assertEqual(table["memory.limit_in_bytes"], str(64 * MiB))
        self.assertGreater(int(table["memory.usage_in_bytes"]), 0)
        self.assertGreater(int(table["cpuacct.usage"]), 0)
        self.assertEqual(table["pids.current"], "1")
        self.assertEqual(table["pids.limit"], "0", "pids.max 'max' shows as 0")
        perCPU = readCgroupFile(pid, "cpuacct", "cpuacct.usage_percpu").split()
        self.assertEqual(len(table["cpuacct.usage_percpu"].split()), len(perCPU))

        result = self.ctr("task", "metrics", "--format", "json", "measured")
        self.assertCtr(result, what="ctr task metrics --format json")
        metrics = json.loads(result.out)
        self.assertLessEqual(
            {"pids", "cpu", "memory", "blkio", "memory_oom_control"}, set(metrics)
        )
        self.assertEqual(metrics["pids"], {"current": 1})
        self.assertEqual(metrics["memory"]["usage"]["limit"], 64 * MiB)
        self.assertGreater(metrics["memory"]["usage"]["usage"], 0)
        self.assertEqual(
            metrics["memory"]["hierarchical_memory_limit"], 64 * MiB, metrics
        )
        self.assertGreater(metrics["cpu"]["usage"]["total"], 0)
        self.assertEqual(len(metrics["cpu"]["usage"]["per_cpu"]), len(perCPU))

    @inlineCallbacks
    def test_updateMemoryLimit(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{Update} on the shim's socket changes the memory limit of the
        container's cgroup.
        """
        pid = self.runDetached(
            "updated", "/bin/sleep", "1000", options=["--memory-limit", str(64 * MiB)]
        )
        self.assertEqual(
            readCgroupFile(pid, "memory", "memory.limit_in_bytes"), str(64 * MiB)
        )
        yield self.updateResources("updated", {"memory": {"limit": 48 * MiB}})
        self.assertEqual(
            readCgroupFile(pid, "memory", "memory.limit_in_bytes"), str(48 * MiB)
        )
        table = parseMetricsTable(self.ctr("task", "metrics", "updated").out)
        self.assertEqual(table.get("memory.limit_in_bytes"), str(48 * MiB))
        self.assertEqual(self.taskStatus("updated"), (pid, "RUNNING"))

    def test_outOfMemory(self) -> None:
        """
        A container that exceeds its memory limit (C{--memory-limit}) is
        killed by the kernel: C{/tasks/oom} is published and it exits with
        status 137.
        """
        events = self.recordEvents()
        result = self.runContainer(
            "hungry",
            "/bin/tail",
            "/dev/zero",
            options=["--memory-limit", str(32 * MiB)],
        )
        self.assertEqual((result.code, result.out), (137, ""))
        oom = self.waitForOOM(events, "hungry")
        self.assertEqual(oom.payload, {"container_id": "hungry"})
        exit = events.waitForTopic("hungry", "/tasks/exit")
        self.assertEqual(exit.payload["exit_status"], 137)
        self.assertOOMBeforeExit(events, "hungry")


class ControlTestsGo(ControlTestsMixin, TestCase):
    runtime = GO


class ControlTestsShimd(ControlTestsMixin, TestCase):
    runtime = SHIMD
