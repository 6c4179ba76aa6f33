# -*- test-case-name: tests.test_reaper -*-
"""
Tests for L{shimd.shim.reaper}: exits routed to their watchers through a fake
process table, exits kept while a launch is in progress, Twisted's own
children left to Twisted, and one real run in a child process that becomes a
subreaper.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import attr
from twisted.internet.defer import CancelledError
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from shimd.shim.reaper import Exit, Reaper, exitStatus

WAITID_OPTIONS = os.WEXITED | os.WNOHANG | os.WNOWAIT
CORE_DUMPED = 0x80


def exited(code: int) -> int:
    """
    The wait status of a process that called C{exit(code)}.
    """
    return (code & 0xFF) << 8


def killed(signum: int, core: bool = False) -> int:
    """
    The wait status of a process killed by C{signum}.
    """
    return signum | (CORE_DUMPED if core else 0)


@attr.s(frozen=True, auto_attribs=True)
class FakeSigInfo:
    """
    The part of C{os.waitid}'s result the reaper reads.
    """

    si_pid: int
    si_status: int = 0


class FakeTwistedProcess:
    """
    One of Twisted's children, as L{twisted.internet.process} registers it:
    C{reapProcess} reaps its pid and unregisters it, unless it is stuck.
    """

    def __init__(self, table: FakeProcessTable, pid: int, stuck: bool = False):
        self.table = table
        self.pid = pid
        self.stuck = stuck
        self.reapCalls = 0
        self.endedWith: list[int] = []

    def reapProcess(self) -> None:
        self.reapCalls += 1
        if self.stuck:
            return
        reaped, status = self.table.reapByTwisted(self.pid)
        if reaped:
            del self.table.twisted[self.pid]
            self.endedWith.append(status)


class FakeProcessTable:
    """
    The children of a process: live ones, exited ones not yet reaped (in
    the order they exited), and the ones Twisted spawned.

    @ivar waitpids: the pids the reaper reaped itself, in order.
    @ivar maxWaitids: how many C{waitid} calls one test allows, so that a
        reaper that loops forever fails instead of hanging.
    """

    def __init__(self) -> None:
        self.live: set[int] = set()
        self.zombies: dict[int, int] = {}
        self.twisted: dict[int, FakeTwistedProcess] = {}
        self.waitpids: list[int] = []
        self.waitidCalls: list[tuple[int, int, int]] = []
        self.waitpidOptions: list[int] = []
        self.maxWaitids = 100
        self.time = 1_000

    def spawn(self, pid: int) -> None:
        self.live.add(pid)

    def spawnTwisted(self, pid: int, stuck: bool = False) -> FakeTwistedProcess:
        self.live.add(pid)
        process = self.twisted[pid] = FakeTwistedProcess(self, pid, stuck)
        return process

    def exit(self, pid: int, waitStatus: int) -> None:
        """
        C{pid}, a child, exits: it is a zombie until it is reaped.
        """
        self.live.discard(pid)
        self.zombies[pid] = waitStatus

    def waitid(self, idtype: int, id: int, options: int) -> FakeSigInfo | None:
        self.waitidCalls.append((idtype, id, options))
        if len(self.waitidCalls) > self.maxWaitids:
            raise AssertionError("the reaper does not stop calling waitid")
        if not (self.live or self.zombies):
            raise ChildProcessError(10, "No child processes")
        if not self.zombies:
            return None
        return FakeSigInfo(next(iter(self.zombies)))

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        self.waitpidOptions.append(options)
        if pid in self.zombies:
            self.waitpids.append(pid)
            return pid, self.zombies.pop(pid)
        if pid in self.live:
            return 0, 0
        raise ChildProcessError(10, "No child processes")

    def reapByTwisted(self, pid: int) -> tuple[int, int]:
        if pid in self.zombies:
            return pid, self.zombies.pop(pid)
        return 0, 0

    def twistedChildren(self) -> dict[int, Any]:
        return self.twisted

    def exists(self, pid: int) -> bool:
        return pid in self.live or pid in self.zombies

    def now(self) -> int:
        self.time += 1
        return self.time


class ExitStatusTests(SynchronousTestCase):
    """
    L{exitStatus} turns a wait status into the shim's exit status.
    """

    def test_exitCode(self) -> None:
        """
        A process that exited has its exit code as its status.
        """
        self.assertEqual(exitStatus(exited(0)), 0)
        self.assertEqual(exitStatus(exited(7)), 7)
        self.assertEqual(exitStatus(exited(255)), 255)

    def test_signal(self) -> None:
        """
        A process killed by a signal has 128 + the signal as its status,
        whether or not it dumped core.
        """
        self.assertEqual(exitStatus(killed(signal.SIGKILL)), 137)
        self.assertEqual(exitStatus(killed(signal.SIGTERM)), 143)
        self.assertEqual(exitStatus(killed(signal.SIGSEGV, core=True)), 139)


class ReaperTests(SynchronousTestCase):
    """
    L{Reaper.reap} reaps every exited child but Twisted's, and routes each
    exit to the watchers of its pid.
    """

    def setUp(self) -> None:
        self.table = FakeProcessTable()
        self.reaper = Reaper(
            waitid=self.table.waitid,
            waitpid=self.table.waitpid,
            twistedChildren=self.table.twistedChildren,
            exists=self.table.exists,
            now=self.table.now,
        )

    def test_exitRoutedToWatcher(self) -> None:
        """
        The exit of a watched pid fires its watcher with the pid, the exit
        status and the time it was reaped; other watchers wait on.
        """
        self.table.spawn(100)
        self.table.spawn(101)
        watched = self.reaper.watch(100)
        other = self.reaper.watch(101)
        self.table.exit(100, exited(7))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(watched), Exit(100, 7, 1_001))
        self.assertNoResult(other)
        self.assertEqual(self.table.waitpids, [100])

    def test_waitArguments(self) -> None:
        """
        The reaper peeks with C{waitid(P_ALL, 0, WEXITED | WNOHANG | WNOWAIT)}
        and reaps with C{waitpid(pid, WNOHANG)}: it never blocks.
        """
        self.table.spawn(100)
        self.table.exit(100, exited(0))
        self.reaper.reap()
        self.assertEqual(self.table.waitidCalls, [(os.P_ALL, 0, WAITID_OPTIONS)] * 2)
        self.assertEqual(self.table.waitpidOptions, [os.WNOHANG])

    def test_signalledExit(self) -> None:
        """
        A watched process killed by a signal exits with 128 + the signal.
        """
        self.table.spawn(100)
        watched = self.reaper.watch(100)
        self.table.exit(100, killed(signal.SIGKILL))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(watched).status, 137)

    def test_everyWatcher(self) -> None:
        """
        Every watcher of a pid gets its exit.
        """
        self.table.spawn(100)
        first = self.reaper.watch(100)
        second = self.reaper.watch(100)
        self.table.exit(100, exited(3))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(first).status, 3)
        self.assertEqual(self.successResultOf(second).status, 3)

    def test_reapsEveryExit(self) -> None:
        """
        One call reaps every exited child, and stops while others still
        run.
        """
        for pid in (100, 101, 102):
            self.table.spawn(pid)
        watchers = [self.reaper.watch(pid) for pid in (100, 101)]
        self.table.exit(101, exited(1))
        self.table.exit(100, exited(2))
        self.reaper.reap()
        self.assertEqual([self.successResultOf(w).status for w in watchers], [2, 1])
        self.assertEqual(self.table.waitpids, [101, 100])
        self.assertEqual(self.table.live, {102})

    def test_nothingExited(self) -> None:
        """
        With children but none exited (C{waitid} gives L{None}), nothing is
        reaped.
        """
        self.table.spawn(100)
        watched = self.reaper.watch(100)
        self.reaper.reap()
        self.assertNoResult(watched)
        self.assertEqual(len(self.table.waitidCalls), 1)
        self.assertEqual(self.table.waitpids, [])

    def test_zeroPid(self) -> None:
        """
        A C{waitid} result whose pid is 0 (what some kernels report instead
        of no result) ends the loop.
        """
        calls: list[int] = []

        def waitid(idtype: int, id: int, options: int) -> FakeSigInfo:
            calls.append(options)
            return FakeSigInfo(0)

        reaper = Reaper(waitid=waitid, waitpid=self.table.waitpid)
        reaper.reap()
        self.assertEqual(calls, [WAITID_OPTIONS])
        self.assertEqual(self.table.waitpids, [])

    def test_noChildrenEndsLoop(self) -> None:
        """
        C{ChildProcessError} from C{waitid} (no children at all) ends the
        loop without a call to C{waitpid}.
        """
        self.reaper.reap()
        self.assertEqual(len(self.table.waitidCalls), 1)
        self.assertEqual(self.table.waitpidOptions, [])

    def test_reapedElsewhere(self) -> None:
        """
        A child that C{waitid} reported but that is gone when the reaper
        reaps it (C{ChildProcessError} from C{waitpid}) is skipped, and the
        other exits are still reaped.
        """
        self.table.spawn(100)
        watched = self.reaper.watch(100)
        self.table.exit(100, exited(4))
        waitpid = self.table.waitpid
        vanished: list[int] = []

        def flakyWaitpid(pid: int, options: int) -> tuple[int, int]:
            if not vanished:
                vanished.append(pid)
                self.table.zombies.pop(pid)
                self.table.exit(200, exited(0))
                raise ChildProcessError(10, "No child processes")
            return waitpid(pid, options)

        self.reaper._waitpid = flakyWaitpid
        self.reaper.reap()
        self.assertEqual(vanished, [100])
        self.assertNoResult(watched)
        self.assertEqual(self.table.waitpids, [200])

    def test_orphanDropped(self) -> None:
        """
        An exit nobody watches, with no launch in progress, is reaped and
        dropped: a later watch of that pid does not get it.
        """
        self.table.spawn(300)
        self.table.exit(300, exited(9))
        self.reaper.reap()
        self.assertEqual(self.table.waitpids, [300])
        self.assertNoResult(self.reaper.watch(300))

    def test_keptDuringLaunch(self) -> None:
        """
        An exit reaped while a launch is in progress, before its pid is
        watched, is kept, and a later watch gets it at once, with the time
        it was reaped.
        """
        launch = self.reaper.launching()
        self.table.spawn(200)
        self.table.exit(200, exited(5))
        self.reaper.reap()
        self.table.time = 5_000
        watched = self.reaper.watch(200)
        self.assertEqual(self.successResultOf(watched), Exit(200, 5, 1_001))
        launch.done()

    def test_keptOnce(self) -> None:
        """
        A kept exit is delivered to the first watch only.
        """
        launch = self.reaper.launching()
        self.table.spawn(200)
        self.table.exit(200, exited(5))
        self.reaper.reap()
        self.successResultOf(self.reaper.watch(200))
        self.assertNoResult(self.reaper.watch(200))
        launch.done()

    def test_keptUntilLastLaunchDone(self) -> None:
        """
        Kept exits are dropped when the last launch in progress is done, not
        before.
        """
        first = self.reaper.launching()
        second = self.reaper.launching()
        for pid in (200, 201):
            self.table.spawn(pid)
            self.table.exit(pid, exited(pid - 200))
        self.reaper.reap()
        first.done()
        self.assertEqual(self.successResultOf(self.reaper.watch(200)).status, 0)
        second.done()
        self.assertNoResult(self.reaper.watch(201))

    def test_launchDoneTwice(self) -> None:
        """
        L{Launch.done} counts once, however often it is called: another
        launch in progress still keeps exits.
        """
        first = self.reaper.launching()
        second = self.reaper.launching()
        first.done()
        first.done()
        self.table.spawn(200)
        self.table.exit(200, exited(1))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(self.reaper.watch(200)).status, 1)
        second.done()

    def test_launchDoesNotDelayWatchers(self) -> None:
        """
        During a launch, the exit of a watched pid still goes straight to
        its watcher, and is not kept.
        """
        launch = self.reaper.launching()
        self.table.spawn(100)
        watched = self.reaper.watch(100)
        self.table.exit(100, exited(2))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(watched).status, 2)
        self.assertNoResult(self.reaper.watch(100))
        launch.done()

    def test_pidReused(self) -> None:
        """
        A kept exit whose pid names a live process again by the time it is
        watched (the pid was reused) is not delivered: the watch waits for
        the exit of the process that now has the pid.
        """
        launch = self.reaper.launching()
        self.table.spawn(200)
        self.table.exit(200, exited(5))
        self.reaper.reap()
        self.table.spawn(200)
        watched = self.reaper.watch(200)
        self.assertNoResult(watched)
        launch.done()
        self.table.exit(200, exited(6))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(watched).status, 6)

    def test_cancelWatch(self) -> None:
        """
        A cancelled watch fails with L{CancelledError}; the exit that comes
        later goes to the remaining watchers only, and is dropped when none
        remain.
        """
        self.table.spawn(100)
        self.table.spawn(101)
        cancelled = self.reaper.watch(100)
        kept = self.reaper.watch(100)
        alone = self.reaper.watch(101)
        cancelled.cancel()
        alone.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.failureResultOf(alone, CancelledError)
        self.table.exit(100, exited(1))
        self.table.exit(101, exited(1))
        self.reaper.reap()
        self.assertEqual(self.successResultOf(kept).status, 1)
        self.assertEqual(self.table.waitpids, [100, 101])
        self.assertEqual(self.reaper._watchers, {})
        self.assertEqual(self.reaper._unclaimed, {})

    def test_twistedChildren(self) -> None:
        """
        Twisted's own children are handed to their C{reapProcess}, never
        reaped by the reaper nor routed to watchers; the other exits are
        reaped in the same call.
        """
        twisted = self.table.spawnTwisted(400)
        self.table.spawn(100)
        watchedTwisted = self.reaper.watch(400)
        watched = self.reaper.watch(100)
        self.table.exit(400, exited(3))
        self.table.exit(100, exited(4))
        self.reaper.reap()
        self.assertEqual(twisted.endedWith, [exited(3)])
        self.assertEqual(self.table.waitpids, [100])
        self.assertNoResult(watchedTwisted)
        self.assertEqual(self.successResultOf(watched).status, 4)

    def test_twistedChildLeftAlone(self) -> None:
        """
        A Twisted child that has not exited is not touched.
        """
        twisted = self.table.spawnTwisted(400)
        self.table.spawn(100)
        self.table.exit(100, exited(0))
        self.reaper.reap()
        self.assertEqual(twisted.reapCalls, 0)
        self.assertEqual(self.table.live, {400})

    def test_twistedChildNotReaped(self) -> None:
        """
        If Twisted does not reap its exited child, the loop stops rather
        than seeing that child again forever, and the reaper never reaps it
        itself.
        """
        twisted = self.table.spawnTwisted(400, stuck=True)
        self.table.exit(400, exited(0))
        self.reaper.reap()
        self.assertEqual(twisted.reapCalls, 1)
        self.assertEqual(len(self.table.waitidCalls), 1)
        self.assertEqual(self.table.waitpids, [])
        self.assertIn(400, self.table.zombies)


class RealReaperTests(TestCase):
    """
    The real L{Reaper} in a real reactor, in a child process (so that the
    test runner neither becomes a subreaper nor loses its C{SIGCHLD}).
    """

    SCRIPT = r"""
