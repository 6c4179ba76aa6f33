# -*- test-case-name: tests.test_logrus -*-
"""
Tests for L{shimd.shim.logrus}: logrus text lines, written to the shim's log fifo
without ever blocking.
"""

from __future__ import annotations

import os

from twisted.logger import ILogObserver, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from shimd.shim.logrus import LogrusObserver, formatLine, formatTime, quote

FIELDS = {"namespace": "sxref", "pid": "42", "runtime": "io.containerd.pyrunc.v2"}

# 2026-11-28T22:55:36Z; its quarter second is exact in binary.
WHEN = 1795906536.25


def event(message: str = "hello", level: LogLevel = LogLevel.info) -> dict[str, object]:
    return {"log_format": message, "log_level": level, "log_time": WHEN}


class QuoteTests(SynchronousTestCase):
    """
    L{quote} quotes a value with Go escapes.
    """

    def test_plain(self) -> None:
        """
        A plain value is put in double quotes.
        """
        self.assertEqual(quote("starting signal loop"), '"starting signal loop"')
        self.assertEqual(quote(""), '""')

    def test_escapes(self) -> None:
        """
        Backslashes, double quotes, newlines, tabs and carriage returns are
        escaped.
        """
        self.assertEqual(quote('a\\b"c\nd\te\rf'), '"a\\\\b\\"c\\nd\\te\\rf"')

    def test_unicode(self) -> None:
        """
        Other characters are kept.
        """
        self.assertEqual(quote("café ☃"), '"café ☃"')


class FormatTimeTests(SynchronousTestCase):
    """
    L{formatTime} writes RFC 3339 in UTC with nine fractional digits.
    """

    def test_known(self) -> None:
        """
        1795906536.296453174 is 2026-11-28T22:55:36 UTC. As a double it is
        1795906536.29645323753356933..., so its nanoseconds round to
        296453238.
        """
        self.assertEqual(
            formatTime(1795906536.296453174), "2026-11-28T22:55:36.296453238Z"
        )

    def test_exact(self) -> None:
        """
        Short fractions are padded to nine digits.
        """
        self.assertEqual(formatTime(WHEN), "2026-11-28T22:55:36.250000000Z")
        self.assertEqual(formatTime(0.0), "1970-01-01T00:00:00.000000000Z")
        self.assertEqual(formatTime(1.000000001), "1970-01-01T00:00:01.000000001Z")

    def test_noCarry(self) -> None:
        """
        A fraction that rounds up to a whole microsecond stays in its second.
        (1795906536.9999997 is 1795906536.99999976158... as a double.)
        """
        self.assertEqual(
            formatTime(1795906536.9999997), "2026-11-28T22:55:36.999999762Z"
        )

    def test_carry(self) -> None:
        """
        A fraction that rounds to a whole second carries into the seconds.
        """
        self.assertEqual(formatTime(1.9999999999), "1970-01-01T00:00:02.000000000Z")


