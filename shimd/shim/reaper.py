# -*- test-case-name: tests.test_reaper -*-
"""
One reaper for every child of the shim.

The shim is a child subreaper: a container's processes are created by runc,
whose own process exits, so they are re-parented to the shim. Twisted reaps
the processes it spawned (runc runs, logging binaries) one pid at a time. On
each C{SIGCHLD} the L{Reaper} looks at every exited child without reaping it
(C{waitid(P_ALL, WNOWAIT)}): it hands Twisted's own children to Twisted, and
reaps the rest itself, routing each exit to whoever watches that pid.

An exit can arrive before its owner knows the pid: a container's init may die
before C{runc create} returns and the pid file is read. While any launch is in
progress such exits are kept until claimed; no exit status is ever lost.
Exits of unknown orphans (daemonised grandchildren) are dropped once no
launch could claim them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from shimd.interfaces import IReaper

PR_SET_CHILD_SUBREAPER = 36


@attr.s(frozen=True, auto_attribs=True)
class Exit:
    """
    A process's exit.

    @ivar status: the exit code, or 128 + the signal that killed it.
    @ivar exitedAt: when it was reaped, in nanoseconds since the epoch.
    """

    pid: int
    status: int
    exitedAt: int


def exitStatus(waitStatus: int) -> int:
    """
    The shim's exit status convention: the code, or 128 + the signal.
    """
    if os.WIFSIGNALED(waitStatus):
        return 128 + os.WTERMSIG(waitStatus)
    return os.WEXITSTATUS(waitStatus)


def becomeSubreaper() -> None:
    """
    Make this process a child subreaper, so that orphaned descendants (a
    container's processes once runc exits) are re-parented to it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(error)}")


def _twistedChildren() -> dict[int, Any]:
    from twisted.internet import process

    return process.reapProcessHandlers


class Launch:
    """
    A launch in progress (C{runc create}, C{exec} or C{restore}): while any
    is, exits of unknown pids are kept for their owner to claim.
    """

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._done = False

    def done(self) -> None:
        """
        The launch is over and its pid, if any, is watched.
        """
        if not self._done:
            self._done = True
            self._reaper._launchDone()


@implementer(IReaper)
class Reaper:
    """
    Routes the exit of every child to its watchers.
    """

    log = Logger()

    def __init__(
        self,
        waitid: Callable[..., Any] = os.waitid,
        waitpid: Callable[[int, int], tuple[int, int]] = os.waitpid,
        twistedChildren: Callable[[], dict[int, Any]] = _twistedChildren,
        exists: Callable[[int], bool] | None = None,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        """
        @param twistedChildren: Twisted's own children by pid, which Twisted
            reaps.
        @param exists: whether a pid names a live process, to tell a kept
            exit from a pid since reused.
        """
        self._waitid = waitid
        self._waitpid = waitpid
        self._twistedChildren = twistedChildren
        self._exists = exists or _processExists
        self._now = now
        self._watchers: dict[int, list[Deferred[Exit]]] = {}
        self._unclaimed: dict[int, Exit] = {}
        self._launches = 0

    def install(self, reactor: Any) -> None:
        """
        Become a subreaper and reap on every C{SIGCHLD}. Call it once the
        reactor runs (it installs its own C{SIGCHLD} handling at start).
        """
        becomeSubreaper()

        def onSIGCHLD(signum: int, frame: object) -> None:
            reactor.callFromThread(self.reap)

        signal.signal(signal.SIGCHLD, onSIGCHLD)
        signal.siginterrupt(signal.SIGCHLD, False)
        self.reap()

    def launching(self) -> Launch:
        """
        Start a launch; call L{Launch.done} after watching its pid.
        """
        self._launches += 1
        return Launch(self)

    def watch(self, pid: int) -> Deferred[Exit]:
        """
        @return: a Deferred that fires with the exit of C{pid}, at once if it
            has already been reaped during a launch.
        """
        kept = self._unclaimed.pop(pid, None)
        if kept is not None and not self._exists(pid):
            return succeed(kept)

        def cancel(watcher: Deferred[Exit]) -> None:
            watchers = self._watchers.get(pid, [])
            if watcher in watchers:
                watchers.remove(watcher)
            if not watchers:
                self._watchers.pop(pid, None)

        watcher: Deferred[Exit] = Deferred(cancel)
        self._watchers.setdefault(pid, []).append(watcher)
        return watcher

    def reap(self) -> None:
        """
        Reap every exited child, leaving Twisted's own to Twisted.
        """
        while True:
            try:
                info = self._waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            twisted = self._twistedChildren().get(pid)
            if twisted is not None:
                twisted.reapProcess()
                if pid in self._twistedChildren():
                    return
                continue
            try:
                reaped, waitStatus = self._waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if reaped == pid:
                self._exited(Exit(pid, exitStatus(waitStatus), self._now()))

    def _exited(self, exit: Exit) -> None:
        watchers = self._watchers.pop(exit.pid, [])
        if watchers:
            for watcher in watchers:
                watcher.callback(exit)
        elif self._launches:
            self._unclaimed[exit.pid] = exit
        else:
            self.log.debug("reaped orphan {pid}", pid=exit.pid)

    def _launchDone(self) -> None:
        self._launches -= 1
        if not self._launches and self._unclaimed:
            self.log.debug(
                "dropping exits of orphans {pids}", pids=sorted(self._unclaimed)
            )
            self._unclaimed.clear()


def _processExists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
