# -*- test-case-name: tests.test_stdio -*-
"""
Pipes to runc, copied to and from the client's fifos or regular files, or
to a C{file://} target.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed

from shimd.interfaces import IOutputSink
from shimd.runc.stdio.errors import StdioError
from shimd.runc.stdio.fifo import isFifo, openFifoForWriting
from shimd.runc.stdio.processio import ProcessIO
from shimd.runc.stdio.streams import FileWriter, Writer


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
        devnull = self._nullEnd()
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

    def _outputConsumers(self) -> dict[int, IOutputSink]:
        """
        Open what stdout and stderr are copied to.
        """
        if urlsplit(self.stdout).scheme == "file":
            fd = self._openStdoutFile()
            shared = FileWriter(fd, users=len([n for n in (1, 2) if n in self._ours]))
            self._consumers.append(shared)
            return {number: shared for number in (1, 2) if number in self._ours}
        consumers: dict[int, IOutputSink] = {}
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
                files[path].share()
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
                reader = self._openStdin()
        except OSError as e:
            raise StdioError(f"failed to open stdio: {e}") from e
        for number, consumer in consumers.items():
            self._fds.remove(self._ours[number])
            self._copy(self._ours[number], consumer, self._fifoReaders.get(number))
        if 0 in self._ours:
            self._fds.remove(self._ours[0])
            self._copyStdin(reader, self._ours[0])
        return succeed(None)
