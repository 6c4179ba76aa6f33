# -*- test-case-name: tests.test_stdio -*-
"""
The stdio of one process, whatever its mode: the descriptors runc is
given, the copies started once runc has created the process, and their end
at delete. L{NullIO} is the mode without any stdio.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import main
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IOutputSink, IProcessIO
from shimd.runc.stdio.drain import DRAIN_IDLE, DrainWait, OutputCopy
from shimd.runc.stdio.fifo import openFifoForReading
from shimd.runc.stdio.streams import APPEND_CREATE, Reader, Writer, closeQuietly


@implementer(IProcessIO)
class ProcessIO:
    """
    The stdio of one process, whatever its mode.

    The life of one: L{runcStdio} and L{consoleSocket} go on runc's command
    line; L{spawned} once runc is running (our copies of the process's ends
    are closed); L{attach} once runc has succeeded (the copies start);
    L{waitDrained} and L{close} when the process is deleted.

    @ivar stdin: the client's stdin string, as requested.
    """

    def __init__(self, reactor: Any, stdin: str, stdout: str, stderr: str) -> None:
        self.reactor = reactor
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.runcStdio: dict[int, int] = {}
        self.consoleSocket: str | None = None
        self._ends: list[int] = []
        self._fds: list[int] = []
        self._keepAlive: int | None = None
        self._copies: list[OutputCopy] = []
        self._consumers: list[IOutputSink] = []
        self._readers: list[Reader] = []
        self._delivered = False
        self.closed = False

    def prepare(self) -> Deferred[None]:
        """
        Get ready before runc runs: start a logging binary, for one.
        """
        return succeed(None)

    def spawned(self) -> None:
        """
        runc has its copies of the process's ends: close ours, so that the
        process's exit ends its output.
        """
        ends, self._ends = self._ends, []
        for fd in ends:
            closeQuietly(fd)

    def attach(self) -> Deferred[None]:
        """
        Start copying, now that runc has created the process.
        """
        return succeed(None)

    def closeStdin(self) -> None:
        """
        Close the shim's keep-alive writer on the stdin fifo (C{CloseIO}): the
        process sees end of input once the client's writer is closed too.
        """
        keepAlive, self._keepAlive = self._keepAlive, None
        if keepAlive is not None:
            closeQuietly(keepAlive)

    def resize(self, width: int, height: int) -> None:
        """
        Set the terminal's window size; nothing without a terminal.
        """

    def waitDrained(self, timeout: float, idle: float = DRAIN_IDLE) -> Deferred[None]:
        """
        Wait for the process's output to reach its client: every copy
        finished and, for a fifo, read empty by the client (who may close
        it once the exit is reported, losing what it still held). The wait
        is given up once no byte has moved for C{idle} seconds (nobody
        reads, or a background child holds the output open without
        writing), and after C{timeout} seconds in all.

        Once a wait has seen the output delivered, later ones (the wait at
        delete, after the one at exit) end at once: nothing more can come.

        @return: a Deferred that fires with L{None}, never failing.
        """
        if not self._copies or self._delivered:
            return succeed(None)
        wait = DrainWait(self.reactor, lambda: self.closed, self._copies, timeout, idle)

        def remember(result: None) -> None:
            if wait.gaveUp is None and not self.closed:
                self._delivered = True

        return wait.done.addCallback(remember)

    def close(self) -> Deferred[None]:
        """
        Stop every copy and close every descriptor.
        """
        if self.closed:
            return succeed(None)
        self.closed = True
        for reader in self._readers:
            if reader.connected:
                reader.stopReading()
                reader.connectionLost(Failure(main.CONNECTION_DONE))
        for consumer in self._consumers:
            consumer.abortConnection()
        self.spawned()
        self.closeStdin()
        fds, self._fds = self._fds, []
        for fd in fds:
            closeQuietly(fd)
        return succeed(None)

    def _nullEnd(self) -> int:
        """
        Open C{/dev/null} for runc's streams that have nowhere to go (closed
        by L{spawned} like the other process ends).
        """
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ends.append(devnull)
        return devnull

    def _openStdoutFile(self) -> int:
        """
        Open the file a C{file://} stdout names, for appending, creating it
        and its directory as needed.
        """
        path = unquote(urlsplit(self.stdout).path)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return os.open(path, APPEND_CREATE, 0o644)

    def _openStdin(self) -> int:
        """
        Open the client's stdin fifo for reading, keeping a writer of our own
        on it until L{closeStdin} (see L{openFifoForReading}).

        @return: our reader of it.
        """
        reader, self._keepAlive = openFifoForReading(self.stdin.removeprefix("fifo://"))
        return reader

    def _copyStdin(self, reader: int, target: int) -> None:
        """
        Copy from our reader of the stdin fifo to the process's input.
        """
        writer = Writer(self.reactor, target)
        self._consumers.append(writer)
        self._readers.append(Reader(self.reactor, reader, writer))

    def _pipe(self, containerReads: bool) -> int:
        """
        Make a pipe for one stream: its process end goes to runc (and is
        closed by L{spawned}); our end is returned.
        """
        readEnd, writeEnd = os.pipe2(os.O_CLOEXEC)
        if containerReads:
            self._ends.append(readEnd)
            return writeEnd
        self._ends.append(writeEnd)
        return readEnd

    def _copy(
        self, fd: int, consumer: IOutputSink, fifoReader: int | None = None
    ) -> None:
        """
        Copy from one of our descriptors to a consumer, tracking the copy so
        that L{waitDrained} can wait for it.

        @param fifoReader: our reader of the fifo the consumer writes, if
            it writes one (see L{OutputCopy}).
        """
        if consumer not in self._consumers:
            self._consumers.append(consumer)
        reader = Reader(self.reactor, fd, consumer)
        self._readers.append(reader)
        self._copies.append(OutputCopy(reader, consumer, fifoReader))


class NullIO(ProcessIO):
    """
    No stdio at all: runc gets C{/dev/null}.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, "", "", "")
        devnull = self._nullEnd()
        self.runcStdio = {0: devnull, 1: devnull, 2: devnull}
