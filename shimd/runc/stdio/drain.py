# -*- test-case-name: tests.test_stdio -*-
"""
Waiting for a process's output to reach its client: the exit-after-output
rule (the README's "Exit after output").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from shimd.interfaces import IOutputSink
from shimd.runc.stdio.fifo import hasOtherReader, unreadBytes
from shimd.runc.stdio.streams import Reader

#: How long a process's output may make no progress (no byte read from the
#: process, written to a fifo or taken from it by the client) before the
#: shim stops waiting for it to reach its reader.
DRAIN_IDLE = 0.08
#: How often a wait for the output looks at its progress.
DRAIN_TICK = 0.01
#: How long the output may make no progress while a client has its fifo
#: open with output in it still to read, before the shim stops waiting for
#: it: longer than L{DRAIN_IDLE}, for a client that the machine's load keeps
#: from running.
CLIENT_STALL = 1.0

log = Logger()


@attr.s(auto_attribs=True)
class OutputCopy:
    """
    One copy of a process's output to where the client reads it.

    @ivar reader: reads the process's end.
    @ivar consumer: writes where the client reads (a fifo, a file, a pipe).
    @ivar fifoReader: the shim's own reader of the fifo the consumer writes,
        through which the bytes the client has yet to read are counted; or
        L{None}. Owned by the process's
        L{shimd.runc.stdio.processio.ProcessIO}.
    """

    reader: Reader
    consumer: IOutputSink
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
        return (self.reader.moved, self.consumer.moved, self.unread())

    def awaited(self) -> bool:
        """
        Whether a client has yet to read some of the output and may still:
        the fifo holds some, and a reader besides the shim's has it open.
        """
        if self.fifoReader is None or not self.unread():
            return False
        return hasOtherReader(self.fifoReader)


class DrainWait:
    """
    A wait for a process's output to reach its client, given up once no
    byte has moved for C{idle} seconds, or after C{timeout} seconds in all.

    Idleness is counted in looks, one every L{DRAIN_TICK} seconds, rather
    than read off the clock: a shim that the machine's load keeps from
    running for a while has not seen its copies stall, and each look comes
    after a turn of the reactor in which they could move.

    A client may be kept from running too: while one has its fifo open and
    output in it still to read, the wait allows L{CLIENT_STALL} seconds
    without progress, also counted in looks. A client that is gone (its
    fifo has no reader but the shim's) is not waited for beyond C{idle}, so
    a task whose client was killed is reported stopped within C{idle}
    seconds of its exit.

    A wait given up while output was still on its way is logged: as a
    warning when a client still had output to read or time ran out (it may
    miss the tail of the output), as information when the output merely
    stopped moving (a background child holding it open, a client gone).

    @ivar done: fires with L{None} when the wait is over.
    @ivar gaveUp: why the wait was given up with output still on its way
        (C{"stalled"}, C{"client stalled"} or C{"timed out"}), or L{None}.
    """

    def __init__(
        self,
        clock: Any,
        closed: Callable[[], bool],
        copies: list[OutputCopy],
        timeout: float,
        idle: float,
    ) -> None:
        """
        @param clock: schedules the looks.
        @param closed: whether the process's stdio has been closed, which
            ends the wait (its fifo readers are gone).
        @param copies: the process's output copies.
        """
        self._clock = clock
        self._closed = closed
        self._copies = copies
        self._idleLooks = max(1, round(idle / DRAIN_TICK))
        self._clientLooks = max(self._idleLooks, round(CLIENT_STALL / DRAIN_TICK))
        self._stillLooks = 0
        self._started = clock.seconds()
        self._deadline = self._started + timeout
        self._progress = self._measure()
        self._call: Any = None
        self.gaveUp: str | None = None
        self.done: Deferred[None] = Deferred()
        for copy in copies:
            _observe(copy.consumer.finished).addCallback(lambda _: self._check())
        self._check()

    def _measure(self) -> list[tuple[int, int, int]]:
        return [copy.progress() for copy in self._copies]

    def _look(self) -> None:
        self._call = None
        if self._closed():
            # Its fifo readers are closed: nothing left to measure.
            self._check()
            return
        progress = self._measure()
        if progress == self._progress:
            self._stillLooks += 1
        else:
            self._progress = progress
            self._stillLooks = 0
        self._check()

    def _stalled(self) -> str | None:
        """
        Whether the output has made no progress for long enough: C{idle}
        seconds of looks, or L{CLIENT_STALL} seconds while a client has yet
        to read some of it.

        @return: which of the two, or L{None} while neither.
        """
        if self._stillLooks < self._idleLooks:
            return None
        if self._stillLooks >= self._clientLooks:
            return "client stalled"
        if any(copy.awaited() for copy in self._copies):
            return None
        return "stalled"

    def _end(self, why: str | None) -> None:
        """
        End the wait, with a warning if output was still on its way, and a
        debug line with what was copied when it all arrived.
        """
        if why is not None:
            self.gaveUp = why
            emit = log.info if why == "stalled" else log.warn
            emit(
                "gave up waiting for a process's output to reach its client"
                " after {seconds:.3f} s ({why}): {finished} of {copies}"
                " copies finished, {unread} bytes unread in the fifos",
                seconds=self._clock.seconds() - self._started,
                why=why,
                finished=sum(bool(c.consumer.finished.called) for c in self._copies),
                copies=len(self._copies),
                unread=sum(c.unread() for c in self._copies),
            )
        elif not self._closed():
            log.debug(
                "a process's output reached its client after {seconds:.3f} s:"
                " {read} bytes read from the process (ended by {endings}),"
                " {written} written",
                seconds=self._clock.seconds() - self._started,
                read=sum(c.reader.moved for c in self._copies),
                endings=", ".join(str(c.reader.endedBy) for c in self._copies),
                written=sum(c.consumer.moved for c in self._copies),
            )
        self.done.callback(None)

    def _check(self) -> None:
        if self.done.called:
            return
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._closed() or all(copy.delivered() for copy in self._copies):
            self._end(None)
            return
        why = self._stalled()
        if why is None and self._clock.seconds() >= self._deadline:
            why = "timed out"
        if why is not None:
            self._end(why)
            return
        self._call = self._clock.callLater(DRAIN_TICK, self._look)


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
