"""
The shim's daemon SIGKILLed under running containers: containerd notices
the closed connection and runs the runtime binary's C{delete} action, which
must leave nothing of the containers behind; and the action's care for a
socket that a live group shim still serves.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase, TestCase

from shimd.protos import task_pb2
from shimd.shim.address import removeStaleSocket
from tests.e2e import host
from tests.e2e.containerd import RUNC_ROOT, waitUntil
from tests.e2e.runtimes import GO, SHIMD
from tests.stress.base import StressMixin, execSpec, groupOptions
from tests.stress.client import ShimClient
from tests.stress.proc import children


class DeadShimTestsMixin(StressMixin):
    """
    A shim killed with SIGKILL.
    """

    def leavesSocket(self) -> bool:
        """
        Whether the runtime's C{delete} action leaves a killed shim's socket
        file behind: the Go shim's does, shimd's removes it.
        """
        return self.runtime is GO

    def assertNothingLeft(
        self,
        ids: list[str],
        processes: list[int],
        cgroups: list[str],
        bundles: list[str],
        socketPath: str,
    ) -> None:
        """
        Nothing of the containers C{ids} is left: no process, runc state,
        mount, cgroup or bundle; and the socket file is gone (shimd) or left
        (Go, which is then removed by hand).
        """
        alive = [pid for pid in processes if host.isAlive(pid)]
        self.assertEqual(alive, [], "container processes left")
        for containerID in ids:
            state = os.path.join(RUNC_ROOT, self.namespace.name, containerID)
            self.assertFalse(os.path.exists(state), f"runc state {state} left")
        for bundle in bundles:
            self.assertEqual(host.mountsUnder(bundle), [], "mounts left")
            self.assertFalse(os.path.exists(bundle), f"bundle {bundle} left")
        self.assertEqual([c for c in cgroups if os.path.exists(c)], [], "cgroups left")
        self.assertEqual(host.processesListeningOn(socketPath), [])
        if self.leavesSocket():
            self.assertTrue(os.path.exists(socketPath), "Go left no socket?")
            os.unlink(socketPath)
        else:
            self.assertFalse(os.path.exists(socketPath), "socket file left")

    def test_killedShim(self) -> None:
        """
        A container from an image (overlay rootfs, cgroups, runc state) with
        an exec running: after its shim is SIGKILLed, containerd publishes
        C{/tasks/exit} and C{/tasks/delete} with the init pid and status 137
        from the C{delete} action, the task is gone, and so is every
        process, the runc state, the mount, the cgroups, the bundle and (for
        shimd) the socket file. The shim left no zombie child either.
        """
        image = self.importImage()
        events = self.recordEvents()
        directory = self.makeDirectory()
        pid = self.runDetached(
            "doomed",
            "/bin/sleep",
            "100000",
            image=image,
            options=["--log-uri", f"file://{directory}/out"],
        )
        client = self.shimClient("doomed")
        client.call(
            "Exec",
            task_pb2.ExecProcessRequest(
                id="doomed", exec_id="ex", spec=execSpec("/bin/sleep", "100000")
            ),
        )
        execPid = client.call(
            "Start", task_pb2.StartRequest(id="doomed", exec_id="ex")
        ).pid
        client.close()
        processes = sorted(self.processesOf("doomed"))
        self.assertEqual(processes, sorted([pid, execPid]))
        bundle = self.bundle("doomed")
        cgroups = host.cgroupDirectories(self.containerCgroup("doomed"))
        self.assertNotEqual(cgroups, [])
        self.assertNotEqual(host.mountsUnder(bundle), [])
        socketPath = host.socketPath(self.shimAddressOf("doomed"))
        shims = self.shimProcesses("doomed")
        self.assertEqual(len(shims), 1, shims)
        for shim in shims:
            host.kill(shim)

        exit = events.waitForTopic("doomed", "/tasks/exit")
        self.assertEqual(
            (exit.payload["id"], exit.payload["pid"], exit.payload["exit_status"]),
            ("doomed", pid, 137),
        )
        delete = events.waitForTopic("doomed", "/tasks/delete")
        self.assertEqual(
            (delete.payload["pid"], delete.payload["exit_status"]), (pid, 137)
        )
        waitUntil(lambda: self.taskStatus("doomed") is None, 10, "the task to go")
        waitUntil(lambda: not os.path.exists(bundle), 10, "the bundle to go")
        self.assertNothingLeft(["doomed"], processes, cgroups, [bundle], socketPath)
        self.assertEqual(children(shims[0]), {}, "the dead shim's children")
        self.assertCtr(self.ctr("containers", "rm", "doomed"), what="ctr c rm")

    def test_killedGroupShim(self) -> None:
        """
        A shim serving two grouped containers is SIGKILLed: containerd runs
        the C{delete} action for each; both get C{/tasks/exit} and
        C{/tasks/delete} with 137, and nothing of either is left.
        """
        events = self.recordEvents()
        group = groupOptions("g")
        self.namespace.ids.add("g")
        pids = {
            containerID: self.runDetached(
                containerID, "/bin/sleep", "100000", options=group
            )
            for containerID in ("m1", "m2")
        }
        processes = sorted(pids.values())
        cgroups = [
            path
            for containerID in pids
            for path in host.cgroupDirectories(self.containerCgroup(containerID))
        ]
        bundles = [self.bundle(containerID) for containerID in pids]
        socketPath = host.socketPath(self.shimAddressOf("m1"))
        shims = self.shimProcesses()
        self.assertEqual(len(shims), 1, shims)
        host.kill(shims[0])
        for containerID, pid in pids.items():
            exit = events.waitForTopic(containerID, "/tasks/exit")
            self.assertEqual(
                (exit.payload["pid"], exit.payload["exit_status"]), (pid, 137)
            )
            events.waitForTopic(containerID, "/tasks/delete")
        waitUntil(lambda: not self.namespace.tasks(), 10, "the tasks to go")
        waitUntil(
            lambda: not any(os.path.exists(b) for b in bundles), 10, "the bundles"
        )
        self.assertNothingLeft(list(pids), processes, cgroups, bundles, socketPath)
        self.assertCtr(self.ctr("containers", "rm", "m1", "m2"), what="ctr c rm")

    def test_liveGroupKeepsSocket(self) -> None:
        """
        containerd runs the C{delete} action after every disconnect, also
        when one container of a live group is deleted: the action must then
        leave the group's socket alone, so that the shim stays reachable (a
        new connection answers C{State} for the other container).
        """
        group = groupOptions("kept")
        self.namespace.ids.add("kept")
        self.runDetached("a", "/bin/sleep", "100000", options=group)
        self.runDetached("b", "/bin/sleep", "100000", options=group)
        socketPath = host.socketPath(self.shimAddressOf("b"))
        self.killAndDelete("a")
        waitUntil(
            lambda: "cleaning up dead shim" in self.containerdLog(200),
            10,
            "containerd to run the delete action",
        )
        self.assertTrue(os.path.exists(socketPath))
        with ShimClient(socketPath) as client:
            state = client.call("State", task_pb2.StateRequest(id="b"))
        self.assertEqual(state.id, "b")
        self.killAndDelete("b")


class DeadShimTestsGo(DeadShimTestsMixin, TestCase):
    runtime = GO


class DeadShimTestsShimd(DeadShimTestsMixin, TestCase):
    runtime = SHIMD


class StaleSocketTests(SynchronousTestCase):
    """
    L{removeStaleSocket}, the C{delete} action's socket cleanup, on the
    files a bundle's C{address} may name.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="shimd-stale-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "s")
        with open(os.path.join(self.directory, "address"), "w") as f:
            f.write(f"unix://{self.path}")

    def bind(self) -> socket.socket:
        """
        A unix socket bound at the address's path.
        """
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.path)
        return listener

    def test_stale(self) -> None:
        """
        A socket file nothing listens on (its shim is dead) is removed.
        """
        self.bind().close()
        removeStaleSocket(self.directory)
        self.assertFalse(os.path.exists(self.path))

    def test_listening(self) -> None:
        """
        A socket a live shim listens on is kept.
        """
        self.bind().listen(1)
        removeStaleSocket(self.directory)
        self.assertTrue(os.path.exists(self.path))

    def test_notASocket(self) -> None:
        """
        Anything but a socket is left alone.
        """
        with open(self.path, "w") as f:
            f.write("precious")
        removeStaleSocket(self.directory)
        self.assertTrue(os.path.exists(self.path))

    def test_missing(self) -> None:
        """
        Nothing happens when the socket is already gone, or the bundle has
        no C{address}.
        """
        removeStaleSocket(self.directory)
        os.unlink(os.path.join(self.directory, "address"))
        removeStaleSocket(self.directory)
        self.assertFalse(os.path.exists(self.path))
