# -*- test-case-name: tests.test_task_process -*-
"""
A container's processes: the init process and exec processes, each with its
state (L{shimd.runc.task.state}), which refuses, with the Go shim's text, a
call or a move that makes no sense in it. The work itself (runc, stdio) is
done by the container; a process only knows its state, its pid, its stdio
and its exit.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from shimd.protos import task_types_pb2
from shimd.runc.stdio.processio import ProcessIO
from shimd.runc.task import errors
from shimd.runc.task.state import STATUS, ProcessState, State
from shimd.shim.reaper import Exit

GO_ZERO_TIME_SECONDS = -62135596800


class Process:
    """
    What init and exec processes share: identity, stdio, pid, state, exit,
    and the clients waiting for the exit.

    @ivar id: the container id for init, the exec id for an exec.
    @ivar io: the process's stdio, once it has been set up.
    """

    def __init__(
        self,
        id: str,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        states: ProcessState,
    ) -> None:
        self.id = id
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.pid = 0
        self._states = states
        self.io: ProcessIO | None = None
        self.exit: Exit | None = None
        self._waiters: list[Deferred[Exit | None]] = []

    def refuse(self, operation: str) -> None:
        """
        @raise TTRPCError: C{UNKNOWN} with the Go text, when C{operation} is
            not allowed in the current state.
        """
        self._states.refuse(operation)

    @property
    def state(self) -> State:
        return self._states.current

    def transition(self, target: State) -> None:
        """
        Move to C{target}.

        @raise TTRPCError: C{UNKNOWN} with the Go text when the move is not
            legal from the current state.
        """
        self._states.transition(target)

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
        if self.state not in (State.STOPPED, State.DELETED):
            self.transition(State.STOPPED)
        self._release()

    def deleted(self) -> None:
        """
        The process is deleted: release anyone still waiting (a process that
        never ran has no exit).

        @raise TTRPCError: C{UNKNOWN} when it may not be deleted in its state.
        """
        self.transition(State.DELETED)
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
        super().__init__(
            id,
            stdin,
            stdout,
            stderr,
            terminal,
            ProcessState.forInit(checkpoint=bool(checkpoint)),
        )
        self.checkpoint = checkpoint
        self.parentCheckpoint = parentCheckpoint

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

    def __init__(
        self,
        id: str,
        spec: dict[str, Any],
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
    ) -> None:
        super().__init__(id, stdin, stdout, stderr, terminal, ProcessState.forExec())
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
