# -*- test-case-name: tests.test_forkserver -*-
"""
Tests for L{shimd.shim.forkserver}: the warm process that forks shim daemons, and
C{start}'s use of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from shimd.protos import task_pb2, ttrpc_pb2
from shimd.runc import manager
from shimd.shim import errors, forkserver, launcher, spawn
from shimd.shim.address import canConnect, listen, socketAddress
from shimd.shim.flags import daemonArguments, parseFlags
from shimd.ttrpc.framing import REQUEST, RESPONSE, FrameReceiver, encodeFrame


class FingerprintTests(SynchronousTestCase):
    """
    L{forkserver.fingerprint} names the code a server runs.
    """

    def test_stable(self) -> None:
        self.assertEqual(forkserver.fingerprint(), forkserver.fingerprint())

    def test_changesWithFiles(self) -> None:
        """
        Touching, adding or growing a module changes the fingerprint; other
        files do not.
        """
        package = FilePath(self.mktemp())
        package.makedirs()
        module = package.child("a.py")
        module.setContent(b"x = 1\n")
        first = forkserver.fingerprint(package.path)
        package.child("notes.txt").setContent(b"ignored")
        self.assertEqual(forkserver.fingerprint(package.path), first)
        module.setContent(b"x = 12\n")
        self.assertNotEqual(forkserver.fingerprint(package.path), first)

    def test_dropinDirectories(self) -> None:
        """
        A file in a third party's dropin directory is part of the code.
        """
        package = FilePath(self.mktemp())
        package.makedirs()
        dropins = FilePath(self.mktemp())
        dropins.makedirs()
        first = forkserver.fingerprint(package.path, [dropins.path])
        dropins.child("audit.py").setContent(b"x = 1\n")
        self.assertNotEqual(forkserver.fingerprint(package.path, [dropins.path]), first)

    def test_dropinDirectoriesOnPath(self) -> None:
        """
        L{forkserver.dropinDirectories} lists the C{shimd/plugins}
        directories on C{sys.path} without an C{__init__.py}.
        """
        entry = FilePath(self.mktemp())
        entry.child("shimd").child("plugins").makedirs()
        self.patch(sys, "path", [entry.path, *sys.path])
        self.assertIn(
            entry.child("shimd").child("plugins").path,
            forkserver.dropinDirectories(),
        )

    def test_loadedCode(self) -> None:
        """
        L{forkserver.LoadedCode} names a loaded file that changed since.
        """
        module = FilePath(self.mktemp())
        module.setContent(b"x = 1\n")
        loaded = forkserver.LoadedCode(
            {module.path: (6, os.stat(module.path).st_mtime_ns)}
        )
        self.assertIsNone(loaded.changed())
        module.setContent(b"x = 12\n")
        self.assertEqual(loaded.changed(), module.path)

    def test_socketPath(self) -> None:
        """
        The socket's name carries the code's and the context's fingerprints.
        """
        path = forkserver.socketPath("/run/x", "c0ffee")
        self.assertEqual(
            path, f"/run/x/forkserver-{forkserver.fingerprint()}-c0ffee.sock"
        )
        self.assertEqual(
            forkserver.socketPath("/run/x"),
            forkserver.socketPath("/run/x", forkserver.contextFingerprint()),
        )


class ContextTests(SynchronousTestCase):
    """
    L{forkserver.contextFingerprint} covers what a forked daemon would take
    from its server rather than from the request.
    """

    def assertChangesWith(self, change: object, undo: object) -> None:
        before = forkserver.contextFingerprint()
        change()  # type: ignore[operator]
        try:
            self.assertNotEqual(forkserver.contextFingerprint(), before)
        finally:
            undo()  # type: ignore[operator]
        self.assertEqual(forkserver.contextFingerprint(), before)

    def test_stable(self) -> None:
        self.assertEqual(
            forkserver.contextFingerprint(), forkserver.contextFingerprint()
        )

    def test_umask(self) -> None:
        previous = os.umask(0o022)
        os.umask(previous)
        self.assertChangesWith(
            lambda: os.umask(previous ^ 0o002), lambda: os.umask(previous)
        )

    def test_rlimits(self) -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertChangesWith(
            lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard)),
            lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        )

    def test_oomScoreAdjust(self) -> None:
        with open("/proc/self/oom_score_adj") as f:
            previous = f.read().strip()

        def write(value: str) -> None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(value)

        if os.geteuid() != 0 and int(previous) >= 1000:
            raise SkipTest("cannot raise the OOM score adjustment")
        self.assertChangesWith(
            lambda: write(str(min(int(previous) + 1, 1000))), lambda: write(previous)
        )

    def test_ignoredSignals(self) -> None:
        """
        An ignored signal counts, except SIGCHLD, which the server ignores
        and each daemon restores.
        """
        import signal

        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            self.assertNotEqual(
                forkserver.contextFingerprint(),
                (
                    signal.signal(signal.SIGUSR2, previous),
                    forkserver.contextFingerprint(),
                )[1],
            )
        finally:
            signal.signal(signal.SIGUSR2, previous)
        before = forkserver.contextFingerprint()
        previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            self.assertEqual(forkserver.contextFingerprint(), before)
        finally:
            signal.signal(signal.SIGCHLD, previous)

    def test_namespacesAndCgroups(self) -> None:
        """
        The namespaces and the cgroups are in the description.
        """
        description = forkserver.contextDescription()
        self.assertIn(os.readlink("/proc/self/ns/mnt").encode(), description)
        self.assertIn(os.readlink("/proc/self/ns/user").encode(), description)
        with open("/proc/self/cgroup", "rb") as f:
            self.assertIn(f.read(), description)
        self.assertIn(b"NoNewPrivs:", description)
        self.assertIn(b"securebits ", description)

    def test_environment(self) -> None:
        """
        Variables that shape an interpreter count; others, which each daemon
        gets from its request, do not.
        """
        base = forkserver.contextFingerprint({"PATH": "/bin"})
        self.assertEqual(
            forkserver.contextFingerprint({"PATH": "/usr/bin", "X": "1"}), base
        )
        for name in ("PYTHONPATH", "LD_PRELOAD", "LC_ALL", "MALLOC_ARENA_MAX"):
            self.assertNotEqual(
                forkserver.contextFingerprint({"PATH": "/bin", name: "x"}), base
            )


class TrustTests(SynchronousTestCase):
    """
    L{forkserver.checkDirectory} trusts only a real directory of ours, mode
    0700.
    """

    def setUp(self) -> None:
        self.parent = tempfile.mkdtemp(prefix="shimd-trust-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.parent, True)
        self.path = os.path.join(self.parent, "shimd")

    def test_created(self) -> None:
        forkserver.checkDirectory(self.path)
        self.assertEqual(os.stat(self.path).st_mode & 0o7777, 0o700)

    def test_notCreated(self) -> None:
        self.assertRaises(
            forkserver.ForkServerUntrusted,
            forkserver.checkDirectory,
            self.path,
            create=False,
        )

    def assertUntrusted(self, reason: str) -> None:
        error = self.assertRaises(
            forkserver.ForkServerUntrusted, forkserver.checkDirectory, self.path
        )
        self.assertIn(reason, str(error))

    def test_mode(self) -> None:
        os.mkdir(self.path, 0o700)
        os.chmod(self.path, 0o755)
        self.assertUntrusted("mode 0755")

    def test_symlink(self) -> None:
        target = os.path.join(self.parent, "target")
        os.mkdir(target, 0o700)
        os.symlink(target, self.path)
        self.assertUntrusted("not a directory")

    def test_file(self) -> None:
        FilePath(self.path).setContent(b"")
        self.assertUntrusted("not a directory")

    def test_owner(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("changing a directory's owner needs root")
        os.mkdir(self.path, 0o700)
        os.chown(self.path, 65534, 65534)
        self.assertUntrusted("owned by uid 65534")


class EnabledTests(SynchronousTestCase):
    def test_enabled(self) -> None:
        self.assertTrue(forkserver.enabled({}))
        self.assertTrue(forkserver.enabled({"SHIMD_FORKSERVER": "1"}))
        for value in ("0", "no", "false"):
            self.assertFalse(forkserver.enabled({"SHIMD_FORKSERVER": value}))


class MessageTests(SynchronousTestCase):
    """
    Requests are length-prefixed JSON with the listening socket attached.
    """

    def test_roundTrip(self) -> None:
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        forkserver._sendMessage(left, b'{"a": 1}', [writeEnd])
        payload, fds = forkserver._receiveMessage(right)
        self.assertEqual(payload, b'{"a": 1}')
        self.assertEqual(len(fds), 1)
        os.write(fds[0], b"!")
        os.close(fds[0])
        self.assertEqual(os.read(readEnd, 1), b"!")

    def test_truncated(self) -> None:
        left, right = socket.socketpair()
        self.addCleanup(right.close)
        left.sendall(b"\0\0\0\x10{")
        left.close()
        self.assertRaises(forkserver.ForkServerError, forkserver._receiveMessage, right)

    def test_requestRoundTrip(self) -> None:
        """
        A request comes out of its encoding as it went in: flags, command
        line (empty or not), directory and environment.
        """
        for command in ([], ["/usr/bin/python3", "/x/shim", "-id", "a b"]):
            request = forkserver.Request(
                "ctx", ["-id", "a b"], "/bundle", {"A": "1=2"}, command
            )
            decoded = forkserver.Request.decode(request.encode())
            self.assertEqual(
                (
                    decoded.context,
                    decoded.argv,
                    decoded.cwd,
                    decoded.environ,
                    decoded.command,
                ),
                ("ctx", ["-id", "a b"], "/bundle", {"A": "1=2"}, command),
            )

    def test_malformedRequest(self) -> None:
        """
        A request whose counts do not add up, or whose directory is not
        absolute, is refused.
        """
        for payload in (
            b"ctx\0/b\0",
            b"ctx\0/b\0x\00",
            b"ctx\0/b\02\0-id\0",
            b"ctx\0/b\00\03\0a\0b",
            b"ctx\0b\00\00",
            b"ctx\0/b\00\00\0NOEQUALS",
        ):
            self.assertRaises(
                forkserver.ForkServerError, forkserver.Request.decode, payload
            )

    def commandLineAfter(self, words: list[str]) -> bytes:
        """
        Call L{forkserver.setCommandLine} in a forked child, as a forked
        daemon does (its environment replaced first).

        @return: the child's C{/proc/self/cmdline} afterwards.
        """
        readEnd, writeEnd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(readEnd)
                os.environ.clear()
                os.environ.update({"PATH": "/bin"})
                forkserver.setCommandLine(words)
                with open("/proc/self/cmdline", "rb") as f:
                    os.write(writeEnd, f.read())
            finally:
                os._exit(0)
        os.close(writeEnd)
        with os.fdopen(readEnd, "rb") as f:
            answer = f.read()
        os.waitpid(pid, 0)
        return answer

    def test_setCommandLine(self) -> None:
        """
        L{forkserver.setCommandLine} makes C{/proc/self/cmdline}, which
        C{ps} and C{pkill -f} read, show the words given, as one string
        separated by spaces.
        """
        self.assertEqual(
            self.commandLineAfter(["shim", "-id", "a b"]), b"shim -id a b\0"
        )

    def test_setLongCommandLine(self) -> None:
        """
        A command line longer than the original arguments is shown whole,
        running on into the original environment's memory.
        """
        with open("/proc/self/cmdline", "rb") as f:
            length = len(f.read())
        words = ["containerd-shim", "-id", "x" * length, "-address", "/run/c.sock"]
        self.assertEqual(self.commandLineAfter(words), " ".join(words).encode() + b"\0")

    def test_unavailable(self) -> None:
        """
        With no server at the path, nothing is asked and the caller may
        spawn the daemon itself.
        """
        self.assertRaises(
            forkserver.ForkServerUnavailable,
            forkserver.requestDaemon,
            os.path.join(self.mktemp(), "none.sock"),
            [],
            "/",
            {},
            0,
            "context",
        )


def _call(path: str, method: str, request: object, responseType: type) -> object:
    """
    One blocking ttrpc call, enough for a test to talk to a daemon.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(path)
        envelope = ttrpc_pb2.Request(
            service="containerd.task.v2.Task",
            method=method,
            payload=request.SerializeToString(),  # type: ignore[attr-defined]
        )
        connection.sendall(encodeFrame(1, REQUEST, envelope.SerializeToString()))
        receiver = FrameReceiver()
        while True:
            data = connection.recv(65536)
            if not data:
                raise EOFError("connection closed")
            for frame in receiver.feed(data):
                assert frame.messageType == RESPONSE  # type: ignore[union-attr]
                response = ttrpc_pb2.Response.FromString(frame.payload)  # type: ignore[union-attr]
                return responseType.FromString(response.payload)  # type: ignore[attr-defined]


