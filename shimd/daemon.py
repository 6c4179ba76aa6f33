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
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shimd import RUNTIME_NAME

if TYPE_CHECKING:
    from shimd.launcher import Flags

LOG_FIFO = "log"
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


def run(argv: Sequence[str], logPath: str | None = None) -> int:
    """
    Run the shim service until it stops.

    @param argv: C{twistd shim} options.
    @param logPath: the log fifo to log to, or L{None} for stderr as it is.
    @return: the exit status.
    """
    if logPath is not None:
        openLog(logPath)
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
    from twisted.python import usage

    from shimd.logrus import LogrusObserver, quietTwisted
    from shimd.tap import Options, makeService

    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
        return 1
    level = LogLevel.debug if options["debug"] else LogLevel.info
    observer = LogrusObserver(
        2,
        {
            "namespace": options["namespace"],
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
    log = Logger(namespace="shimd.daemon")
    service = makeService(options, reactor)
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
    fd 3 (or C{-socket PATH}), logging to the bundle's C{log} fifo.
    """
    argv = ["--namespace", flags.namespace, "--id", flags.id]
    argv += ["--address", flags.address]
    if flags.socket:
        argv += ["--socket", flags.socket]
    else:
        argv += ["--socket-fd", "3"]
    if flags.bundle:
        argv += ["--bundle", flags.bundle]
    if flags.debug:
        argv.append("--debug")
    return run(argv, logPath=LOG_FIFO)
