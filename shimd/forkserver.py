# -*- test-case-name: tests.test_forkserver -*-
"""
A warm, pre-imported process that forks shim daemons on demand.

Importing Twisted and the protobuf runtime takes a fresh Python process about
half a second, which the Go shim does not pay: containerd would wait that
long for the first reply of every new shim. The fork server pays it once. It
imports everything the daemon needs (without installing a reactor), then
waits on an owner-only unix socket; C{start} sends it the daemon's flags,
working directory, environment and listening socket, and it forks a child
that becomes the daemon, exactly as a freshly spawned one would (new
session, the listener as fd 3, C{/dev/null} as stdio, the bundle as cwd). A
fork shares the server's memory pages until they change, too.

The socket's name carries a fingerprint of the interpreter and of shimd's
files, so a launcher never reaches a server running other code; a server
idle for L{IDLE_TIMEOUT} seconds exits. C{start} falls back to spawning the
daemon itself whenever the server is missing or fails, and starts one for
next time.

This module uses the standard library only until L{preload} runs: the
launcher imports it on containerd's critical path.
"""

from __future__ import annotations

import _socket
import array
import os
import struct
import sys
from collections.abc import Mapping, Sequence

from shimd.launcher import sha256

SOCKET_DIR = "/run/shimd"
IDLE_TIMEOUT = 900.0
CONNECT_TIMEOUT = 1.0
MAX_REQUEST = 1 << 20
DISABLE_VARIABLE = "SHIMD_FORKSERVER"
_LENGTH = struct.Struct(">I")


class ForkServerError(Exception):
    """
    The fork server could not start a daemon.
    """


class ForkServerUnavailable(ForkServerError):
    """
    No fork server answers: nothing was asked, so the caller may spawn the
    daemon itself.
    """


def fingerprint(package: str | None = None) -> str:
    """
    A short hash of the interpreter and of every file of the installed shimd
    package (path, size, modification time), which names the server's
    socket.

    @param package: the package directory; shimd's own by default.
    """
    if package is None:
        package = os.path.dirname(os.path.abspath(__file__))
    digest = sha256(f"{sys.executable}\0{package}".encode())
    for directory, subdirectories, files in os.walk(package):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".so")):
                status = os.stat(os.path.join(directory, name))
                digest.update(
                    f"{directory}/{name}\0{status.st_size}\0{status.st_mtime_ns}\0".encode()
                )
    return digest.hexdigest()[:20]