class ServerTests(SynchronousTestCase):
    """
    A real fork server, and C{start} using it.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the fork server tests need root (subreaper, /run)")
        self.directory = tempfile.mkdtemp(prefix="shimd-fs-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = forkserver.socketPath(self.directory)
        self.server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from shimd.shim.forkserver import serve; "
                "serve(sys.argv[1], float(sys.argv[2]))",
                self.path,
                "30",
            ]
        )
        self.addCleanup(self._stopServer)
        deadline = time.monotonic() + 60
        while not canConnect(self.path):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.fail("the fork server did not start")
            time.sleep(0.05)

    def _stopServer(self) -> None:
        if self.server.poll() is None:
            self.server.kill()
        self.server.wait()

    def bundle(self) -> str:
        bundle = tempfile.mkdtemp(prefix="b-", dir=self.directory)
        os.mkfifo(os.path.join(bundle, "log"))
        reader = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        return bundle

    def test_forksServingDaemon(self) -> None:
        """
        The server forks a daemon that serves the socket it was sent, in the
        bundle, with the command line it would have been spawned with, and
        stops on C{Shutdown}.
        """
        socketPath = os.path.join(self.directory, "shim.sock")
        listener = listen("unix://" + socketPath)
        assert listener is not None
        bundle = self.bundle()
        environ = dict(os.environ, TTRPC_ADDRESS=os.path.join(self.directory, "none"))
        arguments = daemonArguments("fsns", "c1", "/c.sock", False)
        command = ["/opt/shim/bin/python3", "/opt/shim/bin/shim", *arguments]
        forked = forkserver.requestDaemon(
            self.path,
            arguments,
            bundle,
            environ,
            listener.fileno(),
            forkserver.contextFingerprint(),
            command=command,
        )
        listener.close()
        pid = forked.pid
        self.addCleanup(self._kill, pid)
        daemon = spawn.Daemon(pid, forked.proc, forked.status.detach())
        daemon.waitReady(60)
        daemon.close()
        reply = _call(
            socketPath,
            "Connect",
            task_pb2.ConnectRequest(id="c1"),
            task_pb2.ConnectResponse,
        )
        self.assertEqual(reply.shim_pid, pid)  # type: ignore[attr-defined]
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), bundle)
        self.assertEqual(os.getsid(pid), pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            self.assertEqual(f.read(), " ".join(command).encode() + b"\0")
        _call(
            socketPath, "Shutdown", task_pb2.ShutdownRequest(), task_pb2.ShutdownRequest
        )
        deadline = time.monotonic() + 30
        while os.path.exists(socketPath) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(socketPath))

    def test_startUsesServer(self) -> None:
        """
        C{start} has the fork server fork the daemon: its parent is the
        server, and it serves the shim's address.
        """
        self.patch(forkserver, "SOCKET_DIR", self.directory)
        self.patch(os, "environ", dict(os.environ, TTRPC_ADDRESS="/nonexistent"))
        bundle = self.bundle()
        FilePath(bundle).child("config.json").setContent(b"{}")
        flags = parseFlags(
            ["-namespace", "fsns", "-address", "/c.sock", "-id", "c2", "start"]
        )
        address = launcher.start(manager, flags, b"", bundle, socketDir=self.directory)
        path = address.removeprefix("unix://")
        reply = _call(
            path, "Connect", task_pb2.ConnectRequest(id="c2"), task_pb2.ConnectResponse
        )
        pid = reply.shim_pid  # type: ignore[attr-defined]
        self.addCleanup(self._kill, pid)
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        self.assertEqual(parent, self.server.pid)
        _call(path, "Shutdown", task_pb2.ShutdownRequest(), task_pb2.ShutdownRequest)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass

    def test_refusesBadRequest(self) -> None:
        """
        A request without a listening socket is refused, and the server
        carries on.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(self.path)
            forkserver._sendMessage(connection, b'{"argv": []}', [])
            reply = connection.recv(4096)
        self.assertIn(b"error", reply)
        self.assertIsNone(self.server.poll())

    def test_refusesOtherContext(self) -> None:
        """
        A request from another context is refused (nothing is forked), and
        the server, no longer sure of its own, exits: the next C{start}
        replaces it.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        request = forkserver.Request("another", [], "/", {})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(self.path)
            forkserver._sendMessage(connection, request.encode(), [writeEnd])
            reply = connection.recv(4096)
        self.assertEqual(reply, b"error the fork server's context changed\n")
        self.assertEqual(self.server.wait(timeout=60), 0)
        self.assertFalse(os.path.exists(self.path))

    def test_stoppedServer(self) -> None:
        """
        A stopped (wedged) server does not fail C{start}: it is killed and
        replaced, and the daemon is spawned.
        """
        self.patch(forkserver, "SOCKET_DIR", self.directory)
        self.patch(os, "environ", dict(os.environ, TTRPC_ADDRESS="/nonexistent"))
        spawned: list[str] = []
        self.patch(forkserver, "spawnServer", spawned.append)
        os.kill(self.server.pid, signal.SIGSTOP)
        bundle = self.bundle()
        FilePath(bundle).child("config.json").setContent(b"{}")
        chdir(self, bundle)
        flags = parseFlags(
            ["-namespace", "fsns", "-address", "/c.sock", "-id", "c3", "start"]
        )
        address = launcher.start(manager, flags, b"", bundle, socketDir=self.directory)
        path = address.removeprefix("unix://")
        reply = _call(
            path, "Connect", task_pb2.ConnectRequest(id="c3"), task_pb2.ConnectResponse
        )
        self.assertEqual(parentOf(reply.shim_pid), os.getpid())  # type: ignore[attr-defined]
        self.assertEqual(self.server.wait(), -9)
        self.assertEqual(spawned, [self.path])
        _call(path, "Shutdown", task_pb2.ShutdownRequest(), task_pb2.ShutdownRequest)

    def test_startFailsWithoutLog(self) -> None:
        """
        A forked daemon that cannot start fails C{start} with its reason,
        leaving neither the socket nor the address file.
        """
        self.patch(forkserver, "SOCKET_DIR", self.directory)
        self.patch(os, "environ", dict(os.environ, TTRPC_ADDRESS="/nonexistent"))
        bundle = tempfile.mkdtemp(prefix="b-", dir=self.directory)
        FilePath(bundle).child("config.json").setContent(b"{}")
        flags = parseFlags(
            ["-namespace", "fsns", "-address", "/c.sock", "-id", "c4", "start"]
        )
        error = self.assertRaises(
            errors.LaunchError,
            launcher.start,
            manager,
            flags,
            b"",
            bundle,
            socketDir=self.directory,
        )
        self.assertEqual(
            str(error),
            f"start shim daemon: open log fifo {bundle}/log: No such file or directory",
        )
        self.assertFalse(os.path.exists(os.path.join(bundle, "address")))
        address = socketAddress("/c.sock", "fsns", "c4", self.directory)
        self.assertFalse(os.path.exists(address.removeprefix("unix://")))
        self.assertIsNone(self.server.poll())


# A stand-in for a fork server: it accepts one connection, records what it
# received, answers with argv[3] (if any) and then waits to be killed.
FAKE_SERVER = """\
import os, socket, sys, time
path, record, answer = sys.argv[1], sys.argv[2], sys.argv[3]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(8)
open(record + ".ready", "w").close()
connection, _ = server.accept()
connection.settimeout(2)
received = b""
try:
    while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
