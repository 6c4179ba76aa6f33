# -*- test-case-name: tests.test_task_process -*-
"""
The state machines of a container's processes: the init process (created,
running, pausing, paused, stopped, deleted; or created from a checkpoint) and
exec processes (created, running, stopped, deleted).

Each refuses, with the Go shim's text, a call that makes no sense in its
state. The work itself (runc, stdio) is done by the container; a process only
knows its state, its pid, its stdio and its exit.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.defer import Deferred, succeed

from shimd.protos import task_types_pb2
from shimd.runc.stdio import ProcessIO
from shimd.runc.task import errors
from shimd.shim.reaper import Exit

GO_ZERO_TIME_SECONDS = -62135596800


class State(enum.Enum):
    CREATED = "created"
    CREATED_CHECKPOINT = "created-checkpoint"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


STATUS: dict[State, task_types_pb2.Status] = {
    State.CREATED: task_types_pb2.CREATED,
    State.CREATED_CHECKPOINT: task_types_pb2.CREATED,
    State.RUNNING: task_types_pb2.RUNNING,
    State.PAUSING: task_types_pb2.PAUSING,
    State.PAUSED: task_types_pb2.PAUSED,
    State.STOPPED: task_types_pb2.STOPPED,
    State.DELETED: task_types_pb2.STOPPED,
}

_INIT_REFUSALS: dict[str, dict[State, str]] = {
    "start": {
        State.RUNNING: "cannot start a running process",
        State.PAUSING: "cannot start a paused process",
        State.PAUSED: "cannot start a paused process",
        State.STOPPED: "cannot start a stopped process",
        State.DELETED: "cannot start a deleted process",
    },
    "delete": {
        State.RUNNING: "cannot delete a running process",
        State.PAUSING: "cannot delete a paused process",
        State.PAUSED: "cannot delete a paused process",
    },
    "pause": {
        State.CREATED: "cannot pause task in created state",
        State.CREATED_CHECKPOINT: "cannot pause task in created state",
        State.PAUSING: "cannot pause a paused container",
        State.PAUSED: "cannot pause a paused container",
        State.STOPPED: "cannot pause a stopped container",
        State.DELETED: "cannot pause a deleted process",
    },
    "resume": {
        State.CREATED: "cannot resume task in created state",
        State.CREATED_CHECKPOINT: "cannot resume task in created state",
        State.RUNNING: "cannot resume a running process",
        State.PAUSING: "cannot resume a running process",
        State.STOPPED: "cannot resume a stopped container",
        State.DELETED: "cannot resume a deleted process",
    },
    "update": {
        State.STOPPED: "cannot update a stopped container",
        State.DELETED: "cannot update a deleted process",
    },
    "checkpoint": {
        State.CREATED: "cannot checkpoint a task in created state",
        State.CREATED_CHECKPOINT: "cannot checkpoint a task in created state",
        State.STOPPED: "cannot checkpoint a stopped container",
        State.DELETED: "cannot checkpoint a deleted process",
    },
    "exec": {
        State.CREATED_CHECKPOINT: "cannot exec in a created state",
        State.PAUSING: "cannot exec in a paused state",
        State.PAUSED: "cannot exec in a paused state",
        State.STOPPED: "cannot exec in a stopped state",
        State.DELETED: "cannot exec in a deleted state",
    },
    "resize": {State.DELETED: "cannot resize a deleted process"},
}

_EXEC_REFUSALS: dict[str, dict[State, str]] = {
    "start": {
        State.RUNNING: "cannot start a running process",
        State.STOPPED: "cannot start a stopped process",
        State.DELETED: "cannot start a deleted process",
    },
    "delete": {State.RUNNING: "cannot delete a running process"},
    "resize": {
        State.STOPPED: "cannot resize a stopped container",
        State.DELETED: "cannot resize a deleted process",
    },
}


class Process:
    """
    What init and exec processes share: identity, stdio, pid, state, exit,
    and the clients waiting for the exit.

    @ivar id: the container id for init, the exec id for an exec.
    @ivar io: the process's stdio, once it has been set up.
    @ivar starting: whether a C{Start} for it is in progress.
    @ivar deleting: whether a C{Delete} of it is in progress.
    """

    refusals: dict[str, dict[State, str]] = {}

    def __init__(
        self, id: str, stdin: str, stdout: str, stderr: str, terminal: bool
    ) -> None:
        self.id = id
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.pid = 0
        self.state = State.CREATED
        self.io: ProcessIO | None = None
        self.exit: Exit | None = None
        self.starting = False
        self.deleting = False
        self._waiters: list[Deferred[Exit | None]] = []

    def refuse(self, operation: str) -> None:
        """
        @raise TTRPCError: C{UNKNOWN} with the Go text, when C{operation} is
            not allowed in the current state.
        """
        refusal = self.refusals.get(operation, {}).get(self.state)
        if refusal is not None:
            raise errors.unknown(refusal)

    @property
    def status(self) -> task_types_pb2.Status:
        return STATUS[self.state]

    def exitStatus(self) -> int:
        return self.exit.status if self.exit is not None else 0

    def exitedAt(self) -> tuple[int, int]:
        """
        The exit time as Timestamp seconds and nanos; Go's zero time while
        the process has not exited.
        """
        if self.exit is None:
            return GO_ZERO_TIME_SECONDS, 0
        return divmod(self.exit.exitedAt, 1_000_000_000)

    def wait(self) -> Deferred[Exit | None]:
        """
        @return: a Deferred that fires with the exit once the process has
            exited (L{None} if it never ran), at once if it already has.
        """
        if self.exit is not None or self.state is State.DELETED:
            return succeed(self.exit)

        def cancel(waiter: Deferred[Any]) -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

        waiter: Deferred[Exit | None] = Deferred(cancel)
        self._waiters.append(waiter)
        return waiter

    def setExited(self, exit: Exit) -> None:
        """
        Record the exit, and release every waiter.
        """
        self.exit = exit
        if self.state is not State.DELETED:
            self.state = State.STOPPED
        self._release()

    def deleted(self) -> None:
        """
        The process is deleted: release anyone still waiting (a process that
        never ran has no exit).
        """
        self.state = State.DELETED
        self._release()

    def _release(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.exit)


class InitProcess(Process):
    """
    A container's init process.

    @ivar checkpoint: the checkpoint to restore from at start, if any.
    """

    refusals = _INIT_REFUSALS

    def __init__(
        self,
        id: str,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        checkpoint: str = "",
        parentCheckpoint: str = "",
    ) -> None:
        super().__init__(id, stdin, stdout, stderr, terminal)
        self.checkpoint = checkpoint
        self.parentCheckpoint = parentCheckpoint
        if checkpoint:
            self.state = State.CREATED_CHECKPOINT

    def refuseDelete(self) -> None:
        if self.state is State.DELETED:
            raise errors.notFound("cannot delete a deleted process")
        self.refuse("delete")

    def refuseKill(self) -> None:
        if self.state is State.DELETED:
            raise errors.notFound("cannot kill a deleted process")


class ExecProcess(Process):
    """
    A process run in a container with C{Exec}.

    @ivar spec: the OCI Process, decoded from the request's JSON.
    """

    refusals = _EXEC_REFUSALS

    def __init__(
        self,
        id: str,
        spec: dict[str, Any],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
    ) -> None:
        super().__init__(id, stdin, stdout, stderr, terminal)
        self.spec = spec

    def refuseKill(self) -> None:
        if self.state is State.DELETED:
            raise errors.notFound("cannot kill a deleted process")
        if self.state is State.CREATED:
            raise errors.failedPrecondition("process not created")
        if self.state is State.STOPPED:
            raise errors.notFound("process already finished")

    def startFailed(self, exit: Exit) -> None:
        """
        C{runc exec} failed: the exec stays created, and whoever waits on it
        is released with the given exit.
        """
        self.exit = exit
        self._release()
