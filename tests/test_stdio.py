# -*- test-case-name: tests.test_stdio -*-
"""
Tests for L{shimd.runc.stdio}: the copies between a process's pipes or pty and
the client's fifos, with real descriptors (pipes, fifos in a temporary
directory, ptys, a unix socket, a logging binary) under the real reactor,
and back-pressure driven step by step under a fake one.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import select
import socket
import stat
import struct
import termios
import tty
from collections.abc import Callable
from typing import Any

from twisted.internet import abstract, fdesc, main
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import IOutputSink, IProcessIO
from shimd.runc.client import reactorSpawner
from shimd.runc.stdio.binary import BinaryIO
from shimd.runc.stdio.console import CONSOLE_TIMEOUT, ConsoleIO
from shimd.runc.stdio.create import createIO
from shimd.runc.stdio.drain import (
    CLIENT_STALL,
    DRAIN_IDLE,
    DRAIN_TICK,
    DrainWait,
    OutputCopy,
)
from shimd.runc.stdio.errors import StdioError
from shimd.runc.stdio.fifo import (
    hasOtherReader,
    openFifoForReading,
    openFifoForWriting,
)
from shimd.runc.stdio.pipes import PipeIO
from shimd.runc.stdio.processio import NullIO, ProcessIO
from shimd.runc.stdio.streams import (
    CHUNK,
    FileWriter,
    Reader,
    Writer,
)
from tests.fakes import FakeIO

#: The most a test waits for something the reactor does, in reactor turns of
#: L{POLL} seconds: a bound against hanging, never a timing assertion.
POLLS = 2000
POLL = 0.005


def realReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def openFDs() -> int:
    """
    How many descriptors this process has open.
    """
    return len(os.listdir("/proc/self/fd")) - 1


class Descriptors:
    """
    The descriptors a test owns: each is closed once, by the test or at
    cleanup, never again (its number may belong to someone else by then).
    Descriptors handed over to a L{Reader}, L{Writer} or L{Collector} are
    released: those close them.
    """

    def __init__(self) -> None:
        self._open: set[int] = set()

    def track(self, fd: int) -> int:
        self._open.add(fd)
        return fd

    def release(self, fd: int) -> int:
        self._open.remove(fd)
        return fd

    def close(self, fd: int) -> None:
        os.close(self.release(fd))

    def closeAll(self) -> None:
        fds, self._open = self._open, set()
        for fd in fds:
            os.close(fd)


def readAll(fd: int) -> bytes:
    """
    Everything a non-blocking descriptor holds now.
    """
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


class Pattern:
    """
    A stream of bytes whose order can be checked: each call continues where
    the last one stopped.
    """

    def __init__(self) -> None:
        self.produced = bytearray()

    def __call__(self, size: int) -> bytes:
        start = len(self.produced)
        data = bytes((start + i) % 251 for i in range(size))
        self.produced += data
        return data

    def unwrite(self, size: int) -> None:
        """
        Forget the last C{size} bytes, which could not be written.
        """
        del self.produced[len(self.produced) - size :]


def fillPipe(fd: int, pattern: Pattern) -> int:
    """
    Write to a non-blocking pipe until it is full.

    @return: how many bytes were written.
    """
    written = 0
    while True:
        try:
            # Pipe writes of PIPE_BUF bytes are all or nothing.
            written += os.write(fd, pattern(select.PIPE_BUF))
        except BlockingIOError:
            pattern.unwrite(select.PIPE_BUF)
            return written


class Collector(abstract.FileDescriptor):
    """
    The test's end of a descriptor: gathers what it reads until end of
    input (or C{EIO}, for a pty).

    @ivar closed: fires with everything read once the end is reached.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._fd = fd
        self.data = b""
        self.connected = True
        self.closed: Deferred[bytes] = Deferred()
        self._waiters: list[tuple[int, Deferred[bytes]]] = []
        self.startReading()

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EIO:
                return main.CONNECTION_DONE
            raise
        if not data:
            return main.CONNECTION_DONE
        self.data += data
        waiters, self._waiters = self._waiters, []
        for size, waiter in waiters:
            if len(self.data) >= size:
                waiter.callback(self.data)
            else:
                self._waiters.append((size, waiter))
        return None

    def waitFor(self, size: int) -> Deferred[bytes]:
        """
        Fire with what has been read once it is at least C{size} bytes.
        """
        waiter: Deferred[bytes] = Deferred()
        if len(self.data) >= size:
            waiter.callback(self.data)
        else:
            self._waiters.append((size, waiter))
        return waiter

    def connectionLost(self, reason: Failure) -> None:
        if self._fd < 0:
            return
        super().connectionLost(reason)
        fd, self._fd = self._fd, -1
        os.close(fd)
        for _, waiter in self._waiters:
            waiter.callback(self.data)
        self._waiters = []
        self.closed.callback(self.data)

    def stop(self) -> None:
        if self._fd >= 0:
            self.stopReading()
            self.connectionLost(Failure(main.CONNECTION_DONE))


