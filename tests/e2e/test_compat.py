"""
End-to-end tests of the behaviours containerd 2.3's own suite checks beyond
1.6's (containerd-2.md), provoked through containerd 1.6.20, and of the
checkpoint call's failure on this host (criu does not work on its kernel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime, IReactorUNIX
from twisted.trial.unittest import SkipTest, TestCase

from shimd.protos import task_pb2
from shimd.ttrpc.client import ServiceClient, TTRPCClientProtocol, connectTTRPC
from tests.e2e import host
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import unknownSuffix, waitUntil
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD, criuProblem

STOPPED = 3


class CompatibilityTestsMixin(E2EMixin):
    """
    Behaviours of a production shim that containerd 2.x relies on.
    """

    @inlineCallbacks
    def connect(self, containerID: str) -> Generator[Deferred[Any], Any, ServiceClient]:
        """
        A ttrpc client on the socket of a task's shim, closed at cleanup.
        """
        address = self.shimAddressOf(containerID)
        protocol: TTRPCClientProtocol = yield connectTTRPC(
            cast(IReactorUNIX, reactor), cast(IReactorTime, reactor), address
        )
        self.addCleanup(protocol.transport.loseConnection)
        return self.taskClient(protocol, containerID)

    def test_copiedBinary(self) -> None:
        """
        A copy of the shim binary at an arbitrary absolute path runs
        containers: containerd runs it by that path and records it.
        """
        original = self.runtime.binaryPath()
        assert original is not None
        directory = tempfile.mkdtemp(prefix="shim-copy-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        copy = os.path.join(directory, os.path.basename(original))
        shutil.copy2(original, copy)
        self.runDetached("copied", "/bin/sleep", "1000", runtimeArgument=copy)
        self.assertEqual(self.readBundleFile("copied", "shim-binary-path"), copy)
        result = self.execute("copied", "hello", "/bin/echo", "from the copy")
        self.assertEqual((result.code, result.out), (0, "from the copy\n"))
        self.killAndDelete("copied")

    def test_initDiesWhileExecStarts(self) -> None:
        """
        The init process is killed while an exec is being started: nothing
        deadlocks. The exec's start ends (in success or in an error), the
        task stops with 137, and it can be deleted.
        """
        for attempt in range(3):
            containerID = f"racing{attempt}"
            self.runDetached(containerID, "/bin/sleep", "1000")
            execution = subprocess.Popen(
                [
                    "ctr",
                    "-a",
                    self.containerd.address,
                    "-n",
                    self.namespace.name,
                    "task",
                    "exec",
                    "--exec-id",
                    "late",
                    containerID,
                    "/bin/sleep",
                    "30",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.addCleanup(execution.kill)
            self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", containerID))
            try:
                execution.wait(60)
            except subprocess.TimeoutExpired:
                self.fail(f"ctr task exec hung after its container died ({attempt})")
            self.waitForStatus(containerID, "STOPPED")
            self.assertCtr(self.ctr("task", "rm", containerID), what="ctr task rm")
            self.assertCtr(self.ctr("containers", "rm", containerID))

    @inlineCallbacks
    def test_initKilledAfterCreate(self) -> Generator[Deferred[Any], Any, None]:
        """
        A task whose C{runc init} is killed after C{Create}, before
        C{Start}, is reported stopped with status 137; its waiters are
        released, starting it fails, and it can be deleted.

        The task is created straight on the shim's socket (containerd's
        C{ctr} starts every task it creates), in a bundle made from the
        spec containerd wrote for a neighbour.
        """
        self.runDetached("neighbour", "/bin/sleep", "1000")
        client = yield self.connect("neighbour")
        bundle = tempfile.mkdtemp(prefix="created-", dir="/tmp")
        self.addCleanup(shutil.rmtree, bundle, True)
        with open(os.path.join(self.bundle("neighbour"), "config.json")) as f:
            spec = json.load(f)
        spec["root"]["path"] = busyboxRootfs()
        spec["process"]["args"] = ["/bin/sleep", "1000"]
        spec["process"]["terminal"] = False
        spec["linux"]["cgroupsPath"] = f"/{self.namespace.name}/created"
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        created = yield client.call(
            "Create", task_pb2.CreateTaskRequest(id="created", bundle=bundle), 30
        )
        self.assertTrue(host.isAlive(created.pid))
        wait = client.call("Wait", task_pb2.WaitRequest(id="created"))
        os.kill(created.pid, 9)
        waited = yield wait
        self.assertEqual(waited.exit_status, 137)
        state = yield client.call("State", task_pb2.StateRequest(id="created"))
        self.assertEqual((state.status, state.exit_status), (STOPPED, 137))
        try:
            yield client.call("Start", task_pb2.StartRequest(id="created"))
        except Exception as e:
            self.assertIn("stopped", str(e))
        else:
            self.fail("a stopped task started")
        yield client.call("Delete", task_pb2.DeleteRequest(id="created"), 30)
        waitUntil(
            lambda: (
                not os.path.exists(
                    f"/run/containerd/runc/{self.namespace.name}/created"
                )
            ),
            10,
            "runc state of the deleted task to go",
        )

    @inlineCallbacks
    def test_severalWaiters(self) -> Generator[Deferred[Any], Any, None]:
        """
        Several clients waiting on one task, each on its own connection, are
        all released by its exit, with the same status and time.
        """
        self.runDetached("awaited", "/bin/sleep", "1000")
        clients = []
        for _ in range(3):
            client = yield self.connect("awaited")
            clients.append(client)
        waits = [
            client.call("Wait", task_pb2.WaitRequest(id="awaited"))
            for client in clients
        ]
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "awaited"))
        results = yield DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
        answers = {
            (r.exit_status, r.exited_at.seconds, r.exited_at.nanos) for _, r in results
        }
        self.assertEqual(len(answers), 1, answers)
        self.assertEqual(answers.pop()[0], 137)
        self.waitForStatus("awaited", "STOPPED")

    def test_checkpointFailure(self) -> None:
        """
        C{Checkpoint} runs C{runc checkpoint}; where criu cannot work, the
        failure reaches the client as a clear error naming the dump log,
        while the task keeps running. (Where it works, C{test_checkpoint}
        checkpoints and restores for real.)
        """
        if criuProblem() is None:
            raise SkipTest("criu works here: tests.e2e.test_checkpoint runs instead")
        self.runDetached("saved", "/bin/sleep", "1000")
        image = tempfile.mkdtemp(prefix="checkpoint-", dir="/tmp")
        self.addCleanup(shutil.rmtree, image, True)
        result = self.ctr("task", "checkpoint", "--image-path", image, "saved")
        self.assertEqual(result.code, 1, result)
        dumpLog = os.path.join(self.bundle("saved"), "criu-dump.log")
        self.assertIn("runc did not terminate successfully", result.err)
        self.assertIn(f"path= {dumpLog}{unknownSuffix()}", result.err)
        self.assertEqual(self.statusOf("saved"), "RUNNING")


class CompatibilityTestsGo(CompatibilityTestsMixin, TestCase):
    runtime = GO


class CompatibilityTestsShimd(CompatibilityTestsMixin, TestCase):
    runtime = SHIMD
