"""
What the stress tests share: the end-to-end mixin with a few more helpers
(a direct connection to a container's shim, the shim's pid, exec specs), a
private containerd for the tests that stop it, containers that write a
counter, and a reader that drains a fifo in the background.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.any_pb2 import Any as AnyMessage

from shimd.protos import task_pb2
from tests.e2e.base import E2EMixin
from tests.e2e.containerd import PrivateContainerd
from tests.stress.client import ShimClient
from tests.stress.scale import scaled

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object

PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
GROUP_ANNOTATION = "io.containerd.runc.v2.group"

COUNTER_INTERVAL = "0.02"


def counterScript(interval: str = COUNTER_INTERVAL) -> str:
    """
    A shell loop that prints 0, 1, 2, ... one line at a time, forever.
    """
    return f'i=0; while :; do echo "$i"; i=$((i+1)); sleep {interval}; done'


def groupOptions(group: str) -> list[str]:
    """
    C{ctr run} options putting a container in the shim group C{group}.
    """
    return ["--annotation", f"{GROUP_ANNOTATION}={group}"]


def execSpec(*args: str) -> AnyMessage:
    """
    The C{spec} of an C{ExecProcessRequest}: an OCI process running
    C{args} as root in C{/}.
    """
    process = {
        "args": list(args),
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": False,
    }
    return AnyMessage(type_url=PROCESS_SPEC_TYPE, value=json.dumps(process).encode())


@dataclass(frozen=True)
class CounterOutput:
    """
    What a counter's output says about what was lost.

    @ivar lines: lines read.
    @ivar highest: the highest number seen (-1 for none).
    @ivar missing: numbers from 0 to C{highest} that never arrived.
    @ivar duplicated: numbers that arrived more than once.
    @ivar garbled: lines that were not a number.
    """

    lines: int
    highest: int
    missing: int
    duplicated: int
    garbled: int

    @property
    def lost(self) -> int:
        """
        Lines lost or damaged.
        """
        return self.missing + self.garbled

    @classmethod
    def parse(cls, data: bytes) -> CounterOutput:
        lines = data.decode("utf-8", "replace").splitlines()
        numbers = [int(line) for line in lines if line.isdigit()]
        highest = max(numbers, default=-1)
        distinct = set(numbers)
        return cls(
            lines=len(lines),
            highest=highest,
            missing=highest + 1 - len(distinct),
            duplicated=len(numbers) - len(distinct),
            garbled=len(lines) - len(numbers),
        )


class FifoDrain:
    """
    A fifo the test reads in a background thread, as a client would: it is
    opened read-write, so that it never reports end of input while no
    writer is attached, and read until L{stop}.

    @ivar paused: while set, nothing is read (a stuck reader).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.paused = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self.paused.is_set():
                self._stopped.wait(0.05)
                continue
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if ready:
                self._readAvailable()

    def _readAvailable(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            with self._lock:
                self._data += chunk

    def data(self) -> bytes:
        """
        Everything read so far.
        """
        with self._lock:
            return bytes(self._data)

    def stop(self) -> bytes:
        """
        Stop the thread, read what is left, close the fifo.

        @return: everything read.
        """
        self._stopped.set()
        self._thread.join(10)
        if self._fd >= 0:
            self._readAvailable()
            os.close(self._fd)
            self._fd = -1
        return self.data()


_FORWARDED = re.compile(r'msg="event forwarded".*\bns=(\S+).*\btopic=(\S+)')


def forwardedTopics(log: str, namespace: str) -> list[str]:
    """
    The topics of the events containerd says it received from shims
    (C{Events.Forward}, logged at debug level as C{event forwarded}) for
    C{namespace}, in the order it received them.
    """
    topics = []
    for line in log.splitlines():
        match = _FORWARDED.search(line)
        if match and match.group(1) == namespace:
            topics.append(match.group(2))
    return topics


class StressMixin(E2EMixin):
    """
    An end-to-end test with direct access to the shims' sockets.
    """

    timeout = scaled(300, 3600)

    def makeDirectory(self) -> str:
        """
        A host directory for this test, removed afterwards.
        """
        directory = tempfile.mkdtemp(prefix="shimd-stress-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def shimClient(self, containerID: str, timeout: float = 30.0) -> ShimClient:
        """
        A new connection to the shim serving a task, closed after the test.
        """
        client = ShimClient(self.shimAddressOf(containerID), timeout)
        self.addCleanup(client.close)
        return client

    def shimPid(self, containerID: str) -> int:
        """
        The pid of the shim serving a task, as it answers C{Connect}.
        """
        with ShimClient(self.shimAddressOf(containerID)) as client:
            response = client.call("Connect", task_pb2.ConnectRequest(id=containerID))
        pid: int = response.shim_pid
        return pid


class PrivateContainerdMixin(_Base):
    """
    A test that runs against a containerd of its own, which it may stop,
    kill and restart without disturbing any other test; destroyed after the
    test (after its namespaces are cleaned up).
    """

    def makeContainerd(self) -> PrivateContainerd:
        containerd = PrivateContainerd()
        containerd.start()
        self.addCleanup(containerd.destroy)
        return containerd


class AttachedReader:
    """
    A client's reading of a process's output fifos, as containerd's Go
    client (C{cio}) does it: each fifo made and opened for reading before
    the process starts, and read 32 KiB at a time by a thread of its own;
    L{close} stops the threads and closes the fifos at once, losing
    whatever they held, as the client does once C{Wait} has returned.
    """

    def __init__(self, paths: list[str]) -> None:
        self._stopped = threading.Event()
        self._data = [bytearray() for _ in paths]
        self._fds = []
        for path in paths:
            os.mkfifo(path, 0o600)
            self._fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        self._threads = [
            threading.Thread(target=self._run, args=(fd, data), daemon=True)
            for fd, data in zip(self._fds, self._data, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, fd: int, data: bytearray) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready or self._stopped.is_set():
                continue
            try:
                chunk = os.read(fd, 32 * 1024)
            except BlockingIOError:
                continue
            if not chunk:
                # No writer yet (or any more): wait for one, as the
                # client's fifo stays open until it closes it.
                self._stopped.wait(0.01)
                continue
            data += chunk

    def close(self) -> bytes:
        """
        Stop reading, close the fifos, and forget what they still held.

        @return: everything read from all of them, in the order given.
        """
        self._stopped.set()
        for thread in self._threads:
            thread.join(10)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        return b"".join(bytes(data) for data in self._data)
