# -*- test-case-name: tests.test_stdio -*-
"""
A logging binary (C{binary:///path?k=v}): the pipes it reads, its start,
readiness and stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet import main
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.runc.stdio.errors import StdioError
from shimd.runc.stdio.fifo import openFifoForReading
from shimd.runc.stdio.processio import ProcessIO
from shimd.runc.stdio.streams import Reader, Writer, closeQuietly

LOGGER_READY_TIMEOUT = 30.0
LOGGER_STOP_TIMEOUT = 12.0


class BinaryIO(ProcessIO):
    """
    Pipes whose read ends a logging binary reads (C{binary:///path?k=v}):
    its fd 3 is stdout, fd 4 stderr, and it says it is ready by writing a
    byte to, or closing, its fd 5.
    """

    def __init__(
        self,
        reactor: Any,
        spawn: Callable[..., Any],
        stdin: str,
        stdout: str,
        stderr: str,
        containerID: str,
        namespace: str,
        terminal: bool = False,
    ) -> None:
        super().__init__(reactor, stdin, stdout, stderr)
        self._spawn = spawn
        self._containerID = containerID
        self._namespace = namespace
        uri = urlsplit(stdout)
        self._command = [unquote(uri.path)]
        seen = set()
        for key, value in parse_qsl(uri.query, keep_blank_values=True):
            if key not in seen:
                seen.add(key)
                self._command += [key, value]
        self._loggerOut, self.outputEnd = os.pipe2(os.O_CLOEXEC)
        self._loggerErr, self.errorEnd = os.pipe2(os.O_CLOEXEC)
        self._fds += [self._loggerOut, self._loggerErr]
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ends += [self.outputEnd, self.errorEnd, devnull]
        stdinEnd = devnull
        self._stdinPipe: int | None = None
        if stdin and not terminal:
            self._stdinPipe = self._pipe(containerReads=True)
            stdinEnd = self._ends[-1]
            self._fds.append(self._stdinPipe)
        self.runcStdio = {0: stdinEnd, 1: self.outputEnd, 2: self.errorEnd}
        self.logger: LoggerProtocol | None = None

    def prepare(self) -> Deferred[None]:
        return self.startLogger()

    def startLogger(self) -> Deferred[None]:
        """
        Start the logging binary and wait until it says it is ready.
        """
        readyRead, readyWrite = os.pipe2(os.O_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.logger = LoggerProtocol(self.reactor, readyRead)
        try:
            self._spawn(
                self.logger,
                self._command[0],
                self._command,
                {
                    "CONTAINER_ID": self._containerID,
                    "CONTAINER_NAMESPACE": self._namespace,
                },
                {
                    0: devnull,
                    1: devnull,
                    2: devnull,
                    3: self._loggerOut,
                    4: self._loggerErr,
                    5: readyWrite,
                },
            )
        except OSError as e:
            # The ready pipe's reader is in the reactor: stop it (which
            # closes readyRead) rather than close the descriptor under it.
            self.logger.abandon()
            self.logger = None
            raise StdioError(f"failed to start logging binary: {e}") from e
        finally:
            closeQuietly(readyWrite)
            closeQuietly(devnull)
        for fd in (self._loggerOut, self._loggerErr):
            self._fds.remove(fd)
            closeQuietly(fd)
        return self.logger.ready.addTimeout(LOGGER_READY_TIMEOUT, self.reactor)

    def attach(self) -> Deferred[None]:
        if self._stdinPipe is not None:
            try:
                reader, self._keepAlive = openFifoForReading(self.stdin)
            except OSError as e:
                raise StdioError(f"failed to open stdin fifo: {e}") from e
            self._fds.remove(self._stdinPipe)
            writer = Writer(self.reactor, self._stdinPipe)
            self._consumers.append(writer)
            self._readers.append(Reader(self.reactor, reader, writer))
        return succeed(None)

    def close(self) -> Deferred[None]:
        closed = super().close()
        if self.logger is None:
            return closed
        return self.logger.stop()


class LoggerProtocol(ProcessProtocol):
    """
    Supervises a logging binary: its readiness, and its stop at delete
    (C{SIGTERM}, then C{SIGKILL} after L{LOGGER_STOP_TIMEOUT} seconds).
    """

    def __init__(self, reactor: Any, readyFD: int) -> None:
        self._reactor = reactor
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._readyReader = Reader(reactor, readyFD, ReadySignal(self.ready))

    def abandon(self) -> None:
        """
        The binary could not be started: stop watching its ready pipe.
        """
        reader = self._readyReader
        if reader.connected:
            reader.stopReading()
            reader.connectionLost(Failure(main.CONNECTION_DONE))

    def processEnded(self, reason: Failure) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    def stop(self) -> Deferred[None]:
        if self.ended.called:
            return succeed(None)
        try:
            self.transport.signalProcess("TERM")  # type: ignore[union-attr]
        except ProcessExitedAlready:
            return succeed(None)
        killer = self._reactor.callLater(LOGGER_STOP_TIMEOUT, self._kill)
        self.ended.addBoth(lambda result: killer.active() and killer.cancel())
        return self.ended

    def _kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except ProcessExitedAlready:
            pass


@implementer(IConsumer)
class ReadySignal:
    """
    The consumer of a logging binary's ready pipe: the first byte, or its
    end, means ready.
    """

    def __init__(self, ready: Deferred[None]) -> None:
        self._ready = ready
        self.finished: Deferred[None] = Deferred()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if not self._ready.called:
            self._ready.callback(None)

    def loseConnection(self) -> None:
        if not self._ready.called:
            self._ready.callback(None)
