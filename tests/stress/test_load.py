"""
Load on one long-lived shimd shim, and what it leaves behind: a hundred
clients calling C{State} while containers start and stop, container
lifecycles one after another, and execs one after another; each measured
from C{/proc} before and after (descriptors, zombie children, resident
memory) and checked for mounts, cgroups, runc state, bundles and fifos left
on the host.

The lifecycles and the crowd run in one shim group, so that one shim serves
them all and is the process measured; the execs run in one container,
driven over the shim's socket directly.
"""

from __future__ import annotations

import os
import re
import shutil

from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2
from tests.e2e import host
from tests.e2e.containerd import FIFO_DIR, RUNC_ROOT, waitUntil
from tests.e2e.runtimes import SHIMD
from tests.stress.base import StressMixin, execSpec, groupOptions
from tests.stress.client import StatePounder
from tests.stress.proc import Snapshot, zombies
from tests.stress.scale import Stopwatch, report, scaled

CLIENTS = 100
CROWD_LIFECYCLES = scaled(5, 50)
LIFECYCLES = scaled(30, 1_000)
EXECS = scaled(200, 10_000)
WARM_UP = 5
# The shim's resident memory may grow by this much over a run, whatever
# its length.
RSS_ALLOWANCE_KIB = 8 * 1024


class LoadTestsMixin(StressMixin):
    """
    One shim under load.
    """

    def startAnchor(self, group: str | None = None, image: str | None = None) -> int:
        """
        Run the long-lived container whose shim is measured.

        @return: the shim's pid.
        """
        options = groupOptions(group) if group else []
        if group:
            self.namespace.ids.add(group)
        self.runDetached(
            "anchor", "/bin/sleep", "1000000", options=options, image=image
        )
        return self.shimPid("anchor")

    def settled(self, shim: int, before: Snapshot | None = None) -> Snapshot:
        """
        A snapshot of the shim once it has reaped every child and, given
        C{before}, closed the connections and descriptors it had no more
        than then (it learns of closed connections as it gets to them).
        """
        waitUntil(lambda: not zombies(shim), 30, "the shim to reap its children")
        if before is not None:
            try:
                waitUntil(
                    lambda: len(Snapshot.of(shim).fds) <= len(before.fds),
                    30,
                    "the shim's descriptors to settle",
                )
            except AssertionError:
                pass
        return Snapshot.of(shim)

    def assertNoGrowth(self, before: Snapshot, after: Snapshot) -> None:
        """
        The same descriptors (by kind), no zombie, and resident memory
        within L{RSS_ALLOWANCE_KIB} of before.
        """
        self.assertEqual(
            len(after.fds),
            len(before.fds),
            f"descriptors changed: {before.fdDifference(after)}",
        )
        self.assertEqual(before.fdDifference(after), "")
        self.assertEqual(after.zombies, [])
        self.assertLessEqual(after.rss - before.rss, RSS_ALLOWANCE_KIB)

    def lifecycle(self, containerID: str, group: str, image: str) -> None:
        """
        One C{ctr run --rm} in the group, from the image (so with an
        overlay rootfs mounted by the shim), echoing its id.
        """
        self.namespace.ids.add(containerID)
        result = self.ctr(
            "run",
            "--rm",
            *self.runtimeOptions(),
            *groupOptions(group),
            image,
            containerID,
            "/bin/echo",
            containerID,
            timeout=120,
        )
        self.assertCtr(result, what=f"ctr run --rm {containerID}")
        self.assertEqual(result.out, f"{containerID}\n")

    def assertLifecyclesLeftNothing(self, prefix: str) -> None:
        """
        Of the containers whose ids start with C{prefix}: no task, bundle,
        mount, cgroup, runc state or fifo is left.
        """
        self.assertEqual(
            [c for c in self.namespace.tasks() if c.startswith(prefix)], []
        )
        bundles = os.path.dirname(self.bundle("x"))
        self.assertEqual(
            [b for b in os.listdir(bundles) if b.startswith(prefix)], [], "bundles"
        )
        self.assertEqual(
            [m for m in host.mountsUnder(bundles) if f"/{prefix}" in m], [], "mounts"
        )
        parents = host.cgroupDirectories(f"/{self.namespace.name}")
        self.assertEqual(
            [
                os.path.join(parent, c)
                for parent in parents
                for c in os.listdir(parent)
                if c.startswith(prefix)
            ],
            [],
            "cgroups",
        )
        runcRoot = os.path.join(RUNC_ROOT, self.namespace.name)
        self.assertEqual(
            [c for c in os.listdir(runcRoot) if c.startswith(prefix)], [], "runc"
        )
        ours = re.compile(rf"^{re.escape(prefix)}\d+-(stdin|stdout|stderr)$")
        fifos = [
            os.path.join(directory, name)
            for directory, _, names in os.walk(FIFO_DIR)
            for name in names
            if ours.match(name)
        ]
        self.assertEqual(fifos, [], "fifos")


