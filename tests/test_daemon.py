# -*- test-case-name: tests.test_daemon -*-
"""
Tests for L{shimd.shim.daemon}, with real processes: the daemon C{start} spawns,
as containerd and C{ctr} see it, and the same service under C{twistd -n
shim}.

These run the launcher as containerd does (C{shim-cli.md} sections 2, 5, 7
and 8), so they need root (the sockets live in C{/run/containerd/s}) and
containerd's C{ctr}, whose own ttrpc client checks the daemon's answers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from shimd import RUNTIME_NAME
from shimd.protos import task_pb2
from shimd.shim.address import listen
from shimd.shim.daemon import StartupReport
from shimd.ttrpc.client import ServiceClient, TTRPCClientProtocol, connectTTRPC
from shimd.ttrpc.status import ConnectionClosed
from tests.test_tap import pluginEnvironment, twistdCommand

NAMESPACE = "shimdtest"
ID = "sx1"
SOCKET_DIR = "/run/containerd/s"
TASK = task_pb2.DESCRIPTOR.services_by_name["Task"]
PR_SET_CHILD_SUBREAPER = 36
POLL_INTERVAL = 0.05
# How long to wait for a daemon before declaring it hung: a guard against a
# test that never ends, not a measure of anything.
PATIENCE = 60.0
CTR = shutil.which("ctr")


def skipReason() -> str | None:
    """
    Why these tests cannot run here, if they cannot.
    """
    if not sys.platform.startswith("linux"):
        return "the shim daemon runs on Linux only"
    if os.geteuid() != 0:
        return "needs root: shim sockets are created in /run/containerd/s"
    if CTR is None:
        return "needs ctr (containerd's client) on PATH to check the daemon"
    return None


def setSubreaper(enabled: bool) -> None:
    """
    Make this process the reaper of its orphaned descendants (or stop), so
    that the daemon, orphaned when C{start} exits, becomes our child and we
    can read its exit status.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def listeningHolders(path: str) -> set[int]:
    """
    The pids of the processes holding the listening unix socket bound at
    C{path}: the daemon, however it was started.
    """
    inode = None
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            listening = int(fields[3], 16) & 0x10000
            if len(fields) >= 8 and fields[7] == path and listening:
                inode = fields[6]
    if inode is None:
        return set()
    target = f"socket:[{inode}]"
    holders = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            descriptors = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{entry}/fd/{descriptor}") == target:
                    holders.add(int(entry))
                    break
            except OSError:
                continue
    return holders


def processesMentioning(text: str) -> set[int]:
    """
    The pids of the processes whose command line contains C{text}.
    """
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                arguments = f.read().split(b"\0")
        except OSError:
            continue
        if text.encode() in arguments:
            found.add(int(entry))
    return found


@inlineCallbacks
def waitForExit(pid: int) -> Any:
    """
    Wait, without blocking the reactor, for our child C{pid} to exit.

    @return: a Deferred of its exit code (negative for a signal).
    """
    for _ in range(int(PATIENCE / POLL_INTERVAL)):
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return os.waitstatus_to_exitcode(status)
        yield deferLater(reactor, POLL_INTERVAL, lambda: None)
    raise AssertionError(f"process {pid} did not exit")


@inlineCallbacks
def connectWhenListening(path: str) -> Any:
    """
    Connect to a socket path, retrying while nothing listens there yet.

    @return: a Deferred of the L{TTRPCClientProtocol}.
    """
    for _ in range(int(PATIENCE / POLL_INTERVAL)):
        try:
            protocol = yield connectTTRPC(reactor, reactor, path)  # type: ignore[arg-type]
        except ConnectError:
            yield deferLater(reactor, POLL_INTERVAL, lambda: None)
        else:
            return protocol
    raise AssertionError(f"nothing listens on {path}")


