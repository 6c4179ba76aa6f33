# -*- test-case-name: tests.test_forkserver -*-
"""
A warm, pre-imported process that forks shim daemons on demand.

Importing Twisted and the protobuf runtime takes a fresh Python process about
half a second, which the Go shim does not pay: containerd would wait that
long for the first reply of every new shim. The fork server pays it once. It
imports everything the daemon needs (without installing a reactor), then
waits on an owner-only unix socket; C{start} sends it the daemon's flags,
working directory, environment and listening socket, and it forks a child
that becomes the daemon (new session, the listener as fd 3, C{/dev/null} as
stdio, the bundle as cwd, the caller's environment). A fork shares the
server's memory pages until they change, too.

A fork server is shared state, so it is keyed by everything a forked daemon
inherits from it instead of from the request: the socket's name carries a
fingerprint of the code (the interpreter and shimd's files) and one of the
caller's process context (L{contextFingerprint}: namespaces, cgroups,
rlimits, umask, OOM score, credentials, capabilities, securebits,
no-new-privs, seccomp, affinity, signal dispositions, the root directory and
the variables that shape an interpreter). A launcher spawns the server for
its own context, so the server has exactly that context, and it checks
before every fork that it still has: no two contexts ever share a server, and
a forked daemon is set up as a spawned one would be.

Trust: C{start} uses a server only if L{SOCKET_DIR} is a real directory owned
by root (or by the launcher's user, when not root) with mode 0700, and the
peer on the socket runs as that user; a pid in a reply must be a child of the
server in the caller's pid namespace, and the child becomes the daemon only
once the launcher has checked that and said so. Any failure (no server, a
refused request, a timeout, a bad reply, a wrong peer) raises
L{ForkServerError} within L{REPLY_TIMEOUT} seconds, and C{start} spawns the
daemon itself; a server that timed out or answered nonsense is killed and
replaced. A server idle for L{IDLE_TIMEOUT} seconds exits.

This module uses the standard library only until L{preload} runs: the
launcher imports it on containerd's critical path.
"""

from __future__ import annotations

# The C module under signal, which would load enum (and re) first.
import _signal  # type: ignore[import-not-found]
import _socket
import os
import stat
import struct
import sys
import time

from shimd.shim.address import LISTEN_FD, canConnect, listen, sha256
from shimd.shim.flags import parseFlags
from shimd.shim.spawn import READY_FD, READY_VARIABLE, spawnDetached

SOCKET_DIR = "/run/shimd"
IDLE_TIMEOUT = 900.0
REPLY_TIMEOUT = 1.0
MAX_REQUEST = 1 << 20
DISABLE_VARIABLE = "SHIMD_FORKSERVER"
GO = b"g"
_LENGTH = struct.Struct(">I")
_CREDENTIALS = struct.Struct("3i")
PR_GET_SECUREBITS = 27
# Signals whose disposition is not the caller's: SIGCHLD, which a fork
# server ignores (each daemon restores it), and the two glibc keeps for
# itself (32 and 33, below SIGRTMIN), which its posix_spawn leaves ignored.
_OWN_SIGNALS = (1 << (_signal.SIGCHLD - 1)) | (1 << 31) | (1 << 32)

# typing costs milliseconds to import: mypy treats any name TYPE_CHECKING as
# true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# What /proc/self/status says of a process that a child inherits.
_INHERITED_STATUS = (
    b"Umask",
    b"Uid",
    b"Gid",
    b"Groups",
    b"SigBlk",
    b"CapInh",
    b"CapPrm",
    b"CapEff",
    b"CapBnd",
    b"CapAmb",
    b"NoNewPrivs",
    b"Seccomp",
    b"Seccomp_filters",
    b"Speculation_Store_Bypass",
    b"SpeculationIndirectBranch",
    b"Cpus_allowed_list",
    b"Mems_allowed_list",
)
_NAMESPACES = (
    "cgroup",
    "ipc",
    "mnt",
    "net",
    "pid",
    "pid_for_children",
    "time",
    "time_for_children",
    "user",
    "uts",
)
# Variables read when an interpreter starts, before a fork server would hand
# a daemon the caller's environment.
_INTERPRETER_VARIABLES = ("PYTHON", "LD_", "GLIBC_", "MALLOC_", "LC_", "LANG", "TZ")