class LoadTests(LoadTestsMixin, TestCase):
    """
    Load on shimd.
    """

    runtime = SHIMD

    def test_crowd(self) -> None:
        """
        A hundred clients, each on its own connection, call C{State} as
        fast as the shim answers while containers of the same shim group
        start, print and are removed (5; 50 under C{SHIMD_STRESS=full}):
        every call succeeds, the crowd keeps being answered while the
        lifecycles run, every lifecycle succeeds; afterwards the shim holds
        the descriptors it held before, and no zombie.
        """
        image = self.importImage()
        shim = self.startAnchor("crowd", image)
        self.lifecycle("warm", "crowd", image)
        before = self.settled(shim)
        pounder = StatePounder(self.shimAddressOf("anchor"), "anchor", CLIENTS)
        pounder.start()
        self.addCleanup(pounder.stop)
        clock = Stopwatch()
        progress = []
        for index in range(CROWD_LIFECYCLES):
            calls = pounder.calls
            self.lifecycle(f"crowd-{index}", "crowd", image)
            progress.append(pounder.calls - calls)
        seconds = clock.seconds()
        pounder.stop()
        self.assertEqual(pounder.failures, [])
        self.assertNotIn(0, progress, "the crowd got no answer during a lifecycle")
        after = self.settled(shim, before)
        report(
            "load-crowd",
            clients=CLIENTS,
            lifecycles=CROWD_LIFECYCLES,
            stateCalls=pounder.calls,
            seconds=seconds,
            fdsBefore=len(before.fds),
            fdsAfter=len(after.fds),
            rssBeforeKiB=before.rss,
            rssAfterKiB=after.rss,
        )
        self.assertNoGrowth(before, after)
        self.assertLifecyclesLeftNothing("crowd-")

    def test_lifecycles(self) -> None:
        """
        Containers from an image run to completion one after another in one
        shim group (30; 1,000 under C{SHIMD_STRESS=full}), each with its
        overlay rootfs mounted by the shim, its cgroups, runc state and
        stdio fifos: each prints its id; afterwards none of them left a
        task, bundle, mount, cgroup, runc state or fifo, and the shim holds
        the descriptors it held after a warm-up, no zombie, and about the
        same memory.
        """
        image = self.importImage()
        shim = self.startAnchor("life", image)
        for index in range(WARM_UP):
            self.lifecycle(f"warm-{index}", "life", image)
        before = self.settled(shim)
        clock = Stopwatch()
        rss = []
        for index in range(LIFECYCLES):
            self.lifecycle(f"lcyc-{index}", "life", image)
            if (index + 1) % max(LIFECYCLES // 4, 1) == 0:
                rss.append(Snapshot.of(shim).rss)
        seconds = clock.seconds()
        after = self.settled(shim, before)
        report(
            "load-lifecycles",
            lifecycles=LIFECYCLES,
            seconds=seconds,
            fdsBefore=len(before.fds),
            fdsAfter=len(after.fds),
            rssBeforeKiB=before.rss,
            rssAfterKiB=after.rss,
            rssQuartersKiB=rss,
        )
        self.assertNoGrowth(before, after)
        self.assertLifecyclesLeftNothing("lcyc-")

    def test_execs(self) -> None:
        """
        Execs run one after another in one container (200; 10,000 under
        C{SHIMD_STRESS=full}), over the shim's socket: C{Exec} with a
        stdout fifo, C{Start}, C{Wait}, C{Delete}; each prints its number to
        the fifo and exits with its number modulo 4, and C{Wait} and
        C{Delete} report that status. Afterwards no exec pid file is left
        in the bundle, and the shim holds the descriptors it held after a
        warm-up, no zombie, and about the same memory.
        """
        shim = self.startAnchor()
        client = self.shimClient("anchor")
        directory = self.makeDirectory()

        def execute(index: int) -> None:
            execID = f"x{index}"
            fifo = os.path.join(directory, execID)
            os.mkfifo(fifo, 0o600)
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            try:
                client.call(
                    "Exec",
                    task_pb2.ExecProcessRequest(
                        id="anchor",
                        exec_id=execID,
                        stdout=fifo,
                        spec=execSpec(
                            "/bin/sh", "-c", f"echo {index}; exit {index % 4}"
                        ),
                    ),
                )
                client.call("Start", task_pb2.StartRequest(id="anchor", exec_id=execID))
                waited = client.call(
                    "Wait", task_pb2.WaitRequest(id="anchor", exec_id=execID)
                )
                deleted = client.call(
                    "Delete", task_pb2.DeleteRequest(id="anchor", exec_id=execID)
                )
                output = os.read(reader, 100)
            finally:
                os.close(reader)
                os.unlink(fifo)
            self.assertEqual(
                (output, waited.exit_status, deleted.exit_status),
                (f"{index}\n".encode(), index % 4, index % 4),
            )

        for index in range(WARM_UP):
            execute(index)
        before = self.settled(shim)
        clock = Stopwatch()
        rss = []
        for index in range(WARM_UP, WARM_UP + EXECS):
            execute(index)
            if (index + 1 - WARM_UP) % max(EXECS // 4, 1) == 0:
                rss.append(Snapshot.of(shim).rss)
        seconds = clock.seconds()
        after = self.settled(shim, before)
        report(
            "load-execs",
            execs=EXECS,
            seconds=seconds,
            fdsBefore=len(before.fds),
            fdsAfter=len(after.fds),
            rssBeforeKiB=before.rss,
            rssAfterKiB=after.rss,
            rssQuartersKiB=rss,
        )
        self.assertNoGrowth(before, after)
        leftovers = [
            name
            for name in os.listdir(self.bundle("anchor"))
            if name.endswith(".pid") and name != "init.pid"
        ]
        self.assertEqual(leftovers, [])
        shutil.rmtree(directory, ignore_errors=True)