except OSError:
    pass
with open(record, "wb") as f:
    f.write(received)
try:
    connection.sendall(answer.encode() + b"\\n" if answer else b"")
except OSError:
    pass
time.sleep(600)
"""


class FallbackTests(SynchronousTestCase):
    """
    C{start} spawns the daemon itself whenever the fork server cannot be
    used, trusts nothing it has not checked, and replaces a broken server.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the fork server tests need root (subreaper, /run)")
        self.directory = tempfile.mkdtemp(prefix="shimd-fb-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.patch(forkserver, "SOCKET_DIR", self.directory)
        self.patch(os, "environ", dict(os.environ, TTRPC_ADDRESS="/nonexistent"))
        self.path = forkserver.socketPath(self.directory)
        # Servers start in the background; record them instead.
        self.spawned: list[str] = []
        self.patch(forkserver, "spawnServer", self.spawned.append)

    def fakeServer(
        self, answer: str, user: int | None = None
    ) -> subprocess.Popen[bytes]:
        """
        Start a L{FAKE_SERVER} at the fork server's path, as C{user}.
        """
        scratch = tempfile.mkdtemp(prefix="fake-", dir="/tmp")
        self.addCleanup(shutil.rmtree, scratch, True)
        os.chmod(scratch, 0o777)
        self.record = os.path.join(scratch, "record")
        bound = os.path.join(scratch, "s.sock")
        process = subprocess.Popen(
            [sys.executable, "-c", FAKE_SERVER, bound, self.record, answer],
            user=user,
        )
        self.addCleanup(stopProcess, process)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.record + ".ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail("the fake fork server did not start")
            time.sleep(0.02)
        os.rename(bound, self.path)
        return process

    def startShim(self, id: str) -> tuple[int, str]:
        """
        Run C{start} for a new bundle.

        @return: the daemon's pid and the bundle.
        """
        bundle = tempfile.mkdtemp(prefix="b-", dir=self.directory)
        makeLogFifo(self, bundle)
        FilePath(bundle).child("config.json").setContent(b"{}")
        flags = parseFlags(
            ["-namespace", "fbns", "-address", "/c.sock", "-id", id, "start"]
        )
        chdir(self, bundle)
        address = launcher.start(manager, flags, b"", bundle, socketDir=self.directory)
        path = address.removeprefix("unix://")
        reply = _call(
            path, "Connect", task_pb2.ConnectRequest(id=id), task_pb2.ConnectResponse
        )
        pid: int = reply.shim_pid  # type: ignore[attr-defined]
        self.addCleanup(
            _call,
            path,
            "Shutdown",
            task_pb2.ShutdownRequest(),
            task_pb2.ShutdownRequest,
        )
        return pid, bundle

    def test_untrustedDirectory(self) -> None:
        """
        With the socket directory not mode 0700, nothing is sent to the
        server there, and the daemon is spawned.
        """
        fake = self.fakeServer("pid 1")
        os.chmod(self.directory, 0o755)
        pid, _ = self.startShim("u1")
        self.assertEqual(parentOf(pid), os.getpid())
        self.assertFalse(os.path.exists(self.record))
        self.assertIsNone(fake.poll())
        self.assertEqual(self.spawned, [])

    def test_wrongPeer(self) -> None:
        """
        A server that is not root's gets nothing, not even a connection's
        worth of request, and the daemon is spawned.
        """
        fake = self.fakeServer("pid 1", user=65534)
        pid, _ = self.startShim("w1")
        self.assertEqual(parentOf(pid), os.getpid())
        self.assertEqual(self.spawned, [])
        fake.kill()
        fake.wait()
        self.assertEqual(
            FilePath(self.record).getContent() if os.path.exists(self.record) else b"",
            b"",
        )

    def test_foreignPid(self) -> None:
        """
        A reply naming a process that is not the server's child (here PID
        1) is not believed: nothing is written to its C{/proc} directory,
        the server is replaced, and the daemon is spawned.
        """
        with open("/proc/1/oom_score_adj") as f:
            before = f.read()
        fake = self.fakeServer("pid 1")
        pid, _ = self.startShim("p1")
        self.assertEqual(parentOf(pid), os.getpid())
        with open("/proc/1/oom_score_adj") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(fake.wait(), -9)
        self.assertEqual(self.spawned, [self.path])
        self.assertNotEqual(FilePath(self.record).getContent(), b"")

    def test_badReply(self) -> None:
        """
        Nonsense from the server: the server is replaced, the daemon
        spawned.
        """
        fake = self.fakeServer("hello")
        pid, _ = self.startShim("b1")
        self.assertEqual(parentOf(pid), os.getpid())
        self.assertEqual(fake.wait(), -9)
        self.assertEqual(self.spawned, [self.path])

    def test_silentServer(self) -> None:
        """
        A server that never answers is given up on, killed and replaced; the
        daemon is spawned.
        """
        fake = self.fakeServer("")
        pid, _ = self.startShim("s1")
        self.assertEqual(parentOf(pid), os.getpid())
        self.assertEqual(fake.wait(), -9)
        self.assertEqual(self.spawned, [self.path])

    def test_errorReply(self) -> None:
        """
        A server that refuses (nothing forked) is left alone; the daemon is
        spawned.
        """
        fake = self.fakeServer("error no")
        pid, _ = self.startShim("e1")
        self.assertEqual(parentOf(pid), os.getpid())
        self.assertIsNone(fake.poll())
        self.assertEqual(self.spawned, [self.path])

    def test_missingLogFifo(self) -> None:
        """
        A daemon that cannot start fails C{start} with its reason, leaving
        neither the socket nor the address file.
        """
        self.patch(os, "environ", dict(os.environ, SHIMD_FORKSERVER="0"))
        bundle = tempfile.mkdtemp(prefix="b-", dir=self.directory)
        FilePath(bundle).child("config.json").setContent(b"{}")
        flags = parseFlags(
            ["-namespace", "fbns", "-address", "/c.sock", "-id", "nolog", "start"]
        )
        chdir(self, bundle)
        error = self.assertRaises(
            errors.LaunchError,
            launcher.start,
            manager,
            flags,
            b"",
            bundle,
            socketDir=self.directory,
        )
        self.assertEqual(
            str(error),
            f"start shim daemon: open log fifo {bundle}/log: No such file or directory",
        )
        self.assertFalse(os.path.exists(os.path.join(bundle, "address")))
        address = socketAddress("/c.sock", "fbns", "nolog", self.directory)
        self.assertFalse(os.path.exists(address.removeprefix("unix://")))

    def test_unexpectedFailure(self) -> None:
        """
        Any other failure on the way to the server (here, reading this
        process's context) is a reason to spawn the daemon, not an error.
        """

        def broken(environ: object = None) -> str:
            raise OSError(5, "Input/output error")

        self.patch(forkserver, "contextFingerprint", broken)
        error = self.assertRaises(
            forkserver.ForkServerError, forkserver.forkDaemon, [], "/", {}, 0
        )
        self.assertEqual(str(error), "fork server: [Errno 5] Input/output error")

    def test_daemonExitsSilently(self) -> None:
        """
        A daemon that exits without a word fails C{start} at once (its
        status pipe closes), leaving neither the socket nor the address.
        """
        self.patch(os, "environ", dict(os.environ, SHIMD_FORKSERVER="0"))
        self.patch(
            launcher,
            "daemonCommand",
            lambda manager, arguments: [sys.executable, "-c", ""],
        )
        bundle = tempfile.mkdtemp(prefix="b-", dir=self.directory)
        FilePath(bundle).child("config.json").setContent(b"{}")
        flags = parseFlags(
            ["-namespace", "fbns", "-address", "/c.sock", "-id", "quiet", "start"]
        )
        chdir(self, bundle)
        error = self.assertRaises(
            errors.LaunchError,
            launcher.start,
            manager,
            flags,
            b"",
            bundle,
            socketDir=self.directory,
        )
        self.assertEqual(str(error), "start shim daemon: it exited")
        self.assertFalse(os.path.exists(os.path.join(bundle, "address")))
        address = socketAddress("/c.sock", "fbns", "quiet", self.directory)
        self.assertFalse(os.path.exists(address.removeprefix("unix://")))


def makeLogFifo(case: SynchronousTestCase, bundle: str) -> None:
    """
    Make the bundle's C{log} fifo, with a reader, as containerd does.
    """
    os.mkfifo(os.path.join(bundle, "log"))
    reader = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK)
    case.addCleanup(os.close, reader)


def chdir(case: SynchronousTestCase, path: str) -> None:
    """
    Work in C{path} for the rest of the test, as containerd runs C{start}
    in the bundle.
    """
    previous = os.getcwd()
    os.chdir(path)
    case.addCleanup(os.chdir, previous)


def parentOf(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def stopProcess(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def killServerAt(path: str) -> None:
    """
    Kill whatever fork server listens at C{path} (one C{start} started).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(path)
        pid, _, _ = forkserver.peerCredentials(probe)
        os.kill(pid, 9)
    except OSError:
        pass
    finally:
        probe.close()