class FormatLineTests(SynchronousTestCase):
    """
    L{formatLine} makes one logrus text line of an event.
    """

    def test_line(self) -> None:
        """
        Time, level and message, then the fields, then a newline.
        """
        line = formatLine(
            {
                "log_format": "hello {who}",
                "who": "world",
                "log_level": LogLevel.info,
                "log_time": WHEN,
            },
            FIELDS,
        )
        self.assertEqual(
            line,
            'time="2026-11-28T22:55:36.250000000Z" level=info msg="hello world" '
            "namespace=sxref pid=42 runtime=io.containerd.pyrunc.v2\n",
        )

    def test_levels(self) -> None:
        """
        Levels have their logrus names.
        """
        levels = {
            LogLevel.debug: "debug",
            LogLevel.info: "info",
            LogLevel.warn: "warning",
            LogLevel.error: "error",
            LogLevel.critical: "fatal",
        }
        for level, name in levels.items():
            self.assertIn(f" level={name} ", formatLine(event("x", level), {}))

    def test_defaults(self) -> None:
        """
        Without a level the line is at info; without a time, at the epoch.
        """
        self.assertEqual(
            formatLine({"log_format": "x"}, {}),
            'time="1970-01-01T00:00:00.000000000Z" level=info msg="x"\n',
        )

    def test_escapedMessage(self) -> None:
        """
        A message with newlines stays on one line.
        """
        line = formatLine(event("one\ntwo"), {})
        self.assertIn('msg="one\\ntwo"', line)
        self.assertEqual(line.count("\n"), 1)

    def test_failure(self) -> None:
        """
        A failure's traceback follows the message, escaped, on the same line.
        """
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        line = formatLine(
            {
                "log_format": "callback failed",
                "log_level": LogLevel.critical,
                "log_failure": failure,
                "log_time": WHEN,
            },
            {"pid": "42"},
        )
        self.assertTrue(line.endswith(" pid=42\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertIn('msg="callback failed\\nTraceback', line)
        self.assertIn("ZeroDivisionError", line)
        self.assertIn("level=fatal", line)


class ObserverTests(SynchronousTestCase):
    """
    L{LogrusObserver} writes lines to a file descriptor and never blocks.
    """

    def setUp(self) -> None:
        self.readEnd, self.writeEnd = os.pipe()
        self.opened = {self.readEnd, self.writeEnd}
        self.addCleanup(self.closeAll)
        os.set_blocking(self.readEnd, False)
        os.set_blocking(self.writeEnd, False)
        self.observer = LogrusObserver(self.writeEnd, FIELDS)

    def closeAll(self) -> None:
        for fd in list(self.opened):
            self.close(fd)

    def close(self, fd: int) -> None:
        """
        Close one end of the pipe, once: its number may be reused.
        """
        self.opened.discard(fd)
        os.close(fd)

    def read(self) -> bytes:
        """
        Everything the pipe holds.
        """
        chunks = []
        while True:
            try:
                chunk = os.read(self.readEnd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def fill(self) -> int:
        """
        Fill the pipe to the last byte.

        @return: how many bytes it took.
        """
        filled = 0
        for size in (65536, 1):
            while True:
                try:
                    filled += os.write(self.writeEnd, b"x" * size)
                except BlockingIOError:
                    break
        return filled

    def test_interface(self) -> None:
        """
        L{LogrusObserver} is a log observer.
        """
        self.assertTrue(verifyObject(ILogObserver, self.observer))

    def test_writes(self) -> None:
        """
        Each event becomes one line on the descriptor.
        """
        first, second = event("first"), event("second", LogLevel.error)
        self.observer(first)
        self.observer(second)
        self.assertEqual(
            self.read(),
            (formatLine(first, FIELDS) + formatLine(second, FIELDS)).encode(),
        )
        self.assertEqual(self.observer.dropped, 0)

    def test_minimumLevel(self) -> None:
        """
        Events below the minimum level are not written.
        """
        self.observer(event("debugging", LogLevel.debug))
        self.assertEqual(self.read(), b"")
        verbose = LogrusObserver(self.writeEnd, {}, LogLevel.debug)
        verbose(event("debugging", LogLevel.debug))
        self.assertIn(b'msg="debugging"', self.read())
        quiet = LogrusObserver(self.writeEnd, {}, LogLevel.error)
        quiet(event("warning", LogLevel.warn))
        quiet(event("error", LogLevel.error))
        self.assertEqual(
            self.read(), formatLine(event("error", LogLevel.error), {}).encode()
        )

    def test_full(self) -> None:
        """
        While the pipe is full, lines are dropped and counted; once it has
        room, a notice of how many were dropped comes first, then the line.
        """
        filled = self.fill()
        self.observer(event("lost"))
        self.observer(event("lost too"))
        self.assertEqual(self.observer.dropped, 2)
        self.assertEqual(self.read(), b"x" * filled)

        later = event("back")
        later["log_time"] = WHEN + 1
        self.observer(later)
        self.assertEqual(self.observer.dropped, 0)
        self.assertEqual(
            self.read().decode(),
            'time="2026-11-28T22:55:37.250000000Z" level=warning '
            'msg="2 log lines dropped while the log was full" '
            "namespace=sxref pid=42 runtime=io.containerd.pyrunc.v2\n"
            + formatLine(later, FIELDS),
        )

    def test_noticeCounted(self) -> None:
        """
        A line that cannot be written after a drop is counted too.
        """
        self.fill()
        self.observer(event("lost"))
        self.observer(event("lost too"))
        self.assertEqual(self.observer.dropped, 2)
        self.read()
        self.observer(event("back"))
        self.assertIn(b'msg="2 log lines dropped', self.read())

    def test_partialLine(self) -> None:
        """
        A line longer than the room left in the pipe is written in part, and
        completed before anything else, so that lines never interleave.
        """
        filled = self.fill()
        # Make room for one page: less than the long line.
        page = os.sysconf("SC_PAGE_SIZE")
        self.assertEqual(os.read(self.readEnd, page), b"x" * page)
        long = event("y" * (3 * page))
        self.observer(long)
        self.assertEqual(self.observer.dropped, 0)
        first = self.read()
        self.assertEqual(first[: filled - page], b"x" * (filled - page))
        head = first[filled - page :]
        line = formatLine(long, FIELDS).encode()
        self.assertTrue(line.startswith(head))
        self.assertTrue(0 < len(head) < len(line))

        self.observer(event("next"))
        self.assertEqual(
            head + self.read(), line + formatLine(event("next"), FIELDS).encode()
        )
        self.assertEqual(self.observer.dropped, 0)

    def test_partialLineStillFull(self) -> None:
        """
        While the rest of a partly written line cannot be written, further
        lines are dropped and counted, and reported after it.
        """
        filled = self.fill()
        page = os.sysconf("SC_PAGE_SIZE")
        os.read(self.readEnd, page)
        long = event("y" * (3 * page))
        self.observer(long)
        self.observer(event("lost"))
        self.assertEqual(self.observer.dropped, 1)
        head = self.read()[filled - page :]
        self.observer(event("back"))
        lines = (head + self.read()).decode().splitlines(keepends=True)
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], formatLine(long, FIELDS))
        self.assertIn('msg="1 log lines dropped while the log was full"', lines[1])
        self.assertEqual(lines[2], formatLine(event("back"), FIELDS))

    def test_brokenPipe(self) -> None:
        """
        With nobody reading (containerd restarting), EPIPE is swallowed and
        the line counted as dropped.
        """
        self.close(self.readEnd)
        self.observer(event("nobody listens"))
        self.assertEqual(self.observer.dropped, 1)

    def test_closed(self) -> None:
        """
        A closed descriptor (EBADF) drops the line too.
        """
        self.close(self.writeEnd)
        self.observer(event("gone"))
        self.assertEqual(self.observer.dropped, 1)