class StartupReportTests(SynchronousTestCase):
    """
    L{StartupReport} tells C{start} once whether the daemon serves.
    """

    def test_fromEnvironment(self) -> None:
        """
        The descriptor's variable is taken out of the environment, so that
        nothing the daemon runs inherits it.
        """
        environ = {"SHIMD_READY_FD": "7", "A": "b"}
        self.assertEqual(StartupReport.fromEnvironment(environ).fd, 7)
        self.assertEqual(environ, {"A": "b"})
        self.assertIsNone(StartupReport.fromEnvironment({}).fd)

    def test_reportsOnce(self) -> None:
        """
        The first report is written and the descriptor closed; later ones
        are ignored.
        """
        readEnd, writeEnd = os.pipe()
        report = StartupReport(writeEnd)
        report.failed("no log\nfifo")
        report.ready()
        with os.fdopen(readEnd, "rb") as f:
            self.assertEqual(f.read(), b"error no log fifo\n")


class DaemonTestCase(TestCase):
    """
    Common ground: a temporary directory, this process as subreaper, ttrpc
    clients that are closed after the test, and daemons that are killed.
    """

    skip = skipReason()
    timeout = 180

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="shimd-daemon-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        setSubreaper(True)
        self.addCleanup(setSubreaper, False)
        self.clients: list[TTRPCClientProtocol] = []
        self.addCleanup(self.closeClients)
        self.daemons: set[int] = set()
        self.addCleanup(self.killDaemons)

    @inlineCallbacks
    def closeClients(self) -> Any:
        """
        Close the test's ttrpc connections and wait until they are gone.
        """
        for client in self.clients:
            client.transport.loseConnection()
            yield client.whenClosed

    def killDaemons(self) -> None:
        """
        Kill and reap whatever daemon the test left running.
        """
        for pid in self.daemons:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    @inlineCallbacks
    def call(self, path: str, method: str, request: Any) -> Any:
        """
        Call a Task method on the shim at C{path}, over a new connection.

        @return: a Deferred of the response.
        """
        protocol = yield connectWhenListening(path)
        self.clients.append(protocol)
        response = yield ServiceClient(protocol, TASK).call(
            method, request, timeout=PATIENCE
        )
        return response


