# -*- test-case-name: tests.test_stdio -*-
"""
Opening the client's fifos without waiting for the client, and counting
the bytes it has yet to read from one.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import struct
import termios


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
    keep, writer = _openReaderThenWriter(path)
    return writer, keep


def _openReaderThenWriter(path: str) -> tuple[int, int]:
    """
    Open a fifo for reading, then for writing, both non-blocking: with the
    reader first, neither open waits for the other side.

    @return: the reader and the writer; neither is left open on failure.
    """
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        os.close(reader)
        raise
    return reader, writer


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


def hasOtherReader(reader: int) -> bool:
    """
    Whether a fifo (or pipe) has a reader besides the shim's own, C{reader}:
    a client that still has it open.

    A writer's C{poll} says C{POLLERR} when there is no reader at all, so
    the shim's reader is swapped for a writer of the same fifo while it
    asks (C{dup2} replaces it in place, and the writer keeps what the fifo
    holds), then opened again.

    @return: whether another reader has it open; L{True} when that cannot
        be told.
    """
    try:
        writer = os.open(
            f"/proc/self/fd/{reader}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except OSError:
        return True
    try:
        os.dup2(writer, reader, inheritable=False)
        poller = select.poll()
        poller.register(writer, select.POLLOUT)
        events = sum(event for _, event in poller.poll(0))
        reopened = os.open(
            f"/proc/self/fd/{writer}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        )
        os.dup2(reopened, reader, inheritable=False)
        os.close(reopened)
    except OSError:
        return True
    finally:
        os.close(writer)
    return not events & select.POLLERR


def openFifoForReading(path: str) -> tuple[int, int]:
    """
    Open the stdin fifo: the reader the copy uses, then the shim's
    keep-alive writer, which C{CloseIO} closes.

    @return: the reader and the keep-alive writer.
    """
    return _openReaderThenWriter(path)