class ForkServerError(Exception):
    """
    No daemon was forked: the caller spawns the daemon itself.
    """


class ForkServerUnavailable(ForkServerError):
    """
    No fork server answers at the socket: one may be started for next time.
    """


class ForkServerUntrusted(ForkServerError):
    """
    The socket's directory or the peer on it is not to be trusted: nothing
    was sent, and no server is started.
    """


class ForkServerBroken(ForkServerError):
    """
    The server timed out or answered nonsense: it is to be replaced.

    @ivar pidfd: a pidfd of the server, or L{None} when it is not known.
    """

    def __init__(self, message: str, pidfd: int | None) -> None:
        super().__init__(message)
        self.pidfd = pidfd


class _ContextChanged(ForkServerError):
    """
    The server's own context is no longer the one it was started for.
    """


def fingerprint(
    package: str | None = None, dropins: Sequence[str] | None = None
) -> str:
    """
    A short hash of the interpreter, of every file of the installed shimd
    package, and of every file in the other C{shimd/plugins} directories on
    C{sys.path}, where third parties install dropins (path, size,
    modification time): it names the server's socket, so that new code gets
    a new server. (What a dropin imports from elsewhere, the server checks
    itself: L{LoadedCode}.)

    @param package: the package directory; shimd's own by default.
    @param dropins: the third-party dropin directories; those on
        C{sys.path} by default.
    """
    if package is None:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if dropins is None:
        dropins = dropinDirectories()
    digest = sha256(f"{sys.executable}\0{package}".encode())
    for directory, subdirectories, files in os.walk(package):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        _digestFiles(digest, directory, files)
    for directory in dropins:
        try:
            files = os.listdir(directory)
        except OSError:
            continue
        _digestFiles(digest, directory, files)
    return digest.hexdigest()[:20]


def _digestFiles(digest: Any, directory: str, files: list[str]) -> None:
    for name in sorted(files):
        if name.endswith((".py", ".so")):
            try:
                status = os.stat(os.path.join(directory, name))
            except OSError:
                continue
            digest.update(
                f"{directory}/{name}\0{status.st_size}\0{status.st_mtime_ns}\0".encode()
            )


def dropinDirectories() -> list[str]:
    """
    The C{shimd/plugins} directories on C{sys.path} outside shimd's package
    (none has an C{__init__.py}): where L{shimd.plugins} finds third-party
    dropins, as L{twisted.plugin.pluginPackagePaths} lists them.
    """
    found = []
    for entry in sys.path:
        directory = os.path.join(os.path.abspath(entry or "."), "shimd", "plugins")
        if (
            os.path.isdir(directory)
            and not os.path.exists(os.path.join(directory, "__init__.py"))
            and directory not in found
        ):
            found.append(directory)
    return found


class LoadedCode:
    """
    The files of the modules that loading the plugins imported from outside
    the standard library's and shimd's directories (a third party's dropins
    and what they import), as they were when loaded: a server whose loaded
    code changed on disk must not fork daemons that would run the old code.
    """

    def __init__(self, files: dict[str, tuple[int, int]]) -> None:
        self.files = files

    @classmethod
    def since(cls, before: set[str], package: str) -> LoadedCode:
        """
        The files of the modules imported since C{before} (names in
        C{sys.modules}), except shimd's own, which L{fingerprint} covers.
        """
        files = {}
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None)
            if path and not os.path.abspath(path).startswith(package + os.sep):
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                files[path] = (status.st_size, status.st_mtime_ns)
        return cls(files)

    def changed(self) -> str | None:
        """
        @return: the first loaded file that changed, or L{None}.
        """
        for path, (size, mtime) in self.files.items():
            try:
                status = os.stat(path)
            except OSError:
                return path
            if (status.st_size, status.st_mtime_ns) != (size, mtime):
                return path
        return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"{path}: errno {e.errno}".encode()


