# -*- test-case-name: tests.test_stdio -*-
"""
A container process's stdio: the pipes or pty runc gives the process, and
the copies between them and what containerd asked for (fifos, a file, a
logging binary).

Every descriptor is non-blocking and driven by the reactor. Copies are
producer/consumer pairs: a reader pauses while its writer's buffer is full,
so a slow client holds the container back instead of growing the shim's
memory, and never stalls another container.

The modes, chosen from the C{stdout} string as the Go shim does:
    - all of stdin, stdout and stderr empty: runc gets C{/dev/null};
    - a path (or C{fifo://}): pipes, copied to and from the fifos (or a
      regular file, appended to);
    - C{file:///path}: pipes, stdout and stderr both appended to the file;
    - C{binary:///path?k=v}: pipes whose read ends a logging binary reads;
    - with a terminal: runc sends the pty master over a console socket, and
      it is copied to stdout (stderr is unused).

A fifo the shim writes is opened for reading first, by the shim itself, so
that opening it for writing never waits for the client and writes never
fail while the client is away (containerd restarting): the bytes wait in the
fifo. Through that reader the shim also sees how much the client has yet to
read, and so knows when a process's output has reached the client
(L{ProcessIO.waitDrained}). The stdin fifo gets a writer of the shim's own,
the keep-alive that C{CloseIO} closes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import struct
import tempfile
import termios
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attr
from twisted.internet import abstract, fdesc, main
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IConsumer, IFileDescriptorReceiver
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

CHUNK = 64 * 1024
CONSOLE_TIMEOUT = 30.0
#: How long a process's output may make no progress (no byte read from the
#: process, written to a fifo or taken from it by the client) before the
#: shim stops waiting for it to reach its reader.
DRAIN_IDLE = 0.08
#: How often a wait for the output looks at its progress.
DRAIN_TICK = 0.01
#: How long a client that was taking output from a fifo may stall, while
#: the fifo still holds some, before the shim stops waiting for it: longer
#: than L{DRAIN_IDLE}, for a client that the machine's load keeps from
#: running, and shorter than a human's next command after a client died.
CLIENT_STALL = 0.3
LOGGER_READY_TIMEOUT = 30.0
LOGGER_STOP_TIMEOUT = 12.0

log = Logger()
_APPEND_CREATE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class StdioError(Exception):
    """
    The requested stdio cannot be set up; the message says why.
    """


class Reader(abstract.FileDescriptor):
    """
    Reads a non-blocking descriptor into a consumer, as a streaming producer:
    it stops reading while the consumer's buffer is full.

    At end of input (or C{EIO}, which a pty master gives once the terminal's
    last holder is gone) it closes its descriptor and asks the consumer to
    finish, after writing what it holds.

    @ivar moved: how many bytes it has read.
    """

    def __init__(self, reactor: Any, fd: int, consumer: Any) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._clock = reactor
        self._fd = fd
        self.consumer = consumer
        self.connected = True
        self.moved = 0
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

    def doRead(self) -> object:
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EINTR:
                return None
            if e.errno == errno.EIO:
                return main.CONNECTION_DONE
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.moved += len(data)
        self.consumer.write(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        if self._fd < 0:
            return
        super().connectionLost(reason)
        fd, self._fd = self._fd, -1
        os.close(fd)
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.unregisterProducer()
            consumer.loseConnection()


class Writer(abstract.FileDescriptor):
    """
    Writes to a non-blocking descriptor, buffering at most about
    C{bufferSize} bytes before it pauses its producer.

    @ivar finished: fires once everything written has been flushed and the
        descriptor closed (or when it is lost).
    @ivar moved: how many bytes it has written to its descriptor.
    @ivar movedAt: when it last wrote some, by its reactor's clock.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(fd)
        self._clock = reactor
        self._fd = fd
        self.connected = True
        self.finished: Deferred[None] = Deferred()
        self.moved = 0
        self.movedAt = float("-inf")

    def fileno(self) -> int:
        return self._fd

    def writeSomeData(self, data: bytes) -> int | BaseException:
        written = fdesc.writeToFD(self._fd, data)
        if isinstance(written, int) and written > 0:
            self.moved += written
            self.movedAt = self._clock.seconds()
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