class LaunchedDaemonTests(DaemonTestCase):
    """
    The daemon as containerd gets it: C{start} in a bundle directory.
    """

    def setUp(self) -> None:
        super().setUp()
        self.bundle = os.path.join(self.directory, "bundle")
        os.mkdir(self.bundle, 0o700)
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            f.write("{}")
        # containerd makes the log fifo and holds it open read-write,
        # non-blocking, before it runs start.
        fifo = os.path.join(self.bundle, "log")
        os.mkfifo(fifo, 0o700)
        self.log = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.addCleanup(os.close, self.log)
        self.logged = b""
        self.containerd = os.path.join(self.directory, "containerd.sock")
        key = f"{self.containerd}/{NAMESPACE}/{ID}".encode()
        self.path = os.path.join(SOCKET_DIR, hashlib.sha256(key).hexdigest())
        self.address = "unix://" + self.path

    def killDaemons(self) -> None:
        """
        Kill whatever still listens on the test's socket too, then remove
        the socket.
        """
        self.daemons |= listeningHolders(self.path)
        super().killDaemons()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def readLog(self) -> str:
        """
        Everything the daemon has logged to the fifo so far.
        """
        while True:
            try:
                chunk = os.read(self.log, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.logged += chunk
        return self.logged.decode()

    def start(self) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{start} as containerd does: in the bundle, with the observed
        argv, C{/dev/null} as stdin (no runtime options), and
        C{TTRPC_ADDRESS} naming a socket that does not exist.
        """
        environment = dict(os.environ)
        environment["TTRPC_ADDRESS"] = os.path.join(self.directory, "none.ttrpc")
        # A daemon forked by a warm fork server would not be our descendant:
        # its exit status could not be read, and the server would outlive
        # the test.
        environment["SHIMD_FORKSERVER"] = "0"
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "shimd.runc.shim",
                "-namespace",
                NAMESPACE,
                "-address",
                self.containerd,
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                ID,
                "start",
            ],
            cwd=self.bundle,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PATIENCE,
        )

    def startDaemon(self) -> int:
        """
        Run C{start}, check it succeeded, and find the daemon it spawned.

        @return: the daemon's pid.
        """
        result = self.start()
        self.assertEqual((result.returncode, result.stderr), (0, b""), result.stdout)
        [daemon] = listeningHolders(self.path)
        self.daemons.add(daemon)
        return daemon

    def test_start(self) -> None:
        """
        C{start} prints the socket address, and nothing else, exits 0, writes
        the address into the bundle, and leaves one daemon, in a session of
        its own, listening on an owner-only socket in an owner-only
        directory.
        """
        result = self.start()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, b"")
        self.assertEqual(result.stdout, self.address.encode())
        self.assertRegex(self.address, r"^unix:///run/containerd/s/[0-9a-f]{64}$")
        with open(os.path.join(self.bundle, "address"), "rb") as f:
            self.assertEqual(f.read(), self.address.encode())
        status = os.stat(self.path)
        self.assertTrue(stat.S_ISSOCK(status.st_mode))
        self.assertEqual(stat.S_IMODE(status.st_mode), 0o600)
        self.assertEqual(status.st_uid, 0)
        directory = os.stat(SOCKET_DIR)
        self.assertEqual(stat.S_IMODE(directory.st_mode) & 0o077, 0)
        [daemon] = listeningHolders(self.path)
        self.daemons.add(daemon)
        self.assertEqual(os.getsid(daemon), daemon)

    @inlineCallbacks
    def test_startupReportAndNotice(self) -> Any:
        """
        A daemon started with C{SHIMD_READY_FD} writes C{ready} there once
        it has its log fifo and its socket, and closes it; with
        C{SHIMD_SPAWNED_COLD} it logs the reason at the level given.
        """
        listener = listen(self.address)
        assert listener is not None
        readEnd, writeEnd = os.pipe()
        environment = dict(os.environ)
        environment["TTRPC_ADDRESS"] = os.path.join(self.directory, "none.ttrpc")
        environment["SHIMD_READY_FD"] = "4"
        environment["SHIMD_SPAWNED_COLD"] = "warn the fork server is away"
        listening = listener.fileno()

        def inherit() -> None:
            os.dup2(listening, 3)
            os.dup2(writeEnd, 4)
            os.close(listening)
            os.close(writeEnd)

        command = [sys.executable, "-m", "shimd.runc.shim", "-namespace", NAMESPACE]
        daemon = subprocess.Popen(
            [*command, "-id", ID, "-address", self.containerd],
            cwd=self.bundle,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, listening, writeEnd),
            preexec_fn=inherit,
        )
        self.daemons.add(daemon.pid)
        listener.close()
        os.close(writeEnd)
        with os.fdopen(readEnd, "rb") as status:
            self.assertEqual(status.read(), b"ready\n")
        yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        self.assertIn(
            'level=warning msg="fork server not used: the fork server is away"',
            self.readLog(),
        )

    def test_ctrState(self) -> None:
        """
        containerd's own ttrpc client gets a well-formed answer from the
        daemon: C{ctr shim state} for a container not created yet fails
        with C{NOT_FOUND} and the Go shim's text.
        """
        self.startDaemon()
        assert CTR is not None
        result = subprocess.run(
            [CTR, "-a", self.containerd, "-n", NAMESPACE, "shim", "--id", ID, "state"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertEqual(
            result.stderr.strip(),
            "ctr: rpc error: code = NotFound desc = container not created: not found",
        )

    @inlineCallbacks
    def test_connect(self) -> Any:
        """
        C{Connect} answers with the daemon's pid, and no task pid while no
        container exists.
        """
        daemon = self.startDaemon()
        response = yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        self.assertEqual(response.shim_pid, daemon)
        self.assertEqual(response.task_pid, 0)

    @inlineCallbacks
    def test_logs(self) -> Any:
        """
        The daemon logs logrus text lines into the bundle's C{log} fifo, with
        its namespace, pid and runtime name.
        """
        daemon = self.startDaemon()
        yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        lines = self.readLog().splitlines()
        serving = [line for line in lines if "serving on" in line]
        self.assertEqual(len(serving), 1, lines)
        self.assertRegex(
            serving[0],
            r'^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z" level=info '
            + re.escape(
                f'msg="serving on {self.path} for namespace {NAMESPACE}" '
                f"namespace={NAMESPACE} pid={daemon} runtime={RUNTIME_NAME}"
            )
            + "$",
        )

    @inlineCallbacks
    def test_secondStart(self) -> Any:
        """
        A second C{start} with the same inputs prints the same address and
        spawns nothing: the one daemon keeps serving.
        """
        daemon = self.startDaemon()
        yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        os.unlink(os.path.join(self.bundle, "address"))
        result = self.start()
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, self.address.encode(), b""),
        )
        with open(os.path.join(self.bundle, "address"), "rb") as f:
            self.assertEqual(f.read(), self.address.encode())
        self.assertEqual(listeningHolders(self.path), {daemon})
        self.assertEqual(processesMentioning(self.containerd), {daemon})
        response = yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        self.assertEqual(response.shim_pid, daemon)

    @inlineCallbacks
    def test_shutdown(self) -> Any:
        """
        C{Shutdown}, with no container, makes the daemon exit 0 and remove
        its socket; the reply may be lost as it goes, as containerd allows.
        """
        daemon = self.startDaemon()
        yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        try:
            response = yield self.call(
                self.path, "Shutdown", task_pb2.ShutdownRequest(id=ID)
            )
        except ConnectionClosed:
            pass
        else:
            self.assertEqual(response.ByteSize(), 0)
        code = yield waitForExit(daemon)
        self.daemons.discard(daemon)
        self.assertEqual(code, 0)
        self.assertFalse(os.path.exists(self.path))
        for client in self.clients:
            yield client.whenClosed
        self.assertIn('msg="shim stopped"', self.readLog())

    @inlineCallbacks
    def test_sigterm(self) -> Any:
        """
        SIGTERM makes the daemon shut down gracefully: it exits 0 and
        removes its socket.
        """
        daemon = self.startDaemon()
        yield self.call(self.path, "Connect", task_pb2.ConnectRequest(id=ID))
        os.kill(daemon, signal.SIGTERM)
        code = yield waitForExit(daemon)
        self.daemons.discard(daemon)
        self.assertEqual(code, 0)
        self.assertFalse(os.path.exists(self.path))
        self.assertIn('msg="shim stopped"', self.readLog())


class TwistdTests(DaemonTestCase):
    """
    The same service under C{twistd -n shim}.
    """

    @inlineCallbacks
    def test_servesAndStops(self) -> Any:
        """
        C{twistd -n shim --namespace NS --socket PATH} serves the task API on
        PATH, owner-only, and on SIGTERM stops gracefully (its shutdown
        logged) and removes the socket.
        """
        path = os.path.join(self.directory, "shim.sock")
        environment = pluginEnvironment()
        environment["TTRPC_ADDRESS"] = os.path.join(self.directory, "none.ttrpc")
        with open(os.path.join(self.directory, "twistd.log"), "wb") as output:
            process = subprocess.Popen(
                [
                    *twistdCommand(),
                    "-n",
                    "--pidfile=",
                    "shim",
                    "--namespace",
                    NAMESPACE,
                    "--socket",
                    path,
                ],
                cwd=self.directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.daemons.add(process.pid)
        response = yield self.call(path, "Connect", task_pb2.ConnectRequest(id=ID))
        self.assertEqual(response.shim_pid, process.pid)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        process.send_signal(signal.SIGTERM)
        code = yield waitForExit(process.pid)
        self.daemons.discard(process.pid)
        process.returncode = code
        # twistd stops gracefully, then ends itself by the signal it got
        # (twisted.scripts.twistd.runApp calls app._exitWithSignal).
        self.assertEqual(code, -signal.SIGTERM)
        self.assertFalse(os.path.exists(path))
        with open(os.path.join(self.directory, "twistd.log")) as f:
            log = f.read()
        self.assertIn(f"serving on {path} for namespace {NAMESPACE}", log)
        self.assertIn("shim stopped", log)