def socketPath(socketDir: str | None = None) -> str:
    """
    Where the fork server for this code listens.
    """
    directory = SOCKET_DIR if socketDir is None else socketDir
    return os.path.join(directory, f"forkserver-{fingerprint()}.sock")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether C{start} should use a fork server (C{SHIMD_FORKSERVER=0}
    disables it).
    """
    return environ.get(DISABLE_VARIABLE, "1") not in ("0", "no", "false")


class Request:
    """
    What a daemon is forked with: its command line flags (as the launcher
    parses them), its working directory and its environment.

    On the wire, NUL-separated strings (which none of them can contain): the
    directory, the number of flags, the flags, then C{NAME=VALUE} for each
    variable.
    """

    def __init__(self, argv: Sequence[str], cwd: str, environ: Mapping[str, str]):
        self.argv = list(argv)
        self.cwd = cwd
        self.environ = dict(environ)

    def encode(self) -> bytes:
        words = [self.cwd, str(len(self.argv)), *self.argv]
        words += [f"{name}={value}" for name, value in self.environ.items()]
        return "\0".join(words).encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, payload: bytes) -> Request:
        """
        @raise ForkServerError: when C{payload} is not a request.
        """
        words = payload.decode("utf-8", "surrogateescape").split("\0")
        try:
            count = int(words[1])
        except (IndexError, ValueError) as e:
            raise ForkServerError("malformed request") from e
        if count < 0 or len(words) < 2 + count or not words[0].startswith("/"):
            raise ForkServerError("malformed request")
        variables = words[2 + count :]
        if any("=" not in variable for variable in variables):
            raise ForkServerError("malformed environment")
        environ = dict(variable.split("=", 1) for variable in variables)
        return cls(words[2 : 2 + count], words[0], environ)


def _sendMessage(
    connection: _socket.socket, payload: bytes, fds: Sequence[int]
) -> None:
    framed = _LENGTH.pack(len(payload)) + payload
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))]
    sent = connection.sendmsg([framed], rights)
    if sent < len(framed):
        connection.sendall(framed[sent:])


def _receiveMessage(connection: _socket.socket) -> tuple[bytes, list[int]]:
    import socket

    data, fds, _, _ = socket.recv_fds(connection, 65536, 4)  # type: ignore[arg-type]
    received = bytearray(data)
    try:
        while len(received) < _LENGTH.size:
            chunk = connection.recv(65536)
            if not chunk:
                raise ForkServerError("truncated request")
            received += chunk
        (length,) = _LENGTH.unpack_from(received)
        if length > MAX_REQUEST:
            raise ForkServerError(f"request of {length} bytes is too large")
        while len(received) < _LENGTH.size + length:
            chunk = connection.recv(65536)
            if not chunk:
                raise ForkServerError("truncated request")
            received += chunk
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return bytes(received[_LENGTH.size : _LENGTH.size + length]), fds


def requestDaemon(
    path: str,
    argv: Sequence[str],
    cwd: str,
    environ: Mapping[str, str],
    listener: int,
) -> int:
    """
    Ask the fork server at C{path} for a daemon.

    @param argv: the daemon's command line flags (as the launcher parses
        them).
    @param listener: the listening socket the daemon serves on.
    @return: the daemon's pid.
    @raise ForkServerUnavailable: when no server answers there, or it refused
        the request (no daemon exists).
    @raise ForkServerError: when it failed after the request was sent (a
        daemon may then exist).
    """
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    connection.settimeout(CONNECT_TIMEOUT)
    try:
        try:
            connection.connect(path)
        except OSError as e:
            raise ForkServerUnavailable(f"no fork server at {path}: {e}") from e
        _sendMessage(connection, Request(argv, cwd, environ).encode(), [listener])
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    except OSError as e:
        raise ForkServerError(f"fork server at {path}: {e}") from e
    finally:
        connection.close()
    kind, _, value = reply.decode("utf-8", "replace").partition(" ")
    if kind == "pid" and value.isdigit():
        return int(value)
    if kind == "error":
        raise ForkServerUnavailable(value)
    raise ForkServerError(f"bad reply from the fork server: {reply!r}")


def spawnServer(path: str) -> None:
    """
    Start a fork server for C{path} in the background, detached from the
    caller's session and output, and do not wait for it.
    """
    devnull = os.devnull
    os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", "shimd.forkserver", path],
        {k: v for k, v in os.environ.items() if k != DISABLE_VARIABLE},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
        ],
        setsid=True,
    )


def preload() -> None:
    """
    Import what the daemon needs, without installing a reactor: a child
    forked afterwards starts serving in milliseconds.
    """
    import twisted.internet.epollreactor
    import twisted.internet.inotify
    import twisted.logger
    import twisted.python.usage  # noqa: F401

    import shimd.daemon
    import shimd.logrus
    import shimd.service
    import shimd.tap  # noqa: F401
    from shimd.plugin import PluginRegistry, builtinPlugins

    builtinPlugins()
    PluginRegistry().discover()
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("preloading installed a reactor; a fork would share it")
    import gc

    # What is loaded now lives as long as the server and its children: move
    # it out of the collector's sight, so that collections in a child do not
    # write to (and so copy) the pages it shares with the server.
    gc.collect()
    gc.freeze()


def _peerIsSelf(connection: _socket.socket) -> bool:
    credentials = connection.getsockopt(
        _socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _, uid, _ = struct.unpack("3i", credentials)
    return uid == os.geteuid()


def _becomeDaemon(
    request: Request, listener: int, closing: Sequence[_socket.socket]
) -> int:
    """
    In the forked child: set up the process as C{start} would have spawned
    it, and run the daemon.

    @return: the exit status.
    """
    import signal

    for sock in closing:
        sock.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.environ)
    if listener != 3:
        os.dup2(listener, 3)
        os.close(listener)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    from shimd.daemon import runFromLauncher
    from shimd.launcher import parseFlags

    return runFromLauncher(parseFlags(request.argv))


def _serveOne(server: _socket.socket, connection: _socket.socket) -> None:
    if not _peerIsSelf(connection):
        return
    payload, fds = _receiveMessage(connection)
    try:
        request = Request.decode(payload)
        if len(fds) != 1:
            raise ForkServerError(f"expected one listening socket, got {len(fds)}")
        pid = os.fork()
    except (ForkServerError, OSError) as e:
        for fd in fds:
            os.close(fd)
        connection.sendall(f"error {e}".encode())
        return
    if pid == 0:
        status = 1
        try:
            status = _becomeDaemon(request, fds[0], [server, connection])
        finally:
            os._exit(status)
    os.close(fds[0])
    connection.sendall(f"pid {pid}".encode())


def serve(path: str, idleTimeout: float = IDLE_TIMEOUT) -> None:
    """
    Preload, then fork a daemon for each request on C{path} until idle for
    C{idleTimeout} seconds.
    """
    import signal

    os.chdir("/")
    preload()
    import socket

    from shimd.launcher import listen

    bound = listen("unix://" + path)
    if bound is None:
        return
    server = socket.socket(fileno=bound.detach())
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    server.settimeout(idleTimeout)
    try:
        while True:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                return
            with connection:
                connection.settimeout(CONNECT_TIMEOUT)
                try:
                    _serveOne(server, connection)
                except (OSError, ForkServerError, ValueError):
                    continue
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server.close()


if __name__ == "__main__":
    serve(sys.argv[1])
