# -*- test-case-name: tests.test_launcher -*-
"""
The program containerd runs for a shim built on shimd (the runc shim's is
C{containerd-shim-pyrunc-v2}, L{shimd.runc.shim}), as Go's C{pkg/shim}
C{Run} is: the flags, the C{start}, C{delete} and C{-info} actions, the
socket, and the daemon. What is the runtime's is asked of a L{ShimManager}.

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
import os
import sys
import time

from shimd import RUNTIME_NAME, __version__, wire
from shimd.shim import spawn
from shimd.shim.address import (
    SOCKET_DIR,
    joinPath,
    listen,
    removeStaleSocket,
    socketAddress,
    writeAddress,
)
from shimd.shim.errors import LaunchError
from shimd.shim.flags import (
    FlagError,
    Flags,
    HelpRequested,
    daemonArguments,
    parseFlags,
    usage,
    validateFlags,
)

SIGKILL_STATUS = 128 + 9

# typing costs milliseconds to import: mypy treats any name TYPE_CHECKING as
# true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Protocol

    class ShimManager(Protocol):
        """
        What is the runtime's in the program's actions (Go's C{shim.Manager}):
        a module or object of the standard library's cost, as the launcher
        runs on containerd's critical path.
        """

        #: The module that runs the shim's program (C{python -m}).
        PROGRAM: str

        def group(self, bundle: str, id: str) -> str:
            """
            The key of the shim that serves the container in C{bundle}:
            containers with the same key share one daemon.
            """

        def configure(self, pid: int, options: wire.Message) -> None:
            """
            Set a new daemon up as the container's runtime options (decoded
            by field number) ask, before it serves (C{ShimCgroup}, for runc).
            """

        def stop(self, bundle: str, namespace: str, id: str) -> int:
            """
            Clean up after a container whose shim is gone.

            @return: its init pid, or -1 when it is not known.
            """

        def features(self, optionsAny: bytes) -> bytes:
            """
            The OCI runtime features document for C{-info}, for the runtime
            the encoded options C{Any} names.
            """


def daemonCommand(manager: ShimManager, arguments: list[str]) -> list[str]:
    """
    The command line of the daemon that C{start} spawns: this same program,
    without an action.
    """
    script = os.path.abspath(sys.argv[0])
    if script.endswith(".py") or not os.path.isfile(script):
        return [sys.executable, "-m", manager.PROGRAM, *arguments]
    return [sys.executable, script, *arguments]


def launchDaemon(
    manager: ShimManager,
    arguments: list[str],
    listener: _socket.socket,
    bundle: str,
    environ: Mapping[str, str],
) -> spawn.Daemon:
    """
    Have the fork server fork the daemon or, when that fails for any
    reason, spawn it; the daemon logs the reason (L{spawn.COLD_VARIABLE}).
    """
    from shimd.shim import forkserver

    command = daemonCommand(manager, arguments)
    if forkserver.enabled(environ):
        try:
            forked = forkserver.forkDaemon(
                arguments, bundle, environ, listener.fileno(), command=command
            )
        except forkserver.ForkServerError as e:
            # No server yet is the usual first start; anything else is not.
            level = "info" if type(e) is forkserver.ForkServerUnavailable else "warn"
            environ = {**environ, spawn.COLD_VARIABLE: f"{level} {e}"}
        else:
            return spawn.Daemon(forked.pid, forked.proc, forked.status.detach())
    return spawn.spawnDaemon(command, listener, environ)


def adjustOOMScore(daemon: spawn.Daemon) -> None:
    """
    Give the daemon an OOM score one above its parent's (containerd's), so
    that the kernel kills the shim before containerd.
    """
    with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
        score = int(f.read().strip())
    fd = os.open("oom_score_adj", os.O_WRONLY | os.O_CLOEXEC, dir_fd=daemon.proc)
    with open(fd, "w") as f:
        f.write(str(min(score + 1, 1000)))


def start(
    manager: ShimManager,
    flags: Flags,
    stdin: bytes,
    bundle: str,
    socketDir: str = SOCKET_DIR,
) -> str:
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
    group = manager.group(bundle, flags.id)
    address = socketAddress(given.address, given.namespace, group, given.socketDir)
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
        daemon = launchDaemon(manager, arguments, listener, bundle, environ)
    except BaseException:
        listener.close()
        os.unlink(path)
        raise
    listener.close()
    try:
        try:
            manager.configure(daemon.pid, given.options)
            adjustOOMScore(daemon)
        except (OSError, LaunchError) as e:
            raise LaunchError(f"configure shim process: {e}") from e
        daemon.waitReady(spawn.READY_TIMEOUT)
        writeAddress(bundle, address)
    except BaseException:
        daemon.kill()
        os.unlink(path)
        raise
    finally:
        daemon.close()
    return address


def delete(manager: ShimManager, flags: Flags, cwd: str) -> bytes:
    """
    The C{delete} action: clean up after a shim that is gone. Have the
    runtime clean up the container (L{ShimManager.stop}), remove the dead
    shim's socket file, and report the container killed.

    @return: the encoded C{containerd.task.v2.DeleteResponse} to print.
    """
    bundle = joinPath(os.path.dirname(cwd), flags.id)
    pid = manager.stop(bundle, flags.namespace, flags.id)
    removeStaleSocket(bundle)
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


def info(manager: ShimManager) -> int:
    """
    The C{-info} action of containerd 2.x: print a C{RuntimeInfo} with the
    options from stdin echoed and the runtime's features document.

    @return: the exit status.
    """
    from shimd.shim.bootstrap import runtimeInfo

    optionsAny = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        features = manager.features(optionsAny)
    except (OSError, ValueError) as e:
        print(f"{RUNTIME_NAME}: runtime features: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(runtimeInfo(optionsAny, features))
    sys.stdout.flush()
    return 0


def main(manager: ShimManager, argv: Sequence[str] | None = None) -> int:
    """
    Run the program: C{-v}, C{-info}, C{start}, C{delete}, or the daemon.

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
        return info(manager)
    try:
        validateFlags(flags)
    except LaunchError as e:
        print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
        return 1
    try:
        if flags.action == "start":
            stdin = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
            address = start(manager, flags, stdin, os.getcwd())
            sys.stdout.write(address)
            sys.stdout.flush()
            return 0
        if flags.action == "delete":
            sys.stdout.buffer.write(delete(manager, flags, os.getcwd()))
            sys.stdout.flush()
            return 0
        if flags.action is None:
            from shimd.shim.daemon import runFromLauncher

            return runFromLauncher(flags)
        raise LaunchError(f"invalid action {flags.action!r}")
    except (LaunchError, OSError) as e:
        print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
        return 1
