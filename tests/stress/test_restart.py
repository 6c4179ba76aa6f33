"""
containerd stopped (SIGTERM, then SIGKILL) and started again under running
containers, with shimd and the Go shim side by side under the same private
containerd, so that what each loses can be compared.

Each runtime gets a namespace and one shim group in it: a container writing
a counter to a C{file://} target, one writing a counter to a fifo the test
reads, and one that is killed while containerd is away. While containerd is
down the test raises events in that shim (an exec killed, an exec run and
exiting over the shim's socket, a pause and resume, a container killed);
after it is back it checks the order in which containerd received them
(containerd logs each C{Events.Forward} it gets at debug level), the exit
statuses it reports, and, once the writers are stopped, which counter lines
were lost.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2, task_types_pb2
from tests.e2e import host
from tests.e2e.containerd import CtrResult, TestNamespace, uniqueNamespace, waitUntil
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD, Runtime
from tests.stress.base import (
    CounterOutput,
    FifoDrain,
    PrivateContainerdMixin,
    StressMixin,
    counterScript,
    execSpec,
    forwardedTopics,
    groupOptions,
)
from tests.stress.client import ShimClient
from tests.stress.scale import Stopwatch, report, scaled

# How long containerd stays down after the outage's events, beyond what
# raising them takes: in the full run, longer than the Go shim's retry
# budget for an event (about 15 s of requeues).
EXTRA_OUTAGE = scaled(0, 25)

# The events raised while containerd is down, in the order the shim raises
# them: the killed exec's exit, the second exec's add, start and exit, the
# writer's pause and resume, the victim's exit.
OUTAGE_TOPICS = [
    "/tasks/exit",
    "/tasks/exec-added",
    "/tasks/exec-started",
    "/tasks/exit",
    "/tasks/paused",
    "/tasks/resumed",
    "/tasks/exit",
]

# Events forwarded before the outage: create and start of three containers,
# add and start of one exec.
EVENTS_BEFORE = 8


def assertRemovedWith(test: TestCase, result: CtrResult, status: int) -> None:
    """
    C{ctr task rm} succeeded and reported the task's exit status (which it
    does as a warning, for a non-zero one).
    """
    test.assertEqual(result.code, 0, result)
    test.assertIn(f"exit with non-zero exit code {status}", result.err)


class Side:
    """
    One runtime's containers in the restart scenario, in a namespace of
    their own.
    """

    def __init__(
        self,
        test: RestartTestsMixin,
        runtime: Runtime,
        namespace: TestNamespace,
        directory: str,
    ) -> None:
        self.test = test
        self.runtime = runtime
        self.namespace = namespace
        self.tag = runtime.name
        self.writer = f"{self.tag}-writer"
        self.fifoWriter = f"{self.tag}-fifo"
        self.victim = f"{self.tag}-victim"
        self.group = f"{self.tag}-group"
        self.namespace.ids.update({self.writer, self.fifoWriter, self.victim})
        self.namespace.ids.add(self.group)
        self.logFile = os.path.join(directory, f"{self.tag}.log")
        self.drain = FifoDrain(os.path.join(directory, f"{self.tag}.fifo"))
        test.addCleanup(self.drain.stop)
        self.pids: dict[str, int] = {}

    def ctr(self, *args: str, timeout: float = 60.0) -> CtrResult:
        """
        Run C{ctr} in this side's namespace; fail the test unless it
        succeeds.
        """
        result = self.namespace.ctr(*args, timeout=timeout)
        self.test.assertCtr(result, what=f"{self.tag}: ctr {' '.join(args[:3])}")
        return result

    def run(self, containerID: str, *command: str, logURI: str | None = None) -> None:
        """
        C{ctr run -d} a busybox container of this side's runtime in its
        shim group, its output going to C{logURI} if given.
        """
        options = groupOptions(self.group)
        if logURI is not None:
            options += ["--log-uri", logURI]
        self.ctr(
            "run",
            "-d",
            "--runtime",
            self.runtime.runtimeArgument,
            *options,
            "--rootfs",
            busyboxRootfs(),
            containerID,
            *command,
        )

    def tasks(self) -> dict[str, tuple[int, str]]:
        """
        C{ctr task ls} of this side: C{{id: (pid, status)}}.
        """
        return self.namespace.tasks()

    def client(self) -> ShimClient:
        """
        A connection to this side's shim, closed after the test.
        """
        address = self.readBundle(self.writer, "address")
        client = ShimClient(address)
        self.test.addCleanup(client.close)
        return client

    def readBundle(self, containerID: str, name: str) -> str:
        """
        A file of a task's bundle.
        """
        bundle = self.namespace.containerd.bundlePath(self.namespace.name, containerID)
        with open(os.path.join(bundle, name)) as f:
            return f.read()

    def launch(self) -> None:
        """
        Start the three containers and the long exec; wait until they run
        and containerd has received all their events.
        """
        self.run(self.writer, "/bin/sh", "-c", counterScript(), logURI=self.fileURI())
        self.run(
            self.fifoWriter, "/bin/sh", "-c", counterScript(), logURI=self.drain.path
        )
        self.run(self.victim, "/bin/sleep", "100000")
        self.ctr(
            "task",
            "exec",
            "-d",
            "--exec-id",
            "x1",
            self.writer,
            "/bin/sleep",
            "100000",
        )
        waitUntil(
            lambda: all(
                self.tasks().get(c, (0, ""))[1] == "RUNNING"
                for c in (self.writer, self.fifoWriter, self.victim)
            ),
            30,
            f"{self.tag}: the containers to run",
        )
        for containerID, (pid, _) in self.tasks().items():
            self.pids[containerID] = pid
        self.shimClient = self.client()
        self.shimPid = self.shimClient.call(
            "Connect", task_pb2.ConnectRequest(id=self.writer)
        ).shim_pid
        self.execPid = self.shimClient.call(
            "State", task_pb2.StateRequest(id=self.writer, exec_id="x1")
        ).pid
        containerd = self.namespace.containerd
        waitUntil(
            lambda: (
                len(forwardedTopics(containerd.log(), self.namespace.name))
                >= EVENTS_BEFORE
            ),
            30,
            f"{self.tag}: containerd to receive the first events",
        )

    def fileURI(self) -> str:
        """
        The C{file://} target of the writer.
        """
        return f"file://{self.logFile}"

    def fileOutput(self) -> bytes:
        """
        What the writer has written to its file so far.
        """
        try:
            with open(self.logFile, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def progress(self) -> tuple[int, int]:
        """
        The highest counter value seen so far in each output.
        """
        return (
            CounterOutput.parse(self.fileOutput()).highest,
            CounterOutput.parse(self.drain.data()).highest,
        )

    def raiseOutageEvents(self) -> None:
        """
        With containerd away: kill the long exec, run a second exec to its
        exit over the shim's socket, pause and resume the writer, kill the
        victim; each waited for, so that the shim raises its events in
        L{OUTAGE_TOPICS}' order.
        """
        client = self.shimClient
        os.kill(self.execPid, signal.SIGTERM)
        self.waitStopped(self.writer, "x1")
        client.call(
            "Exec",
            task_pb2.ExecProcessRequest(
                id=self.writer, exec_id="x2", spec=execSpec("/bin/sh", "-c", "exit 3")
            ),
        )
        client.call("Start", task_pb2.StartRequest(id=self.writer, exec_id="x2"))
        waited = client.call("Wait", task_pb2.WaitRequest(id=self.writer, exec_id="x2"))
        self.test.assertEqual(waited.exit_status, 3)
        client.call("Pause", task_pb2.PauseRequest(id=self.writer))
        client.call("Resume", task_pb2.ResumeRequest(id=self.writer))
        os.kill(self.pids[self.victim], signal.SIGKILL)
        self.waitStopped(self.victim, "")

    def waitForOutput(self, when: str) -> None:
        """
        Wait until both counters have gone on by more than ten lines.
        """
        start = self.progress()

        def flowed() -> bool:
            now = self.progress()
            return all(a > b + 10 for a, b in zip(now, start, strict=True))

        waitUntil(flowed, 30, f"{self.tag}: output to flow {when}")

    def waitStopped(self, containerID: str, execID: str) -> None:
        """
        Wait until the shim says a process has stopped.
        """

        def stopped() -> bool:
            state = self.shimClient.call(
                "State", task_pb2.StateRequest(id=containerID, exec_id=execID)
            )
            return bool(state.status == task_types_pb2.STOPPED)

        waitUntil(stopped, 30, f"{self.tag}: {containerID}/{execID} to stop")

    def stopWriters(self) -> tuple[CounterOutput, CounterOutput]:
        """
        Kill both writers and delete their tasks (C{Delete} waits for their
        output), then read what they wrote.

        @return: the file's counter, the fifo's counter.
        """
        for containerID in (self.writer, self.fifoWriter):
            self.ctr("task", "kill", "-s", "SIGKILL", containerID)
        waitUntil(
            lambda: all(
                self.tasks().get(c, (0, ""))[1] == "STOPPED"
                for c in (self.writer, self.fifoWriter)
            ),
            30,
            f"{self.tag}: the writers to stop",
        )
        for containerID in (self.writer, self.fifoWriter):
            assertRemovedWith(
                self.test, self.namespace.ctr("task", "rm", containerID), 137
            )
        return (
            CounterOutput.parse(self.fileOutput()),
            CounterOutput.parse(self.drain.stop()),
        )


class RestartTestsMixin(PrivateContainerdMixin, StressMixin):
    """
    containerd restarts under running shimd and Go shims.
    """

    runtime = SHIMD

    def sides(self) -> tuple[Side, Side]:
        """
        The shimd side in the test's namespace, the Go side in a second one.
        """
        directory = self.makeDirectory()
        goNamespace = TestNamespace(self.containerd, uniqueNamespace("go"))
        self.addCleanup(goNamespace.cleanUp)
        self.assertCtr(self.containerd.ctr("namespaces", "create", goNamespace.name))
        return (
            Side(self, SHIMD, self.namespace, directory),
            Side(self, GO, goNamespace, directory),
        )

    def restart(self, stop: Callable[[], None], how: str) -> None:
        """
        The scenario: containers of both runtimes running, exec'ing and
        writing; containerd stopped with C{stop}; events raised; containerd
        started again; then what it knows and what was lost.
        """
        shimd, go = sides = self.sides()
        for side in sides:
            side.launch()
        progressBefore = {side.tag: side.progress() for side in sides}

        outage = Stopwatch()
        stop()
        for side in sides:
            side.raiseOutageEvents()
        # Output keeps flowing while containerd is away.
        for side in sides:
            side.waitForOutput("while containerd is down")
        if EXTRA_OUTAGE:
            waitUntil(lambda: outage.seconds() >= EXTRA_OUTAGE, EXTRA_OUTAGE + 5, "")
        progressDuring = {side.tag: side.progress() for side in sides}
        logStart = self.containerd.logOffset()
        self.containerd.start()
        outageSeconds = outage.seconds()

        # The shims are the same processes, and containerd's reload
        # (Connect) found every task as it is: the writers running with the
        # same pids, the victim stopped.
        for side in sides:
            self.assertTrue(host.isAlive(side.shimPid), f"{side.tag} shim died")
            tasks = side.tasks()
            self.assertEqual(
                {c: tasks.get(c) for c in side.pids},
                {
                    side.writer: (side.pids[side.writer], "RUNNING"),
                    side.fifoWriter: (side.pids[side.fifoWriter], "RUNNING"),
                    side.victim: (side.pids[side.victim], "STOPPED"),
                },
                f"{side.tag} tasks after the restart",
            )
        self.assertNotIn("cleaning up dead shim", self.containerd.log(logStart))

        # shimd delivers every event raised during the outage once
        # containerd is back, in the order it raised them.
        def delivered(side: Side) -> list[str]:
            return forwardedTopics(self.containerd.log(logStart), side.namespace.name)

        waitUntil(
            lambda: len(delivered(shimd)) >= len(OUTAGE_TOPICS),
            60,
            "shimd's outage events to reach containerd",
        )
        self.assertEqual(delivered(shimd), OUTAGE_TOPICS)
        try:
            waitUntil(
                lambda: len(delivered(go)) >= len(OUTAGE_TOPICS),
                30,
                "the Go shim's outage events",
            )
        except AssertionError:
            pass
        goTopics = delivered(go)

        # The exits that happened meanwhile have the right statuses.
        for side in sides:
            client = side.shimClient
            for execID, status in (("x1", 128 + signal.SIGTERM), ("x2", 3)):
                state = client.call(
                    "State", task_pb2.StateRequest(id=side.writer, exec_id=execID)
                )
                self.assertEqual(
                    (state.status, state.exit_status),
                    (task_types_pb2.STOPPED, status),
                    f"{side.tag} exec {execID}",
                )
            waited = client.call("Wait", task_pb2.WaitRequest(id=side.victim))
            self.assertEqual(waited.exit_status, 137, side.tag)
            assertRemovedWith(self, side.namespace.ctr("task", "rm", side.victim), 137)

        # Output still flows after the restart; then the writers are
        # stopped and their output compared.
        for side in sides:
            side.waitForOutput("after the restart")
        outputs = {side.tag: side.stopWriters() for side in sides}
        for side in sides:
            fileOutput, fifoOutput = outputs[side.tag]
            self.assertGreater(fileOutput.highest, progressDuring[side.tag][0])
            self.assertGreater(fifoOutput.highest, progressDuring[side.tag][1])
        shimdFile, shimdFifo = outputs[shimd.tag]
        goFile, goFifo = outputs[go.tag]
        report(
            f"restart-{how}",
            outageSeconds=outageSeconds,
            shimdEvents=delivered(shimd)[: len(OUTAGE_TOPICS)],
            goEvents=goTopics,
            progressBefore=progressBefore,
            progressDuring=progressDuring,
            lost={
                "shimd": {"file": shimdFile.lost, "fifo": shimdFifo.lost},
                "go": {"file": goFile.lost, "fifo": goFifo.lost},
            },
            lines={
                "shimd": {"file": shimdFile.lines, "fifo": shimdFifo.lines},
                "go": {"file": goFile.lines, "fifo": goFifo.lines},
            },
        )
        self.assertLessEqual(shimdFile.lost, goFile.lost, (shimdFile, goFile))
        self.assertLessEqual(shimdFifo.lost, goFifo.lost, (shimdFifo, goFifo))
        self.assertEqual((shimdFile.lost, shimdFifo.lost), (0, 0))


class RestartTests(RestartTestsMixin, TestCase):
    """
    containerd stopped gracefully and killed.
    """

    def test_sigterm(self) -> None:
        """
        containerd stopped with SIGTERM and started again: the shims stay,
        containerd's reload reconnects to them and finds the writers running
        (same pids) and the victim stopped; the events shimd raised during
        the outage (an exec's exit, another exec's add, start and exit 3, a
        pause and resume, a container's exit) reach the new containerd in
        that order; the exec statuses (143, 3) and the victim's (137, by
        C{Wait} and by C{ctr task rm}) are right; output kept flowing
        throughout; shimd loses no counter line to the C{file://} target or
        the fifo, and no more than the Go shim in the same test.
        """
        self.restart(self.containerd.stop, "sigterm")

    def test_sigkill(self) -> None:
        """
        The same with containerd SIGKILLed: its sockets stay behind, dead,
        until the new containerd replaces them, and the shims redial.
        """

        def kill() -> None:
            process = self.containerd.process
            assert process is not None
            process.kill()
            process.wait()

        self.restart(kill, "sigkill")
