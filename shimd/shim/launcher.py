# -*- test-case-name: tests.test_launcher -*-
"""
C{containerd-shim-pyrunc-v2}: the binary containerd runs.

containerd runs it as C{start} to get a shim for a new container, and as
C{delete} to clean up after a shim that went away. Both run on containerd's
critical path, twice per container, so this module uses the standard
library alone, and only its cheapest parts: it never imports Twisted or the
protobuf runtime, nor C{socket}, C{hashlib}, C{json} or C{re} (which cost
more than the work itself) unless an action needs them. Without an action it
runs the shim daemon itself, which C{start} spawns.

The command line follows Go's C{flag} package, as containerd writes it::

    -namespace NS -address A -publish-binary B -id ID [-debug] start
    -namespace NS -address A -publish-binary B -id ID -bundle P delete
    -v
"""

from __future__ import annotations

import _socket
import errno
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence

from shimd import RUNTIME_NAME, __version__, wire

# The interpreter's own SHA-256: hashlib would load OpenSSL first.
try:
    from _sha2 import sha256  # type: ignore[import-not-found]
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256

SOCKET_DIR = "/run/containerd/s"
DEFAULT_RUNC_ROOT = "/run/containerd/runc"
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
LISTEN_FD = 3
LISTEN_BACKLOG = 4096
SOCKET_MODE = 0o600
SIGKILL_STATUS = 128 + 9

READY_TIMEOUT = 30.0
# The daemon's start-up report goes to this descriptor, named by this
# variable (L{shimd.shim.daemon.StartupReport}).
READY_VARIABLE = "SHIMD_READY_FD"
READY_FD = 4
# Set when the daemon was spawned without the fork server: C{LEVEL REASON},
# which the daemon logs.
COLD_VARIABLE = "SHIMD_SPAWNED_COLD"
IDENTIFIER_MAX_LENGTH = 76
IDENTIFIER_PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
_IDENTIFIER_LETTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)
_IDENTIFIER_SEPARATORS = frozenset("._-")

