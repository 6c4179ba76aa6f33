# -*- test-case-name: tests.test_task_service -*-
"""
Test doubles for the task service and whatever else drives runc or reaps
children, so that no test runs runc or a container:

    - L{FakeRunc}, a spawner that expects runc command lines one by one
      (Buildbot's C{ExpectMasterShell} shape): each L{ExpectRunc} states the
      argv, what the command does (pid file, C{log.json} error, output,
      anything else) and how it ends; it may be held until the test finishes
      it, so that the test can act while runc "runs";
    - L{FakeKernel}, zombie children for a real L{Reaper} (through its
      injectable C{waitid} and C{waitpid}), with a settable clock for exit
      times;
    - L{FakePublisher} and L{FakeShutdown}, which record;
    - L{FakeIO} and L{FakeIOFactory}, a process's stdio without descriptors;
    - L{FakeMounts}, L{FakeCgroup} and L{FakeOOMWatcher}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from google.protobuf.message import Message
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shimd.interfaces import (
    ICgroup,
    IMounter,
    IOOMWatcher,
    IProcessIO,
    IPublisher,
    IShutdown,
)
from shimd.protos import cgroups_v1_pb2
from shimd.runc.stdio.errors import StdioError
from shimd.shim.reaper import Reaper


class FakeProcessTransport:
    """
    The transport a spawned process gives its protocol: records what is
    written to the child's stdin and the signals sent to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = bytearray()
        self.stdinClosed = False
        self.signals: list[object] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def writeSequence(self, data: Sequence[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def closeChildFD(self, descriptor: int) -> None:
        pass

    def loseConnection(self) -> None:
        self.closeStdin()

    def signalProcess(self, signal: object) -> None:
        self.signals.append(signal)


def argumentAfter(argv: Sequence[str], flag: str) -> str:
    """
    The value that follows C{flag} in C{argv}.
    """
    return argv[list(argv).index(flag) + 1]


class StartingWith:
    """
    In an expected argv, any argument that starts with C{prefix}: for the
    random names of temporary files.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"<starting with {self.prefix!r}>"

    def matches(self, argument: str) -> bool:
        return argument.startswith(self.prefix)


def argvMatches(expected: Sequence[str | StartingWith], argv: Sequence[str]) -> bool:
    """
    Whether C{argv} is what C{expected} describes, argument by argument.
    """
    if len(expected) != len(argv):
        return False
    return all(
        e.matches(a) if isinstance(e, StartingWith) else e == a
        for e, a in zip(expected, argv, strict=True)
    )


class ExpectRunc:
    """
    One expected runc command line and its behaviour. The builder methods
    return the expectation, so that they chain.

    @ivar argv: the whole expected argv, C{argv[0]} included; an argument
        may be a L{StartingWith}.
    """

    def __init__(self, *argv: str | StartingWith) -> None:
        self.argv = list(argv)
        self.exitCode = 0
        self.signal: int | None = None
        self.stdoutData = b""
        self.stderrData = b""
        self.held = False
        self.effects: list[Callable[[RuncCall], object]] = []

    def __repr__(self) -> str:
        return f"<ExpectRunc {self.argv!r}>"

    def exit(self, code: int) -> ExpectRunc:
        """
        The command exits with C{code}.
        """
        self.exitCode = code
        return self

    def killedBy(self, signal: int) -> ExpectRunc:
        """
        The command dies of C{signal}.
        """
        self.signal = signal
        return self

    def stdout(self, data: bytes) -> ExpectRunc:
        self.stdoutData = data
        return self

    def stderr(self, data: bytes) -> ExpectRunc:
        self.stderrData = data
        return self

    def pid(self, pid: int) -> ExpectRunc:
        """
        The command writes C{pid} to the file its C{--pid-file} names.
        """

        def writePid(call: RuncCall) -> None:
            with open(argumentAfter(call.argv, "--pid-file"), "w") as f:
                f.write(str(pid))

        return self.do(writePid)

    def logError(self, message: str) -> ExpectRunc:
        """
        The command logs an error to the file its C{--log} names, as runc
        does with C{--log-format json}.
        """

        def log(call: RuncCall) -> None:
            entry = {"level": "error", "msg": message, "time": "2024-01-01T00:00:00Z"}
            with open(argumentAfter(call.argv, "--log"), "a") as f:
                f.write(json.dumps(entry) + "\n")

        return self.do(log)

    def do(self, effect: Callable[[RuncCall], object]) -> ExpectRunc:
        """
        Run C{effect} with the call as the command finishes, before its
        output is delivered and it ends (deliver an exit from there to have
        it reaped while runc still runs).
        """
        self.effects.append(effect)
        return self

    def hold(self) -> ExpectRunc:
        """
        The command runs until the test calls L{RuncCall.finish}.
        """
        self.held = True
        return self


class RuncCall:
    """
    A command the fake has spawned.
    """

    def __init__(
        self,
        expectation: ExpectRunc,
        protocol: ProcessProtocol,
        executable: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        childFDs: dict[int, Any],
        transport: FakeProcessTransport,
    ) -> None:
        self.expectation = expectation
        self.protocol = protocol
        self.executable = executable
        self.argv = list(argv)
        self.env = dict(env)
        self.childFDs = dict(childFDs)
        self.transport = transport
        self.finished = False

    @property
    def stdin(self) -> bytes:
        """
        What the protocol wrote to the command's stdin.
        """
        return bytes(self.transport.written)

    def finish(self) -> None:
        """
        Run the expectation's effects, deliver its output and end it.
        """
        assert not self.finished, f"{self.argv!r} finished twice"
        self.finished = True
        expectation = self.expectation
        for effect in expectation.effects:
            effect(self)
        if expectation.stdoutData:
            self.protocol.childDataReceived(1, expectation.stdoutData)
        if expectation.stderrData:
            self.protocol.childDataReceived(2, expectation.stderrData)
        reason: Failure
        if expectation.signal is not None:
            reason = Failure(ProcessTerminated(signal=expectation.signal))
        elif expectation.exitCode:
            reason = Failure(ProcessTerminated(exitCode=expectation.exitCode))
        else:
            reason = Failure(ProcessDone(0))
        self.protocol.processExited(reason)
        self.protocol.processEnded(reason)


class FakeRunc:
    """
    A spawner (L{shimd.runc.client.Spawner}) that checks each command line against
    the next expectation and plays it.

    @ivar calls: every command spawned, in order.
    @ivar errors: what went wrong (an unexpected or mismatched command).
    """

    def __init__(self, firstPid: int = 90000) -> None:
        self.expected: list[ExpectRunc] = []
        self.calls: list[RuncCall] = []
        self.errors: list[str] = []
        self._nextPid = firstPid

    def expect(self, *expectations: ExpectRunc) -> None:
        self.expected.extend(expectations)

    def __call__(
        self,
        protocol: ProcessProtocol,
        executable: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        childFDs: dict[int, Any],
    ) -> FakeProcessTransport:
        if not self.expected:
            error = f"unexpected command {list(argv)!r}"
            self.errors.append(error)
            raise AssertionError(error)
        expectation = self.expected.pop(0)
        if not argvMatches(expectation.argv, argv):
            error = f"expected {expectation.argv!r}, got {list(argv)!r}"
            self.errors.append(error)
            raise AssertionError(error)
        self._nextPid += 1
        transport = FakeProcessTransport(self._nextPid)
        call = RuncCall(
            expectation, protocol, executable, argv, env, childFDs, transport
        )
        self.calls.append(call)
        protocol.makeConnection(transport)
        if not expectation.held:
            call.finish()
        return transport

    def pending(self) -> list[RuncCall]:
        """
        The held commands still running.
        """
        return [call for call in self.calls if not call.finished]

    def verify(self) -> None:
        """
        @raise AssertionError: a command went wrong, an expected one did not
            run, or a held one was never finished.
        """
        assert not self.errors, self.errors
        assert not self.expected, f"commands not run: {self.expected!r}"
        running = [call.argv for call in self.pending()]
        assert not running, f"commands still running: {running!r}"


def waitStatus(code: int = 0, signal: int = 0) -> int:
    """
    A wait(2) status: exited with C{code}, or killed by C{signal}.
    """
    if signal:
        return signal & 0x7F
    return (code & 0xFF) << 8


class FakeKernel:
    """
    Zombie children, reaped by a real L{Reaper} through fake C{waitid} and
    C{waitpid}; exit times come from L{now}, in nanoseconds.

    @ivar reaper: the reaper, which every exit goes to.
    """

    def __init__(self, now: int = 1_700_000_000_123_456_789) -> None:
        self.now = now
        self.zombies: dict[int, int] = {}
        self.reaper = Reaper(
            waitid=self.waitid,
            waitpid=self.waitpid,
            twistedChildren=dict,
            exists=lambda pid: False,
            now=lambda: self.now,
        )

    def waitid(self, idtype: int, id: int, options: int) -> SimpleNamespace | None:
        for pid in self.zombies:
            return SimpleNamespace(si_pid=pid)
        return None

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        if pid not in self.zombies:
            raise ChildProcessError(pid)
        return pid, self.zombies.pop(pid)

    def exit(self, pid: int, code: int = 0, signal: int = 0) -> None:
        """
        C{pid} exits (or is killed by C{signal}) and SIGCHLD makes the
        reaper reap it.
        """
        self.zombies[pid] = waitStatus(code, signal)
        self.reaper.reap()


@implementer(IPublisher)
class FakePublisher:
    """
    Records the events published, in order.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Message]] = []
        self.closed = 0

    def publish(self, topic: str, event: Message) -> None:
        self.events.append((topic, event))

    def close(self) -> Deferred[None]:
        self.closed += 1
        return succeed(None)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.events]