def securebits() -> int:
    """
    This process's securebits (C{prctl(PR_GET_SECUREBITS)}), which no file
    in C{/proc} shows.
    """
    import ctypes

    return int(ctypes.CDLL(None).prctl(PR_GET_SECUREBITS, 0, 0, 0, 0))


def contextDescription(environ: Mapping[str, str] = os.environ) -> bytes:
    """
    Everything about this process that a child forked from it inherits and
    that a caller's request does not carry: what a fork server must share
    with a launcher for its daemons to be set up as spawned ones.

    The working directory, the session and the environment are not in it:
    the server gives each daemon the caller's.
    """
    parts = [b"ns"]
    for name in _NAMESPACES:
        try:
            parts.append(os.readlink(f"/proc/self/ns/{name}").encode())
        except OSError as e:
            parts.append(f"{name}: errno {e.errno}".encode())
    parts += [
        _read("/proc/self/cgroup"),
        _read("/proc/self/limits"),
        _read("/proc/self/oom_score_adj"),
        _read("/proc/self/attr/current"),
        _read("/proc/self/personality"),
    ]
    for line in _read("/proc/self/status").splitlines():
        field, _, content = line.partition(b":")
        if field in _INHERITED_STATUS:
            parts.append(line)
        elif field == b"SigIgn":
            ignored = int(content.strip(), 16) & ~_OWN_SIGNALS
            parts.append(b"SigIgn:%x" % ignored)
    root = os.stat("/")
    parts.append(f"root {root.st_dev} {root.st_ino}".encode())
    parts.append(f"securebits {securebits()}".encode())
    parts.append(f"nice {os.getpriority(os.PRIO_PROCESS, 0)}".encode())
    parts.append(f"scheduler {os.sched_getscheduler(0)}".encode())
    parts += sorted(
        f"{name}={value}".encode("utf-8", "surrogateescape")
        for name, value in environ.items()
        if name.startswith(_INTERPRETER_VARIABLES)
    )
    return b"\0".join(parts)


def contextFingerprint(environ: Mapping[str, str] = os.environ) -> str:
    """
    A short hash of L{contextDescription}.
    """
    return sha256(contextDescription(environ)).hexdigest()[:20]


