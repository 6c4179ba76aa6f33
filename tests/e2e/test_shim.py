"""
End-to-end tests of how containerd finds, launches and talks to the shim:
the socket address, the bundle's C{address} and C{shim-binary-path} files,
and C{ctr shim} talking to the shim's socket directly (issue 2).
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import containerdVersion, waitUntil
from tests.e2e.runtimes import GO, SHIMD


def goZeroTime() -> object:
    """
    Go's zero time as C{ctr shim state} prints a C{State} answer's
    C{exited_at}: formatted as RFC 3339 by containerd 1.6's C{ctr}, and as
    the C{Timestamp} message's own fields from 1.7 on.
    """
    if containerdVersion() < (1, 7):
        return "0001-01-01T00:00:00Z"
    return {"seconds": -62135596800}


class ShimTestsMixin(E2EMixin):
    """
    The shim as a process with a socket.
    """

    def allowStaleGroupSocket(self, group: str) -> None:
        """
        The containerd 2.x Go shim leaves the socket file of a group's shim
        behind when that shim exits (README, differences); shimd, and the
        containerd 1.x Go shim, remove it.
        """
        if self.runtime is GO and containerdVersion() >= (2, 0):
            self.namespace.staleSockets.add(group)

    def test_shimState(self) -> None:
        """
        C{ctr shim --id ID state} sends C{State} straight to the shim's
        socket; for a running task the answer has the id, bundle, init pid,
        status 2 (RUNNING), the stdio fifo paths, and Go's zero time as
        C{exited_at} (the field is always on the wire), nothing else.
        """
        events = self.recordEvents()
        pid = self.runDetached("stated", "/bin/sleep", "1000")
        io = events.waitForTopic("stated", "/tasks/create").payload["io"]
        result = self.ctr("shim", "--id", "stated", "state")
        self.assertCtr(result, what="ctr shim state")
        self.assertEqual(
            json.loads(result.out),
            {
                "id": "stated",
                "bundle": self.bundle("stated"),
                "pid": pid,
                "status": 2,
                "stdin": io["stdin"],
                "stdout": io["stdout"],
                "stderr": io["stderr"],
                "exited_at": goZeroTime(),
            },
        )

    def test_shimStateOfStoppedTask(self) -> None:
        """
        C{State} of a task whose init has exited says status 3 (STOPPED),
        with its exit status and exit time (as in C{/tasks/exit}).
        """
        events = self.recordEvents()
        pid = self.runDetached("ended", "/bin/sleep", "1000")
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "ended"))
        exit = events.waitForTopic("ended", "/tasks/exit").payload
        result = self.ctr("shim", "--id", "ended", "state")
        self.assertCtr(result, what="ctr shim state")
        state = json.loads(result.out)
        self.assertEqual(
            (state["pid"], state["status"], state["exit_status"]), (pid, 3, 137)
        )
        self.assertEqual(state["exited_at"], exit["exited_at"])

    def test_shimStateUnknownID(self) -> None:
        """
        C{State} for an id the shim does not have fails with NOT_FOUND
        C{container not created: not found}, which C{ctr} prints as a gRPC
        error. (The shim is reached through a group: containers annotated
        C{io.containerd.runc.v2.group=G} share the shim at the address of
        C{G}, which is no container's id.)
        """
        self.namespace.ids.add("grp")
        self.allowStaleGroupSocket("grp")
        self.runDetached(
            "member",
            "/bin/sleep",
            "1000",
            options=["--annotation", "io.containerd.runc.v2.group=grp"],
        )
        self.assertEqual(
            self.shimAddressOf("member"),
            self.containerd.shimAddress(self.namespace.name, "grp"),
        )
        result = self.ctr("shim", "--id", "grp", "state")
        self.assertEqual(
            (result.code, result.out, result.err),
            (
                1,
                "",
                "ctr: rpc error: code = NotFound"
                " desc = container not created: not found\n",
            ),
        )

    def test_groupedContainersShareShim(self) -> None:
        """
        Two containers with the same C{io.containerd.runc.v2.group}
        annotation are served by one shim process, both run, and the shim
        goes away only after the last of them is deleted.
        """
        group = ["--annotation", "io.containerd.runc.v2.group=pair"]
        self.namespace.ids.add("pair")
        self.allowStaleGroupSocket("pair")
        self.runDetached("first", "/bin/sleep", "1000", options=group)
        self.runDetached("second", "/bin/sleep", "1000", options=group)
        self.assertEqual(
            self.shimAddressOf("first"),
            self.shimAddressOf("second"),
        )
        shims = self.shimProcesses()
        self.assertEqual(len(shims), 1, shims)
        self.killAndDelete("first")
        self.assertEqual(self.statusOf("second"), "RUNNING")
        self.assertTrue(host.isAlive(shims[0]))
        result = self.execute("second", "alive", "/bin/echo", "still here")
        self.assertEqual((result.code, result.out), (0, "still here\n"))
        self.killAndDelete("second")
        waitUntil(lambda: not host.isAlive(shims[0]), 10, "the shim to exit")

    def test_addressAndBinaryPath(self) -> None:
        """
        containerd runs the runtime given by absolute path; the shim's
        C{address} file holds C{unix:///run/containerd/s/} + sha256 of
        containerd's address, namespace and id (no newline); a process of
        the runtime listens there and answers C{ctr shim}; and containerd
        records the absolute path in C{shim-binary-path}.
        """
        binary = self.runtime.binaryPath()
        assert binary is not None
        pid = self.runDetached("located", "/bin/sleep", "1000", runtimeArgument=binary)
        address = self.shimAddressOf("located")
        self.assertEqual(
            address, self.containerd.shimAddress(self.namespace.name, "located")
        )
        self.assertEqual(self.readBundleFile("located", "shim-binary-path"), binary)
        listeners = host.processesListeningOn(host.socketPath(address))
        self.assertNotEqual(listeners, [])
        self.assertLessEqual(set(listeners), set(self.shimProcesses("located")))
        result = self.ctr("shim", "--id", "located", "state")
        self.assertCtr(result, what="ctr shim state")
        self.assertEqual(json.loads(result.out)["pid"], pid)


class ShimTestsGo(ShimTestsMixin, TestCase):
    runtime = GO


class ShimTestsShimd(ShimTestsMixin, TestCase):
    runtime = SHIMD