@implementer(IShutdown)
class FakeShutdown:
    """
    Records registrations and shutdowns.
    """

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], Any]] = []
        self.shutdowns = 0

    def register(self, callback: Callable[[], Any]) -> None:
        self.callbacks.append(callback)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def isShutdown(self) -> bool:
        return self.shutdowns > 0

    def runCallbacks(self) -> Deferred[None]:
        return succeed(None)


@implementer(IProcessIO)
class FakeIO:
    """
    A process's stdio (L{IProcessIO}) without
    descriptors: records what the container asks of it.

    @ivar drained: what L{waitDrained} returns; a test may set an unfired
        Deferred to hold a delete.
    @ivar attachError: raised by L{attach}, when set.
    """

    def __init__(
        self,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        ioUID: int,
        ioGID: int,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.ioUID = ioUID
        self.ioGID = ioGID
        self.runcStdio: dict[int, int] = {0: 1000, 1: 1001, 2: 1002}
        self.consoleSocket: str | None = (
            "/run/fake-console/pty.sock" if terminal else None
        )
        self.calls: list[str] = []
        self.resizes: list[tuple[int, int]] = []
        self.drainTimeouts: list[float] = []
        self.drained: Deferred[None] | None = None
        self.attachError: Exception | None = None

    def prepare(self) -> Deferred[None]:
        self.calls.append("prepare")
        return succeed(None)

    def spawned(self) -> None:
        self.calls.append("spawned")

    def attach(self) -> Deferred[None]:
        self.calls.append("attach")
        if self.attachError is not None:
            return fail(self.attachError)
        return succeed(None)

    def closeStdin(self) -> None:
        self.calls.append("closeStdin")

    def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    def waitDrained(self, timeout: float) -> Deferred[None]:
        self.calls.append("waitDrained")
        self.drainTimeouts.append(timeout)
        if self.drained is not None:
            return self.drained
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.calls.append("close")
        return succeed(None)


class FakeIOFactory:
    """
    Stands in for L{shimd.runc.stdio.create.createIO}: makes L{FakeIO}s and keeps them.

    @ivar ios: every stdio made, in order.
    @ivar failWith: when set, the next stdio fails with this message.
    """

    def __init__(self) -> None:
        self.ios: list[FakeIO] = []
        self.failWith: str | None = None

    def __call__(
        self,
        reactor: Any,
        spawn: Any,
        containerID: str,
        namespace: str,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        ioUID: int = 0,
        ioGID: int = 0,
    ) -> FakeIO:
        if self.failWith is not None:
            message, self.failWith = self.failWith, None
            raise StdioError(message)
        io = FakeIO(stdin, stdout, stderr, terminal, ioUID, ioGID)
        self.ios.append(io)
        return io


@implementer(IMounter)
class FakeMounts:
    """
    A mounter that records instead of mounting.

    @ivar calls: C{("mount", [(type, source, options), ...], target)} and
        C{("unmount", target)}, in order.
    @ivar mountError: raised by the next L{mountAll}, when set.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.mountError: Exception | None = None

    def mountAll(self, mounts: Iterable[Any], target: str) -> None:
        described = [(m.type, m.source, list(m.options)) for m in mounts]
        self.calls.append(("mount", described, target))
        if self.mountError is not None:
            error, self.mountError = self.mountError, None
            raise error

    def unmountAll(self, target: str) -> None:
        self.calls.append(("unmount", target))


@implementer(ICgroup)
class FakeCgroup:
    """
    A container's cgroup with fixed statistics.
    """

    typeURL = "io.containerd.cgroups.v1.Metrics"

    def __init__(self) -> None:
        self.metrics = cgroups_v1_pb2.Metrics()
        self.metrics.pids.current = 3
        self.metrics.pids.limit = 10
        self.statsError: Exception | None = None

    def stats(self) -> cgroups_v1_pb2.Metrics:
        if self.statsError is not None:
            raise self.statsError
        return self.metrics

    def exists(self) -> bool:
        return True

    def enableControllers(self) -> None:
        pass


class FakeV2Cgroup(FakeCgroup):
    """
    A cgroup v2 cgroup: the container enables its controllers at start.
    """

    typeURL = "io.containerd.cgroups.v2.Metrics"

    def __init__(self) -> None:
        super().__init__()
        self.enabled = 0

    def enableControllers(self) -> None:
        self.enabled += 1


@implementer(IOOMWatcher)
class FakeOOMWatcher:
    """
    Records the containers watched for OOM kills and the checks made, and
    lets a test report a kill (C{oom}), leave one for C{check} to find
    (C{killed}), or make C{check} fail (C{checkError}).
    """

    def __init__(self) -> None:
        self.watched: dict[str, tuple[Any, Callable[[str], None]]] = {}
        self.removed: list[str] = []
        self.checked: list[str] = []
        self.unreported: set[str] = set()
        self.checkError: Exception | None = None

    def add(self, containerID: str, cgroup: Any, onOOM: Callable[[str], None]) -> None:
        self.watched[containerID] = (cgroup, onOOM)

    def check(self, containerID: str) -> None:
        self.checked.append(containerID)
        if self.checkError is not None:
            raise self.checkError
        if containerID in self.unreported and containerID in self.watched:
            self.unreported.discard(containerID)
            self.oom(containerID)

    def remove(self, containerID: str) -> None:
        self.removed.append(containerID)
        self.watched.pop(containerID, None)

    def stop(self) -> None:
        self.watched.clear()

    def oom(self, containerID: str) -> None:
        """
        The kernel reports an OOM kill in the container's cgroup.
        """
        _, onOOM = self.watched[containerID]
        onOOM(containerID)

    def killed(self, containerID: str) -> None:
        """
        The kernel counts an OOM kill in the container's cgroup, and the
        notification of it has not been handled yet: C{check} reports it.
        """
        self.unreported.add(containerID)


def writeBundle(path: str, pidNamespace: bool = True) -> str:
    """
    Make a bundle directory with a C{config.json}, whose Linux namespaces
    include a new pid namespace or not.

    @return: C{path}.
    """
    os.makedirs(path)
    namespaces = [{"type": "mount"}, {"type": "network"}]
    if pidNamespace:
        namespaces.append({"type": "pid"})
    spec = {"ociVersion": "1.0.2", "linux": {"namespaces": namespaces}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)
    return path
