# -*- test-case-name: tests.test_task_ordering -*-
"""
The order in which one container's events leave, and when its processes'
exits are recorded:

    - a process's create or start event leaves before its exit event, even
      when it dies at once: events queued while a create or start is in
      progress are held until its own event has been queued;
    - an exec's exit, and the init's, are recorded and published only once
      the process's output has reached the client (the README's "Exit after
      output"); the container decides when that is and tells this object;
    - the init's exit is recorded and published only after the exits of the
      container's execs (which die with it), while an exec is starting, and
      after the rest of the container has been killed: so that containerd
      sees them first. The wait for the execs is bounded by
      L{EXEC_EXIT_WAIT}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from shimd.runc.task import errors
from shimd.runc.task.process import Process
from shimd.runc.task.state import State
from shimd.shim.reaper import Exit

EXEC_EXIT_WAIT = 5.0

Publish = Callable[[str, Message], None]


class ExitOrder:
    """
    One container's event and exit ordering, and which of its processes are
    being started or deleted.

    @ivar _starts: how many creates and starts are in progress.
    @ivar _held: the events queued meanwhile.
    @ivar _starting: the processes being started.
    @ivar _deleting: the processes being deleted.
    @ivar _initExit: the init's exit, until it is recorded.
    @ivar _initDrained: whether the init's output has reached the client.
    @ivar _killingAll: whether the rest of the container is being killed.
    @ivar _execWait: the call that gives up waiting for the execs' exits.
    """

    def __init__(
        self,
        reactor: Any,
        publish: Publish,
        execs: Callable[[], Iterable[Process]],
        exited: Callable[[Process, Exit], None],
    ) -> None:
        """
        @param publish: queues an event for containerd.
        @param execs: the container's execs, now.
        @param exited: records a process's exit and publishes it (through
            L{ExitOrder.publish}).
        """
        self._reactor = reactor
        self._publish = publish
        self._execs = execs
        self._exited = exited
        self._starts = 0
        self._held: list[tuple[str, Message]] = []
        self._starting: set[Process] = set()
        self._deleting: set[Process] = set()
        self._initExit: tuple[Process, Exit] | None = None
        self._initDrained = True
        self._killingAll = False
        self._execWait: Any = None

    # -- events -------------------------------------------------------------

    def publish(self, topic: str, event: Message) -> None:
        """
        Queue an event of this container, after the events of any create or
        start in progress.
        """
        if self._starts:
            self._held.append((topic, event))
        else:
            self._publish(topic, event)

    def createBegan(self) -> None:
        """
        A create is in progress: hold the container's events.
        """
        self._starts += 1

    def startBegan(self, process: Process) -> None:
        """
        A start of C{process} is in progress: hold the container's events.

        @raise TTRPCError: C{UNKNOWN} when one already is (Go's second Start
            waits for the first, then finds it running).
        """
        if process in self._starting:
            raise errors.unknown("cannot start a running process")
        self._starting.add(process)
        self._starts += 1

    def startEnded(
        self, process: Process | None, event: tuple[str, Message] | None
    ) -> None:
        """
        A create (C{process} L{None}) or start has ended: queue its event, if
        it succeeded, then what was held once no other is in progress.
        """
        if process is not None:
            self._starting.discard(process)
        if event is not None:
            self._publish(*event)
        self._starts -= 1
        if not self._starts:
            held, self._held = self._held, []
            for topic, message in held:
                self._publish(topic, message)
        self._maybeFinishInitExit()

    def isStarting(self, process: Process) -> bool:
        return process in self._starting

    # -- deletes ------------------------------------------------------------

    def deleteBegan(self, process: Process) -> None:
        """
        @raise TTRPCError: C{NOT_FOUND} when a delete of C{process} is already
            in progress (Go's second Delete waits for the first, then finds
            it deleted).
        """
        if process in self._deleting:
            raise errors.notFound("cannot delete a deleted process")
        self._deleting.add(process)

    def deleteEnded(self, process: Process) -> None:
        self._deleting.discard(process)

    # -- exits --------------------------------------------------------------

    def execExited(self, process: Process, exit: Exit) -> None:
        """
        An exec has exited and its output has reached the client: record
        and publish its exit (unless it was deleted meanwhile), then the
        init's, if it was waiting for it.
        """
        if process.state is State.DELETED:
            return
        self._exited(process, exit)
        self._maybeFinishInitExit()

    def initExited(self, init: Process, exit: Exit, killingAll: bool) -> None:
        """
        The init has been reaped: hold its exit until its output has reached
        the client (L{initDrained}), the rest of the container has been
        killed (L{killedAll}, when C{killingAll}) and the execs have exited,
        for at most L{EXEC_EXIT_WAIT} seconds for the execs.
        """
        self._initExit = (init, exit)
        self._initDrained = False
        self._killingAll = killingAll
        self._execWait = self._reactor.callLater(EXEC_EXIT_WAIT, self.finishInitExit)

    def initDrained(self) -> None:
        self._initDrained = True
        self._maybeFinishInitExit()

    def killedAll(self) -> None:
        self._killingAll = False
        self._maybeFinishInitExit()

    def _execsRunning(self) -> bool:
        return any(
            e in self._starting or e.state is State.RUNNING for e in self._execs()
        )

    def _maybeFinishInitExit(self) -> None:
        if (
            self._initExit is None
            or self._killingAll
            or not self._initDrained
            or self._execsRunning()
        ):
            return
        self.finishInitExit()

    def initExitPending(self) -> bool:
        """
        Whether the init's exit is held (or the wait for it not yet over).
        """
        return self._execWait is not None

    def finishInitExit(self) -> None:
        """
        Record and publish the init's exit now, if it has one held and has
        not been deleted.
        """
        held, self._initExit = self._initExit, None
        if self._execWait is not None and self._execWait.active():
            self._execWait.cancel()
        self._execWait = None
        if held is None:
            return
        init, exit = held
        if init.state is State.DELETED:
            return
        self._exited(init, exit)
