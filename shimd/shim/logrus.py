# -*- test-case-name: tests.test_logrus -*-
"""
Log lines in the logrus text format containerd expects from a shim on its
C{log} fifo::

    time="2026-11-29T00:43:36.123456789Z" level=info msg="..." pid=42

The observer writes to a non-blocking file descriptor and never waits: while
nobody reads the fifo (containerd restarting), lines that do not fit are
dropped and counted, and the count is reported once writing works again.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime

from twisted.logger import (
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.failure import Failure
from zope.interface import implementer

_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "fatal",
}
_LEVEL_TYPE = type(LogLevel.info)


def quote(text: str) -> str:
    """
    Quote a value as logrus does, with Go-style escapes.
    """
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


def formatTime(timestamp: float) -> str:
    """
    RFC 3339 with nanoseconds, in UTC, as logrus writes C{time}.
    """
    # Split off the whole seconds first: datetime rounds to microseconds, and
    # would carry a fraction of .9999995 or more into the seconds.
    seconds, fraction = divmod(timestamp, 1)
    nanoseconds = round(fraction * 1e9)
    if nanoseconds == 1_000_000_000:
        seconds += 1
        nanoseconds = 0
    moment = datetime.fromtimestamp(int(seconds), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanoseconds:09d}Z"


def formatLine(event: dict[str, object], fields: dict[str, str]) -> str:
    """
    One log event as one logrus text line, with a newline.
    """
    level = event.get("log_level", LogLevel.info)
    message = formatEvent(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        message = f"{message}\n{failure.getTraceback()}"
    timestamp = event.get("log_time")
    parts = [
        f"time={quote(formatTime(timestamp if isinstance(timestamp, float) else 0.0))}",
        f"level={_LEVELS.get(level, 'info')}",
        f"msg={quote(message)}",
    ]
    parts += [f"{key}={value}" for key, value in fields.items()]
    return " ".join(parts) + "\n"


@implementer(ILogObserver)
class LogrusObserver:
    """
    Writes log events as logrus lines to a file descriptor, never blocking.

    A line longer than C{PIPE_BUF} can be written in part; its rest is kept
    and written before anything else, so that no line is ever interleaved
    with another.

    @ivar dropped: lines dropped since the last successful write.
    """

    def __init__(
        self, fd: int, fields: dict[str, str], minimumLevel: LogLevel = LogLevel.info
    ) -> None:
        self._fd = fd
        self._fields = fields
        self._minimum = minimumLevel
        self._pending = b""
        self.dropped = 0

    def __call__(self, event: dict[str, object]) -> None:
        level = event.get("log_level", LogLevel.info)
        # LogLevel's members are constantly's NamedConstant, not instances
        # of LogLevel: look them up instead.
        if (
            isinstance(level, _LEVEL_TYPE)
            and level in _LEVELS
            and level < self._minimum
        ):
            return
        line = formatLine(event, self._fields)
        if self.dropped:
            notice = formatLine(
                {
                    "log_level": LogLevel.warn,
                    "log_format": "{count} log lines dropped while the log was full",
                    "count": self.dropped,
                    "log_time": event.get("log_time"),
                },
                self._fields,
            )
            if not self._write(notice):
                self.dropped += 1
                return
            self.dropped = 0
        if not self._write(line):
            self.dropped += 1

    def _write(self, line: str) -> bool:
        """
        Write a line, after the rest of a line written in part.

        @return: whether the line was taken: written whole, or in part with
            its rest kept. L{False} when nothing of it could be written.
        """
        if self._pending:
            self._pending = self._pending[self._writeSome(self._pending) :]
            if self._pending:
                return False
        data = line.encode("utf-8", "replace")
        written = self._writeSome(data)
        if not written:
            return False
        self._pending = data[written:]
        return True

    def _writeSome(self, data: bytes) -> int:
        try:
            return os.write(self._fd, data)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EPIPE, errno.EBADF):
                return 0
            raise


def quietTwisted(level: LogLevel) -> LogLevelFilterPredicate:
    """
    A filter that passes shimd's own events from C{level} up, and Twisted's
    chatter (factories starting and stopping, ports closing) only from
    warnings up, unless C{level} is debug.
    """
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=level if level == LogLevel.debug else LogLevel.warn
    )
    predicate.setLogLevelForNamespace("shimd", level)
    return predicate
