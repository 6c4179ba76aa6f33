"""
End-to-end tests of the shim and containerd outliving each other: a
containerd restart under a running task, and containerd cleaning up after a
shim that died.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import RUNC_ROOT, waitUntil
from tests.e2e.runtimes import GO, SHIMD


class ResilienceTestsMixin(E2EMixin):
    """
    Restarts and crashes.
    """

    def test_containerdRestart(self) -> None:
        """
        A shim outlives a containerd restart: the new containerd finds it
        through the bundle's C{address}, the task is still RUNNING with the
        same pid and shim, a new exec works, and the shim publishes the
        task's exit to the new containerd (re-dialling C{TTRPC_ADDRESS}).
        """
        pid = self.runDetached("survivor", "/bin/sleep", "1000")
        shims = self.shimProcesses("survivor")
        self.containerd.restart()
        self.assertEqual(self.taskStatus("survivor"), (pid, "RUNNING"))
        self.assertEqual(self.shimProcesses("survivor"), shims)
        result = self.execute("survivor", "after", "/bin/echo", "still here")
        self.assertEqual((result.code, result.out), (0, "still here\n"))
        events = self.recordEvents()
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "survivor"))
        exit = events.waitForTopic("survivor", "/tasks/exit")
        self.assertEqual((exit.payload["pid"], exit.payload["exit_status"]), (pid, 137))
        self.waitForStatus("survivor", "STOPPED")
        self.assertCtr(self.ctr("task", "rm", "survivor"), what="ctr task rm")
        self.waitForTaskDelete(events, "survivor")
        waitUntil(
            lambda: not any(host.isAlive(shim) for shim in shims),
            10,
            "the shim to exit",
        )

    def test_deadShim(self) -> None:
        """
        When the shim is killed, containerd runs the runtime binary's
        C{delete} action: the container's processes are killed, its runc
        state, rootfs mount, cgroups and bundle are removed, and containerd
        itself publishes C{/tasks/exit} and C{/tasks/delete} with the init
        pid and status 137 from the action's C{DeleteResponse}. Nothing
        listens on the dead shim's socket any more (the Go shim's action
        leaves the file, shimd's removes it), and a new task with the same id
        starts all the same: C{start} replaces a stale socket.
        """
        image = self.importImage()
        events = self.recordEvents()
        pid = self.runDetached(
            "orphan", "/bin/sh", "-c", "sleep 1000 & exec sleep 1000", image=image
        )
        waitUntil(lambda: len(self.processesOf("orphan")) == 2, 10, "both processes")
        processes = self.processesOf("orphan")
        bundle = self.bundle("orphan")
        cgroups = host.cgroupDirectories(self.containerCgroup("orphan"))
        self.assertNotEqual(cgroups, [])
        self.assertNotEqual(host.mountsUnder(bundle), [])
        socket = host.socketPath(self.shimAddressOf("orphan"))
        shims = self.shimProcesses("orphan")
        self.assertNotEqual(shims, [])
        for shim in shims:
            host.kill(shim)

        exit = events.waitForTopic("orphan", "/tasks/exit")
        self.assertEqual(
            (exit.payload["id"], exit.payload["pid"], exit.payload["exit_status"]),
            ("orphan", pid, 137),
        )
        delete = events.waitForTopic("orphan", "/tasks/delete")
        self.assertEqual(
            (delete.payload["pid"], delete.payload["exit_status"]), (pid, 137)
        )
        waitUntil(
            lambda: self.taskStatus("orphan") is None, 10, "the task to disappear"
        )
        self.assertEqual([p for p in processes if host.isAlive(p)], [])
        self.assertFalse(
            os.path.exists(os.path.join(RUNC_ROOT, self.namespace.name, "orphan")),
            "runc state left behind",
        )
        self.assertEqual(host.mountsUnder(bundle), [])
        self.assertEqual([c for c in cgroups if os.path.exists(c)], [])
        self.assertFalse(os.path.exists(bundle), "bundle left behind")
        self.assertCtr(self.ctr("containers", "rm", "orphan"), what="ctr c rm")
        self.assertEqual(host.processesListeningOn(socket), [])

        result = self.runContainer("orphan", "/bin/echo", "again")
        self.assertEqual((result.code, result.out, result.err), (0, "again\n", ""))
        if os.path.exists(socket):
            os.unlink(socket)


class ResilienceTestsGo(ResilienceTestsMixin, TestCase):
    runtime = GO


class ResilienceTestsShimd(ResilienceTestsMixin, TestCase):
    runtime = SHIMD