class ClockedReactor:
    """
    The real reactor for descriptors and sockets, and a L{Clock} for time,
    so that timeouts are advanced by the test.
    """

    def __init__(self, reactor: Any, clock: Clock) -> None:
        self._reactor = reactor
        self.clock = clock

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(*args, **kwargs)

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class RealStdioTestCase(TestCase):
    """
    Helpers for tests with real descriptors under the real reactor.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.reactor = realReactor()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.fds = Descriptors()
        self.addCleanup(self.fds.closeAll)
        self.clock = Clock()
        self.clocked = ClockedReactor(self.reactor, self.clock)
        # Count once the reactor runs: it opens descriptors of its own then.
        await deferLater(self.reactor, 0, lambda: None)
        self.fdsBefore = openFDs()

    async def waitUntil(self, predicate: Callable[[], bool], what: str) -> None:
        """
        Let the reactor run until C{predicate} holds.
        """
        for _ in range(POLLS):
            if predicate():
                return
            await deferLater(self.reactor, POLL, lambda: None)
        self.fail(f"never happened: {what}")

    async def assertNoLeaks(self) -> None:
        """
        Every descriptor opened since L{setUp} has been closed (sockets that
        Twisted closes on a later turn included).
        """
        await self.waitUntil(lambda: openFDs() == self.fdsBefore, "descriptors closed")

    def fifo(self, name: str) -> str:
        path = os.path.join(self.directory, name)
        os.mkfifo(path)
        return path

    def collect(self, fd: int) -> Collector:
        """
        Read one of the test's descriptors, which the L{Collector} then
        owns.
        """
        collector = Collector(self.reactor, self.fds.release(fd))
        self.addCleanup(collector.stop)
        return collector

    def openClient(self, path: str, flags: int) -> int:
        return self.fds.track(os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC))

    def dup(self, fd: int) -> int:
        """
        Take a copy of one of runc's descriptors, as the container would.
        """
        return self.fds.track(os.dup(fd))

    def pipe(self) -> tuple[int, int]:
        readEnd, writeEnd = os.pipe2(os.O_CLOEXEC)
        return self.fds.track(readEnd), self.fds.track(writeEnd)


def drive(reactor: MemoryReactorClock, selectable: Any, method: str) -> object:
    """
    Call C{doRead} or C{doWrite} as the reactor would, disconnecting the
    selectable when it says so.
    """
    why = getattr(selectable, method)()
    if why is not None:
        reactor.removeReader(selectable)
        reactor.removeWriter(selectable)
        selectable.connectionLost(Failure(why))
    return why


def hangUp(reactor: MemoryReactorClock, reader: Reader) -> None:
    """
    Report a hangup to C{reader} as the reactor does for epoll's
    C{EPOLLHUP} without C{EPOLLIN}: removed from the readers and told its
    reading is lost, without a read first.
    """
    reactor.removeReader(reader)
    reader.readConnectionLost(Failure(main.CONNECTION_DONE))


def buffered(writer: Writer) -> int:
    """
    How many bytes a L{Writer} holds.
    """
    return len(writer.dataBuffer) - writer.offset + writer._tempDataLen


class RecordingConsumer:
    """
    A consumer that records what happens to it.
    """

    def __init__(self) -> None:
        self.data = b""
        self.producer: Any = None
        self.events: list[str] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.events.append(f"register streaming={streaming}")

    def unregisterProducer(self) -> None:
        self.events.append("unregister")

    def write(self, data: bytes) -> None:
        self.data += data

    def loseConnection(self) -> None:
        self.events.append("loseConnection")


class ReaderWriterStepTests(SynchronousTestCase):
    """
    L{Reader} and L{Writer} on real pipes, driven one event at a time by a
    fake reactor.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.fds = Descriptors()
        self.addCleanup(self.fds.closeAll)

    def pipe(self) -> tuple[int, int]:
        readEnd, writeEnd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return self.fds.track(readEnd), self.fds.track(writeEnd)

    def test_backPressure(self) -> None:
        """
        While the Writer's descriptor is not drained, its buffer fills, it
        pauses its Reader (which stops reading), and it never holds more
        than its C{bufferSize} plus one read of L{CHUNK} bytes; once drained,
        it resumes the Reader, and every byte arrives, in order.
        """
        sourceRead, sourceWrite = self.pipe()
        sinkRead, sinkWrite = self.pipe()
        writer = Writer(self.reactor, self.fds.release(sinkWrite))
        reader = Reader(self.reactor, self.fds.release(sourceRead), writer)
        self.assertIs(writer.producer, reader)
        pattern = Pattern()
        highest = 0
        for _ in range(1000):
            fillPipe(sourceWrite, pattern)
            if reader in self.reactor.getReaders():
                self.assertIsNone(drive(self.reactor, reader, "doRead"))
            highest = max(highest, buffered(writer))
            if writer in self.reactor.getWriters():
                self.assertIsNone(drive(self.reactor, writer, "doWrite"))
            if reader not in self.reactor.getReaders():
                break
        self.assertTrue(writer.producerPaused)
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertGreater(highest, writer.bufferSize)
        self.assertLessEqual(highest, writer.bufferSize + CHUNK)
        # The reactor goes on turning: the Writer still cannot write, and the
        # paused Reader reads nothing more.
        fillPipe(sourceWrite, pattern)
        for _ in range(10):
            self.assertEqual(self.reactor.getReaders(), [])
            self.assertIsNone(drive(self.reactor, writer, "doWrite"))
        self.assertEqual(fillPipe(sourceWrite, pattern), 0)
        self.assertLessEqual(buffered(writer), writer.bufferSize + CHUNK)

        received = bytearray()
        while writer in self.reactor.getWriters():
            received += readAll(sinkRead)
            self.assertIsNone(drive(self.reactor, writer, "doWrite"))
        self.assertFalse(writer.producerPaused)
        self.assertIn(reader, self.reactor.getReaders())

        self.fds.close(sourceWrite)
        while reader in self.reactor.getReaders():
            drive(self.reactor, reader, "doRead")
            received += readAll(sinkRead)
            if writer in self.reactor.getWriters():
                drive(self.reactor, writer, "doWrite")
        while writer in self.reactor.getWriters():
            received += readAll(sinkRead)
            drive(self.reactor, writer, "doWrite")
        received += readAll(sinkRead)
        self.assertEqual(bytes(received), bytes(pattern.produced))
        self.successResultOf(writer.finished)

    def test_endOfInput(self) -> None:
        """
        At the end of its input, a Reader closes its descriptor and its
        Writer flushes what it holds, closes its own, and fires
        C{finished}: the far end sees the data, then end of input.
        """
        sourceRead, sourceWrite = self.pipe()
        sinkRead, sinkWrite = self.pipe()
        writer = Writer(self.reactor, self.fds.release(sinkWrite))
        reader = Reader(self.reactor, self.fds.release(sourceRead), writer)
        os.write(sourceWrite, b"last words")
        self.fds.close(sourceWrite)
        self.assertIsNone(drive(self.reactor, reader, "doRead"))
        self.assertIs(drive(self.reactor, reader, "doRead"), main.CONNECTION_DONE)
        self.assertEqual(reader.fileno(), -1)
        self.assertEqual(reader.endedBy, "end of file")
        self.assertIsNone(writer.producer)
        self.assertNoResult(writer.finished)
        self.assertIs(drive(self.reactor, writer, "doWrite"), main.CONNECTION_DONE)
        self.successResultOf(writer.finished)
        self.assertEqual(writer.fileno(), -1)
        self.assertEqual(os.read(sinkRead, 100), b"last words")
        self.assertEqual(os.read(sinkRead, 100), b"")

    def test_writerLost(self) -> None:
        """
        When its Writer's descriptor fails (the far end is gone), the Reader
        stops and closes its own descriptor on the next turn.
        """
        sourceRead, sourceWrite = self.pipe()
        sinkRead, sinkWrite = self.pipe()
        writer = Writer(self.reactor, self.fds.release(sinkWrite))
        reader = Reader(self.reactor, self.fds.release(sourceRead), writer)
        os.write(sourceWrite, b"data")
        drive(self.reactor, reader, "doRead")
        self.fds.close(sinkRead)
        self.assertIs(drive(self.reactor, writer, "doWrite"), main.CONNECTION_LOST)
        self.successResultOf(writer.finished)
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertEqual(reader.fileno(), sourceRead)
        self.reactor.advance(0)
        self.assertEqual(reader.fileno(), -1)
        self.assertEqual(reader.endedBy, "closed")

    def test_hangupReadsOn(self) -> None:
        """
        A hangup the reactor reports before the Reader has read its end
        (C{readConnectionLost} without a read: epoll's C{EPOLLHUP} without
        C{EPOLLIN}) makes it read on to the end: nothing still in the
        descriptor is lost.
        """
        sourceRead, sourceWrite = self.pipe()
        consumer = RecordingConsumer()
        reader = Reader(self.reactor, self.fds.release(sourceRead), consumer)
        os.write(sourceWrite, b"last words")
        self.fds.close(sourceWrite)
        hangUp(self.reactor, reader)
        self.assertEqual(consumer.data, b"last words")
        self.assertEqual(reader.endedBy, "end of file")
        self.assertEqual(reader.fileno(), -1)
        self.assertEqual(consumer.events[-1], "loseConnection")

    def test_hangupWhilePaused(self) -> None:
        """
        A Reader whose consumer pauses it while it reads on after a hangup
        goes on once resumed (the reactor reports the hangup again), to the
        end.
        """
        sourceRead, sourceWrite = self.pipe()
        fcntl.fcntl(sourceWrite, fcntl.F_SETPIPE_SZ, 4 * CHUNK)
        consumer = RecordingConsumer()
        reader = Reader(self.reactor, self.fds.release(sourceRead), consumer)
        consumer.write = lambda data: (  # type: ignore[method-assign]
            setattr(consumer, "data", consumer.data + data),
            reader.pauseProducing(),
        )
        sent = b"x" * CHUNK + b"tail"
        os.write(sourceWrite, sent)
        self.fds.close(sourceWrite)
        hangUp(self.reactor, reader)
        self.assertEqual(len(consumer.data), CHUNK)
        self.assertIsNone(reader.endedBy)
        reader.resumeProducing()
        self.assertIn(reader, self.reactor.getReaders())
        hangUp(self.reactor, reader)
        reader.resumeProducing()
        hangUp(self.reactor, reader)
        self.assertEqual(consumer.data, sent)
        self.assertEqual(reader.endedBy, "end of file")
        self.assertEqual(consumer.events[-1], "loseConnection")

    def test_ptyHangupReadsOn(self) -> None:
        """
        The same on a pty master whose terminal was closed: the Reader reads
        what was written before the close, then C{EIO}.
        """
        master, slave = os.openpty()
        self.fds.track(slave)
        tty.setraw(slave)
        consumer = RecordingConsumer()
        reader = Reader(self.reactor, master, consumer)
        os.write(slave, b"typed")
        self.fds.close(slave)
        hangUp(self.reactor, reader)
        self.assertEqual(consumer.data, b"typed")
        self.assertEqual(reader.endedBy, "EIO")
        self.assertEqual(reader.fileno(), -1)

    def test_ptyEIO(self) -> None:
        """
        C{EIO} from a pty master, once its terminal is closed, is the end
        of input, not an error: the consumer is asked to finish.
        """
        master, slave = os.openpty()
        self.fds.track(slave)
        tty.setraw(slave)
        consumer = RecordingConsumer()
        reader = Reader(self.reactor, master, consumer)
        os.write(slave, b"typed")
        self.assertEqual(select.select([master], [], [], 30)[0], [master])
        self.assertIsNone(drive(self.reactor, reader, "doRead"))
        self.assertEqual(consumer.data, b"typed")
        self.fds.close(slave)
        self.assertEqual(select.select([master], [], [], 30)[0], [master])
        self.assertIs(reader.doRead(), main.CONNECTION_DONE)
        self.assertEqual(reader.endedBy, "EIO")
        reader.connectionLost(Failure(main.CONNECTION_DONE))
        self.assertEqual(
            consumer.events,
            ["register streaming=True", "unregister", "loseConnection"],
        )