import json
import os
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater

from shimd.shim.reaper import Reaper

# Forks a grandchild, waits until it has exited (without reaping it), prints
# its pid and exits 3: the zombie grandchild is re-parented to the subreaper.
INTERMEDIATE = '''
import os, signal, sys
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(int(sys.argv[1]))
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
sys.stdout.write(str(pid))
sys.stdout.flush()
os._exit(3)
'''


class Collect(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def processEnded(self, reason):
        self.ended.callback(reason.value)


async def intermediate(argument):
    child = Collect()
    reactor.spawnProcess(
        child,
        sys.executable,
        [sys.executable, "-c", INTERMEDIATE, argument],
        env=dict(os.environ),
        childFDs={0: "w", 1: "r", 2: 2},
    )
    reason = await child.ended
    return int(child.out), reason.exitCode


async def watched(argument):
    launch = reaper.launching()
    try:
        pid, code = await intermediate(argument)
        exit = reaper.watch(pid)
        exit.addTimeout(30, reactor)
        exit = await exit
    finally:
        launch.done()
    return {"intermediate": code, "pid": exit.pid == pid, "status": exit.status}


async def main():
    results = {}
    results["exit"] = await watched("7")
    results["kill"] = await watched("kill")
    pid, code = await intermediate("9")
    results["orphan"] = {"intermediate": code}
    for attempt in range(3000):
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            results["childrenLeft"] = False
            break
        await deferLater(reactor, 0.01)
    else:
        results["childrenLeft"] = True
    results["unclaimed"] = sorted(reaper._unclaimed)
    results["watchers"] = sorted(reaper._watchers)
    return results


def run():
    done = defer.ensureDeferred(main())

    def report(results):
        print(json.dumps(results))

    done.addCallbacks(report, lambda f: print(f.getTraceback(), file=sys.stderr))
    done.addBoth(lambda _: reactor.stop())


reaper = Reaper()
reactor.callWhenRunning(reaper.install, reactor)
reactor.callWhenRunning(run)
reactor.run()
"""

    async def test_subreaper(self) -> None:
        """
        A subreaper's re-parented grandchildren are reaped and their exits
        delivered to watchers (the exit code, or 128 + the signal), an
        unwatched orphan is reaped and dropped, and a child spawned with
        C{reactor.spawnProcess} still ends through Twisted with its own
        exit code.
        """
        script = self.mktemp() + ".py"
        with open(script, "w") as f:
            f.write(self.SCRIPT)
        from twisted.internet import reactor

        out, err, code = await getProcessOutputAndValue(
            sys.executable, [script], env=dict(os.environ), reactor=reactor
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(
            json.loads(out),
            {
                "exit": {"intermediate": 3, "pid": True, "status": 7},
                "kill": {"intermediate": 3, "pid": True, "status": 137},
                "orphan": {"intermediate": 3},
                "childrenLeft": False,
                "unclaimed": [],
                "watchers": [],
            },
            err,
        )
