# -*- test-case-name: tests.test_task_ordering -*-
"""
Tests for L{shimd.runc.task.ordering}: one container's event and exit
ordering, on its own, with a L{Clock} and real processes.
"""

from __future__ import annotations

from google.protobuf.message import Message
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from shimd.protos import events_pb2
from shimd.runc.task.ordering import EXEC_EXIT_WAIT, ExitOrder
from shimd.runc.task.process import ExecProcess, InitProcess, Process
from shimd.runc.task.state import State
from shimd.shim.reaper import Exit
from shimd.ttrpc.status import Code, TTRPCError


def event(name: str) -> events_pb2.TaskExit:
    return events_pb2.TaskExit(container_id="c1", id=name)


class ExitOrderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.published: list[tuple[str, str]] = []
        self.init = InitProcess("c1", "", "", "", False)
        self.init.transition(State.RUNNING)
        self.execs: dict[str, ExecProcess] = {}
        self.order = ExitOrder(
            self.clock, self.publish, lambda: self.execs.values(), self.exited
        )

    def publish(self, topic: str, message: Message) -> None:
        assert isinstance(message, events_pb2.TaskExit)
        self.published.append((topic, message.id))

    def exited(self, process: Process, exit: Exit) -> None:
        process.setExited(exit)
        self.order.publish("/tasks/exit", event(process.id))

    def addExec(self, id: str, state: State = State.RUNNING) -> ExecProcess:
        process = ExecProcess(id, {}, "", "", "", False)
        if state is State.RUNNING:
            process.transition(State.RUNNING)
        self.execs[id] = process
        return process

    def test_heldDuringStart(self) -> None:
        """
        Events queued while a start is in progress leave after its own event.
        """
        self.order.startBegan(self.init)
        self.assertTrue(self.order.isStarting(self.init))
        self.order.publish("/tasks/exit", event("early"))
        self.assertEqual(self.published, [])
        self.order.startEnded(self.init, ("/tasks/start", event("start")))
        self.assertFalse(self.order.isStarting(self.init))
        self.assertEqual(
            self.published, [("/tasks/start", "start"), ("/tasks/exit", "early")]
        )

    def test_heldUntilEveryStartEnds(self) -> None:
        """
        With a create and a start in progress, held events wait for both;
        a failed one queues no event of its own.
        """
        self.order.createBegan()
        self.order.startBegan(self.init)
        self.order.publish("/tasks/exit", event("held"))
        self.order.startEnded(None, None)
        self.assertEqual(self.published, [])
        self.order.startEnded(self.init, ("/tasks/start", event("start")))
        self.assertEqual(
            self.published, [("/tasks/start", "start"), ("/tasks/exit", "held")]
        )

    def test_secondStart(self) -> None:
        """
        A second start of a process being started is refused as Go's is.
        """
        self.order.startBegan(self.init)
        error = self.assertRaises(TTRPCError, self.order.startBegan, self.init)
        self.assertEqual(
            (error.code, error.message),
            (Code.UNKNOWN, "cannot start a running process"),
        )

    def test_secondDelete(self) -> None:
        """
        A second delete of a process being deleted is refused as Go's is;
        once the first has ended, another may begin.
        """
        self.order.deleteBegan(self.init)
        error = self.assertRaises(TTRPCError, self.order.deleteBegan, self.init)
        self.assertEqual(
            (error.code, error.message),
            (Code.NOT_FOUND, "cannot delete a deleted process: not found"),
        )
        self.order.deleteEnded(self.init)
        self.order.deleteBegan(self.init)

    def test_execExit(self) -> None:
        """
        An exec's exit is recorded and published; a deleted exec's is not.
        """
        process = self.addExec("e1")
        self.order.execExited(process, Exit(10, 3, 0))
        self.assertIs(process.state, State.STOPPED)
        self.assertEqual(self.published, [("/tasks/exit", "e1")])
        gone = self.addExec("e2", State.CREATED)
        gone.deleted()
        self.order.execExited(gone, Exit(11, 0, 0))
        self.assertEqual(self.published, [("/tasks/exit", "e1")])

    def test_initWaitsForOutput(self) -> None:
        """
        The init's exit is recorded only once its output has drained.
        """
        self.order.initExited(self.init, Exit(1, 0, 0), killingAll=False)
        self.assertIs(self.init.state, State.RUNNING)
        self.assertTrue(self.order.initExitPending())
        self.order.initDrained()
        self.assertIs(self.init.state, State.STOPPED)
        self.assertEqual(self.published, [("/tasks/exit", "c1")])
        self.assertFalse(self.order.initExitPending())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_initWaitsForKillAll(self) -> None:
        """
        The init's exit waits for the rest of the container to be killed.
        """
        self.order.initExited(self.init, Exit(1, 0, 0), killingAll=True)
        self.order.initDrained()
        self.assertEqual(self.published, [])
        self.order.killedAll()
        self.assertEqual(self.published, [("/tasks/exit", "c1")])

    def test_initAfterExecs(self) -> None:
        """
        The init's exit leaves after the exits of running execs.
        """
        process = self.addExec("e1")
        self.order.initExited(self.init, Exit(1, 0, 0), killingAll=False)
        self.order.initDrained()
        self.assertEqual(self.published, [])
        self.order.execExited(process, Exit(2, 137, 0))
        self.assertEqual(self.published, [("/tasks/exit", "e1"), ("/tasks/exit", "c1")])

    def test_initAfterStartingExec(self) -> None:
        """
        The init's exit is held while an exec is starting.
        """
        process = self.addExec("e1", State.CREATED)
        self.order.startBegan(process)
        self.order.initExited(self.init, Exit(1, 0, 0), killingAll=False)
        self.order.initDrained()
        self.order.startEnded(process, None)
        self.assertEqual(self.published, [("/tasks/exit", "c1")])

    def test_execWaitBounded(self) -> None:
        """
        The wait for the execs ends after L{EXEC_EXIT_WAIT} seconds.
        """
        self.addExec("e1")
        self.order.initExited(self.init, Exit(1, 0, 0), killingAll=False)
        self.order.initDrained()
        self.clock.advance(EXEC_EXIT_WAIT)
        self.assertEqual(self.published, [("/tasks/exit", "c1")])

    def test_finishDeletedInit(self) -> None:
        """
        Finishing the exit of an init deleted meanwhile publishes nothing,
        and cancels the wait.
        """
        init = InitProcess("c2", "", "", "", False)
        self.order.initExited(init, Exit(1, 0, 0), killingAll=False)
        init.deleted()
        self.order.finishInitExit()
        self.assertEqual(self.published, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
