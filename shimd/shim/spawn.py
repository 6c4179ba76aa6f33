# -*- test-case-name: tests.test_launcher -*-
"""
Starting processes from the launcher and the fork server without a fork of
the caller: the one C{posix_spawn} (L{spawn}), and what is built on it: a
shim daemon that reports on a descriptor once it has started
(L{spawnDaemon}, L{Daemon}), a detached background process
(L{spawnDetached}), and a command run to completion (L{run}, L{capture}).

Standard library only: the launcher imports it on containerd's critical
path.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from shimd import RUNTIME_NAME
from shimd.shim.address import LISTEN_FD
from shimd.shim.errors import LaunchError

# collections.abc costs milliseconds to import (the collections package
# with it): mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

READY_TIMEOUT = 30.0
# The daemon's start-up report goes to this descriptor, named by this
# variable (L{shimd.shim.daemon.StartupReport}).
READY_VARIABLE = "SHIMD_READY_FD"
READY_FD = 4
# Set when the daemon was spawned without the fork server: C{LEVEL REASON},
# which the daemon logs.
COLD_VARIABLE = "SHIMD_SPAWNED_COLD"

DEVNULL = "devnull"


def spawn(
    command: Sequence[str],
    environ: Mapping[str, str],
    descriptors: Mapping[int, int | str],
    setsid: bool = False,
    search: bool = False,
) -> int:
    """
    Start C{command} with C{posix_spawn}: nothing of this process is copied,
    and the child inherits no descriptor but those it is given.

    @param descriptors: the child's descriptors, each from a descriptor of
        ours or L{DEVNULL} (C{/dev/null}, read-only as 0, write-only
        otherwise); those not given are inherited as they are (only 0 to 2
        are not close-on-exec here). Sources must not be among the targets
        set before them: see L{_above}.
    @param setsid: start it in a new session.
    @param search: look C{command[0]} up on C{PATH}.
    @return: its pid.
    """
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
    for target, source in descriptors.items():
        if source == DEVNULL:
            mode = os.O_RDONLY if target == 0 else os.O_WRONLY
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, mode, 0))
        else:
            assert isinstance(source, int)
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
    launch = os.posix_spawnp if search else os.posix_spawn
    return launch(
        command[0], list(command), environ, file_actions=actions, setsid=setsid
    )


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
            exits, or does not report in time.
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
    try:
        pid = spawn(
            command,
            {**environ, READY_VARIABLE: str(READY_FD)},
            {
                0: DEVNULL,
                1: DEVNULL,
                2: DEVNULL,
                LISTEN_FD: inherited,
                READY_FD: statusWrite,
            },
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


def spawnDetached(command: list[str], environ: Mapping[str, str]) -> int:
    """
    Start a background process detached from the caller's session and
    output (C{/dev/null} as its stdio), and do not wait for it.

    @return: its pid.
    """
    return spawn(command, environ, {0: DEVNULL, 1: DEVNULL, 2: DEVNULL}, setsid=True)


def run(command: list[str]) -> int:
    """
    Run a command (looked up on C{PATH}) to completion, its output going to
    our stderr (which containerd logs), never to our stdout.

    @return: its exit status; 127, with the reason on stderr, when it
        cannot be started.
    """
    try:
        pid = spawn(command, os.environ, {0: DEVNULL, 1: 2}, search=True)
    except OSError as e:
        print(f"{RUNTIME_NAME}: run {command[0]}: {e}", file=sys.stderr)
        return 127
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def capture(command: list[str]) -> tuple[int, bytes]:
    """
    Run a command to completion and return its exit status and stdout.
    """
    readEnd, writeEnd = os.pipe()
    try:
        pid = spawn(command, os.environ, {0: DEVNULL, 1: writeEnd, 2: DEVNULL})
    finally:
        os.close(writeEnd)
    output = bytearray()
    with os.fdopen(readEnd, "rb") as f:
        while chunk := f.read(65536):
            output += chunk
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), bytes(output)
