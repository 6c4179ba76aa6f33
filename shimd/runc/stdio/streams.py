# -*- test-case-name: tests.test_stdio -*-
"""
The two ends of a copy: L{Reader}, a streaming producer reading a
non-blocking descriptor, and the output sinks it writes to
(L{shimd.interfaces.IOutputSink}): L{Writer} for a pipe or fifo, in the
reactor, and L{FileWriter} for a regular file.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import abstract, fdesc, main
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import IOutputSink

CHUNK = 64 * 1024
APPEND_CREATE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC

log = Logger()


@implementer(IHalfCloseableDescriptor)
class Reader(abstract.FileDescriptor):
    """
    Reads a non-blocking descriptor into a consumer, as a streaming producer:
    it stops reading while the consumer's buffer is full.

    At end of input (or C{EIO}, which a pty master gives once the terminal's
    last holder is gone) it closes its descriptor and asks the consumer to
    finish, after writing what it holds.

    The descriptor's own end is the only end: a hangup the reactor sees
    before it (L{readConnectionLost}) only makes it read on to it.

    @ivar moved: how many bytes it has read.
    @ivar endedBy: what ended its reading (C{"end of file"}, C{"EIO"}, an
        error's name, or C{"closed"} when its owner closed it first), or
        L{None} while it reads.
    """

    def __init__(self, reactor: Any, fd: int, consumer: Any) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._clock = reactor
        self._fd = fd
        self.consumer = consumer
        self.connected = True
        self.moved = 0
        self.endedBy: str | None = None
        self._paused = False
        consumer.registerProducer(self, True)
        self.startReading()

    def fileno(self) -> int:
        return self._fd

    def loseConnection(self) -> None:
        """
        Stop reading and finish on the next turn: a read-only descriptor
        never becomes writable, so the base class's flush-then-close would
        wait forever.
        """
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self.stopReading()
            self._clock.callLater(0, self.connectionLost, Failure(main.CONNECTION_DONE))

    def pauseProducing(self) -> None:
        self._paused = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        super().resumeProducing()

    def readConnectionLost(self, reason: Failure) -> None:
        """
        The reactor says the descriptor is done: after L{doRead} found its
        end, finish; on a hangup it saw without anything to read, read on.

        A pty master is hung up as soon as its terminal's last holder
        closes it, and under load that can be before the kernel has moved
        the holder's last writes to where a read finds them, so that epoll
        reports the hangup without input, and the reactor would end the
        copy there, losing them (issue 14). A read waits for those moves,
        and only then says C{EIO}: so read until the descriptor itself says
        it has ended. While the consumer has paused the reading, the
        reactor reports the hangup again once it resumes.
        """
        while self.endedBy is None and not self._paused and self._fd >= 0:
            moved = self.moved
            ended = self.doRead()
            if ended is None and self.moved == moved:
                # Nothing to read yet, no end either: wait for the next event.
                self.startReading()
                return
            if ended is not None:
                break
        if self.endedBy is not None:
            self.connectionLost(reason)

    def doRead(self) -> object:
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EINTR:
                return None
            self.endedBy = errno.errorcode.get(e.errno or 0, str(e))
            if e.errno == errno.EIO:
                return main.CONNECTION_DONE
            return main.CONNECTION_LOST
        if not data:
            self.endedBy = "end of file"
            return main.CONNECTION_DONE
        self.moved += len(data)
        self.consumer.write(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        if self._fd < 0:
            return
        super().connectionLost(reason)
        if self.endedBy is None:
            self.endedBy = "closed"
        fd, self._fd = self._fd, -1
        os.close(fd)
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.unregisterProducer()
            consumer.loseConnection()


@implementer(IOutputSink)
class Writer(abstract.FileDescriptor):
    """
    Writes to a non-blocking descriptor, buffering at most about
    C{bufferSize} bytes before it pauses its producer.

    @ivar finished: fires once everything written has been flushed and the
        descriptor closed (or when it is lost).
    @ivar moved: how many bytes it has written to its descriptor.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._fd = fd
        self.connected = True
        self.finished: Deferred[None] = Deferred()
        self.moved = 0

    def fileno(self) -> int:
        return self._fd

    def writeSomeData(self, data: bytes) -> int | BaseException:
        written = fdesc.writeToFD(self._fd, data)
        if isinstance(written, int) and written > 0:
            self.moved += written
        return written

    def doRead(self) -> object:
        return None

    def abortConnection(self) -> None:
        """
        Close now, dropping whatever is still buffered.
        """
        if self._fd >= 0:
            self.stopWriting()
            self.connectionLost(Failure(main.CONNECTION_LOST))

    def connectionLost(self, reason: Failure) -> None:
        if self._fd < 0:
            return
        super().connectionLost(reason)
        fd, self._fd = self._fd, -1
        os.close(fd)
        if not self.finished.called:
            self.finished.callback(None)


@implementer(IOutputSink)
class FileWriter:
    """
    Appends to a regular file (which epoll cannot watch) with plain writes:
    local file writes do not wait on anyone.

    Several producers may share one, as stdout and stderr share a C{file://}
    target; the file is closed when the last of them has finished.

    @ivar moved: how many bytes it has written to the file.
    """

    def __init__(self, fd: int, users: int = 1) -> None:
        self._fd = fd
        self._users = users
        self.finished: Deferred[None] = Deferred()
        self.moved = 0

    def share(self) -> None:
        """
        Count one more producer that must finish before the file is closed.
        """
        self._users += 1

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._fd >= 0:
            try:
                written = os.write(self._fd, view)
                view = view[written:]
                self.moved += written
            except InterruptedError:
                continue
            except OSError as e:
                log.error("write to stdio file failed: {error}", error=e)
                return

    def loseConnection(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self.abortConnection()

    def abortConnection(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        if not self.finished.called:
            self.finished.callback(None)


def closeQuietly(fd: int) -> None:
    """
    Close a descriptor that may already be gone.
    """
    try:
        os.close(fd)
    except OSError:
        pass
