# -*- test-case-name: tests.test_task_process -*-
"""
Tests for L{shimd.runc.task.process}: the init and exec state machines, on their
own. Every state is tried against every operation, and the refusals are
compared with the Go shim's (C{pkg/process/init_state.go},
C{exec_state.go}, C{deleted_state.go}).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from shimd.protos import task_types_pb2
from shimd.runc.task.process import (
    GO_ZERO_TIME_SECONDS,
    ExecProcess,
    InitProcess,
    Process,
)
from shimd.runc.task.state import STATUS, State
from shimd.shim.reaper import Exit
from shimd.ttrpc.status import Code, TTRPCError

OPERATIONS = (
    "start",
    "delete",
    "pause",
    "resume",
    "update",
    "checkpoint",
    "exec",
    "resize",
)

# What the init refuses, by state and operation (None: allowed), as the Go
# state machine does; PAUSING is Go's running state with its pausing flag,
# in which the Go shim's other calls wait for the pause to end.
INIT_REFUSALS: dict[State, dict[str, str | None]] = {
    State.CREATED: {
        "start": None,
        "delete": None,
        "pause": "cannot pause task in created state",
        "resume": "cannot resume task in created state",
        "update": None,
        "checkpoint": "cannot checkpoint a task in created state",
        "exec": None,
        "resize": None,
    },
    State.CREATED_CHECKPOINT: {
        "start": None,
        "delete": None,
        "pause": "cannot pause task in created state",
        "resume": "cannot resume task in created state",
        "update": None,
        "checkpoint": "cannot checkpoint a task in created state",
        "exec": "cannot exec in a created state",
        "resize": None,
    },
    State.RUNNING: {
        "start": "cannot start a running process",
        "delete": "cannot delete a running process",
        "pause": None,
        "resume": "cannot resume a running process",
        "update": None,
        "checkpoint": None,
        "exec": None,
        "resize": None,
    },
    State.PAUSING: {
        "start": "cannot start a paused process",
        "delete": "cannot delete a paused process",
        "pause": "cannot pause a paused container",
        "resume": "cannot resume a running process",
        "update": None,
        "checkpoint": None,
        "exec": "cannot exec in a paused state",
        "resize": None,
    },
    State.PAUSED: {
        "start": "cannot start a paused process",
        "delete": "cannot delete a paused process",
        "pause": "cannot pause a paused container",
        "resume": None,
        "update": None,
        "checkpoint": None,
        "exec": "cannot exec in a paused state",
        "resize": None,
    },
    State.STOPPED: {
        "start": "cannot start a stopped process",
        "delete": None,
        "pause": "cannot pause a stopped container",
        "resume": "cannot resume a stopped container",
        "update": "cannot update a stopped container",
        "checkpoint": "cannot checkpoint a stopped container",
        "exec": "cannot exec in a stopped state",
        "resize": None,
    },
    State.DELETED: {
        "start": "cannot start a deleted process",
        # Delete and kill of a deleted init are NOT_FOUND: see refuseDelete.
        "delete": None,
        "pause": "cannot pause a deleted process",
        "resume": "cannot resume a deleted process",
        "update": "cannot update a deleted process",
        "checkpoint": "cannot checkpoint a deleted process",
        "exec": "cannot exec in a deleted state",
        "resize": "cannot resize a deleted process",
    },
}

EXEC_STATES = (State.CREATED, State.RUNNING, State.STOPPED, State.DELETED)

EXEC_REFUSALS: dict[State, dict[str, str | None]] = {
    State.CREATED: {"start": None, "delete": None, "resize": None},
    State.RUNNING: {
        "start": "cannot start a running process",
        "delete": "cannot delete a running process",
        "resize": None,
    },
    State.STOPPED: {
        "start": "cannot start a stopped process",
        "delete": None,
        "resize": "cannot resize a stopped container",
    },
    # Go refuses to delete a deleted exec (NOT_FOUND); the service never
    # asks, as a deleted exec is forgotten at once.
    State.DELETED: {
        "start": "cannot start a deleted process",
        "resize": "cannot resize a deleted process",
    },
}


# The legal moves that lead from created to each state.
PATHS: dict[State, tuple[State, ...]] = {
    State.CREATED: (),
    State.RUNNING: (State.RUNNING,),
    State.PAUSING: (State.RUNNING, State.PAUSING),
    State.PAUSED: (State.RUNNING, State.PAUSING, State.PAUSED),
    State.STOPPED: (State.RUNNING, State.STOPPED),
    State.DELETED: (State.RUNNING, State.STOPPED, State.DELETED),
}


def makeInit(state: State = State.CREATED) -> InitProcess:
    """
    An init process brought to C{state} by legal moves.
    """
    if state is State.CREATED_CHECKPOINT:
        return InitProcess("c1", "/in", "/out", "/err", True, checkpoint="/cp")
    process = InitProcess("c1", "/in", "/out", "/err", True)
    for step in PATHS[state]:
        process.transition(step)
    return process


def makeExec(state: State = State.CREATED) -> ExecProcess:
    """
    An exec brought to C{state} by legal moves.
    """
    process = ExecProcess("e1", {"args": ["sh"]}, "", "/out", "", False)
    for step in PATHS[state]:
        process.transition(step)
    return process


class RefusalTests(SynchronousTestCase):
    """
    L{Process.refuse} and the special refusals of delete and kill.
    """

    def assertRefusal(self, process: Process, operation: str, text: str | None) -> None:
        label = f"{type(process).__name__} {process.state.value} {operation}"
        if text is None:
            process.refuse(operation)
            return
        error = self.assertRaises(TTRPCError, process.refuse, operation)
        self.assertEqual((error.code, error.message), (Code.UNKNOWN, text), label)

    def test_initTable(self) -> None:
        """
        The init refuses, in every state, what Go's init state machine
        refuses, with UNKNOWN and Go's text; it allows the rest.
        """
        self.assertEqual(set(INIT_REFUSALS), set(State))
        for state, refusals in INIT_REFUSALS.items():
            self.assertEqual(set(refusals), set(OPERATIONS))
            for operation, text in refusals.items():
                self.assertRefusal(makeInit(state), operation, text)

    def test_execTable(self) -> None:
        """
        An exec refuses, in every state, what Go's exec state machine
        refuses; the init-only operations are never refused by an exec.
        """
        for state, refusals in EXEC_REFUSALS.items():
            for operation, text in refusals.items():
                self.assertRefusal(makeExec(state), operation, text)
            for operation in ("pause", "resume", "update", "checkpoint", "exec"):
                self.assertRefusal(makeExec(state), operation, None)

    def test_initDeleteDeleted(self) -> None:
        """
        Deleting a deleted init is NOT_FOUND C{cannot delete a deleted
        process}; the other states defer to the table.
        """
        error = self.assertRaises(TTRPCError, makeInit(State.DELETED).refuseDelete)
        self.assertEqual(
            (error.code, error.message),
            (Code.NOT_FOUND, "cannot delete a deleted process: not found"),
        )
        for state in (State.CREATED, State.CREATED_CHECKPOINT, State.STOPPED):
            makeInit(state).refuseDelete()
        error = self.assertRaises(TTRPCError, makeInit(State.RUNNING).refuseDelete)
        self.assertEqual(
            (error.code, error.message),
            (Code.UNKNOWN, "cannot delete a running process"),
        )

    def test_initKill(self) -> None:
        """
        The init can be signalled (through runc) in every state but deleted,
        which is NOT_FOUND C{cannot kill a deleted process}.
        """
        for state in State:
            if state is State.DELETED:
                continue
            makeInit(state).refuseKill()
        error = self.assertRaises(TTRPCError, makeInit(State.DELETED).refuseKill)
        self.assertEqual(
            (error.code, error.message),
            (Code.NOT_FOUND, "cannot kill a deleted process: not found"),
        )

    def test_execKill(self) -> None:
        """
        An exec not started is FAILED_PRECONDITION C{process not created};
        one that has exited NOT_FOUND C{process already finished}; a
        deleted one NOT_FOUND C{cannot kill a deleted process}; a running
        one may be signalled.
        """
        expected = {
            State.CREATED: (
                Code.FAILED_PRECONDITION,
                "process not created: failed precondition",
            ),
            State.STOPPED: (Code.NOT_FOUND, "process already finished: not found"),
            State.DELETED: (Code.NOT_FOUND, "cannot kill a deleted process: not found"),
        }
        for state, (code, message) in expected.items():
            error = self.assertRaises(TTRPCError, makeExec(state).refuseKill)
            self.assertEqual((error.code, error.message), (code, message), state)
        makeExec(State.RUNNING).refuseKill()


class StatusTests(SynchronousTestCase):
    """
    The C{State} status of each state.
    """

    def test_mapping(self) -> None:
        """
        created (and created from a checkpoint) is 1, running 2, stopped 3
        (deleted too), paused 4, pausing 5.
        """
        self.assertEqual(
            {state: makeInit(state).status for state in State},
            {
                State.CREATED: task_types_pb2.CREATED,
                State.CREATED_CHECKPOINT: task_types_pb2.CREATED,
                State.RUNNING: task_types_pb2.RUNNING,
                State.PAUSING: task_types_pb2.PAUSING,
                State.PAUSED: task_types_pb2.PAUSED,
                State.STOPPED: task_types_pb2.STOPPED,
                State.DELETED: task_types_pb2.STOPPED,
            },
        )
        self.assertEqual(set(STATUS), set(State))
        self.assertEqual(
            [int(makeInit(s).status) for s in State], [1, 1, 2, 5, 4, 3, 3]
        )

    def test_checkpoint(self) -> None:
        """
        An init created from a checkpoint starts in the checkpoint's created
        state; without one, in created.
        """
        self.assertIs(InitProcess("c1", "", "", "", False).state, State.CREATED)
        restored = InitProcess("c1", "", "", "", False, checkpoint="/ckpt")
        self.assertIs(restored.state, State.CREATED_CHECKPOINT)
        self.assertEqual(restored.checkpoint, "/ckpt")

    def test_identity(self) -> None:
        """
        A process keeps its id and stdio as given, with pid 0 until started.
        """
        init = makeInit()
        self.assertEqual(
            (init.id, init.stdin, init.stdout, init.stderr, init.terminal, init.pid),
            ("c1", "/in", "/out", "/err", True, 0),
        )
        self.assertIsNone(init.io)


class ExitTests(SynchronousTestCase):
    """
    Exits, waits and deletion.
    """

    def test_zeroTimeBeforeExit(self) -> None:
        """
        Before its exit, a process has status 0 and Go's zero time.
        """
        for process in (makeInit(State.RUNNING), makeExec(State.RUNNING)):
            self.assertEqual(process.exitStatus(), 0)
            self.assertEqual(process.exitedAt(), (GO_ZERO_TIME_SECONDS, 0))
            self.assertEqual(GO_ZERO_TIME_SECONDS, -62135596800)

    def test_setExited(self) -> None:
        """
        The exit gives the status and the time (seconds and nanoseconds),
        stops the process and releases every waiter with the exit.
        """
        for process in (makeInit(State.RUNNING), makeExec(State.RUNNING)):
            waiters = [process.wait(), process.wait()]
            for waiter in waiters:
                self.assertNoResult(waiter)
            exit = Exit(100, 137, 1_700_000_000_000_000_007)
            process.setExited(exit)
            self.assertIs(process.state, State.STOPPED)
            self.assertEqual(process.exitStatus(), 137)
            self.assertEqual(process.exitedAt(), (1_700_000_000, 7))
            for waiter in waiters:
                self.assertIs(self.successResultOf(waiter), exit)
            self.assertIs(self.successResultOf(process.wait()), exit)

    def test_setExitedFromEveryState(self) -> None:
        """
        An init's exit stops it from any live state; a deleted one stays
        deleted.
        """
        for state in State:
            process = makeInit(state)
            process.setExited(Exit(1, 0, 0))
            expected = State.DELETED if state is State.DELETED else State.STOPPED
            self.assertIs(process.state, expected, state)

    def test_deletedReleasesWaiters(self) -> None:
        """
        Deleting a process that never ran releases its waiters with
        L{None}; later waits return at once.
        """
        for process in (makeInit(State.CREATED), makeExec(State.CREATED)):
            waiter = process.wait()
            process.deleted()
            self.assertIs(process.state, State.DELETED)
            self.assertIsNone(self.successResultOf(waiter))
            self.assertIsNone(self.successResultOf(process.wait()))
            self.assertEqual(process.exitedAt(), (GO_ZERO_TIME_SECONDS, 0))

    def test_deletedKeepsExit(self) -> None:
        """
        A deleted process keeps its exit.
        """
        process = makeExec(State.RUNNING)
        exit = Exit(200, 3, 5)
        process.setExited(exit)
        process.deleted()
        self.assertIs(self.successResultOf(process.wait()), exit)
        self.assertEqual(process.exitStatus(), 3)

    def test_cancelledWait(self) -> None:
        """
        A cancelled wait is forgotten; the other waiters are released.
        """
        process = makeInit(State.RUNNING)
        cancelled, kept = process.wait(), process.wait()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        exit = Exit(100, 0, 1)
        process.setExited(exit)
        self.assertIs(self.successResultOf(kept), exit)

    def test_execStartFailed(self) -> None:
        """
        A failed exec start releases the waiters with the given exit, and
        leaves the exec created.
        """
        process = makeExec(State.CREATED)
        waiter = process.wait()
        exit = Exit(0, 255, 9)
        process.startFailed(exit)
        self.assertIs(self.successResultOf(waiter), exit)
        self.assertIs(process.state, State.CREATED)

    def test_deleteRunningRefused(self) -> None:
        """
        A running process cannot be marked deleted: the move is refused with
        Go's text and the process stays running.
        """
        process = makeExec(State.RUNNING)
        error = self.assertRaises(TTRPCError, process.deleted)
        self.assertEqual(
            (error.code, error.message),
            (Code.UNKNOWN, 'invalid state transition "running" to "deleted"'),
        )
        self.assertIs(process.state, State.RUNNING)
