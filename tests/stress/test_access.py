"""
Who may talk to a shim: its socket and the socket directory are owner-only
and never abstract; another user cannot connect, and a shim that is reached
all the same (its socket opened up on purpose) drops a peer that is not its
own user unanswered; and ids that try to escape the bundle are refused
before they touch a path.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap

from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2
from shimd.ttrpc.status import Code, TTRPCError
from tests.e2e import host
from tests.e2e.containerd import RUNC_ROOT, SHIM_SOCKET_DIR, waitUntil
from tests.e2e.runtimes import GO, SHIMD, Runtime, missingPrerequisites
from tests.stress.base import StressMixin, execSpec
from tests.stress.client import requestFrame
from tests.stress.proc import socketInodes, unixSocketNames
from tests.stress.scale import report

SYSTEM_PYTHON = "/usr/bin/python3"

# Run as the other user: connect, send a request, and say what happened.
PEER = textwrap.dedent(
    """\
    import socket, sys
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(30)
    try:
        connection.connect(sys.argv[1])
    except PermissionError:
        print("EACCES")
        sys.exit(0)
    try:
        connection.sendall(bytes.fromhex(sys.argv[2]))
        answer = connection.recv(100)
    except (BrokenPipeError, ConnectionResetError):
        answer = b""
    print("closed" if answer == b"" else "answered")
    """
)

ESCAPING_IDS = ("../x", "../../../../tmp/escaped", "a/b", "", "x\0y", "..")


def throwawayUser(test: TestCase) -> str:
    """
    Create a user for this test (removed afterwards), or skip.

    @return: its name.
    """
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise test.skipTest(f"needs {tool}")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise test.skipTest(f"needs {SYSTEM_PYTHON}")
    name = f"shimdt{os.getpid()}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    test.addCleanup(subprocess.run, ["userdel", name], check=False, capture_output=True)
    return name


def asUser(user: str, path: str) -> str:
    """
    As C{user}, connect to C{path} and send a C{Connect}.

    @return: C{EACCES} (the connection itself was refused), C{closed} (the
        shim closed it unanswered) or C{answered}.
    """
    frame = requestFrame(1, "Connect", task_pb2.ConnectRequest(id="x")).hex()
    result = subprocess.run(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, "-c", PEER, path, frame],
        capture_output=True,
        timeout=60,
        cwd="/",
    )
    if result.returncode != 0:
        raise AssertionError(f"peer script failed: {result}")
    return result.stdout.decode().strip()


class AccessTestsMixin(StressMixin):
    """
    A shim launched by containerd, seen from outside.
    """

    def test_socketOwnerOnly(self) -> None:
        """
        The shim's socket is a filesystem socket, owned by root, mode 0600,
        in a directory no one else may enter; the shim holds no abstract
        unix socket (one a host-network container could reach).
        """
        self.runDetached("guarded", "/bin/sleep", "100000")
        path = host.socketPath(self.shimAddressOf("guarded"))
        status = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(status.st_mode))
        self.assertEqual((stat.S_IMODE(status.st_mode), status.st_uid), (0o600, 0))
        directory = os.stat(SHIM_SOCKET_DIR)
        self.assertEqual(stat.S_IMODE(directory.st_mode) & 0o077, 0)
        self.assertEqual(directory.st_uid, 0)
        [shim] = self.shimProcesses("guarded")
        names = unixSocketNames(socketInodes(shim))
        self.assertIn(path, names.values())
        self.assertEqual([n for n in names.values() if n.startswith("@")], [])

    def test_otherUserCannotConnect(self) -> None:
        """
        A non-root user cannot even connect to the shim's socket.
        """
        user = throwawayUser(self)
        self.runDetached("guarded", "/bin/sleep", "100000")
        path = host.socketPath(self.shimAddressOf("guarded"))
        self.assertEqual(asUser(user, path), "EACCES")

    def test_escapingIDs(self) -> None:
        """
        C{Create} with ids that try to leave the bundle (C{../x} and
        others) over the shim's socket is refused with C{INVALID_ARGUMENT}
        and creates nothing outside the bundle (nor inside it, nor in runc's
        root); so is an C{Exec} whose exec id would put its pid file
        outside the bundle. (containerd validates ids before they reach a
        shim; this is the shim's own line of defence. The Go shim's
        answers are recorded, not asserted.)
        """
        self.runDetached("anchor", "/bin/sleep", "100000")
        client = self.shimClient("anchor")
        parent = self.makeDirectory()
        bundle = os.path.join(parent, "b")
        os.mkdir(bundle)
        bundles = os.path.dirname(self.bundle("anchor"))
        runcRoot = os.path.join(RUNC_ROOT, self.namespace.name)
        watched = {
            directory: sorted(os.listdir(directory))
            for directory in (parent, bundle, bundles, runcRoot, "/tmp")
        }
        answers = {}
        for containerID in ESCAPING_IDS:
            answers[f"Create {containerID!r}"] = self.codeOf(
                client,
                "Create",
                task_pb2.CreateTaskRequest(id=containerID, bundle=bundle),
            )
            answers[f"Exec {containerID!r}"] = self.codeOf(
                client,
                "Exec",
                task_pb2.ExecProcessRequest(
                    id="anchor", exec_id=containerID, spec=execSpec("/bin/true")
                ),
            )
            if self.runtime is GO and answers[f"Exec {containerID!r}"] == "OK":
                self.codeOf(
                    client,
                    "Start",
                    task_pb2.StartRequest(id="anchor", exec_id=containerID),
                )
        created = {
            directory: sorted(set(os.listdir(directory)) - set(entries))
            for directory, entries in watched.items()
        }
        created = {k: v for k, v in created.items() if v}
        report(f"escaping-ids-{self.runtime.name}", answers=answers, created=created)
        if self.runtime is GO:
            self.removeCreated(created)
            return
        self.assertEqual(answers, {key: Code.INVALID_ARGUMENT.name for key in answers})
        self.assertEqual(created, {})

    def codeOf(self, client: object, method: str, request: object) -> str:
        """
        The status code name a call gets (C{OK} on success).
        """
        try:
            client.call(method, request)  # type: ignore[attr-defined]
        except TTRPCError as e:
            return Code(e.code).name
        return "OK"

    def removeCreated(self, created: dict[str, list[str]]) -> None:
        """
        Remove what a shim created where it should not have (so that the
        namespace's leak check does not trip on the Go shim's leavings).
        """
        for directory, names in created.items():
            for name in names:
                path = os.path.join(directory, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)


class AccessTestsGo(AccessTestsMixin, TestCase):
    runtime = GO


class AccessTestsShimd(AccessTestsMixin, TestCase):
    runtime = SHIMD


class PeerCredentialTestsMixin:
    """
    A shim daemon serving on a socket path of our choosing (C{-socket}),
    which the test then opens up to everyone, so that only the shim's own
    check of its peer's credentials stands between another user and it.
    """

    runtime: Runtime
    timeout = 120

    def setUp(self) -> None:
        test: TestCase = self  # type: ignore[assignment]
        missing = missingPrerequisites(self.runtime)
        if missing:
            raise test.skipTest("needs: " + ", ".join(missing))
        self.user = throwawayUser(test)
        self.directory = tempfile.mkdtemp(prefix="shimd-peer-", dir="/tmp")
        test.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        bundle = os.path.join(self.directory, "bundle")
        os.mkdir(bundle)
        log = os.path.join(bundle, "log")
        os.mkfifo(log, 0o600)
        logFD = os.open(log, os.O_RDWR | os.O_NONBLOCK)
        test.addCleanup(os.close, logFD)
        self.path = os.path.join(self.directory, "shim.sock")
        environment = dict(os.environ)
        environment["TTRPC_ADDRESS"] = os.path.join(self.directory, "none.ttrpc")
        binary = self.runtime.binaryPath()
        assert binary is not None
        daemon = subprocess.Popen(
            [
                binary,
                "-namespace",
                "peer",
                "-id",
                "peer",
                "-address",
                os.path.join(self.directory, "containerd.sock"),
                "-socket",
                self.path,
            ],
            cwd=bundle,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def stop() -> None:
            daemon.kill()
            daemon.wait()

        test.addCleanup(stop)
        waitUntil(lambda: self.listening(), 30, "the daemon to listen")
        os.chmod(self.path, 0o666)

    def listening(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def test_otherUserDropped(self) -> None:
        """
        Another user, who can reach the socket, is dropped without an
        answer; root, on the same socket, is answered.
        """
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(asUser(self.user, self.path), "closed")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(self.path)
            connection.sendall(
                requestFrame(1, "Connect", task_pb2.ConnectRequest(id="x"))
            )
            test.assertNotEqual(connection.recv(100), b"")


class PeerCredentialTestsGo(PeerCredentialTestsMixin, TestCase):
    runtime = GO


class PeerCredentialTestsShimd(PeerCredentialTestsMixin, TestCase):
    runtime = SHIMD