class OutputSinkTests(SynchronousTestCase):
    """
    L{Writer} and L{FileWriter}, the output sinks a copy writes to, provide
    L{IOutputSink}.
    """

    def setUp(self) -> None:
        self.fds = Descriptors()
        self.addCleanup(self.fds.closeAll)

    def test_writer(self) -> None:
        """
        A L{Writer} provides L{IOutputSink}; aborting it closes its
        descriptor and fires C{finished}.
        """
        readEnd, writeEnd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fds.track(readEnd)
        writer = Writer(MemoryReactorClock(), writeEnd)
        self.assertTrue(verifyObject(IOutputSink, writer))
        writer.abortConnection()
        self.assertIsNone(self.successResultOf(writer.finished))
        self.assertRaises(OSError, os.fstat, writeEnd)

    def test_fileWriter(self) -> None:
        """
        A L{FileWriter} provides L{IOutputSink}, counts what it writes, and,
        shared by two producers, closes the file only when both have
        finished.
        """
        readEnd, writeEnd = os.pipe2(os.O_CLOEXEC)
        self.fds.track(readEnd)
        sink = FileWriter(writeEnd)
        self.assertTrue(verifyObject(IOutputSink, sink))
        sink.share()
        sink.write(b"hello")
        self.assertEqual(sink.moved, 5)
        self.assertEqual(os.read(readEnd, 10), b"hello")
        sink.loseConnection()
        self.assertNoResult(sink.finished)
        sink.loseConnection()
        self.assertIsNone(self.successResultOf(sink.finished))
        self.assertEqual(os.read(readEnd, 10), b"")


class ReaderWriterTests(RealStdioTestCase):
    """
    L{Reader} and L{Writer} under the real reactor.
    """

    async def test_copyInOrder(self) -> None:
        """
        A Reader copies everything to its Writer in order, and the end of
        its input reaches the far end.
        """
        sourceRead, sourceWrite = (self.fds.release(fd) for fd in self.pipe())
        sinkRead, sinkWrite = self.pipe()
        self.fds.release(sinkWrite)
        data = Pattern()(3 * 1024 * 1024 + 17)
        source = Writer(self.reactor, sourceWrite)
        writer = Writer(self.reactor, sinkWrite)
        Reader(self.reactor, sourceRead, writer)
        collector = self.collect(sinkRead)
        source.write(data)
        source.loseConnection()
        self.assertEqual(await collector.closed, data)
        await writer.finished
        await source.finished
        await self.assertNoLeaks()

    async def test_slowReader(self) -> None:
        """
        Under the real reactor, a Writer whose descriptor nobody drains
        pauses its Reader with its buffer bounded; once the far end reads,
        everything arrives in order.
        """
        sourceRead, sourceWrite = (self.fds.release(fd) for fd in self.pipe())
        sinkRead, sinkWrite = self.pipe()
        self.fds.release(sinkWrite)
        data = Pattern()(2 * 1024 * 1024)
        source = Writer(self.reactor, sourceWrite)
        writer = Writer(self.reactor, sinkWrite)
        sizes: list[int] = []
        write = writer.write

        def recordingWrite(chunk: bytes) -> None:
            write(chunk)
            sizes.append(buffered(writer))

        writer.write = recordingWrite  # type: ignore[method-assign, assignment]
        reader = Reader(self.reactor, sourceRead, writer)
        source.write(data)
        source.loseConnection()
        await self.waitUntil(
            lambda: writer.producerPaused and reader not in self.reactor.getReaders(),
            "the reader is paused",
        )
        self.assertLessEqual(max(sizes), writer.bufferSize + CHUNK)
        collector = self.collect(sinkRead)
        self.assertEqual(await collector.closed, data)
        self.assertLessEqual(max(sizes), writer.bufferSize + CHUNK)
        await self.assertNoLeaks()