@implementer(IConsumer)
class FileWriter:
    """
    Appends to a regular file (which epoll cannot watch) with plain writes:
    local file writes do not wait on anyone.

    Several producers may share one, as stdout and stderr share a C{file://}
    target; the file is closed when the last of them has finished.
    """

    def __init__(self, fd: int, users: int = 1) -> None:
        self._fd = fd
        self._users = users
        self.finished: Deferred[None] = Deferred()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._fd >= 0:
            try:
                view = view[os.write(self._fd, view) :]
            except InterruptedError:
                continue
            except OSError as e:
                log.error("write to stdio file failed: {error}", error=e)
                return

    def loseConnection(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self.abort()

    def abort(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        if not self.finished.called:
            self.finished.callback(None)


def _abort(consumer: Any) -> None:
    if isinstance(consumer, Writer):
        consumer.abortConnection()
    elif isinstance(consumer, FileWriter):
        consumer.abort()


def isFifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def openFifoForWriting(path: str) -> tuple[int, int]:
    """
    Open a fifo the shim writes to, without waiting for its client: first a
    reader of the shim's own (kept open so that writes never fail while the
    client is away), then the writer.

    @return: the writer and the kept reader.
    """
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(keep)
        raise
    return writer, keep


def unreadBytes(fd: int) -> int:
    """
    How many bytes wait in a pipe or fifo, asked through one of its
    readers (C{FIONREAD}); 0 when it cannot be asked.
    """
    try:
        answer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", answer)[0]
    return count


@attr.s(auto_attribs=True)
class OutputCopy:
    """
    One copy of a process's output to where the client reads it.

    @ivar reader: reads the process's end.
    @ivar consumer: writes where the client reads (a fifo, a file, a pipe).
    @ivar fifoReader: the shim's own reader of the fifo the consumer writes,
        through which the bytes the client has yet to read are counted; or
        L{None}. Owned by the L{ProcessIO}.
    """

    reader: Reader
    consumer: Any
    fifoReader: int | None = None

    def unread(self) -> int:
        """
        How many bytes the copy has written that the client has not read.
        """
        if self.fifoReader is None:
            return 0
        return unreadBytes(self.fifoReader)

    def delivered(self) -> bool:
        """
        Whether the process's output has all reached the client: the copy
        finished, and the fifo read empty.
        """
        return bool(self.consumer.finished.called) and self.unread() == 0

    def progress(self) -> tuple[int, int, int]:
        """
        What changes whenever a byte moves: read from the process, written
        to the fifo, or taken from it by the client.
        """
        return (self.reader.moved, getattr(self.consumer, "moved", 0), self.unread())

    def writtenAt(self) -> float:
        """
        When the copy last wrote where the client reads, by the reactor's
        clock; minus infinity if never, or if it cannot tell.
        """
        movedAt: float = getattr(self.consumer, "movedAt", float("-inf"))
        return movedAt


class _DrainWait:
    """
    A wait for a process's output to reach its client, given up once no
    byte has moved for C{idle} seconds, or after C{timeout} seconds in all.

    Idleness is counted in looks, one every L{DRAIN_TICK} seconds, rather
    than read off the clock: a shim that the machine's load keeps from
    running for a while has not seen its copies stall, and each look comes
    after a turn of the reactor in which they could move.

    A client may stall too, for the same reason, while its fifo still
    holds output: if it took output (the copy wrote to its fifo, or the
    fifo emptied some) less than L{CLIENT_STALL} seconds ago, the wait
    goes on until then. A fifo that nobody reads fills and stops moving
    at once, so a task whose client died is still reported stopped within
    C{idle} seconds of its exit.

    @ivar done: fires with L{None} when the wait is over.
    """

    def __init__(
        self,
        clock: Any,
        io: ProcessIO,
        copies: list[OutputCopy],
        timeout: float,
        idle: float,
    ) -> None:
        self._clock = clock
        self._io = io
        self._copies = copies
        self._idleLooks = max(1, round(idle / DRAIN_TICK))
        self._stillLooks = 0
        self._deadline = clock.seconds() + timeout
        self._progress = self._measure()
        self._clientTookAt = max(copy.writtenAt() for copy in copies)
        self._call: Any = None
        self.done: Deferred[None] = Deferred()
        for copy in copies:
            _observe(copy.consumer.finished).addCallback(lambda _: self._check())
        self._check()

    def _measure(self) -> list[tuple[int, int, int]]:
        return [copy.progress() for copy in self._copies]

    def _look(self) -> None:
        self._call = None
        if self._io.closed:
            # Its fifo readers are closed: nothing left to measure.
            self._check()
            return
        progress = self._measure()
        if progress == self._progress:
            self._stillLooks += 1
        else:
            if any(
                wasUnread + (written - wasWritten) > unread
                for (_, written, unread), (_, wasWritten, wasUnread) in zip(
                    progress, self._progress, strict=True
                )
            ):
                self._clientTookAt = self._clock.seconds()
            self._progress = progress
            self._stillLooks = 0
        self._check()

    def _clientStalled(self) -> bool:
        """
        Whether a client that was taking output may only be stalled: its
        fifo still holds some, and it took some less than L{CLIENT_STALL}
        seconds ago.
        """
        return self._clock.seconds() - self._clientTookAt < CLIENT_STALL and any(
            unread for _, _, unread in self._progress
        )

    def _check(self) -> None:
        if self.done.called:
            return
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if (
            self._io.closed
            or all(copy.delivered() for copy in self._copies)
            or (self._stillLooks >= self._idleLooks and not self._clientStalled())
            or self._clock.seconds() >= self._deadline
        ):
            self.done.callback(None)
            return
        self._call = self._clock.callLater(DRAIN_TICK, self._look)


def openFifoForReading(path: str) -> tuple[int, int]:
    """
    Open the stdin fifo: the reader the copy uses, then the shim's
    keep-alive writer, which C{CloseIO} closes.

    @return: the reader and the keep-alive writer.
    """
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        keepAlive = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(reader)
        raise
    return reader, keepAlive


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
        self._consumers: list[Any] = []
        self._readers: list[Reader] = []
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
            _close(fd)

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
            _close(keepAlive)

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

        @return: a Deferred that fires with L{None}, never failing.
        """
        if not self._copies:
            return succeed(None)
        return _DrainWait(self.reactor, self, self._copies, timeout, idle).done

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
            _abort(consumer)
        self.spawned()
        self.closeStdin()
        fds, self._fds = self._fds, []
        for fd in fds:
            _close(fd)
        return succeed(None)

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

    def _copy(self, fd: int, consumer: Any, fifoReader: int | None = None) -> None:
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


def _observe(deferred: Deferred[None]) -> Deferred[None]:
    """
    A Deferred that fires when C{deferred} does, and whose cancellation
    leaves C{deferred} alone.
    """
    observer: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        if not observer.called:
            observer.callback(None)
        return result

    deferred.addBoth(fire)
    return observer


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class NullIO(ProcessIO):
    """
    No stdio at all: runc gets C{/dev/null}.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, "", "", "")
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ends.append(devnull)
        self.runcStdio = {0: devnull, 1: devnull, 2: devnull}


class PipeIO(ProcessIO):
    """
    Pipes to runc, copied to and from fifos or regular files (or a
    C{file://} target).
    """

    def __init__(
        self,
        reactor: Any,
        stdin: str,
        stdout: str,
        stderr: str,
        ioUID: int = 0,
        ioGID: int = 0,
    ) -> None:
        super().__init__(reactor, stdin, stdout, stderr)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ends.append(devnull)
        self._ours: dict[int, int] = {}
        self._fifoReaders: dict[int, int] = {}
        for number, path in ((0, stdin), (1, stdout), (2, stderr)):
            if path:
                self._ours[number] = self._pipe(containerReads=number == 0)
                self.runcStdio[number] = self._ends[-1]
            else:
                self.runcStdio[number] = devnull
        if ioUID or ioGID:
            for number in self._ours:
                os.fchown(self.runcStdio[number], ioUID, ioGID)
        self._fds.extend(self._ours.values())

    def _outputConsumers(self) -> dict[int, Any]:
        """
        Open what stdout and stderr are copied to.
        """
        scheme = urlsplit(self.stdout).scheme
        if scheme == "file":
            path = unquote(urlsplit(self.stdout).path)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(path, _APPEND_CREATE, 0o644)
            shared = FileWriter(fd, users=len([n for n in (1, 2) if n in self._ours]))
            self._consumers.append(shared)
            return {number: shared for number in (1, 2) if number in self._ours}
        consumers: dict[int, Any] = {}
        files: dict[str, FileWriter] = {}
        for number, path in ((1, self.stdout), (2, self.stderr)):
            if number not in self._ours:
                continue
            path = path.removeprefix("fifo://")
            if isFifo(path):
                writer, keep = openFifoForWriting(path)
                self._fds.append(keep)
                self._fifoReaders[number] = keep
                consumers[number] = Writer(self.reactor, writer)
                # Closed by close() even if opening the next stream fails.
                self._consumers.append(consumers[number])
            elif path in files:
                files[path]._users += 1
                consumers[number] = files[path]
            else:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                except OSError as e:
                    raise StdioError(
                        f"containerd-shim: opening file {path!r} failed: {e}"
                    ) from e
                files[path] = consumers[number] = FileWriter(fd)
                self._consumers.append(files[path])
        return consumers

    def attach(self) -> Deferred[None]:
        try:
            consumers = self._outputConsumers()
            if 0 in self._ours:
                reader, keepAlive = openFifoForReading(
                    self.stdin.removeprefix("fifo://")
                )
                self._keepAlive = keepAlive
        except OSError as e:
            raise StdioError(f"failed to open stdio: {e}") from e
        for number, consumer in consumers.items():
            self._fds.remove(self._ours[number])
            self._copy(self._ours[number], consumer, self._fifoReaders.get(number))
        if 0 in self._ours:
            pipe = self._ours[0]
            self._fds.remove(pipe)
            writer = Writer(self.reactor, pipe)
            self._consumers.append(writer)
            self._readers.append(Reader(self.reactor, reader, writer))
        return succeed(None)


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
            _close(readyWrite)
            _close(devnull)
        for fd in (self._loggerOut, self._loggerErr):
            self._fds.remove(fd)
            _close(fd)
        return self.logger.ready.addTimeout(LOGGER_READY_TIMEOUT, self.reactor)

    def attach(self) -> Deferred[None]:
        if self.stdin and hasattr(self, "_stdinPipe"):
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
        self._readyReader = Reader(reactor, readyFD, _ReadySignal(self.ready))

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
class _ReadySignal:
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


@implementer(IFileDescriptorReceiver)
class _ConsoleReceiver(Protocol):
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
        factory = Factory.forProtocol(lambda: _ConsoleReceiver(received))
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
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._ends.append(devnull)
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
                reader, self._keepAlive = openFifoForReading(
                    self.stdin.removeprefix("fifo://")
                )
                writer = Writer(self.reactor, os.dup(master))
                self._consumers.append(writer)
                self._readers.append(Reader(self.reactor, reader, writer))

        def failed(failure: Failure) -> Failure:
            self._console.close()
            return failure

        return received.addCallbacks(connect, failed)

    def _outputConsumer(self) -> tuple[Any, int | None]:
        """
        Open what the terminal's output is copied to.

        @return: its consumer, and our reader of it when it is a fifo.
        """
        if self._binary is not None:
            return Writer(self.reactor, os.dup(self._binary.outputEnd)), None
        scheme = urlsplit(self.stdout).scheme
        if scheme == "file":
            path = unquote(urlsplit(self.stdout).path)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            return FileWriter(os.open(path, _APPEND_CREATE, 0o644)), None
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
        _close(result)
        return None
    return result


def createIO(
    reactor: Any,
    spawn: Callable[..., Any],
    containerID: str,
    namespace: str,
    stdin: str,
    stdout: str,
    stderr: str,
    terminal: bool,
    ioUID: int = 0,
    ioGID: int = 0,
) -> ProcessIO:
    """
    The stdio a process asked for.

    @param spawn: starts a logging binary (C{reactor.spawnProcess}'s shape).
    @raise StdioError: for an unknown URI scheme.
    """
    scheme = urlsplit(stdout).scheme if "://" in stdout else ""
    if scheme not in ("", "fifo", "file", "binary"):
        raise StdioError(f"unknown STDIO scheme {scheme}")
    binary = None
    if scheme == "binary":
        binary = BinaryIO(
            reactor, spawn, stdin, stdout, stderr, containerID, namespace, terminal
        )
        if not terminal:
            return binary
    if terminal:
        return ConsoleIO(reactor, stdin, stdout, stderr, binary)
    if not (stdin or stdout or stderr):
        return NullIO(reactor)
    return PipeIO(reactor, stdin, stdout, stderr, ioUID, ioGID)