def socketPath(socketDir: str | None = None, context: str | None = None) -> str:
    """
    Where the fork server for this code and this caller's context listens.

    @param context: the caller's L{contextFingerprint}; this process's by
        default.
    """
    directory = SOCKET_DIR if socketDir is None else socketDir
    if context is None:
        context = contextFingerprint()
    return os.path.join(directory, f"forkserver-{fingerprint()}-{context}.sock")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether C{start} should use a fork server (C{SHIMD_FORKSERVER=0}
    disables it).
    """
    return environ.get(DISABLE_VARIABLE, "1") not in ("0", "no", "false")


def trustedUid() -> int:
    """
    Who must own the socket directory and run the server: root, or the
    launcher's own user when it is not root.
    """
    return os.geteuid()


def checkDirectory(path: str, create: bool = True) -> None:
    """
    Check that a fork server's socket directory is to be trusted: a real
    directory (not a symbolic link), owned by L{trustedUid}, mode 0700.

    @param create: make the directory first if it does not exist.
    @raise ForkServerUntrusted: with the reason, when it is not.
    """
    uid = trustedUid()
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise ForkServerUntrusted(f"cannot create {path}: {e}") from e
    try:
        status = os.lstat(path)
    except OSError as e:
        raise ForkServerUntrusted(f"{path}: {e}") from e
    if not stat.S_ISDIR(status.st_mode):
        raise ForkServerUntrusted(f"{path} is not a directory")
    if status.st_uid != uid:
        raise ForkServerUntrusted(f"{path} is owned by uid {status.st_uid}, not {uid}")
    if stat.S_IMODE(status.st_mode) != 0o700:
        raise ForkServerUntrusted(
            f"{path} has mode {stat.S_IMODE(status.st_mode):04o}, not 0700"
        )


def peerCredentials(connection: _socket.socket) -> tuple[int, int, int]:
    """
    The pid, uid and gid of the process at the other end of a unix socket.
    """
    return _CREDENTIALS.unpack(
        connection.getsockopt(
            _socket.SOL_SOCKET, _socket.SO_PEERCRED, _CREDENTIALS.size
        )
    )


class Request:
    """
    What a daemon is forked with: the caller's context fingerprint, its
    command line flags (as the launcher parses them), its working directory,
    its environment, and the whole command line it would have been spawned
    with (what C{ps} is to show for it).

    On the wire, NUL-separated strings (which none of them can contain): the
    context, the directory, the number of flags, the flags, the number of
    words of the command line, its words, then C{NAME=VALUE} for each
    variable.
    """

    def __init__(
        self,
        context: str,
        argv: Sequence[str],
        cwd: str,
        environ: Mapping[str, str],
        command: Sequence[str] = (),
    ):
        self.context = context
        self.argv = list(argv)
        self.cwd = cwd
        self.environ = dict(environ)
        self.command = list(command)

    def encode(self) -> bytes:
        words = [self.context, self.cwd, str(len(self.argv)), *self.argv]
        words += [str(len(self.command)), *self.command]
        words += [f"{name}={value}" for name, value in self.environ.items()]
        return "\0".join(words).encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, payload: bytes) -> Request:
        """
        @raise ForkServerError: when C{payload} is not a request.
        """
        words = payload.decode("utf-8", "surrogateescape").split("\0")
        if len(words) < 4 or not words[1].startswith("/"):
            raise ForkServerError("malformed request")
        argv, rest = _counted(words[2:])
        command, variables = _counted(rest)
        if any("=" not in variable for variable in variables):
            raise ForkServerError("malformed environment")
        environ = dict(variable.split("=", 1) for variable in variables)
        return cls(words[0], argv, words[1], environ, command)


def _counted(words: list[str]) -> tuple[list[str], list[str]]:
    """
    Split a count and that many words off the front of C{words}.

    @return: the counted words and the rest.
    @raise ForkServerError: when there is no count or too few words.
    """
    try:
        count = int(words[0])
    except (IndexError, ValueError) as e:
        raise ForkServerError("malformed request") from e
    if count < 0 or len(words) < 1 + count:
        raise ForkServerError("malformed request")
    return words[1 : 1 + count], words[1 + count :]


def setCommandLine(words: Sequence[str]) -> None:
    """
    Make C{/proc/self/cmdline} (what C{ps}, C{pgrep -f} and C{pkill -f}
    read) show C{words}: a forked daemon then shows the command line it
    would have been spawned with, not its fork server's, and C{pkill -f}
    aimed at the fork server spares the daemons.

    It writes over the memory of the process's original arguments, as
    C{setproctitle} does: the words as one string, separated by spaces (a
    line longer than the original arguments runs on into the original
    environment's memory, when that follows). A byte other than NUL at the
    end of the original arguments tells the kernel to read the line up to
    its NUL. Call it only once the C library's environment no longer points
    into that memory (after C{os.environ} has been replaced).
    """
    import ctypes

    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    argStart, argEnd, envStart, envEnd = (int(field) for field in fields[45:49])
    end = envEnd if envStart == argEnd else argEnd
    line = b" ".join(word.encode("utf-8", "surrogateescape") for word in words)
    line = line[: end - argStart - 1]
    ctypes.memset(argStart, 0, end - argStart)
    ctypes.memmove(argStart, line, len(line))
    if len(line) < argEnd - argStart - 1:
        ctypes.memset(argEnd - 1, ord(" "), 1)


def _sendMessage(
    connection: _socket.socket, payload: bytes, fds: Sequence[int]
) -> None:
    framed = _LENGTH.pack(len(payload)) + payload
    # The descriptors as C ints, packed by struct: array would import
    # collections (to register itself as a sequence).
    packed = struct.pack(f"{len(fds)}i", *fds)
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)]
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


def _readLine(connection: _socket.socket, deadline: float, limit: int = 4096) -> bytes:
    """
    Read up to and without a newline, or to the end of the stream.

    @raise TimeoutError: when C{deadline} passes first.
    """
    line = b""
    while b"\n" not in line and len(line) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        connection.settimeout(remaining)
        chunk = connection.recv(limit)
        if not chunk:
            break
        line += chunk
    return line.partition(b"\n")[0]


class Forked:
    """
    A daemon the fork server forked: checked, and released to serve.

    @ivar pid: its pid.
    @ivar proc: a descriptor of its C{/proc/PID} directory, which refers to
        this process only (never to a later one with the same pid).
    @ivar status: the connection on which the daemon reports that it
        started (L{shimd.shim.daemon.StartupReport}).
    """

    def __init__(self, pid: int, proc: int, status: _socket.socket) -> None:
        self.pid = pid
        self.proc = proc
        self.status = status


def _parentOf(proc: int) -> int:
    """
    The parent pid of the process whose C{/proc/PID} directory is C{proc}.
    """
    fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        return int(os.read(fd, 4096).rpartition(b")")[2].split()[1])
    finally:
        os.close(fd)


def checkChild(pid: int, serverPid: int) -> int:
    """
    Check that C{pid} is a child of the fork server, in this process's pid
    namespace, before anything is written to its C{/proc} directory.

    @return: a descriptor of its C{/proc/PID} directory.
    @raise ForkServerError: when it is not.
    """
    if int(os.readlink("/proc/self")) != os.getpid():
        raise ForkServerError("/proc is not of this pid namespace")
    pidfd = os.pidfd_open(pid)
    try:
        proc = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _parentOf(proc) != serverPid:
                raise ForkServerError(f"pid {pid} is not a child of the fork server")
            if os.readlink("ns/pid", dir_fd=proc) != os.readlink("/proc/self/ns/pid"):
                raise ForkServerError(f"pid {pid} is in another pid namespace")
            import select

            # Still the process the pidfd pinned before the checks.
            if select.select([pidfd], [], [], 0)[0]:
                raise ForkServerError(f"pid {pid} exited")
        except BaseException:
            os.close(proc)
            raise
    except OSError as e:
        raise ForkServerError(f"pid {pid}: {e}") from e
    finally:
        os.close(pidfd)
    return proc


def requestDaemon(
    path: str,
    argv: Sequence[str],
    cwd: str,
    environ: Mapping[str, str],
    listener: int,
    context: str,
    timeout: float = REPLY_TIMEOUT,
    command: Sequence[str] = (),
) -> Forked:
    """
    Ask the fork server at C{path} for a daemon.

    Nothing is sent before the server's credentials are checked; the forked
    child becomes the daemon only when told, after its pid is checked, so a
    daemon exists exactly when this returns.

    @param argv: the daemon's command line flags (as the launcher parses
        them).
    @param listener: the listening socket the daemon serves on.
    @param context: the caller's L{contextFingerprint}.
    @param timeout: the bound on the whole exchange, in seconds.
    @param command: the command line the daemon would have been spawned
        with, for it to show (L{setCommandLine}).
    @raise ForkServerError: when no daemon was forked, with the reason.
    """
    deadline = time.monotonic() + timeout
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    connection.settimeout(timeout)
    serverPidfd = None
    try:
        try:
            connection.connect(path)
        except OSError as e:
            raise ForkServerUnavailable(f"no fork server at {path}: {e}") from e
        serverPid, uid, _ = peerCredentials(connection)
        if uid != trustedUid():
            raise ForkServerUntrusted(
                f"fork server at {path} runs as uid {uid}, not {trustedUid()}"
            )
        try:
            serverPidfd = os.pidfd_open(serverPid)
            _sendMessage(
                connection,
                Request(context, argv, cwd, environ, command).encode(),
                [listener],
            )
            reply = _readLine(connection, deadline)
        except OSError as e:
            raise ForkServerBroken(f"fork server at {path}: {e}", serverPidfd) from e
        kind, _, value = reply.decode("utf-8", "replace").partition(" ")
        if kind == "error":
            raise ForkServerUnavailable(f"fork server at {path}: {value}")
        if kind != "pid" or not value.isdigit():
            raise ForkServerBroken(
                f"bad reply from the fork server at {path}: {reply!r}", serverPidfd
            )
        try:
            proc = checkChild(int(value), serverPid)
        except ForkServerError as e:
            raise ForkServerBroken(f"fork server at {path}: {e}", serverPidfd) from e
        try:
            connection.sendall(GO)
        except OSError as e:
            os.close(proc)
            raise ForkServerBroken(f"fork server at {path}: {e}", serverPidfd) from e
    except ForkServerBroken:
        connection.close()
        raise
    except BaseException:
        connection.close()
        if serverPidfd is not None:
            os.close(serverPidfd)
        raise
    os.close(serverPidfd)
    return Forked(int(value), proc, connection)


def replaceServer(path: str, broken: ForkServerBroken) -> None:
    """
    Kill a server that timed out or answered nonsense (even a stopped one),
    wait a moment for it to go, and start another.
    """
    if broken.pidfd is not None:
        import select

        try:
            _signal.pidfd_send_signal(broken.pidfd, _signal.SIGKILL)
            select.select([broken.pidfd], [], [], REPLY_TIMEOUT)
        except OSError:
            pass
        finally:
            os.close(broken.pidfd)
            broken.pidfd = None
    spawnServer(path)


def spawnServer(path: str) -> None:
    """
    Start a fork server for C{path} in the background, detached from the
    caller's session and output, and do not wait for it. It inherits this
    process's context, which is the one C{path} names.
    """
    spawnDetached(
        [sys.executable, "-m", "shimd.shim.forkserver", path],
        {k: v for k, v in os.environ.items() if k != DISABLE_VARIABLE},
    )


def forkDaemon(
    argv: Sequence[str],
    cwd: str,
    environ: Mapping[str, str],
    listener: int,
    socketDir: str | None = None,
    command: Sequence[str] = (),
) -> Forked:
    """
    Have the fork server of this code and this process's context fork a
    daemon; start or replace the server when it is missing or broken.

    @param command: the command line the daemon would have been spawned
        with, for it to show.

    @raise ForkServerError: when no daemon was forked, with the reason; the
        caller spawns the daemon itself.
    """
    directory = SOCKET_DIR if socketDir is None else socketDir
    try:
        checkDirectory(directory)
        context = contextFingerprint()
        path = socketPath(directory, context)
        try:
            return requestDaemon(
                path, argv, cwd, environ, listener, context, command=command
            )
        except ForkServerBroken as e:
            replaceServer(path, e)
            raise
        except ForkServerUnavailable:
            spawnServer(path)
            raise
    except ForkServerError:
        raise
    except Exception as e:
        # Whatever else fails (reading /proc, starting a server) must not
        # fail start either.
        raise ForkServerError(f"fork server: {e}") from e


def preload() -> LoadedCode:
    """
    Import what the daemon needs, without installing a reactor: a child
    forked afterwards starts serving in milliseconds.

    @return: the third-party code the plugins loaded.
    """
    import twisted.internet.epollreactor
    import twisted.internet.inotify
    import twisted.logger  # noqa: F401

    import shimd.shim.config
    import shimd.shim.daemon
    import shimd.shim.logrus
    import shimd.shim.service  # noqa: F401
    from shimd.shim.plugin import PluginRegistry

    before = set(sys.modules)
    PluginRegistry().discover()
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loaded = LoadedCode.since(before, package)
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("preloading installed a reactor; a fork would share it")
    import gc

    # What is loaded now lives as long as the server and its children: move
    # it out of the collector's sight, so that collections in a child do not
    # write to (and so copy) the pages it shares with the server.
    gc.collect()
    gc.freeze()
    return loaded


def _becomeDaemon(
    request: Request,
    listener: int,
    connection: _socket.socket,
    closing: Sequence[_socket.socket],
) -> int:
    """
    In the forked child: wait for the launcher's go-ahead (without it, exit
    without ever serving), set up the process as C{start} would have spawned
    it, and run the daemon, which reports on C{connection} that it started.

    @return: the exit status.
    """
    for sock in closing:
        sock.close()
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    connection.settimeout(2 * REPLY_TIMEOUT)
    try:
        if connection.recv(1) != GO:
            return 0
    except OSError:
        return 0
    from shimd.shim.daemon import runFromLauncher

    os.setsid()
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.environ)
    if request.command:
        setCommandLine(request.command)
    os.environ[READY_VARIABLE] = str(READY_FD)
    for fd, target in ((listener, LISTEN_FD), (connection.detach(), READY_FD)):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return runFromLauncher(parseFlags(request.argv))


def _serveOne(
    server: _socket.socket,
    connection: _socket.socket,
    context: str,
    loaded: LoadedCode | None = None,
) -> bool:
    """
    Answer one request: fork a daemon, or say why not.

    @return: whether to carry on serving (not when this process's context
        no longer is the one the server was started for).
    """
    _, uid, _ = peerCredentials(connection)
    if uid != os.geteuid():
        return True
    payload, fds = _receiveMessage(connection)
    try:
        request = Request.decode(payload)
        if len(fds) != 1:
            raise ForkServerError(f"expected one listening socket, got {len(fds)}")
        if request.context != context or contextFingerprint() != context:
            raise _ContextChanged("the fork server's context changed")
        changed = loaded.changed() if loaded is not None else None
        if changed is not None:
            raise _ContextChanged(f"the fork server's code changed: {changed}")
        pid = os.fork()
    except (ForkServerError, OSError) as e:
        for fd in fds:
            os.close(fd)
        connection.sendall(f"error {e}\n".encode())
        return not isinstance(e, _ContextChanged)
    if pid == 0:
        status = 1
        try:
            status = _becomeDaemon(request, fds[0], connection, [server])
        finally:
            os._exit(status)
    os.close(fds[0])
    connection.sendall(f"pid {pid}\n".encode())
    return True


def serve(path: str, idleTimeout: float = IDLE_TIMEOUT) -> None:
    """
    Preload, then fork a daemon for each request on C{path} until idle for
    C{idleTimeout} seconds, or until this process's context is no longer
    the one C{path} names.
    """
    os.chdir("/")
    context = contextFingerprint()
    if not path.endswith(f"-{context}.sock") or canConnect(path):
        return
    loaded = preload()
    checkDirectory(os.path.dirname(path), create=False)
    import socket

    bound = listen("unix://" + path)
    if bound is None:
        return
    server = socket.socket(fileno=bound.detach())
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    server.settimeout(idleTimeout)
    try:
        while True:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                return
            with connection:
                connection.settimeout(REPLY_TIMEOUT)
                try:
                    if not _serveOne(server, connection, context, loaded):
                        return
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