class FifoTests(SynchronousTestCase):
    """
    L{openFifoForWriting} and L{openFifoForReading}: the shim's own ends of
    the client's fifos.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "fifo")
        os.mkfifo(self.path)
        self.fds = Descriptors()
        self.addCleanup(self.fds.closeAll)

    def open(self, flags: int) -> int:
        return self.fds.track(os.open(self.path, flags | os.O_NONBLOCK | os.O_CLOEXEC))

    def assertFlags(self, fd: int, access: int) -> None:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        self.assertEqual(flags & os.O_ACCMODE, access)
        self.assertTrue(flags & os.O_NONBLOCK)
        self.assertTrue(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)

    def test_forWritingWithoutClient(self) -> None:
        """
        L{openFifoForWriting} opens at once though no client reads yet; what
        is written waits in the fifo for a client that comes later, and
        writes go on failing neither while the client is away nor after it
        has gone.
        """
        writer, keep = (self.fds.track(fd) for fd in openFifoForWriting(self.path))
        self.assertFlags(writer, os.O_WRONLY)
        self.assertFlags(keep, os.O_RDONLY)
        os.write(writer, b"early")
        client = self.open(os.O_RDONLY)
        self.assertEqual(os.read(client, 100), b"early")
        self.fds.close(client)
        self.assertEqual(os.write(writer, b"while away"), 10)
        client = self.open(os.O_RDONLY)
        self.assertEqual(os.read(client, 100), b"while away")
        self.fds.close(writer)
        self.assertEqual(os.read(client, 100), b"")

    def test_hasOtherReader(self) -> None:
        """
        L{hasOtherReader} tells whether a client besides the shim has the
        fifo open for reading, leaving the shim's reader as it was (same
        descriptor, reading, non-blocking, close-on-exec) and what the fifo
        holds in it; the shim's writer may be gone already.
        """
        writer, keep = (self.fds.track(fd) for fd in openFifoForWriting(self.path))
        os.write(writer, b"the tail")
        self.fds.close(writer)
        self.assertFalse(hasOtherReader(keep))
        client = self.open(os.O_RDONLY)
        self.assertTrue(hasOtherReader(keep))
        self.fds.close(client)
        self.assertFalse(hasOtherReader(keep))
        self.assertFlags(keep, os.O_RDONLY)
        self.assertEqual(os.read(keep, 100), b"the tail")

    def test_forWritingMissing(self) -> None:
        """
        A missing fifo is an C{OSError}, and nothing is left open.
        """
        before = openFDs()
        self.assertRaises(FileNotFoundError, openFifoForWriting, self.path + "x")
        self.assertEqual(openFDs(), before)

    def test_forReadingKeepAlive(self) -> None:
        """
        The reader from L{openFifoForReading} reaches the end of input only
        once both the client's writer and the shim's keep-alive writer are
        closed, in either order.
        """
        for closeClientFirst in (True, False):
            reader, keepAlive = (
                self.fds.track(fd) for fd in openFifoForReading(self.path)
            )
            self.assertFlags(reader, os.O_RDONLY)
            self.assertFlags(keepAlive, os.O_WRONLY)
            client = self.open(os.O_WRONLY)
            os.write(client, b"input")
            self.assertEqual(os.read(reader, 100), b"input")
            first, second = (
                (client, keepAlive) if closeClientFirst else (keepAlive, client)
            )
            self.fds.close(first)
            self.assertRaises(BlockingIOError, os.read, reader, 100)
            self.fds.close(second)
            self.assertEqual(os.read(reader, 100), b"")
            self.fds.close(reader)

    def test_forReadingBeforeClient(self) -> None:
        """
        The keep-alive lets the copy start before the client opens its
        writer: no end of input meanwhile.
        """
        reader, _keepAlive = (
            self.fds.track(fd) for fd in openFifoForReading(self.path)
        )
        self.assertRaises(BlockingIOError, os.read, reader, 100)

    def test_forReadingMissing(self) -> None:
        """
        A missing fifo is an C{OSError}, and nothing is left open.
        """
        before = openFDs()
        self.assertRaises(FileNotFoundError, openFifoForReading, self.path + "x")
        self.assertEqual(openFDs(), before)


class CreateIOTests(TestCase):
    """
    L{createIO} chooses the mode from the stdout string. (A L{TestCase}: a
    console socket's close completes under the reactor.)
    """

    def setUp(self) -> None:
        self.reactor = realReactor()
        self.spawned: list[Any] = []

    def spawn(self, *args: Any) -> None:
        self.spawned.append(args)

    def create(self, stdin: str, stdout: str, stderr: str, terminal: bool) -> Any:
        io = createIO(
            self.reactor, self.spawn, "c1", "ns", stdin, stdout, stderr, terminal
        )
        self.addCleanup(io.close)
        return io

    def test_null(self) -> None:
        """
        With no stdio at all, runc gets C{/dev/null} for its fds 0-2.
        """
        io = self.create("", "", "", False)
        self.assertIsInstance(io, NullIO)
        for fd in (0, 1, 2):
            self.assertEqual(
                os.readlink(f"/proc/self/fd/{io.runcStdio[fd]}"), "/dev/null"
            )
        self.assertIsNone(io.consoleSocket)

    def test_providesIProcessIO(self) -> None:
        """
        Each mode's stdio, and the task tests' fake, provide L{IProcessIO}.
        """
        for stdout in ("", "file:///run/none/log", "binary:///bin/logger?k=v"):
            self.assertTrue(
                verifyObject(IProcessIO, self.create("", stdout, "", False))
            )
        fake = FakeIO("", "", "", False, 0, 0)
        self.assertTrue(verifyObject(IProcessIO, fake))

    def test_pipes(self) -> None:
        """
        A path, or a C{fifo://} URI, means pipes.
        """
        self.assertIsInstance(self.create("/i", "/o", "/e", False), PipeIO)
        self.assertIsInstance(
            self.create("fifo:///i", "fifo:///o", "fifo:///e", False), PipeIO
        )
        self.assertIsInstance(self.create("", "file:///o", "", False), PipeIO)

    def test_binary(self) -> None:
        """
        A C{binary://} URI means a logging binary, started only when
        prepared.
        """
        io = self.create("", "binary:///bin/logger?a=b", "", False)
        self.assertIsInstance(io, BinaryIO)
        self.assertEqual(self.spawned, [])

    def test_terminal(self) -> None:
        """
        A terminal means a console socket, whatever the stdout string.
        """
        io = self.create("/i", "/o", "", True)
        self.assertIsInstance(io, ConsoleIO)
        self.assertIsNotNone(io.consoleSocket)
        io = self.create("", "binary:///bin/logger", "", True)
        self.assertIsInstance(io, ConsoleIO)

    def test_unknownScheme(self) -> None:
        """
        Any other scheme is refused with the Go shim's text.
        """
        error = self.assertRaises(
            StdioError,
            createIO,
            self.reactor,
            self.spawn,
            "c1",
            "ns",
            "",
            "tcp://host:1",
            "",
            False,
        )
        self.assertEqual(str(error), "unknown STDIO scheme tcp")


class PipeIOTests(RealStdioTestCase):
    """
    L{PipeIO}, with the container played by the test: it takes runc's
    descriptors, and the client's fifos are read and written by the test.
    Time is a L{Clock}: a wait for the output ends because it was drained,
    never because its timeout passed.
    """

    def makePipeIO(self, stdin: str, stdout: str, stderr: str, **kw: Any) -> PipeIO:
        io = PipeIO(self.clocked, stdin, stdout, stderr, **kw)
        self.addCleanup(io.close)
        return io

    async def test_endToEnd(self) -> None:
        """
        The container's stdout and stderr reach the client's fifos, and the
        client's stdin reaches the container, which sees the end of its input
        only once C{CloseIO} has closed the shim's keep-alive too; output is
        drained once the container's ends are closed, and L{ProcessIO.close}
        closes every descriptor.
        """
        stdinPath = self.fifo("stdin")
        stdoutPath = self.fifo("stdout")
        stderrPath = self.fifo("stderr")
        io = PipeIO(self.clocked, stdinPath, stdoutPath, stderrPath)
        containerIn, containerOut, containerErr = (
            self.dup(io.runcStdio[fd]) for fd in (0, 1, 2)
        )
        io.spawned()
        await io.attach()
        clientOut = self.collect(self.openClient(stdoutPath, os.O_RDONLY))
        clientErr = self.collect(self.openClient(stderrPath, os.O_RDONLY))
        clientIn = self.openClient(stdinPath, os.O_WRONLY)
        containerStdin = self.collect(containerIn)

        os.write(containerOut, b"to stdout\n")
        os.write(containerErr, b"to stderr\n")
        os.write(clientIn, b"from the client\n")
        self.assertEqual(await clientOut.waitFor(10), b"to stdout\n")
        self.assertEqual(await clientErr.waitFor(10), b"to stderr\n")
        self.assertEqual(await containerStdin.waitFor(16), b"from the client\n")

        self.fds.close(clientIn)
        self.assertNoResult(containerStdin.closed)
        io.closeStdin()
        self.assertEqual(await containerStdin.closed, b"from the client\n")

        drained = io.waitDrained(5.0)
        os.write(containerOut, b"more")
        self.fds.close(containerOut)
        self.fds.close(containerErr)
        self.assertEqual(await clientOut.closed, b"to stdout\nmore")
        self.assertEqual(await clientErr.closed, b"to stderr\n")
        # Read empty by the client: delivered, at the next look.
        self.clock.advance(DRAIN_TICK)
        await drained
        self.assertEqual(self.clock.getDelayedCalls(), [])
        await io.close()
        await self.assertNoLeaks()

    async def test_stdinBeforeClient(self) -> None:
        """
        Closing the keep-alive before the client ever opened its writer ends
        the container's input at once.
        """
        io = self.makePipeIO(self.fifo("stdin"), "", "")
        containerIn = self.dup(io.runcStdio[0])
        io.spawned()
        await io.attach()
        io.closeStdin()
        self.assertEqual(await self.collect(containerIn).closed, b"")

    async def test_waitDrainedUnread(self) -> None:
        """
        L{ProcessIO.waitDrained} waits until the client has read the fifo
        empty, not only until the copy has written everything to it: the
        client may close the fifo as soon as the exit is reported.
        """
        stdoutPath = self.fifo("stdout")
        io = self.makePipeIO("", stdoutPath, "")
        containerOut = self.dup(io.runcStdio[1])
        io.spawned()
        await io.attach()
        client = self.openClient(stdoutPath, os.O_RDONLY)
        os.write(containerOut, b"the tail")
        self.fds.close(containerOut)
        drained = io.waitDrained(2.0)
        await self.waitUntil(
            lambda: io._copies[0].consumer.finished.called, "the copy to finish"
        )
        self.clock.advance(DRAIN_TICK)
        self.assertNoResult(drained)
        self.assertEqual(readAll(client), b"the tail")
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(drained))

    async def test_waitDrainedNoProgress(self) -> None:
        """
        A background process holding the container's stdout open, writing
        nothing, holds up L{ProcessIO.waitDrained} for L{DRAIN_IDLE} seconds
        only, after which it fires with L{None}; the output copied so far
        has reached the client, and the abandoned wait leaves no error
        behind.
        """
        clock = self.clock
        stdoutPath = self.fifo("stdout")
        io = PipeIO(self.clocked, "", stdoutPath, "")
        containerOut = self.dup(io.runcStdio[1])
        background = self.dup(containerOut)
        io.spawned()
        await io.attach()
        client = self.collect(self.openClient(stdoutPath, os.O_RDONLY))
        os.write(containerOut, b"partial")
        self.fds.close(containerOut)
        self.assertEqual(await client.waitFor(7), b"partial")
        drained = io.waitDrained(2.0)
        clock.pump([DRAIN_TICK] * int(DRAIN_IDLE / DRAIN_TICK - 1))
        self.assertNoResult(drained)
        clock.pump([DRAIN_TICK] * 2)
        self.assertIsNone(self.successResultOf(drained))
        self.fds.close(background)
        await io.close()
        self.assertEqual(await client.closed, b"partial")
        del io, drained
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])
        await self.assertNoLeaks()

    async def test_fileScheme(self) -> None:
        """
        With C{file:///path}, stdout and stderr are both appended to the
        file, which is created 0644 in a directory created 0755; the stderr
        URI is ignored.
        """
        path = os.path.join(self.directory, "logs", "out.log")
        errPath = os.path.join(self.directory, "err.log")
        io = PipeIO(self.clocked, "", f"file://{path}", f"file://{errPath}")
        containerOut = self.dup(io.runcStdio[1])
        containerErr = self.dup(io.runcStdio[2])
        io.spawned()
        await io.attach()
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o755)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)

        def contents() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        os.write(containerOut, b"to-out\n")
        await self.waitUntil(lambda: contents() == b"to-out\n", "stdout written")
        os.write(containerErr, b"to-err\n")
        self.fds.close(containerOut)
        self.fds.close(containerErr)
        await io.waitDrained(5.0)
        self.assertEqual(contents(), b"to-out\nto-err\n")
        self.assertFalse(os.path.exists(errPath))
        await io.close()
        await self.assertNoLeaks()

    async def test_fileSchemeAppends(self) -> None:
        """
        A C{file://} target that exists is appended to.
        """
        path = os.path.join(self.directory, "out.log")
        with open(path, "wb") as f:
            f.write(b"before\n")
        io = self.makePipeIO("", f"file://{path}", "")
        containerOut = self.dup(io.runcStdio[1])
        io.spawned()
        await io.attach()
        os.write(containerOut, b"after\n")
        self.fds.close(containerOut)
        await io.waitDrained(5.0)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"before\nafter\n")

    async def test_regularFile(self) -> None:
        """
        A stdout or stderr path that is a regular file, not a fifo, is
        appended to; stdout and stderr naming the same file share it.
        """
        path = os.path.join(self.directory, "out")
        with open(path, "wb") as f:
            f.write(b"0\n")
        io = PipeIO(self.clocked, "", path, path)
        containerOut = self.dup(io.runcStdio[1])
        containerErr = self.dup(io.runcStdio[2])
        io.spawned()
        await io.attach()
        os.write(containerOut, b"1\n")
        self.fds.close(containerOut)
        await self.waitUntil(lambda: os.path.getsize(path) == 4, "stdout written")
        os.write(containerErr, b"2\n")
        self.fds.close(containerErr)
        await io.waitDrained(5.0)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"0\n1\n2\n")
        await io.close()
        await self.assertNoLeaks()

    async def test_missingFile(self) -> None:
        """
        A stdout path that is neither a fifo nor an existing file fails
        L{PipeIO.attach} with the Go shim's text, and closing leaks nothing.
        """
        path = os.path.join(self.directory, "missing")
        io = PipeIO(self.clocked, "", path, "")
        io.spawned()
        error = self.assertRaises(StdioError, io.attach)
        self.assertIn(f"containerd-shim: opening file {path!r} failed", str(error))
        await io.close()
        await self.assertNoLeaks()

    async def test_missingStdinFifo(self) -> None:
        """
        A stdin fifo that does not exist fails L{PipeIO.attach}; what was
        already opened for stdout is closed by L{ProcessIO.close}.
        """
        io = PipeIO(
            self.clocked,
            os.path.join(self.directory, "missing"),
            self.fifo("stdout"),
            self.fifo("stderr"),
        )
        io.spawned()
        self.assertRaises(StdioError, io.attach)
        await io.close()
        await self.assertNoLeaks()

    def test_missingStreams(self) -> None:
        """
        An empty stdin, stdout or stderr string gives runc C{/dev/null} for
        that stream, and pipes only for the others.
        """
        io = self.makePipeIO("", self.fifo("stdout"), "")
        self.assertEqual(os.readlink(f"/proc/self/fd/{io.runcStdio[0]}"), "/dev/null")
        self.assertEqual(os.readlink(f"/proc/self/fd/{io.runcStdio[2]}"), "/dev/null")
        self.assertTrue(stat.S_ISFIFO(os.fstat(io.runcStdio[1]).st_mode))
        self.assertEqual(
            fcntl.fcntl(io.runcStdio[1], fcntl.F_GETFL) & os.O_ACCMODE, os.O_WRONLY
        )
        io = self.makePipeIO(self.fifo("stdin"), "", "")
        self.assertEqual(
            fcntl.fcntl(io.runcStdio[0], fcntl.F_GETFL) & os.O_ACCMODE, os.O_RDONLY
        )
        self.assertEqual(os.readlink(f"/proc/self/fd/{io.runcStdio[1]}"), "/dev/null")

    def test_ioOwner(self) -> None:
        """
        C{io_uid} and C{io_gid} own the container's ends of the pipes (a
        pipe's two ends share one inode, so the shim's ends show the same
        owner).
        """
        if os.getuid() != 0:
            raise SkipTest("changing a descriptor's owner needs root")
        io = self.makePipeIO(
            self.fifo("stdin"),
            self.fifo("stdout"),
            self.fifo("stderr"),
            ioUID=1234,
            ioGID=5678,
        )
        for fd in (0, 1, 2):
            info = os.fstat(io.runcStdio[fd])
            self.assertEqual((info.st_uid, info.st_gid), (1234, 5678))

    async def test_closeIdempotent(self) -> None:
        """
        L{ProcessIO.close} may be called again, and closes each descriptor
        once.
        """
        io = PipeIO(self.clocked, self.fifo("stdin"), self.fifo("stdout"), "")
        io.spawned()
        await io.attach()
        await io.close()
        await io.close()
        await self.assertNoLeaks()

    async def test_closeBeforeAttach(self) -> None:
        """
        A L{PipeIO} closed without ever being attached (runc failed) closes
        all its descriptors.
        """
        io = PipeIO(self.clocked, self.fifo("stdin"), self.fifo("stdout"), "x")
        await io.close()
        await self.assertNoLeaks()


class FakeReader:
    """
    The reading side of a copy, as L{OutputCopy} sees it.
    """

    def __init__(self) -> None:
        self.moved = 0
        self.endedBy = "end of file"


class FakeConsumer:
    """
    The writing side of a copy, as L{OutputCopy} sees it.
    """

    def __init__(self) -> None:
        self.moved = 0
        self.finished: Deferred[None] = Deferred()


class WaitDrainedTests(SynchronousTestCase):
    """
    L{ProcessIO.waitDrained} on its own, with a L{Clock}, fake copies, and
    a real pipe standing for a client's fifo.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.io = ProcessIO(self.clock, "", "", "")
        self.fds = Descriptors()
        self.addCleanup(self.fds.closeAll)

    def addCopy(self, fifo: bool = False) -> tuple[FakeReader, FakeConsumer, int]:
        """
        Give the process an output copy.

        @return: its reader, its consumer and (with C{fifo}) the write end
            of the pipe whose read end is the shim's reader of the fifo,
            else -1.
        """
        reader, consumer = FakeReader(), FakeConsumer()
        fifoReader, writeEnd = None, -1
        if fifo:
            readEnd, writeEnd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            fifoReader = self.fds.track(readEnd)
            self.fds.track(writeEnd)
        copy = OutputCopy(reader, consumer, fifoReader)  # type: ignore[arg-type]
        self.io._copies.append(copy)
        return reader, consumer, writeEnd

    def test_nothingToDrain(self) -> None:
        """
        Without copies, it fires at once.
        """
        self.assertIsNone(self.successResultOf(self.io.waitDrained(1.0)))

    def test_finished(self) -> None:
        """
        It fires as soon as every copy to a file or pipe has finished, not
        before, and leaves no call behind.
        """
        copies = [self.addCopy(), self.addCopy()]
        drained = self.io.waitDrained(2.0)
        copies[0][1].finished.callback(None)
        self.assertNoResult(drained)
        copies[1][1].finished.callback(None)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deliveredOnce(self) -> None:
        """
        Once a wait has seen the output delivered, a later one (at delete,
        after the one at exit) fires at once, looks at nothing and logs
        nothing; after a wait given up, a later one waits again.
        """
        _, consumer, shimEnd = self.addCopy(fifo=True)
        os.write(shimEnd, b"x")
        consumer.finished.callback(None)
        first = self.io.waitDrained(2.0, idle=DRAIN_TICK)
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(first))
        again = self.io.waitDrained(2.0)
        self.assertNoResult(again)
        readEnd = self.io._copies[0].fifoReader
        assert readEnd is not None
        os.read(readEnd, 1)
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(again))
        logged = EventLoggingObserver()
        globalLogPublisher.addObserver(logged)
        self.addCleanup(globalLogPublisher.removeObserver, logged)
        self.assertIsNone(self.successResultOf(self.io.waitDrained(2.0)))
        self.assertEqual(len(logged), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fifoReadEmpty(self) -> None:
        """
        A copy to a fifo has delivered once it has finished and the client
        has read the fifo empty: while the client reads, the wait goes on
        however long it takes (below the bound); it ends on the tick after
        the last byte was read.
        """
        _, consumer, shimEnd = self.addCopy(fifo=True)
        os.write(shimEnd, b"x" * 1000)
        consumer.moved = 1000
        consumer.finished.callback(None)
        drained = self.io.waitDrained(2.0)
        readEnd = self.io._copies[0].fifoReader
        assert readEnd is not None
        for _ in range(50):
            os.read(readEnd, 10)
            self.clock.advance(DRAIN_TICK)
        self.assertNoResult(drained)
        os.read(readEnd, 1000)
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noProgress(self) -> None:
        """
        When nothing moves (nobody reads the fifo, which stays full, so the
        copy cannot finish), it gives up L{DRAIN_IDLE} seconds after it
        began: within 0.1 s of the exit.
        """
        _, consumer, shimEnd = self.addCopy(fifo=True)
        os.write(shimEnd, b"never read")
        drained = self.io.waitDrained(2.0)
        self.clock.pump([DRAIN_TICK] * int(DRAIN_IDLE / DRAIN_TICK - 1))
        self.assertNoResult(drained)
        self.clock.pump([DRAIN_TICK] * 2)
        self.assertIsNone(self.successResultOf(drained))
        self.assertLessEqual(self.clock.seconds(), 0.1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(consumer.finished)

    def test_progressHolds(self) -> None:
        """
        Bytes still read from the process, or written to the fifo, hold the
        wait; once they stop, it ends L{DRAIN_IDLE} seconds later.
        """
        reader, consumer, _ = self.addCopy(fifo=True)
        drained = self.io.waitDrained(2.0)
        for step in range(100):
            if step % 2:
                reader.moved += 100
            else:
                consumer.moved += 100
            self.clock.advance(DRAIN_TICK)
        self.assertNoResult(drained)
        stopped = self.clock.seconds()
        firedAt: list[float] = []
        drained.addCallback(lambda _: firedAt.append(self.clock.seconds()))
        self.clock.pump([DRAIN_TICK] * int(DRAIN_IDLE / DRAIN_TICK + 3))
        [fired] = firedAt
        self.assertGreaterEqual(fired - stopped, DRAIN_IDLE - DRAIN_TICK / 2)
        self.assertLess(fired - stopped, DRAIN_IDLE + 1.5 * DRAIN_TICK)

    def firedAt(self, drained: Deferred[None], limit: float) -> float:
        """
        Look every L{DRAIN_TICK} until C{drained} fires, at most until
        C{limit}.

        @return: when it fired, by the clock.
        """
        fired: list[float] = []
        drained.addCallback(lambda _: fired.append(self.clock.seconds()))
        while not fired and self.clock.seconds() < limit:
            self.clock.advance(DRAIN_TICK)
        [at] = fired
        return at

    def clientReader(self) -> int:
        """
        Open a reader of the copy's fifo besides the shim's: a client that
        has it open.
        """
        readEnd = self.io._copies[0].fifoReader
        assert readEnd is not None
        return self.fds.track(
            os.open(f"/proc/self/fd/{readEnd}", os.O_RDONLY | os.O_NONBLOCK)
        )

    def test_stalledClient(self) -> None:
        """
        While a client has the fifo open and output in it still to read,
        the wait allows L{CLIENT_STALL} seconds without progress (a client
        the machine's load keeps from running), not only L{DRAIN_IDLE}.
        """
        _, consumer, shimEnd = self.addCopy(fifo=True)
        client = self.clientReader()
        os.write(shimEnd, b"x" * 1000)
        consumer.moved = 1000
        consumer.finished.callback(None)
        drained = self.io.waitDrained(5.0)
        self.clock.advance(DRAIN_TICK)
        self.assertEqual(os.read(client, 100), b"x" * 100)
        self.clock.advance(DRAIN_TICK)
        tookAt = self.clock.seconds()
        fired = self.firedAt(drained, 5.0)
        self.assertGreaterEqual(fired - tookAt, CLIENT_STALL - DRAIN_TICK / 2)
        self.assertLess(fired - tookAt, CLIENT_STALL + 1.5 * DRAIN_TICK)

    def test_goneClient(self) -> None:
        """
        A fifo whose client is gone (no reader but the shim's) is waited for
        L{DRAIN_IDLE} seconds only, however much it holds; what it holds is
        kept.
        """
        _, _, shimEnd = self.addCopy(fifo=True)
        self.fds.close(self.clientReader())
        os.write(shimEnd, b"never read")
        drained = self.io.waitDrained(5.0)
        fired = self.firedAt(drained, 5.0)
        self.assertLess(fired, DRAIN_IDLE + 1.5 * DRAIN_TICK)
        readEnd = self.io._copies[0].fifoReader
        assert readEnd is not None
        self.assertEqual(os.read(readEnd, 100), b"never read")

    def test_emptyFifoStalls(self) -> None:
        """
        With its fifo read empty, a copy that makes no progress (a
        background child holds the output open) is given up L{DRAIN_IDLE}
        seconds after it last moved, though a client has the fifo open.
        """
        self.addCopy(fifo=True)
        self.clientReader()
        drained = self.io.waitDrained(5.0)
        fired = self.firedAt(drained, 5.0)
        self.assertLess(fired, DRAIN_IDLE + 1.5 * DRAIN_TICK)

    def test_starvedShim(self) -> None:
        """
        A shim kept from running for longer than L{DRAIN_IDLE} (a loaded
        machine) has not seen its copies stall: the late look counts as
        one, and the wait goes on until enough looks in a row saw nothing
        move.
        """
        reader, _, _ = self.addCopy()
        drained = self.io.waitDrained(5.0)
        self.clock.advance(1.0)
        self.assertNoResult(drained)
        reader.moved += 1
        self.clock.pump([DRAIN_TICK] * int(DRAIN_IDLE / DRAIN_TICK))
        self.assertNoResult(drained)
        self.clock.pump([DRAIN_TICK] * 2)
        self.assertIsNone(self.successResultOf(drained))

    def test_bound(self) -> None:
        """
        A copy that keeps moving (a background child writing on) holds the
        wait for C{timeout} seconds at most; the copy's own Deferred is left
        alone and fires later, without error.
        """
        reader, consumer, _ = self.addCopy()
        drained = self.io.waitDrained(2.0)
        while self.clock.seconds() < 2.0 - DRAIN_TICK / 2:
            self.assertNoResult(drained)
            reader.moved += 1
            self.clock.advance(DRAIN_TICK)
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        consumer.finished.callback(None)
        self.assertIsNone(self.successResultOf(consumer.finished))

    def test_closed(self) -> None:
        """
        Closing the stdio ends the wait on the next look.
        """
        reader, _, _ = self.addCopy()
        drained = self.io.waitDrained(2.0)
        reader.moved += 1
        self.io.close()
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(drained))

    def drainWait(self, timeout: float) -> tuple[DrainWait, EventLoggingObserver]:
        """
        Wait for the copies' output directly, to see why the wait ends.

        @return: the wait and the log events it emits.
        """
        logged = EventLoggingObserver()
        globalLogPublisher.addObserver(logged)
        self.addCleanup(globalLogPublisher.removeObserver, logged)
        wait = DrainWait(
            self.clock, lambda: False, self.io._copies, timeout, DRAIN_IDLE
        )
        return wait, logged

    def test_delivered(self) -> None:
        """
        Output that reached its client ends the wait without a reason, and
        with a debug line counting what was copied.
        """
        reader, consumer, _ = self.addCopy()
        reader.moved = consumer.moved = 1000
        wait, logged = self.drainWait(2.0)
        consumer.finished.callback(None)
        self.assertIsNone(wait.gaveUp)
        [event] = logged
        self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual((event["read"], event["written"]), (1000, 1000))
        self.assertEqual(event["endings"], "end of file")

    def test_givenUpWhy(self) -> None:
        """
        A wait given up says why, and logs it: as information when the
        output merely stopped moving, as a warning when a client still had
        output to read or time ran out; the line counts what was left.
        """
        _, _, shimEnd = self.addCopy(fifo=True)
        wait, logged = self.drainWait(5.0)
        self.firedAt(wait.done, 5.0)
        self.assertEqual(wait.gaveUp, "stalled")
        self.assertEqual(logged[-1]["log_level"], LogLevel.info)

        self.clientReader()
        os.write(shimEnd, b"x" * 10)
        wait, logged = self.drainWait(5.0)
        self.firedAt(wait.done, 5.0)
        self.assertEqual(wait.gaveUp, "client stalled")
        self.assertEqual(logged[-1]["log_level"], LogLevel.warn)
        self.assertEqual((logged[-1]["unread"], logged[-1]["finished"]), (10, 0))

        reader, _, _ = self.addCopy()
        wait, logged = self.drainWait(0.5)
        while not wait.done.called:
            reader.moved += 1
            self.clock.advance(DRAIN_TICK)
        self.assertEqual(wait.gaveUp, "timed out")
        self.assertEqual(logged[-1]["log_level"], LogLevel.warn)


class BinaryIOTests(RealStdioTestCase):
    """
    L{BinaryIO}, with a real logging binary.
    """

    LOGGER = """#!/bin/sh
d=$(dirname "$0")
tr '\\0' '\\n' < /proc/$$/environ > "$d/env"
for a in "$@"; do printf '[%s]\\n' "$a"; done > "$d/args"
trap 'echo TERM > "$d/term"; kill $sleeper; exit 0' TERM
exec 5>&-
cat <&3 > "$d/out" &
cat <&4 > "$d/err" &
exec 3<&- 4<&-
sleep 1000 &
sleeper=$!
wait
"""

    def read(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    async def test_logger(self) -> None:
        """
        The logging binary gets the container's stdout on its fd 3 and
        stderr on its fd 4, the query as arguments (a key without a value
        gets an empty one), only C{CONTAINER_ID} and C{CONTAINER_NAMESPACE}
        as its environment; it is ready when it closes its fd 5, and
        L{ProcessIO.close} stops it with C{SIGTERM}.
        """
        script = os.path.join(self.directory, "logger.sh")
        with open(script, "w") as f:
            f.write(self.LOGGER)
        os.chmod(script, 0o755)
        io = createIO(
            self.reactor,
            reactorSpawner(self.reactor),
            "c1",
            "ns1",
            "",
            f"binary://{script}?-x=1&y",
            "",
            False,
        )
        assert isinstance(io, BinaryIO)
        await io.prepare()
        containerOut = self.dup(io.runcStdio[1])
        containerErr = self.dup(io.runcStdio[2])
        self.assertEqual(os.readlink(f"/proc/self/fd/{io.runcStdio[0]}"), "/dev/null")
        io.spawned()
        await io.attach()
        self.assertEqual(self.read("args"), b"[-x]\n[1]\n[y]\n[]\n")
        self.assertEqual(
            sorted(self.read("env").split()),
            [b"CONTAINER_ID=c1", b"CONTAINER_NAMESPACE=ns1"],
        )
        os.write(containerOut, b"out line\n")
        os.write(containerErr, b"err line\n")
        self.fds.close(containerOut)
        self.fds.close(containerErr)
        await self.waitUntil(
            lambda: (
                self.read("out") == b"out line\n" and self.read("err") == b"err line\n"
            ),
            "the logger wrote its files",
        )
        await io.waitDrained(1.0)
        self.assertEqual(self.read("term"), b"")
        await io.close()
        self.assertEqual(self.read("term"), b"TERM\n")
        await self.assertNoLeaks()

    async def test_missingLogger(self) -> None:
        """
        A logging binary that cannot be started fails C{prepare} with a
        L{StdioError}, leaves no reader of its ready pipe in the reactor, and
        closing leaks nothing.
        """
        io = createIO(
            self.reactor,
            reactorSpawner(self.reactor),
            "c1",
            "ns1",
            "",
            f"binary://{self.directory}/missing?a=b",
            "",
            False,
        )
        readers = set(self.reactor.getReaders())
        self.assertRaises(StdioError, io.prepare)
        self.assertEqual(set(self.reactor.getReaders()), readers)
        await io.close()
        await self.assertNoLeaks()


class ConsoleIOTests(RealStdioTestCase):
    """
    L{ConsoleIO}: runc's side of the console socket played by the test,
    which makes a pty and sends its master as runc does.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        # Twisted keeps a descriptor in reserve from its first listening
        # port on: let it be taken before counting.
        port = self.reactor.listenUNIX(
            os.path.join(self.directory, "warm.sock"), Factory()
        )
        await port.stopListening()
        self.fdsBefore = openFDs()

    def sendMaster(self, path: str) -> tuple[int, int]:
        """
        Make a pty, send its master over the console socket at C{path} with
        C{SCM_RIGHTS} as runc does (one message: the terminal's name, and
        the master as ancillary data), and hang up.

        @return: the test's copy of the master, and the terminal, in raw
            mode.
        """
        master, slave = (self.fds.track(fd) for fd in os.openpty())
        tty.setraw(slave)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(path)
            socket.send_fds(connection, [b"/dev/ptmx"], [master])
        return master, slave

    async def test_console(self) -> None:
        """
        The pty master sent over the console socket is attached: what the
        process writes to its terminal reaches the stdout fifo, the stdin
        fifo reaches the terminal, L{ConsoleIO.resize} sets the window size,
        and the console socket's private directory is removed.
        """
        stdinPath = self.fifo("stdin")
        stdoutPath = self.fifo("stdout")
        io = ConsoleIO(self.reactor, stdinPath, stdoutPath, "")
        assert io.consoleSocket is not None
        socketDirectory = os.path.dirname(io.consoleSocket)
        self.assertEqual(stat.S_IMODE(os.stat(socketDirectory).st_mode), 0o700)
        self.assertTrue(stat.S_ISSOCK(os.stat(io.consoleSocket).st_mode))
        for fd in (0, 1, 2):
            self.assertEqual(
                os.readlink(f"/proc/self/fd/{io.runcStdio[fd]}"), "/dev/null"
            )
        io.spawned()
        master, slave = self.sendMaster(io.consoleSocket)
        await io.attach()
        self.fds.close(master)
        await self.waitUntil(
            lambda: not os.path.exists(socketDirectory), "the directory is removed"
        )

        clientOut = self.collect(self.openClient(stdoutPath, os.O_RDONLY))
        terminal = self.collect(self.dup(slave))
        os.write(slave, b"on the terminal")
        self.assertEqual(await clientOut.waitFor(15), b"on the terminal")
        clientIn = self.openClient(stdinPath, os.O_WRONLY)
        os.write(clientIn, b"typed")
        self.assertEqual(await terminal.waitFor(5), b"typed")

        io.resize(132, 43)
        size = fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8)
        self.assertEqual(struct.unpack("HHHH", size)[:2], (43, 132))

        terminal.stop()
        self.fds.close(slave)
        self.assertEqual(await clientOut.closed, b"on the terminal")
        self.fds.close(clientIn)
        await io.close()
        await self.assertNoLeaks()

    async def test_drainedOnceRead(self) -> None:
        """
        A terminal's output is drained once the process has closed the
        terminal (the master reads C{EIO}), the copy has written all of it
        to the stdout fifo, and the client has read the fifo empty; not
        before, however long the copy takes.
        """
        stdoutPath = self.fifo("stdout")
        io = ConsoleIO(self.clocked, "", stdoutPath, "")
        assert io.consoleSocket is not None
        io.spawned()
        attached = io.attach()
        master, slave = self.sendMaster(io.consoleSocket)
        await attached
        self.fds.close(master)
        client = self.openClient(stdoutPath, os.O_RDONLY)
        drained = io.waitDrained(2.0)
        # More than the fifo holds, written as the terminal takes it.
        size = 96 * 1024
        tail = memoryview(Pattern()(size))
        os.set_blocking(slave, False)
        while tail:
            try:
                tail = tail[os.write(slave, tail[:4096]) :]
            except BlockingIOError:
                pass
            await deferLater(self.reactor, POLL, lambda: None)
        self.fds.close(slave)
        # The client reads slowly, a look of the wait between its reads.
        received = 0
        while received < size - 1024:
            self.assertNoResult(drained)
            self.clock.advance(DRAIN_TICK)
            await deferLater(self.reactor, POLL, lambda: None)
            try:
                received += len(os.read(client, 1024))
            except BlockingIOError:
                pass
        self.assertTrue(io._copies[0].consumer.finished.called)
        self.clock.advance(DRAIN_TICK)
        self.assertNoResult(drained)
        self.assertEqual(len(readAll(client)), size - received)
        self.clock.advance(DRAIN_TICK)
        self.assertIsNone(self.successResultOf(drained))
        self.fds.close(client)
        await io.close()
        await self.assertNoLeaks()

    async def test_closeUnattached(self) -> None:
        """
        A master that runc sent but that was never attached (runc failed
        afterwards) is closed by L{ConsoleIO.close}.
        """
        io = ConsoleIO(self.reactor, "", "", "")
        assert io.consoleSocket is not None
        io.spawned()
        master, slave = self.sendMaster(io.consoleSocket)
        self.fds.close(master)
        self.fds.close(slave)
        received: list[int] = []

        def record(fd: int) -> int:
            received.append(fd)
            return fd

        io._console.received.addCallback(record)
        await self.waitUntil(lambda: bool(received), "the master is received")
        await io.close()
        await self.assertNoLeaks()

    async def test_timeout(self) -> None:
        """
        If runc never sends the master, L{ConsoleIO.attach} fails after
        L{CONSOLE_TIMEOUT} seconds and removes the socket's directory.
        """
        clock = self.clock
        io = ConsoleIO(self.clocked, "", "", "")
        assert io.consoleSocket is not None
        socketDirectory = os.path.dirname(io.consoleSocket)
        attached = io.attach()
        clock.advance(CONSOLE_TIMEOUT - 1)
        self.assertNoResult(attached)
        clock.advance(1)
        self.failureResultOf(attached, TimeoutError)
        await self.waitUntil(
            lambda: not os.path.exists(socketDirectory), "the directory is removed"
        )
        await io.close()
        await self.assertNoLeaks()