_BOOLEAN_FLAGS = frozenset({"debug", "v", "info"})
_VALUE_FLAGS = frozenset(
    {"namespace", "id", "socket", "bundle", "address", "publish-binary"}
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Go's flag.PrintDefaults for the Go shim's flags (and containerd 2.x's
# -info), in its layout: sorted, one-letter names on one line.
USAGE = """\
  -address string
    \tgrpc address back to main containerd
  -bundle string
    \tpath to the bundle if not workdir
  -debug
    \tenable debug output in logs
  -id string
    \tid of the task
  -info
    \tget the option protobuf from stdin, print the shim info protobuf to stdout, \
and exit
  -namespace string
    \tnamespace that owns the shim
  -publish-binary string
    \tpath to publish binary (used for publishing events) (default "containerd")
  -socket string
    \tsocket path to serve
  -v\tshow the shim version and exit
"""


class LaunchError(Exception):
    """
    The action failed; the message is what containerd shows its user.
    """


class FlagError(LaunchError):
    """
    The command line is not valid: as Go's C{flag} package does, print the
    message and the usage, and exit with status 2.
    """


class HelpRequested(Exception):
    """
    C{-h} or C{-help}: as Go's C{flag} package does, print the usage and
    exit with status 0.
    """


def usage(argv0: str) -> str:
    """
    The usage text Go's C{flag} package prints.
    """
    return f"Usage of {argv0}:\n{USAGE}"


class Flags:
    """
    The parsed command line. (A plain class: C{attrs} and C{dataclasses}
    cost more to import than this whole module.)
    """

    def __init__(self) -> None:
        self.namespace = ""
        self.id = ""
        self.socket = ""
        self.bundle = ""
        self.address = ""
        self.publishBinary = "containerd"
        self.debug = False
        self.version = False
        self.info = False
        self.arguments: list[str] = []

    @property
    def action(self) -> str | None:
        return self.arguments[0] if self.arguments else None


def parseFlags(argv: Sequence[str]) -> Flags:
    """
    Parse a command line the way Go's C{flag} package does: one or two
    dashes, C{-name value} or C{-name=value} (booleans only the latter),
    flags before the first positional argument, C{--} ending them.

    @raise FlagError: for an unknown flag, a missing or bad value, or bad
        syntax, with Go's message.
    @raise HelpRequested: for C{-h} or C{-help}.
    """
    flags = Flags()
    values: dict[str, str] = {}
    booleans: dict[str, bool] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if len(word) < 2 or word[0] != "-":
            break
        if word == "--":
            index += 1
            break
        name = word[2:] if word[1] == "-" else word[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {word}")
        name, hasValue, value = name.partition("=")
        index += 1
        if name in _BOOLEAN_FLAGS:
            if not hasValue or value in _TRUE:
                booleans[name] = True
            elif value in _FALSE:
                booleans[name] = False
            else:
                raise FlagError(
                    f"invalid boolean value {goQuote(value)} for -{name}: parse error"
                )
        elif name in _VALUE_FLAGS:
            if not hasValue:
                if index >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[index]
                index += 1
            values[name] = value
        elif name in ("h", "help"):
            raise HelpRequested()
        else:
            raise FlagError(f"flag provided but not defined: -{name}")
    flags.arguments = list(argv[index:])
    flags.namespace = values.get("namespace", "")
    flags.id = values.get("id", "")
    flags.socket = values.get("socket", "")
    flags.bundle = values.get("bundle", "")
    flags.address = values.get("address", "")
    flags.publishBinary = values.get("publish-binary", "containerd")
    flags.debug = booleans.get("debug", False)
    flags.version = booleans.get("v", False)
    flags.info = booleans.get("info", False)
    return flags


def goQuote(text: str) -> str:
    """
    A string quoted as Go's C{%q} quotes it (for printable text, and with
    escapes for what is not).
    """
    quoted = ['"']
    for character in text:
        if character in '"\\':
            quoted.append("\\" + character)
        elif character.isprintable():
            quoted.append(character)
        elif ord(character) < 0x80:
            quoted.append(
                {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(
                    character, f"\\x{ord(character):02x}"
                )
            )
        elif ord(character) <= 0xFFFF:
            quoted.append(f"\\u{ord(character):04x}")
        else:
            quoted.append(f"\\U{ord(character):08x}")
    quoted.append('"')
    return "".join(quoted)


def validateIdentifier(text: str) -> None:
    """
    containerd's C{identifiers.Validate}: 1 to 76 bytes of ASCII letters
    and digits, separated by single dots, underscores or dashes, with a
    letter or digit at each end.

    @raise LaunchError: with containerd's message, when C{text} is not one.
    """
    if not text:
        raise LaunchError("identifier must not be empty: invalid argument")
    if len(text.encode("utf-8", "surrogateescape")) > IDENTIFIER_MAX_LENGTH:
        raise LaunchError(
            f"identifier {goQuote(text)} greater than maximum length "
            f"({IDENTIFIER_MAX_LENGTH} characters): invalid argument"
        )
    previous = "."
    for character in text:
        if character in _IDENTIFIER_SEPARATORS and previous in _IDENTIFIER_SEPARATORS:
            break
        if character not in _IDENTIFIER_LETTERS | _IDENTIFIER_SEPARATORS:
            break
        previous = character
    else:
        if previous not in _IDENTIFIER_SEPARATORS:
            return
    raise LaunchError(
        f"identifier {goQuote(text)} must match {IDENTIFIER_PATTERN}: invalid argument"
    )


def validateFlags(flags: Flags) -> None:
    """
    Check the namespace and the id as containerd does before they name any
    path: the Go shim's C{namespace validation: ...}, and the same rule for
    the id (which containerd already enforces on the ids it passes).

    @raise LaunchError: when one is not valid.
    """
    if not flags.namespace:
        raise LaunchError("shim namespace cannot be empty")
    try:
        validateIdentifier(flags.namespace)
    except LaunchError as e:
        raise LaunchError(f"namespace validation: {e}") from e
    if flags.id:
        try:
            validateIdentifier(flags.id)
        except LaunchError as e:
            raise LaunchError(f"id validation: {e}") from e


def cleanPath(path: str) -> str:
    """
    Go's C{path.Clean}: the shortest equivalent path, lexically.
    """
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def joinPath(*elements: str) -> str:
    """
    Go's C{filepath.Join}: join the non-empty elements and clean the result.
    """
    nonEmpty = [element for element in elements if element]
    return cleanPath("/".join(nonEmpty)) if nonEmpty else ""


def socketAddress(
    containerdAddress: str, namespace: str, group: str, socketDir: str = SOCKET_DIR
) -> str:
    """
    The shim's socket address, as the Go shim derives it: a hash of
    containerd's address, the namespace and the group key, under the socket
    directory.
    """
    key = joinPath(containerdAddress, namespace, group).encode("utf-8")
    return f"unix://{joinPath(socketDir, sha256(key).hexdigest())}"


def groupKey(spec: dict[str, object], id: str) -> str:
    """
    The key that decides which shim serves a container: the first grouping
    annotation present in its OCI spec, or else its own id.
    """
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        for name in GROUP_ANNOTATIONS:
            if name in annotations:
                return str(annotations[name])
    return id


def readSpec(bundle: str) -> dict[str, object]:
    """
    Read what C{start} needs of a bundle's OCI runtime spec. A spec that
    names no grouping annotation at all (the usual case) needs no JSON
    parser: it is an empty spec here.

    @raise LaunchError: when it is missing, or is not a JSON object.
    """
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LaunchError(f"read {path}: {e}") from e
    if not any(name.encode() in data for name in GROUP_ANNOTATIONS):
        return {}
    import json

    try:
        spec = json.loads(data)
    except ValueError as e:
        raise LaunchError(f"read {path}: {e}") from e
    if not isinstance(spec, dict):
        raise LaunchError(f"read {path}: not a JSON object")
    return spec


def listen(address: str) -> _socket.socket | None:
    """
    Bind and listen on the address's filesystem socket, owner-only.

    @return: the listening socket, or L{None} when a shim already listens
        there (the group's shim, which this container joins).
    """
    path = address.removeprefix("unix://")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    for attempt in (1, 2):
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            listener.bind(path)
        except OSError as e:
            listener.close()
            if e.errno != errno.EADDRINUSE or attempt == 2:
                raise LaunchError(f"create new shim socket: {e}") from e
            if canConnect(path):
                return None
            os.unlink(path)
            continue
        finally:
            os.umask(previous)
        os.chmod(path, SOCKET_MODE)
        listener.listen(LISTEN_BACKLOG)
        return listener
    raise AssertionError("unreachable")


def canConnect(path: str, timeout: float = 0.1) -> bool:
    """
    Whether something accepts connections on a socket path.
    """
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def writeAddress(bundle: str, address: str) -> None:
    """
    Write the bundle's C{address} file atomically, without a newline.
    """
    temporary = os.path.join(bundle, ".address")
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, address.encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(temporary, os.path.join(bundle, "address"))


def daemonArguments(namespace: str, id: str, address: str, debug: bool) -> list[str]:
    """
    The daemon's flags, as the Go shim gives its own re-executed daemon.
    """
    arguments = ["-namespace", namespace, "-id", id, "-address", address]
    return [*arguments, "-debug"] if debug else arguments


def daemonCommand(arguments: list[str]) -> list[str]:
    """
    The command line of the daemon that C{start} spawns: this same program,
    without an action.
    """
    script = os.path.abspath(sys.argv[0])
    if script.endswith(".py") or not os.path.isfile(script):
        return [sys.executable, "-m", "shimd.shim.launcher", *arguments]
    return [sys.executable, script, *arguments]


class Daemon:
    """
    A daemon C{start} launched, until it reports that it started.

    @ivar pid: its pid.
    @ivar proc: a descriptor of its C{/proc/PID} directory, which refers to
        this process only (never to a later one with the same pid).
    @ivar status: where it reports (L{shimd.shim.daemon.StartupReport}).
    """

    def __init__(self, pid: int, proc: int, status: int) -> None:
        self.pid = pid
        self.proc = proc
        self.status = status

    def waitReady(self, timeout: float) -> None:
        """
        Wait, at most C{timeout} seconds, for the daemon to report that it
        started (it has its log fifo and its listening socket).

        @raise LaunchError: with its reason, when it reports a failure,
            exits first, or does not report in time.
        """
        import select

        deadline = time.monotonic() + timeout
        report = b""
        while b"\n" not in report:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.status], [], [], remaining)[0]:
                raise LaunchError(f"start shim daemon: no report after {timeout:g} s")
            chunk = os.read(self.status, 4096)
            if not chunk:
                break
            report += chunk
        line = report.partition(b"\n")[0].decode("utf-8", "replace")
        if line == "ready":
            return
        reason = line.removeprefix("error ") if line else "it exited"
        raise LaunchError(f"start shim daemon: {reason}")

    def kill(self) -> None:
        """
        Kill the daemon, if it is still this process.
        """
        try:
            os.close(os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc))
            os.kill(self.pid, 9)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.proc)
        os.close(self.status)


