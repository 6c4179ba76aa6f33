# -*- test-case-name: tests.test_runc -*-
"""
Tests for L{shimd.runc.client}: every command line the shim gives runc, checked
against the Go shim's (runc.md section 2) with a spawner that fakes runc by
expectation, in the style of Buildbot's C{ExpectMasterShell}; the error texts
(section 3); and one run of the real runc, when it is installed.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import shimd.runc.client
from shimd.runc.client import (
    LOG_TAIL,
    Runc,
    RuncError,
    RuncProtocol,
    RunResult,
    lastRuntimeError,
    reactorSpawner,
)

ROOT = "/run/containerd/runc/default"
STDIO = {0: 40, 1: 41, 2: 42}


@implementer(IProcessTransport)
class FakeProcessTransport:
    """
    The transport of a fake runc process: records what is written to its
    stdin, whether stdin was closed, and the signals it was sent.
    """

    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self.written = b""
        self.stdinClosed = False
        self.signals: list[str | int] = []

    def write(self, data: bytes) -> None:
        assert not self.stdinClosed, "write after closeStdin"
        self.written += data

    def writeSequence(self, data: Iterable[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        assert childFD == 0
        self.write(data)

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def closeChildFD(self, descriptor: int) -> None:
        if descriptor == 0:
            self.closeStdin()

    def loseConnection(self) -> None:
        self.closeStdin()

    def signalProcess(self, signalID: str | int) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(signalID)

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None


@attr.s(auto_attribs=True, kw_only=True)
class Expect:
    """
    One runc run a test expects: its exact argv, and what the fake process
    does.

    @ivar argv: the command line, C{argv[0]} included.
    @ivar stdin: the bytes the process expects on its stdin, which must then
        be closed; L{None} if nothing may be written.
    @ivar childFDs: when given, the exact child descriptors expected.
    @ivar exitCode: its exit code, unless L{signal} killed it.
    @ivar running: the process keeps running until the test ends it (or it
        is killed by a signal).
    """

    argv: list[str]
    exitCode: int = 0
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdin: bytes | None = None
    childFDs: dict[int, Any] | None = None
    running: bool = False


class FakeProcess:
    """
    A spawned fake runc.
    """

    def __init__(
        self,
        protocol: ProcessProtocol,
        transport: FakeProcessTransport,
        expect: Expect,
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.expect = expect
        self.ended = False

    def finish(self, exitCode: int | None = None, signal: int | None = None) -> None:
        """
        Write the expected output and end, as the expectation says unless
        told otherwise.
        """
        if exitCode is None and signal is None:
            exitCode, signal = self.expect.exitCode, self.expect.signal
        if self.expect.stdout:
            self.protocol.childDataReceived(1, self.expect.stdout)
        if self.expect.stderr:
            self.protocol.childDataReceived(2, self.expect.stderr)
        self.ended = True
        self.transport.pid = None
        reason: Failure
        if signal is not None:
            reason = Failure(ProcessTerminated(signal=signal))
        elif exitCode == 0:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=exitCode))
        self.protocol.processEnded(reason)


class ExpectSpawner:
    """
    A spawner that checks each command against the next expectation and
    plays the fake process's part.

    @ivar calls: C{(executable, argv, env, childFDs)} of every spawn, copied.
    @ivar childFDs: the C{childFDs} of every spawn, as passed.
    """

    def __init__(self, testCase: SynchronousTestCase, executable: str) -> None:
        self._testCase = testCase
        self._executable = executable
        self._expected: list[Expect] = []
        self.calls: list[tuple[str, list[str], dict[str, str], dict[int, Any]]] = []
        self.childFDs: list[dict[int, Any]] = []
        self.processes: list[FakeProcess] = []
        self.error: OSError | None = None

    def expect(self, *expectations: Expect) -> None:
        self._expected.extend(expectations)

    def assertAllRun(self) -> None:
        self._testCase.assertEqual(self._expected, [], "expected commands not run")

    def __call__(
        self,
        protocol: ProcessProtocol,
        executable: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        childFDs: dict[int, Any],
    ) -> FakeProcessTransport:
        test = self._testCase
        self.calls.append((executable, list(argv), dict(env), dict(childFDs)))
        self.childFDs.append(childFDs)
        if self.error is not None:
            raise self.error
        test.assertTrue(self._expected, f"unexpected command {list(argv)}")
        expect = self._expected.pop(0)
        test.assertEqual(executable, self._executable)
        test.assertEqual(list(argv), expect.argv)
        if expect.childFDs is not None:
            test.assertEqual(childFDs, expect.childFDs)
        transport = FakeProcessTransport(4000 + len(self.calls))
        protocol.makeConnection(transport)
        if expect.stdin is None:
            test.assertEqual(transport.written, b"")
        else:
            test.assertEqual(childFDs[0], "w")
            test.assertEqual(transport.written, expect.stdin)
            test.assertTrue(transport.stdinClosed, "stdin left open")
        process = FakeProcess(protocol, transport, expect)
        self.processes.append(process)
        if not expect.running:
            process.finish()
        return transport


def writeExecutable(path: str) -> None:
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, stat.S_IRWXU)


class RuncTestsMixin:
    """
    A L{Runc} with an L{ExpectSpawner}, a bundle in a temporary directory,
    and a C{$PATH} holding only a fake C{runc}.
    """

    def setUp(self) -> None:
        test: Any = self
        self.bundle = os.path.abspath(test.mktemp())
        os.makedirs(self.bundle)
        self.logPath = os.path.join(self.bundle, "log.json")
        self.bin = os.path.join(self.bundle, "bin")
        os.makedirs(self.bin)
        self.executable = os.path.join(self.bin, "runc")
        writeExecutable(self.executable)
        oldPath = os.environ.get("PATH")
        os.environ["PATH"] = self.bin

        def restorePath() -> None:
            if oldPath is None:
                del os.environ["PATH"]
            else:
                os.environ["PATH"] = oldPath

        test.addCleanup(restorePath)
        test.patch(shimd.runc.client, "_executables", {})
        self.spawner = ExpectSpawner(test, self.executable)
        test.addCleanup(self.spawner.assertAllRun)
        self.runc = self.makeRunc()
        self.G = ["--root", ROOT, "--log", self.logPath, "--log-format", "json"]

    def makeRunc(self, binary: str = "runc", **kwargs: Any) -> Runc:
        kwargs.setdefault("environ", {"PATH": self.bin})
        return Runc(self.spawner, binary, ROOT, self.logPath, **kwargs)

    def writeLog(self, *entries: dict[str, str] | str) -> None:
        with open(self.logPath, "w") as f:
            for entry in entries:
                line = entry if isinstance(entry, str) else json.dumps(entry)
                f.write(line + "\n")


class CommandLineTests(RuncTestsMixin, SynchronousTestCase):
    """
    Each L{Runc} method runs exactly the command line of the Go shim: the
    global flags, in go-runc's order, then the subcommand.
    """

    def test_create(self) -> None:
        """
        C{create} without options: C{G create --bundle B --pid-file P ID},
        with the container's stdio as runc's fds 0-2, exactly.
        """
        pidFile = os.path.join(self.bundle, "init.pid")
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "create",
                    "--bundle",
                    self.bundle,
                    "--pid-file",
                    pidFile,
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        result = self.successResultOf(
            self.runc.create("c1", self.bundle, pidFile, dict(STDIO))
        )
        self.assertEqual(result, RunResult(0, b"", b""))

    def test_createWithOptions(self) -> None:
        """
        C{create} with a console socket, C{--no-pivot} and
        C{--no-new-keyring}, in that order, before the id.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/b/init.pid",
                    "--console-socket",
                    "/tmp/pty1/pty.sock",
                    "--no-pivot",
                    "--no-new-keyring",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(
            self.runc.create(
                "c1",
                "/b",
                "/b/init.pid",
                dict(STDIO),
                consoleSocket="/tmp/pty1/pty.sock",
                noPivot=True,
                noNewKeyring=True,
            )
        )

    def test_stdioCopied(self) -> None:
        """
        The stdio mapping is passed as a copy: whatever the spawner does
        with it, the caller's (the process's C{ProcessIO.runcStdio}) is
        left alone.
        """
        stdio = dict(STDIO)
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "exec",
                    "--process",
                    "/p",
                    "--detach",
                    "--pid-file",
                    "/b/e.pid",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(self.runc.exec("c1", "/p", "/b/e.pid", stdio))
        self.assertIsNot(self.spawner.childFDs[-1], stdio)

    def test_globalFlags(self) -> None:
        """
        C{--criu} and C{--systemd-cgroup}, when configured, follow
        C{--log-format json}, before the subcommand.
        """
        runc = self.makeRunc(criu="/usr/sbin/criu", systemdCgroup=True)
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    "--root",
                    ROOT,
                    "--log",
                    self.logPath,
                    "--log-format",
                    "json",
                    "--criu",
                    "/usr/sbin/criu",
                    "--systemd-cgroup",
                    "start",
                    "c1",
                ]
            )
        )
        self.successResultOf(runc.start("c1"))
        self.assertEqual(
            runc.globalArguments(),
            [*self.G, "--criu", "/usr/sbin/criu", "--systemd-cgroup"],
        )

    def test_start(self) -> None:
        """
        C{start}: C{G start ID}.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"]))
        self.successResultOf(self.runc.start("c1"))

    def test_exec(self) -> None:
        """
        C{exec}: C{G exec --process P --detach --pid-file F ID}, with the
        process's stdio as runc's.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "exec",
                    "--process",
                    "/tmp/runc-process1",
                    "--detach",
                    "--pid-file",
                    "/b/e1.pid",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(
            self.runc.exec("c1", "/tmp/runc-process1", "/b/e1.pid", dict(STDIO))
        )

    def test_execWithConsole(self) -> None:
        """
        C{exec} with a terminal: C{--console-socket S} follows the process
        file, before C{--detach}.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "exec",
                    "--process",
                    "/tmp/runc-process1",
                    "--console-socket",
                    "/tmp/pty2/pty.sock",
                    "--detach",
                    "--pid-file",
                    "/b/e1.pid",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(
            self.runc.exec(
                "c1",
                "/tmp/runc-process1",
                "/b/e1.pid",
                dict(STDIO),
                consoleSocket="/tmp/pty2/pty.sock",
            )
        )

    def test_restore(self) -> None:
        """
        C{restore} without options: no C{--parent-path}, and C{-no-subreaper}
        with a single dash, before C{--bundle B ID}.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "restore",
                    "--image-path",
                    "/ckpt",
                    "--work-path",
                    "/b/work",
                    "--detach",
                    "--pid-file",
                    "/b/init.pid",
                    "-no-subreaper",
                    "--bundle",
                    "/b",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(
            self.runc.restore(
                "c1", "/b", "/ckpt", "/b/work", "/b/init.pid", dict(STDIO)
            )
        )

    def test_restoreWithOptions(self) -> None:
        """
        C{restore} with a parent checkpoint, a console socket and
        C{--no-pivot}, each where go-runc puts it.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "restore",
                    "--image-path",
                    "/ckpt",
                    "--work-path",
                    "/b/work",
                    "--parent-path",
                    "/parent",
                    "--detach",
                    "--pid-file",
                    "/b/init.pid",
                    "--console-socket",
                    "/tmp/pty3/pty.sock",
                    "--no-pivot",
                    "-no-subreaper",
                    "--bundle",
                    "/b",
                    "c1",
                ],
                childFDs=STDIO,
            )
        )
        self.successResultOf(
            self.runc.restore(
                "c1",
                "/b",
                "/ckpt",
                "/b/work",
                "/b/init.pid",
                dict(STDIO),
                parentPath="/parent",
                consoleSocket="/tmp/pty3/pty.sock",
                noPivot=True,
            )
        )

    def test_kill(self) -> None:
        """
        C{kill}: C{G kill ID SIGNAL}, the signal as a number.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "kill", "c1", "9"]))
        self.successResultOf(self.runc.kill("c1", 9))

    def test_killAll(self) -> None:
        """
        C{kill --all}: C{G kill --all ID SIGNAL}.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "kill", "--all", "c1", "15"]))
        self.successResultOf(self.runc.kill("c1", 15, all=True))

    def test_delete(self) -> None:
        """
        C{delete}: C{G delete ID}.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "delete", "c1"]))
        self.successResultOf(self.runc.delete("c1"))

    def test_deleteForce(self) -> None:
        """
        C{delete --force}: C{G delete --force ID}.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "delete", "--force", "c1"]))
        self.successResultOf(self.runc.delete("c1", force=True))

    def test_pauseResume(self) -> None:
        """
        C{pause} and C{resume}: C{G pause ID}, C{G resume ID}.
        """
        self.spawner.expect(
            Expect(argv=["runc", *self.G, "pause", "c1"]),
            Expect(argv=["runc", *self.G, "resume", "c1"]),
        )
        self.successResultOf(self.runc.pause("c1"))
        self.successResultOf(self.runc.resume("c1"))

    def test_ps(self) -> None:
        """
        C{ps}: C{G ps --format json ID}; its stdout is a JSON array of pids.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "ps", "--format", "json", "c1"],
                stdout=b"[12,34,56]\n",
            )
        )
        self.assertEqual(self.successResultOf(self.runc.ps("c1")), [12, 34, 56])

    def test_psNull(self) -> None:
        """
        C{ps} printing C{null} (no processes) gives an empty list.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "ps", "--format", "json", "c1"],
                stdout=b"null\n",
            )
        )
        self.assertEqual(self.successResultOf(self.runc.ps("c1")), [])

    def test_psIgnoresStderr(self) -> None:
        """
        What C{ps} prints on stderr is not parsed as its JSON.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "ps", "--format", "json", "c1"],
                stdout=b"[7]",
                stderr=b"a warning\n",
            )
        )
        self.assertEqual(self.successResultOf(self.runc.ps("c1")), [7])

    def test_psNotJSON(self) -> None:
        """
        C{ps} output that is not JSON fails with a L{RuncError}, not an
        unexpected exception.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "ps", "--format", "json", "c1"],
                stdout=b"not json",
            )
        )
        self.failureResultOf(self.runc.ps("c1"), RuncError)

    def test_update(self) -> None:
        """
        C{update}: C{G update --resources - ID}, the resources' JSON written
        to its stdin, which is then closed.
        """
        resources = b'{"memory":{"limit":1048576}}'
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "update", "--resources", "-", "c1"],
                stdin=resources,
                childFDs={0: "w", 1: "r", 2: "r"},
            )
        )
        self.successResultOf(self.runc.update("c1", resources))

    def test_checkpoint(self) -> None:
        """
        C{checkpoint} with every option, in go-runc's order; one
        C{--empty-ns} per namespace.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "checkpoint",
                    "--image-path",
                    "/ckpt",
                    "--work-path",
                    "/ckwork",
                    "--tcp-established",
                    "--ext-unix-sk",
                    "--shell-job",
                    "--file-locks",
                    "--empty-ns",
                    "network",
                    "--empty-ns",
                    "ipc",
                    "--leave-running",
                    "c1",
                ]
            )
        )
        self.successResultOf(
            self.runc.checkpoint(
                "c1",
                "/ckpt",
                "/ckwork",
                openTCP=True,
                externalUnixSockets=True,
                terminal=True,
                fileLocks=True,
                emptyNamespaces=["network", "ipc"],
            )
        )

    def test_checkpointExit(self) -> None:
        """
        C{checkpoint} without options and not leaving the container running:
        no flags but the paths.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "checkpoint",
                    "--image-path",
                    "/ckpt",
                    "--work-path",
                    "/ckwork",
                    "c1",
                ]
            )
        )
        self.successResultOf(
            self.runc.checkpoint("c1", "/ckpt", "/ckwork", leaveRunning=False)
        )

    def test_capturedCommandFDs(self) -> None:
        """
        A command that does not take the container's stdio gets
        C{/dev/null} as stdin, and pipes for its stdout and stderr.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "kill", "c1", "9"]))
        self.successResultOf(self.runc.kill("c1", 9))
        childFDs = self.spawner.calls[0][3]
        self.assertEqual((childFDs[1], childFDs[2]), ("r", "r"))
        self.assertIsInstance(childFDs[0], int)
        self.assertEqual(os.readlink(f"/proc/self/fd/{childFDs[0]}"), os.devnull)

    def test_output(self) -> None:
        """
        A captured command's result has its stdout, and its stdout and
        stderr combined, in the order they came.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "kill", "c1", "9"],
                stdout=b"out\n",
                stderr=b"err\n",
            )
        )
        result = self.successResultOf(self.runc.kill("c1", 9))
        self.assertEqual(result, RunResult(0, b"out\n", b"out\nerr\n"))

    def test_binaryFromPath(self) -> None:
        """
        The executable is found on C{$PATH}; argv[0] is the name as given.
        An empty binary name means C{runc}.
        """
        runc = self.makeRunc(binary="")
        self.assertEqual(runc.binary, "runc")
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"]))
        self.successResultOf(runc.start("c1"))
        self.assertEqual(self.spawner.calls[0][0], self.executable)

    def test_binaryPath(self) -> None:
        """
        A binary given as a path is run as is, with that path as argv[0].
        """
        runc = self.makeRunc(binary=self.executable)
        self.spawner.expect(Expect(argv=[self.executable, *self.G, "start", "c1"]))
        self.successResultOf(runc.start("c1"))

    def test_environment(self) -> None:
        """
        runc gets the environment given, without C{NOTIFY_SOCKET}.
        """
        runc = self.makeRunc(
            environ={"PATH": "/bin", "NOTIFY_SOCKET": "/run/notify", "A": "b"}
        )
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"]))
        self.successResultOf(runc.start("c1"))
        self.assertEqual(self.spawner.calls[0][2], {"PATH": "/bin", "A": "b"})

    def test_shimEnvironment(self) -> None:
        """
        By default runc gets the shim's environment, without
        C{NOTIFY_SOCKET}.
        """
        os.environ["NOTIFY_SOCKET"] = "/run/notify"
        os.environ["SHIMD_TEST_VARIABLE"] = "kept"
        self.addCleanup(os.environ.pop, "NOTIFY_SOCKET")
        self.addCleanup(os.environ.pop, "SHIMD_TEST_VARIABLE")
        runc = Runc(self.spawner, "runc", ROOT, self.logPath)
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"]))
        self.successResultOf(runc.start("c1"))
        env = self.spawner.calls[0][2]
        self.assertNotIn("NOTIFY_SOCKET", env)
        self.assertEqual(env["SHIMD_TEST_VARIABLE"], "kept")
        self.assertEqual(env["PATH"], self.bin)


class ErrorTests(RuncTestsMixin, SynchronousTestCase):
    """
    A failed command is a L{RuncError} with the Go shim's text.
    """

    def test_lifecycleLoggedError(self) -> None:
        """
        A failed C{create} reports the message of the last C{error} line of
        C{log.json}, trimmed, after C{"OCI runtime create failed: "}.
        """
        self.writeLog(
            {"level": "error", "msg": "an older error", "time": "t0"},
            {"level": "info", "msg": "something", "time": "t1"},
            {"level": "error", "msg": " container exists \n", "time": "t2"},
            {"level": "warning", "msg": "a warning", "time": "t3"},
        )
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/b/init.pid",
                    "c1",
                ],
                exitCode=1,
            )
        )
        error = self.failureResultOf(
            self.runc.create("c1", "/b", "/b/init.pid", dict(STDIO)), RuncError
        ).value
        self.assertEqual(error.message, "OCI runtime create failed: container exists")
        self.assertEqual(str(error), error.message)

    def test_lifecycleNoLoggedError(self) -> None:
        """
        Without an C{error} line in C{log.json}, a failed lifecycle command
        that had the container's stdio reports its exit status only.
        """
        self.writeLog({"level": "info", "msg": "nothing wrong", "time": "t0"})
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "exec",
                    "--process",
                    "/p",
                    "--detach",
                    "--pid-file",
                    "/b/e.pid",
                    "c1",
                ],
                exitCode=2,
            )
        )
        error = self.failureResultOf(
            self.runc.exec("c1", "/p", "/b/e.pid", dict(STDIO)), RuncError
        ).value
        self.assertEqual(
            error.message,
            "OCI runtime exec failed: runc did not terminate successfully: "
            "exit status 2",
        )

    def test_lifecycleNoLog(self) -> None:
        """
        Without any C{log.json}, a failed C{restore} reports its exit status.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "restore",
                    "--image-path",
                    "/i",
                    "--work-path",
                    "/w",
                    "--detach",
                    "--pid-file",
                    "/b/init.pid",
                    "-no-subreaper",
                    "--bundle",
                    "/b",
                    "c1",
                ],
                exitCode=1,
            )
        )
        error = self.failureResultOf(
            self.runc.restore("c1", "/b", "/i", "/w", "/b/init.pid", dict(STDIO)),
            RuncError,
        ).value
        self.assertEqual(
            error.message,
            "OCI runtime restore failed: runc did not terminate successfully: "
            "exit status 1",
        )

    def test_lifecycleSignalled(self) -> None:
        """
        A lifecycle command killed by a signal reports 128 + the signal as
        its exit status.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/b/init.pid",
                    "c1",
                ],
                signal=signal.SIGKILL,
            )
        )
        error = self.failureResultOf(
            self.runc.create("c1", "/b", "/b/init.pid", dict(STDIO)), RuncError
        ).value
        self.assertEqual(
            error.message,
            "OCI runtime create failed: runc did not terminate successfully: "
            "exit status 137",
        )

    def test_checkedLoggedError(self) -> None:
        """
        C{start}, C{pause} and C{resume} report the last logged error with
        their own prefixes.
        """
        self.writeLog(
            {"level": "error", "msg": "cannot start a container that has stopped"},
            "not json at all",
            {"level": "debug", "msg": "later"},
        )
        self.spawner.expect(
            Expect(argv=["runc", *self.G, "start", "c1"], exitCode=1),
            Expect(argv=["runc", *self.G, "pause", "c1"], exitCode=1),
            Expect(argv=["runc", *self.G, "resume", "c1"], exitCode=1),
        )
        messages = [
            self.failureResultOf(call("c1"), RuncError).value.message
            for call in (self.runc.start, self.runc.pause, self.runc.resume)
        ]
        reason = "cannot start a container that has stopped"
        self.assertEqual(
            messages,
            [
                f"OCI runtime start failed: {reason}",
                f"OCI runtime pause failed: {reason}",
                f"OCI runtime resume failed: {reason}",
            ],
        )

    def test_checkedCapturedOutput(self) -> None:
        """
        Without a logged error, a failed C{start} reports its exit status
        and its captured output, stdout and stderr together.
        """
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "start", "c1"],
                exitCode=1,
                stdout=b"out ",
                stderr=b"container not found\n",
            )
        )
        error = self.failureResultOf(self.runc.start("c1"), RuncError).value
        self.assertEqual(
            error.message,
            "OCI runtime start failed: runc did not terminate successfully: "
            "exit status 1: out container not found\n",
        )
        self.assertEqual(error.output, b"out container not found\n")

    def test_capturedOutput(self) -> None:
        """
        Other commands (C{kill}, C{delete}, C{update}, C{checkpoint},
        C{ps}) report C{"<binary> did not terminate successfully: exit status
        N: <output>"}, ignoring C{log.json}.
        """
        self.writeLog({"level": "error", "msg": "logged"})
        output = b'time="t" level=error msg="container not running"\n'
        self.spawner.expect(
            Expect(
                argv=["runc", *self.G, "kill", "c1", "9"], exitCode=1, stderr=output
            ),
            Expect(argv=["runc", *self.G, "delete", "c1"], exitCode=1, stderr=output),
            Expect(
                argv=["runc", *self.G, "update", "--resources", "-", "c1"],
                exitCode=1,
                stderr=output,
                stdin=b"{}",
            ),
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "checkpoint",
                    "--image-path",
                    "/i",
                    "--work-path",
                    "/w",
                    "--leave-running",
                    "c1",
                ],
                exitCode=1,
                stderr=output,
            ),
            Expect(
                argv=["runc", *self.G, "ps", "--format", "json", "c1"],
                exitCode=1,
                stderr=output,
            ),
        )
        calls: list[Deferred[Any]] = [
            self.runc.kill("c1", 9),
            self.runc.delete("c1"),
            self.runc.update("c1", b"{}"),
            self.runc.checkpoint("c1", "/i", "/w"),
            self.runc.ps("c1"),
        ]
        expected = (
            "runc did not terminate successfully: exit status 1: " + output.decode()
        )
        for call in calls:
            error = self.failureResultOf(call, RuncError).value
            self.assertEqual(error.message, expected)
            self.assertEqual(error.output, output)

    def test_capturedSignalled(self) -> None:
        """
        A captured command killed by a signal reports 128 + the signal.
        """
        self.spawner.expect(
            Expect(argv=["runc", *self.G, "kill", "c1", "9"], signal=signal.SIGTERM)
        )
        error = self.failureResultOf(self.runc.kill("c1", 9), RuncError).value
        self.assertEqual(
            error.message, "runc did not terminate successfully: exit status 143: "
        )

    def test_binaryName(self) -> None:
        """
        The error names the binary as it was given.
        """
        other = os.path.join(self.bin, "myrunc")
        writeExecutable(other)
        spawner = ExpectSpawner(self, other)
        self.addCleanup(spawner.assertAllRun)
        runc = Runc(spawner, "myrunc", ROOT, self.logPath, environ={})
        spawner.expect(Expect(argv=["myrunc", *self.G, "kill", "c1", "9"], exitCode=1))
        error = self.failureResultOf(runc.kill("c1", 9), RuncError).value
        self.assertEqual(
            error.message, "myrunc did not terminate successfully: exit status 1: "
        )

    def test_missingBinary(self) -> None:
        """
        A binary not on C{$PATH} fails every command with Go's C{exec} error,
        behind the lifecycle prefix for lifecycle commands; nothing is
        spawned.
        """
        runc = self.makeRunc(binary="nosuchrunc")
        missing = 'exec: "nosuchrunc": executable file not found in $PATH'
        self.assertEqual(
            self.failureResultOf(runc.kill("c1", 9), RuncError).value.message,
            missing,
        )
        self.assertEqual(
            self.failureResultOf(runc.start("c1"), RuncError).value.message,
            f"OCI runtime start failed: {missing}",
        )
        self.assertEqual(
            self.failureResultOf(
                runc.create("c1", "/b", "/b/init.pid", dict(STDIO)), RuncError
            ).value.message,
            f"OCI runtime create failed: {missing}",
        )
        self.assertEqual(
            self.failureResultOf(runc.ps("c1"), RuncError).value.message, missing
        )
        self.assertEqual(self.spawner.calls, [])

    def test_installedLater(self) -> None:
        """
        A binary missing once is looked up again: installing it later works.
        """
        runc = self.makeRunc(binary="laterrunc")
        self.failureResultOf(runc.start("c1"), RuncError)
        later = os.path.join(self.bin, "laterrunc")
        writeExecutable(later)
        spawner = ExpectSpawner(self, later)
        self.addCleanup(spawner.assertAllRun)
        runc = Runc(spawner, "laterrunc", ROOT, self.logPath, environ={})
        spawner.expect(Expect(argv=["laterrunc", *self.G, "start", "c1"]))
        self.successResultOf(runc.start("c1"))

    def test_spawnFails(self) -> None:
        """
        An C{OSError} from the spawner fails the command with a
        L{RuncError} naming the binary.
        """
        self.spawner.error = OSError(7, "Argument list too long")
        error = self.failureResultOf(self.runc.kill("c1", 9), RuncError).value
        self.assertEqual(error.message, "exec runc: [Errno 7] Argument list too long")


class CancelTests(RuncTestsMixin, SynchronousTestCase):
    """
    Cancelling a command's Deferred kills its process.
    """

    def assertEndAbsorbed(self, process: FakeProcess) -> None:
        """
        The end of a cancelled command's process is absorbed: nothing is left
        failed (an unhandled C{AlreadyCalledError}, say) and nothing is
        logged once it is collected.
        """
        protocol = process.protocol
        assert isinstance(protocol, RuncProtocol)
        self.successResultOf(protocol.finished)
        del protocol, process
        self.spawner.processes.clear()
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_cancelKills(self) -> None:
        """
        Cancelling a running command sends its process C{SIGKILL} and fails
        with L{CancelledError}; the end of the killed process, which comes
        later, is absorbed without error.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"], running=True))
        running = self.runc.start("c1")
        process = self.spawner.processes[0]
        self.assertNoResult(running)
        running.cancel()
        self.assertEqual(process.transport.signals, [signal.SIGKILL])
        self.failureResultOf(running, CancelledError)
        process.finish(signal=signal.SIGKILL)
        self.assertEndAbsorbed(process)

    def test_cancelLifecycle(self) -> None:
        """
        Cancelling a lifecycle command kills it the same way; its process's
        later end is absorbed without error.
        """
        self.spawner.expect(
            Expect(
                argv=[
                    "runc",
                    *self.G,
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/b/init.pid",
                    "c1",
                ],
                running=True,
            )
        )
        running = self.runc.create("c1", "/b", "/b/init.pid", dict(STDIO))
        process = self.spawner.processes[0]
        running.cancel()
        self.assertEqual(process.transport.signals, [signal.SIGKILL])
        self.failureResultOf(running, CancelledError)
        process.finish(signal=signal.SIGKILL)
        self.assertEndAbsorbed(process)

    def test_cancelExited(self) -> None:
        """
        Cancelling a command whose process has just exited (Twisted says
        L{ProcessExitedAlready}) still fails it with L{CancelledError}.
        """
        self.spawner.expect(Expect(argv=["runc", *self.G, "start", "c1"], running=True))
        running = self.runc.start("c1")
        process = self.spawner.processes[0]
        process.transport.pid = None
        running.cancel()
        self.assertEqual(process.transport.signals, [])
        self.failureResultOf(running, CancelledError)


class RuncProtocolTests(SynchronousTestCase):
    """
    L{RuncProtocol} on its own.
    """

    def test_transport(self) -> None:
        """
        The fake transport the tests use provides L{IProcessTransport}.
        """
        self.assertTrue(verifyObject(IProcessTransport, FakeProcessTransport(1)))

    def test_noStdin(self) -> None:
        """
        Without stdin bytes, nothing is written and stdin is left as is.
        """
        transport = FakeProcessTransport(1)
        protocol = RuncProtocol()
        protocol.makeConnection(transport)
        self.assertEqual((transport.written, transport.stdinClosed), (b"", False))

    def test_stdin(self) -> None:
        """
        Stdin bytes are written at once, then stdin is closed.
        """
        transport = FakeProcessTransport(1)
        protocol = RuncProtocol(b"{}")
        protocol.makeConnection(transport)
        self.assertEqual((transport.written, transport.stdinClosed), (b"{}", True))

    def test_results(self) -> None:
        """
        L{RuncProtocol.finished} fires with the exit code: 0 for
        L{ProcessDone}, the code of L{ProcessTerminated}, or 128 + its
        signal.
        """
        for reason, code in (
            (ProcessDone(0), 0),
            (ProcessTerminated(exitCode=3), 3),
            (ProcessTerminated(signal=9), 137),
        ):
            protocol = RuncProtocol()
            protocol.makeConnection(FakeProcessTransport(1))
            protocol.childDataReceived(1, b"o")
            protocol.childDataReceived(2, b"e")
            protocol.processEnded(Failure(reason))
            self.assertEqual(
                self.successResultOf(protocol.finished), RunResult(code, b"o", b"oe")
            )


class LastRuntimeErrorTests(SynchronousTestCase):
    """
    L{lastRuntimeError} finds the last error runc logged.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()

    def write(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)

    def test_missing(self) -> None:
        """
        A missing log has no error.
        """
        self.assertEqual(lastRuntimeError(self.path), "")

    def test_lastError(self) -> None:
        """
        The message of the last C{"level":"error"} line, trimmed; other
        levels, lines that are not JSON objects and blank lines are skipped.
        """
        self.write(
            b'{"level":"error","msg":"first","time":"t"}\n'
            b'{"level":"error","msg":"  second\\n","time":"t"}\n'
            b"\n"
            b"garbage\n"
            b"[1, 2]\n"
            b'{"level":"info","msg":"third","time":"t"}\n'
        )
        self.assertEqual(lastRuntimeError(self.path), "second")

    def test_noError(self) -> None:
        """
        A log without an error line gives C{""}.
        """
        self.write(b'{"level":"warning","msg":"w"}\n')
        self.assertEqual(lastRuntimeError(self.path), "")

    def test_tailOnly(self) -> None:
        """
        Only the last L{LOG_TAIL} bytes of a large log are read: an error
        logged before them is not found, one logged within them is, and the
        line cut in two at the start of the tail is skipped.
        """
        filler = json.dumps({"level": "info", "msg": "x" * 100}).encode() + b"\n"
        old = b'{"level":"error","msg":"old"}\n'
        recent = b'{"level":"error","msg":"recent"}\n'
        count = 2 * LOG_TAIL // len(filler)
        self.write(old + filler * count)
        self.assertEqual(lastRuntimeError(self.path), "")
        self.write(old + filler * count + recent + filler * 10)
        self.assertEqual(lastRuntimeError(self.path), "recent")
        read: list[int] = []
        realOpen = open

        def recordingOpen(path: str, mode: str) -> Any:
            f = realOpen(path, mode)
            realRead = f.read

            def recordedRead(size: int = -1) -> bytes:
                data = realRead(size)
                read.append(len(data))
                return data

            f.read = recordedRead  # type: ignore[method-assign]
            return f

        shimd.runc.client.open = recordingOpen  # type: ignore[attr-defined]
        self.addCleanup(delattr, shimd.runc.client, "open")
        self.assertEqual(lastRuntimeError(self.path), "recent")
        self.assertEqual(sum(read), LOG_TAIL)


class RealRuncTests(TestCase):
    """
    The real runc, run through L{reactorSpawner}.
    """

    async def test_psNonexistent(self) -> None:
        """
        C{runc ps} of a container that does not exist fails with runc's own
        text in the L{RuncError}.
        """
        if shutil.which("runc") is None:
            raise SkipTest("runc is not installed")
        from twisted.internet import reactor

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        runc = Runc(
            reactorSpawner(reactor),
            "runc",
            os.path.join(directory, "root"),
            os.path.join(directory, "log.json"),
        )
        with self.assertRaises(RuncError) as caught:
            await runc.ps("nonexistent")
        self.assertIn("does not exist", caught.exception.message)
        self.assertTrue(
            caught.exception.message.startswith(
                "runc did not terminate successfully: exit status 1: "
            ),
            caught.exception.message,
        )
        self.assertIn("does not exist", lastRuntimeError(runc.logPath))
