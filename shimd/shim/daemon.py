# -*- test-case-name: tests.test_daemon -*-
"""
The shim daemon, as C{start} spawns it: a lean runner for the same service
C{twistd -n shim} runs, without twistd's plugin scan and option machinery on
the path to the first reply.

It logs to the bundle's C{log} fifo, which containerd reads, in the logrus
format containerd expects.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
import stat
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from shimd import RUNTIME_NAME
from shimd.shim.address import LISTEN_FD, listenerFromFD, listenerFromPath
from shimd.shim.spawn import COLD_VARIABLE, READY_VARIABLE

if TYPE_CHECKING:
    from shimd.shim.address import Listener
    from shimd.shim.config import ShimConfig
    from shimd.shim.flags import Flags

LOG_FIFO = "log"
READY = b"ready"
PROCESS_NAME = b"containerd-shim"
PR_SET_NAME = 15


def nameProcess(name: bytes) -> None:
    """
    Set the process name C{ps} and C{pgrep} show (15 bytes at most): the
    same C{containerd-shim} the Go shim's processes show, whether the daemon
    was spawned or forked by the fork server.
    """
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


def openLog(path: str) -> int:
    """
    Open the log fifo for writing without ever blocking, and make it our
    stderr, so that whatever the process prints reaches containerd's log.

    A fifo with no reader (containerd down) cannot be opened write-only
    without blocking, so then it is opened read-write: lines wait in it for
    the next reader instead.

    @return: the descriptor (2).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    os.dup2(fd, 2)
    os.close(fd)
    return 2


class StartupReport:
    """
    The channel on which a daemon tells C{start} whether it came up: a
    descriptor named by C{$SHIMD_READY_FD}, which gets C{ready} once the
    daemon has what it takes from the bundle and from C{start} (its log
    fifo, its listening socket), or the reason it has not, and is then
    closed. What fails later is logged to containerd; the rest of the
    daemon's start-up overlaps with containerd's handling of the address, as
    the Go shim's does. Without the variable (a daemon run by hand), reports
    go nowhere.
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @classmethod
    def fromEnvironment(cls, environ: MutableMapping[str, str]) -> StartupReport:
        """
        Take the descriptor's number out of C{environ}, so that nothing the
        daemon runs inherits it.
        """
        value = environ.pop(READY_VARIABLE, "")
        return cls(int(value) if value.isdigit() else None)

    def report(self, message: bytes) -> None:
        """
        Report once: later reports are ignored.
        """
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.write(fd, message + b"\n")
        except OSError:
            pass
        finally:
            os.close(fd)

    def ready(self) -> None:
        self.report(READY)

    def failed(self, reason: str) -> None:
        self.report(f"error {reason}".replace("\n", " ").encode("utf-8", "replace"))


def run(
    config: ShimConfig, listener: Listener, notice: tuple[str, str] | None = None
) -> int:
    """
    Run the shim service until it stops, logging to stderr (the log fifo).

    @param config: the parsed configuration.
    @param listener: where to serve.
    @param notice: a level (C{"info"} or C{"warn"}) and a message to log once
        logging is set up.
    @return: the exit status.
    """
    nameProcess(PROCESS_NAME)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        Logger,
        LogLevel,
        globalLogBeginner,
    )

    from shimd.shim.logrus import LogrusObserver, quietTwisted
    from shimd.shim.service import makeService

    level = LogLevel.debug if config.debug else LogLevel.info
    observer = LogrusObserver(
        2,
        {
            "namespace": config.namespace,
            "pid": str(os.getpid()),
            "runtime": RUNTIME_NAME,
        },
        level,
    )
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [quietTwisted(level)])],
        redirectStandardIO=False,
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    log = Logger(namespace="shimd.shim.daemon")
    if notice is not None:
        noticeLevel, message = notice
        log.emit(LogLevel.levelWithName(noticeLevel), "{message}", message=message)
    try:
        service = makeService(config, listener, reactor)
    except Exception:
        # A settings file that cannot be read, say: in containerd's log.
        log.failure("shim failed to start")
        return 1
    failed = []

    def start() -> None:
        try:
            service.startService()
        except Exception:
            log.failure("shim failed to start")
            failed.append(True)
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 1 if failed else 0


def runFromLauncher(flags: Flags) -> int:
    """
    Run the daemon as C{start} spawns it: the listening socket inherited as
    fd 3 (or C{-socket PATH}), logging to the bundle's C{log} fifo, and
    telling C{start} whether it came up (L{StartupReport}). When C{start}
    spawned it without the fork server, it logs why.

    @param flags: the daemon's flags, parsed once (by the launcher, or by
        the fork server from the request).
    """
    report = StartupReport.fromEnvironment(os.environ)
    level, _, reason = os.environ.pop(COLD_VARIABLE, "").partition(" ")
    if level not in ("info", "warn"):
        level = "warn"
    coldReason = (level, f"fork server not used: {reason}") if reason else None

    def refuse(reason: str) -> int:
        report.failed(reason)
        print(f"{RUNTIME_NAME}: {reason}", file=sys.stderr)
        return 1

    try:
        openLog(LOG_FIFO)
    except OSError as e:
        return refuse(f"open log fifo {os.path.abspath(LOG_FIFO)}: {e.strerror}")
    if not flags.socket and not isSocket(LISTEN_FD):
        return refuse(f"fd {LISTEN_FD} is not the listening socket")
    try:
        if flags.socket:
            listener = listenerFromPath(flags.socket)
        else:
            listener = listenerFromFD(LISTEN_FD)
    except (OSError, ValueError) as e:
        return refuse(str(e))
    # From here on, whatever goes wrong reaches containerd's log.
    report.ready()
    from shimd.shim.config import ShimConfig

    config = ShimConfig.fromFlags(flags, os.environ, os.getcwd())
    return run(config, listener, notice=coldReason)


def isSocket(fd: int) -> bool:
    """
    Whether C{fd} is an open socket.
    """
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