def _above(fd: int, lowest: int) -> int:
    """
    A duplicate of C{fd} numbered above C{lowest} (C{fd} itself if it is),
    so that C{posix_spawn}'s C{dup2} onto the numbers up to C{lowest} cannot
    overwrite it; C{fd} is closed if duplicated.
    """
    replaced = []
    while fd <= lowest:
        replaced.append(fd)
        fd = os.dup(fd)
    for old in replaced:
        os.close(old)
    return fd


def spawnDaemon(
    command: list[str], listener: _socket.socket, environ: Mapping[str, str]
) -> Daemon:
    """
    Spawn the daemon in a new session, with the listener as its fd 3, the
    write end of its status pipe as its fd 4, and C{/dev/null} as its
    stdio, so that it holds nothing of containerd's output pipe.
    """
    inherited = _above(os.dup(listener.fileno()), READY_FD)
    statusRead, statusWrite = os.pipe()
    statusWrite = _above(statusWrite, READY_FD)
    devnull = os.devnull
    try:
        pid = os.posix_spawn(
            command[0],
            command,
            {**environ, READY_VARIABLE: str(READY_FD)},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, inherited, LISTEN_FD),
                (os.POSIX_SPAWN_DUP2, statusWrite, READY_FD),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(statusRead)
        raise
    finally:
        os.close(inherited)
        os.close(statusWrite)
    # Our own child, not yet reaped: the pid cannot name another process.
    proc = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return Daemon(pid, proc, statusRead)


