# -*- test-case-name: tests.test_forkserver -*-
"""
Tests for L{shimd.forkserver}: the warm process that forks shim daemons, and
C{start}'s use of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from shimd import forkserver, launcher
from shimd.protos import task_pb2, ttrpc_pb2
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

    def test_socketPath(self) -> None:
        path = forkserver.socketPath("/run/x")
        self.assertTrue(path.startswith("/run/x/forkserver-"))
        self.assertTrue(path.endswith(".sock"))


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
                "import sys; from shimd.forkserver import serve; "
                "serve(sys.argv[1], float(sys.argv[2]))",
                self.path,
                "30",
            ]
        )
        self.addCleanup(self._stopServer)
        deadline = time.monotonic() + 60
        while not launcher.canConnect(self.path):
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
        bundle, and stops on C{Shutdown}.
        """
        socketPath = os.path.join(self.directory, "shim.sock")
        listener = launcher.listen("unix://" + socketPath)
        assert listener is not None
        bundle = self.bundle()
        environ = dict(os.environ, TTRPC_ADDRESS=os.path.join(self.directory, "none"))
        pid = forkserver.requestDaemon(
            self.path,
            launcher.daemonArguments("fsns", "c1", "/c.sock", False),
            bundle,
            environ,
            listener.fileno(),
        )
        listener.close()
        self.addCleanup(self._kill, pid)
        reply = _call(
            socketPath,
            "Connect",
            task_pb2.ConnectRequest(id="c1"),
            task_pb2.ConnectResponse,
        )
        self.assertEqual(reply.shim_pid, pid)  # type: ignore[attr-defined]
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), bundle)
        self.assertEqual(os.getsid(pid), pid)
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
        flags = launcher.parseFlags(
            ["-namespace", "fsns", "-address", "/c.sock", "-id", "c2", "start"]
        )
        address = launcher.start(flags, b"", bundle, socketDir=self.directory)
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
