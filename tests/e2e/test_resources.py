"""
End-to-end tests of what a task holds on the host, that all of it goes away
with the task, and of many tasks at once.
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import TestCase

from tests.e2e import host
from tests.e2e.base import E2EMixin, Watchdog
from tests.e2e.containerd import RUNC_ROOT, parseTaskList, waitUntil
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD

PARALLEL = 20


class ResourceTestsMixin(E2EMixin):
    """
    Host resources of tasks.
    """

    def test_nothingLeftAfterDelete(self) -> None:
        """
        A task from an image, with an exec running, holds a shim process,
        container processes, an overlay mount on the bundle's C{rootfs},
        cgroups C{/NS/ID}, runc state, stdio fifos, a shim socket and the
        bundle. After C{ctr task kill -s SIGKILL}, C{ctr task rm} and
        C{ctr c rm}, none of them is left.
        """
        image = self.importImage()
        events = self.recordEvents()
        pid = self.runDetached("leaky", "/bin/sleep", "1000", image=image)
        self.assertCtr(
            self.ctr(
                "task", "exec", "-d", "--exec-id", "ex", "leaky", "/bin/sleep", "1000"
            ),
            what="ctr task exec -d",
        )
        execPid = events.waitForTopic("leaky", "/tasks/exec-started").payload["pid"]
        create = events.waitForTopic("leaky", "/tasks/create").payload
        fifos = [create["io"][name] for name in ("stdin", "stdout", "stderr")]
        bundle = self.bundle("leaky")
        address = self.shimAddressOf("leaky")
        socket = host.socketPath(address)
        runcState = os.path.join(RUNC_ROOT, self.namespace.name, "leaky")
        cgroups = host.cgroupDirectories(self.containerCgroup("leaky"))

        listeners = host.processesListeningOn(socket)
        shims = self.shimProcesses("leaky")
        self.assertNotEqual(listeners, [], f"nothing listens on {socket}")
        self.assertLessEqual(set(listeners), set(shims))
        self.assertEqual(sorted(self.processesOf("leaky")), sorted([pid, execPid]))
        self.assertEqual(
            [
                (fsType, point)
                for point, fsType, _ in host.mounts()
                if point == bundle + "/rootfs"
            ],
            [("overlay", bundle + "/rootfs")],
        )
        self.assertIn(
            os.path.join(host.CGROUP_ROOT, "memory", self.namespace.name, "leaky"),
            cgroups,
        )
        self.assertTrue(os.path.isdir(runcState), runcState)
        for fifo in fifos:
            self.assertTrue(os.path.exists(fifo), fifo)
        self.assertTrue(os.path.isdir(bundle))

        self.killAndDelete("leaky")

        waitUntil(
            lambda: not (self.shimProcesses("leaky") or self.processesOf("leaky")),
            10,
            "the shim and the container's processes to go",
        )
        self.assertFalse(host.isAlive(pid) or host.isAlive(execPid))
        for shim in shims:
            self.assertFalse(host.isAlive(shim), f"shim {shim} still running")
        self.assertEqual(host.mountsUnder(bundle), [])
        self.assertEqual(
            [c for c in cgroups if os.path.exists(c)], [], "cgroups left behind"
        )
        self.assertEqual([f for f in fifos if os.path.exists(f)], [], "fifos left")
        self.assertFalse(os.path.exists(os.path.dirname(fifos[0])), "fifo dir left")
        self.assertFalse(os.path.exists(runcState), "runc state left behind")
        self.assertFalse(os.path.exists(socket), "shim socket left behind")
        self.assertFalse(os.path.exists(bundle), "bundle left behind")

    def test_parallelContainers(self) -> None:
        """
        Twenty C{ctr run -d} at once all succeed; each task runs with a shim
        of its own; killing and deleting them all at once leaves none of
        their shims or processes.
        """
        ids = [f"p{index}" for index in range(PARALLEL)]
        self.namespace.ids.update(ids)

        def parallel(argvs: list[list[str]]) -> list[tuple[int, bytes]]:
            processes = [
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.containerd.environment(),
                )
                for argv in argvs
            ]
            watchdogs = [Watchdog(process, 120) for process in processes]
            results = []
            for process, watchdog in zip(processes, watchdogs, strict=True):
                assert process.stderr is not None
                with process.stderr:
                    err = process.stderr.read()
                results.append((process.wait(), err))
                watchdog.cancel()
                self.assertFalse(
                    watchdog.fired, f"{process.args!r} hung: killed after 120 s"
                )
            return results

        results = parallel(
            [
                self.namespace.ctrCommand(
                    "run",
                    "-d",
                    *self.runtimeOptions(),
                    "--rootfs",
                    busyboxRootfs(),
                    containerID,
                    "/bin/sleep",
                    "1000",
                )
                for containerID in ids
            ]
        )
        self.assertEqual(results, [(0, b"")] * PARALLEL)
        waitUntil(
            lambda: all(status == "RUNNING" for _, status in self._tasks(ids)),
            60,
            "all tasks to run",
        )
        listeners = [
            set(host.processesListeningOn(host.socketPath(self.address(containerID))))
            for containerID in ids
        ]
        self.assertNotIn(set(), listeners, "a task without a shim")
        self.assertEqual(
            len(set().union(*listeners)), PARALLEL, "shims shared between tasks"
        )

        results = parallel(
            [
                self.namespace.ctrCommand("task", "kill", "-s", "SIGKILL", containerID)
                for containerID in ids
            ]
        )
        self.assertEqual(results, [(0, b"")] * PARALLEL)
        waitUntil(
            lambda: all(status == "STOPPED" for _, status in self._tasks(ids)),
            60,
            "all tasks to stop",
        )
        results = parallel(
            [
                self.namespace.ctrCommand("task", "rm", containerID)
                for containerID in ids
            ]
        )
        self.assertEqual([code for code, _ in results], [0] * PARALLEL, results)
        self.assertCtr(self.ctr("containers", "rm", *ids), what="ctr c rm")
        self.assertEqual(parseTaskList(self.ctr("task", "ls").out), {})
        waitUntil(lambda: not self.shimProcesses(), 30, "all shims to exit")
        self.assertEqual(host.processesInCgroup(f"/{self.namespace.name}"), [])

    def address(self, containerID: str) -> str:
        """
        The shim address in a task's bundle.
        """
        return self.shimAddressOf(containerID)

    def _tasks(self, ids: list[str]) -> list[tuple[int, str]]:
        tasks = self.namespace.tasks()
        return [tasks.get(containerID, (0, "MISSING")) for containerID in ids]


class ResourceTestsGo(ResourceTestsMixin, TestCase):
    runtime = GO


class ResourceTestsShimd(ResourceTestsMixin, TestCase):
    runtime = SHIMD