def launchDaemon(
    arguments: list[str],
    listener: _socket.socket,
    bundle: str,
    environ: Mapping[str, str],
) -> Daemon:
    """
    Have the fork server fork the daemon or, when that fails for any
    reason, spawn it; the daemon logs the reason (L{COLD_VARIABLE}).
    """
    from shimd.shim import forkserver

    if forkserver.enabled(environ):
        try:
            forked = forkserver.forkDaemon(
                arguments, bundle, environ, listener.fileno()
            )
        except forkserver.ForkServerError as e:
            # No server yet is the usual first start; anything else is not.
            level = "info" if type(e) is forkserver.ForkServerUnavailable else "warn"
            environ = {**environ, COLD_VARIABLE: f"{level} {e}"}
        else:
            return Daemon(forked.pid, forked.proc, forked.status.detach())
    return spawnDaemon(daemonCommand(arguments), listener, environ)


def cgroupMode() -> str:
    """
    C{"v2"} on a unified cgroup hierarchy, C{"v1"} on a legacy or hybrid one.
    """
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    return "v1"


def joinCgroup(pid: int, cgroup: str) -> None:
    """
    Move a process into a cgroup: the one path on cgroup v2, or the same path
    under every v1 controller that has it.
    """
    relative = cgroup.lstrip("/")
    if cgroupMode() == "v2":
        targets = [os.path.join("/sys/fs/cgroup", relative)]
    else:
        targets = [
            os.path.join("/sys/fs/cgroup", controller, relative)
            for controller in sorted(os.listdir("/sys/fs/cgroup"))
        ]
        targets = [t for t in targets if os.path.isdir(t)]
    if not targets:
        raise LaunchError(f"cgroup {cgroup} does not exist")
    for target in targets:
        with open(os.path.join(target, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def adjustOOMScore(daemon: Daemon) -> None:
    """
    Give the daemon an OOM score one above its parent's (containerd's), so
    that the kernel kills the shim before containerd.
    """
    with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
        score = int(f.read().strip())
    fd = os.open("oom_score_adj", os.O_WRONLY | os.O_CLOEXEC, dir_fd=daemon.proc)
    with open(fd, "w") as f:
        f.write(str(min(score + 1, 1000)))


def start(flags: Flags, stdin: bytes, bundle: str, socketDir: str = SOCKET_DIR) -> str:
    """
    The C{start} action: make sure a shim serves the container's group.

    @param socketDir: the directory of the shim sockets; only tests change it.
    @return: the address to print.
    """
    from shimd.shim.bootstrap import parseStartInput

    given = parseStartInput(
        stdin,
        flags.id,
        flags.namespace,
        flags.address,
        flags.debug,
        os.environ,
        socketDir,
    )
    spec = readSpec(bundle)
    address = socketAddress(
        given.address, given.namespace, groupKey(spec, flags.id), given.socketDir
    )
    listener = listen(address)
    if listener is None:
        writeAddress(bundle, address)
        return address
    path = address.removeprefix("unix://")
    environ = dict(os.environ)
    if given.ttrpcAddress:
        environ["TTRPC_ADDRESS"] = given.ttrpcAddress
    arguments = daemonArguments(given.namespace, flags.id, given.address, given.debug)
    try:
        daemon = launchDaemon(arguments, listener, bundle, environ)
    except BaseException:
        listener.close()
        os.unlink(path)
        raise
    listener.close()
    try:
        try:
            shimCgroup = wire.lastString(given.options, 3)
            if shimCgroup:
                joinCgroup(daemon.pid, shimCgroup)
            adjustOOMScore(daemon)
        except (OSError, LaunchError) as e:
            raise LaunchError(f"configure shim process: {e}") from e
        daemon.waitReady(READY_TIMEOUT)
        writeAddress(bundle, address)
    except BaseException:
        daemon.kill()
        os.unlink(path)
        raise
    finally:
        daemon.close()
    return address


def runRunc(command: list[str]) -> int:
    """
    Run a runc command to completion, its output going to our stderr (which
    containerd logs), never to our stdout.

    @return: its exit status.
    """
    try:
        pid = os.posix_spawnp(
            command[0],
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, 2, 1),
            ],
        )
    except OSError as e:
        print(f"{RUNTIME_NAME}: run {command[0]}: {e}", file=sys.stderr)
        return 127
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def isMountPoint(path: str) -> bool:
    """
    Whether something is mounted on C{path}, from this process's mount
    table: cheaper than loading libc to try unmounting what is not mounted.
    """
    escaped = (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return True
    return f" {escaped} ".encode() in table


def removeStaleSocket(bundle: str) -> None:
    """
    Remove the socket file named by the bundle's C{address} if no shim
    listens on it any more: a shim that was killed cannot remove its own.
    A group's shim that still serves other containers answers, and keeps
    its socket; so does anything but a unix socket whose connections are
    refused.
    """
    try:
        with open(os.path.join(bundle, "address")) as f:
            path = f.read().strip().removeprefix("unix://")
        if not path or not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.settimeout(1.0)
    refused = False
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        refused = True
    except OSError:
        pass
    finally:
        probe.close()
    if refused:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def runcRoot(bundle: str) -> str:
    """
    runc's state root for a bundle's container: the C{root} of the options
    the daemon wrote to C{options.json}, or runc's default. The usual
    C{{}} needs no JSON parser.
    """
    try:
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            data = f.read().strip()
    except OSError:
        return DEFAULT_RUNC_ROOT
    if b'"root"' not in data:
        return DEFAULT_RUNC_ROOT
    import json

    try:
        options = json.loads(data)
    except ValueError:
        return DEFAULT_RUNC_ROOT
    root = options.get("root") if isinstance(options, dict) else None
    return root if isinstance(root, str) and root else DEFAULT_RUNC_ROOT


def delete(flags: Flags, cwd: str) -> bytes:
    """
    The C{delete} action: clean up after a shim that is gone. Force-delete
    the container with runc, unmount its rootfs, remove the dead shim's
    socket file, and report the container killed.

    @return: the encoded C{containerd.task.v2.DeleteResponse} to print.
    """
    bundle = joinPath(os.path.dirname(cwd), flags.id)
    runtimePath = os.path.join(bundle, "runtime")
    try:
        with open(runtimePath) as f:
            runcBinary = f.read().strip() or "runc"
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise LaunchError(f"open {runtimePath}: {reason}") from e
    root = os.path.join(runcRoot(bundle), flags.namespace)
    if os.path.exists(os.path.join(root, flags.id)):
        runRunc(
            [
                runcBinary,
                "--root",
                root,
                "--log",
                os.path.join(bundle, "log.json"),
                "--log-format",
                "json",
                "delete",
                "--force",
                flags.id,
            ]
        )
    rootfs = os.path.join(bundle, "rootfs")
    if isMountPoint(rootfs):
        from shimd.runc.mount import unmountAll

        try:
            unmountAll(rootfs)
        except OSError as e:
            print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
    removeStaleSocket(bundle)
    try:
        with open(os.path.join(bundle, "init.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = -1
    now = time.time_ns()
    return (
        wire.varintField(1, pid & 0xFFFFFFFF)
        + wire.varintField(2, SIGKILL_STATUS)
        + wire.bytesField(
            3, wire.timestamp(now // 1_000_000_000, now % 1_000_000_000), always=True
        )
    )


def version(argv0: str) -> str:
    """
    The C{-v} text, in the Go shim's layout.
    """
    return (
        f"{argv0}:\n  Version:  {__version__}\n  Revision: {__version__}\n"
        f"  Python version: {sys.version.split()[0]}\n\n"
    )


def captureOutput(command: list[str]) -> tuple[int, bytes]:
    """
    Run a command to completion and return its exit status and stdout.
    """
    readEnd, writeEnd = os.pipe()
    try:
        pid = os.posix_spawn(
            command[0],
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, writeEnd, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )
    finally:
        os.close(writeEnd)
    output = bytearray()
    with os.fdopen(readEnd, "rb") as f:
        while chunk := f.read(65536):
            output += chunk
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), bytes(output)


def info() -> int:
    """
    The C{-info} action of containerd 2.x: print a C{RuntimeInfo} with the
    options from stdin echoed and runc's features document.

    @return: the exit status.
    """
    from shimd.shim.bootstrap import decodeOptionsAny, runcFeatures, runtimeInfo

    optionsAny = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    runc = wire.lastString(decodeOptionsAny(optionsAny), 6) or "runc"
    try:
        features = runcFeatures(runc, captureOutput)
    except (OSError, ValueError) as e:
        print(f"{RUNTIME_NAME}: runtime features: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(runtimeInfo(optionsAny, features))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the binary: C{-v}, C{start}, C{delete}, or the daemon.

    @return: the exit status.
    """
    arguments = sys.argv[1:] if argv is None else argv
    try:
        flags = parseFlags(arguments)
    except FlagError as e:
        sys.stderr.write(f"{e}\n{usage(sys.argv[0])}")
        return 2
    except HelpRequested:
        sys.stderr.write(usage(sys.argv[0]))
        return 0
    if flags.version:
        sys.stdout.write(version(sys.argv[0]))
        return 0
    if flags.info:
        return info()
    try:
        validateFlags(flags)
    except LaunchError as e:
        print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
        return 1
    try:
        if flags.action == "start":
            stdin = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
            address = start(flags, stdin, os.getcwd())
            sys.stdout.write(address)
            sys.stdout.flush()
            return 0
        if flags.action == "delete":
            sys.stdout.buffer.write(delete(flags, os.getcwd()))
            sys.stdout.flush()
            return 0
        if flags.action is None:
            from shimd.shim.daemon import runFromLauncher

            return runFromLauncher(flags)
        raise LaunchError(f"invalid action {flags.action!r}")
    except (LaunchError, OSError) as e:
        print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
