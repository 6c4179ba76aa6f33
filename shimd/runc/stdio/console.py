# -*- test-case-name: tests.test_stdio -*-
"""
A terminal: runc's console socket, on which it sends the pty master, and
the copies between the master and the client's stdio.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import tempfile
import termios
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IOutputSink
from shimd.runc.stdio.binary import BinaryIO
from shimd.runc.stdio.fifo import isFifo, openFifoForWriting
from shimd.runc.stdio.processio import ProcessIO
from shimd.runc.stdio.streams import FileWriter, Writer, closeQuietly

CONSOLE_TIMEOUT = 30.0

log = Logger()


@implementer(IFileDescriptorReceiver)
class ConsoleReceiver(Protocol):
    """
    runc's connection to the console socket: one message, whose ancillary
    data is the pty master.
    """

    def __init__(self, received: Deferred[int]) -> None:
        self._received = received

    def fileDescriptorReceived(self, descriptor: int) -> None:
        if self._received.called:
            os.close(descriptor)
            return
        self._received.callback(descriptor)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        pass


class ConsoleSocket:
    """
    runc's C{--console-socket}: a private directory with a unix socket on
    which runc sends the pty master.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        parent = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        self._directory = tempfile.mkdtemp(prefix="pty", dir=parent)
        self.path = os.path.join(self._directory, "pty.sock")
        self.received: Deferred[int] = Deferred()
        received = self.received
        factory = Factory.forProtocol(lambda: ConsoleReceiver(received))
        factory.noisy = False
        self._port = reactor.listenUNIX(self.path, factory, mode=0o600)

    def close(self) -> Deferred[None]:
        """
        Stop listening, then remove the directory: the port unlinks its
        socket when it has stopped, and fails (leaking its socket) if the
        directory is already gone.
        """
        port, self._port = self._port, None
        if port is None:
            return succeed(None)

        def removeDirectory(result: object) -> None:
            if isinstance(result, Failure):
                log.failure("closing the console socket failed", result)
            shutil.rmtree(self._directory, ignore_errors=True)

        return maybeDeferred(port.stopListening).addBoth(removeDirectory)


class ConsoleIO(ProcessIO):
    """
    A terminal: runc sends the pty master; its output is copied to stdout
    (a fifo, a file, or a logging binary's pipe) and stdin is copied to it.
    """

    def __init__(
        self,
        reactor: Any,
        stdin: str,
        stdout: str,
        stderr: str,
        binary: BinaryIO | None = None,
    ) -> None:
        super().__init__(reactor, stdin, stdout, stderr)
        self._console = ConsoleSocket(reactor)
        self.consoleSocket = self._console.path
        devnull = self._nullEnd()
        self.runcStdio = {0: devnull, 1: devnull, 2: devnull}
        self._binary = binary
        self.master: int | None = None

    def prepare(self) -> Deferred[None]:
        if self._binary is not None:
            return self._binary.startLogger()
        return succeed(None)

    def attach(self) -> Deferred[None]:
        received = self._console.received
        received.addTimeout(CONSOLE_TIMEOUT, self.reactor)

        def connect(master: int) -> None:
            self._console.close()
            self.master = master
            self._fds.append(master)
            output, fifoReader = self._outputConsumer()
            self._copy(os.dup(master), output, fifoReader)
            if self.stdin:
                self._copyStdin(self._openStdin(), os.dup(master))

        def failed(failure: Failure) -> Failure:
            self._console.close()
            return failure

        return received.addCallbacks(connect, failed)

    def _outputConsumer(self) -> tuple[IOutputSink, int | None]:
        """
        Open what the terminal's output is copied to.

        @return: its consumer, and our reader of it when it is a fifo.
        """
        if self._binary is not None:
            return Writer(self.reactor, os.dup(self._binary.outputEnd)), None
        if urlsplit(self.stdout).scheme == "file":
            return FileWriter(self._openStdoutFile()), None
        path = self.stdout.removeprefix("fifo://")
        if not path:
            return FileWriter(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)), None
        if isFifo(path):
            writer, keep = openFifoForWriting(path)
            self._fds.append(keep)
            return Writer(self.reactor, writer), keep
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        return FileWriter(os.open(path, flags)), None

    def resize(self, width: int, height: int) -> None:
        if self.master is not None:
            size = struct.pack("HHHH", height & 0xFFFF, width & 0xFFFF, 0, 0)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def close(self) -> Deferred[None]:
        if self.master is None:
            # Twisted receives the master as soon as runc sends it: if it
            # was never attached (runc failed afterwards), close it.
            self._console.received.addBoth(_closeUnattached)
        stopped = self._console.close()
        closed = super().close()
        if self._binary is not None:
            closed = self._binary.close()
        return stopped.addCallback(lambda _: closed)


def _closeUnattached(result: object) -> object:
    if isinstance(result, int):
        closeQuietly(result)
        return None
    return result
