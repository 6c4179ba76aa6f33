"""
End-to-end tests of the fork server's isolation: two containerds in
different process contexts on one host never share a fork server, and each
shim has its own containerd's mount namespace, cgroups and rlimits, as the
Go shim's would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e import host
from tests.e2e.containerd import (
    RUNC_ROOT,
    PrivateContainerd,
    TestNamespace,
    parseTaskList,
    sharedContainerd,
    uniqueNamespace,
    waitUntil,
)
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import SHIMD, missingPrerequisites

FORK_SERVER_MODULE = "shimd.shim.forkserver"
CGROUP_ROOT = "/sys/fs/cgroup"
NOFILE = 4096


def openFilesLimit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return " ".join(line.split()[3:5])
    raise AssertionError(f"no open files limit for {pid}")


def context(pid: int) -> dict[str, object]:
    """
    What the test compares between a shim and its containerd.
    """
    with open(f"/proc/{pid}/cgroup") as f:
        cgroups = f.read()
    return {
        "mnt": os.readlink(f"/proc/{pid}/ns/mnt"),
        "cgroups": cgroups,
        "nofile": openFilesLimit(pid),
    }


def parentOf(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def ownCgroupDirectories(name: str) -> list[str]:
    """
    A new cgroup C{name} in the C{pids} hierarchy and cgroup2 (hybrid), or
    in cgroup2 alone (unified).
    """
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        candidates = [os.path.join(CGROUP_ROOT, name)]
    else:
        candidates = [
            os.path.join(CGROUP_ROOT, hierarchy, name)
            for hierarchy in ("pids", "unified")
            if os.path.isdir(os.path.join(CGROUP_ROOT, hierarchy))
        ]
    for directory in candidates:
        os.mkdir(directory)
    return candidates


class ForkServerIsolationTests(TestCase):
    """
    containerd B runs in its own mount namespace, cgroup and open files
    limit; containerd A (the shared one) in the test's.
    """

    timeout = 300

    def setUp(self) -> None:
        missing = missingPrerequisites(SHIMD)
        if missing:
            raise SkipTest("end-to-end fork server test needs: " + ", ".join(missing))
        if shutil.which("unshare") is None or shutil.which("prlimit") is None:
            raise SkipTest("end-to-end fork server test needs unshare and prlimit")

    def startOther(self) -> tuple[PrivateContainerd, list[str]]:
        """
        Start containerd B under C{unshare -m}, C{prlimit} and its own
        cgroup.
        """
        directories = ownCgroupDirectories(f"shimd-e2e-fs-{os.getpid()}")
        self.addCleanup(self.removeCgroups, directories)
        joins = " ".join(f"'{d}/cgroup.procs'" for d in directories)
        other = PrivateContainerd()
        other.wrapper = [
            "sh",
            "-c",
            f'for f in {joins}; do echo $$ > "$f"; done; '
            f"exec unshare -m --propagation private "
            f'prlimit --nofile={NOFILE}:{NOFILE} -- "$@"',
            "sh",
        ]
        self.addCleanup(other.destroy)
        other.start()
        return other, directories

    def removeCgroups(self, directories: list[str]) -> None:
        for directory in directories:
            procs = os.path.join(directory, "cgroup.procs")
            if os.path.exists(procs):
                with open(procs) as f:
                    for pid in f.read().split():
                        host.kill(int(pid))

        def removed() -> bool:
            for directory in directories:
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError:
                    return False
            return True

        waitUntil(removed, 30, "the test's cgroups to empty")

    def forkServers(self) -> dict[int, str]:
        """
        The fork servers of the shimd under test (run by the interpreter
        its binary names), by pid, with their mount namespaces.
        """
        with open(SHIMD.runtimeArgument, "rb") as f:
            interpreter = f.readline().removeprefix(b"#!").strip().decode()
        found = {}
        for pid in host.processesMatching(FORK_SERVER_MODULE):
            if interpreter.startswith("/") and host.arguments(pid)[:1] != [interpreter]:
                continue
            try:
                found[pid] = os.readlink(f"/proc/{pid}/ns/mnt")
            except OSError:
                continue
        return found

    def runShim(self, containerd: PrivateContainerd, namespace: str, id: str) -> int:
        """
        C{ctr run -d} a sleeping busybox under shimd; wait until it runs.

        @return: its shim's pid.
        """
        result = containerd.ctr(
            "run",
            "-d",
            "--runtime",
            SHIMD.runtimeArgument,
            "--rootfs",
            busyboxRootfs(),
            id,
            "/bin/sleep",
            "600",
            namespace=namespace,
        )
        self.assertEqual(result.code, 0, result.err)
        bundle = containerd.bundlePath(namespace, id)

        def shim() -> int | None:
            pids = host.processesWorkingIn(bundle)
            return pids[0] if pids else None

        return waitUntil(shim, 60, f"the shim of {id}")

    def runTwice(
        self, containerd: PrivateContainerd, namespace: str, prefix: str
    ) -> list[int]:
        """
        Run two containers: the first start spawns its context's fork
        server, the second (once that server is up) uses it.

        @return: the two shims' pids.
        """
        mnt = os.readlink(f"/proc/{containerd.process.pid}/ns/mnt")  # type: ignore[union-attr]
        first = self.runShim(containerd, namespace, f"{prefix}1")
        waitUntil(
            lambda: self.servingIn(mnt),
            120,
            "a fork server in the containerd's context",
        )
        second = self.runShim(containerd, namespace, f"{prefix}2")
        return [first, second]

    def servingIn(self, mnt: str) -> bool:
        """
        Whether a fork server of mount namespace C{mnt} listens.
        """
        servers = {pid for pid, ns in self.forkServers().items() if ns == mnt}
        directory = "/run/shimd"
        for name in os.listdir(directory):
            if name.startswith("forkserver-"):
                path = os.path.join(directory, name)
                if servers & set(host.processesListeningOn(path)):
                    return True
        return False

    def namespaceIn(self, containerd: PrivateContainerd, cleanUp: bool) -> str:
        """
        A new namespace in C{containerd}, cleaned up after the test if
        C{cleanUp} (not in containerd B, which the test kills).
        """
        name = uniqueNamespace("fs")
        if cleanUp:
            self.addCleanup(TestNamespace(containerd, name).cleanUp)
        self.assertEqual(containerd.ctr("namespaces", "create", name).code, 0)
        return name

    def test_twoContainerds(self) -> None:
        """
        Each containerd's shims run in its own context, forked by a server
        of that context; killing containerd B's cgroup (what C{systemctl
        stop} does) leaves containerd A's containers running.
        """
        other, directories = self.startOther()
        shared = sharedContainerd()
        otherNamespace = self.namespaceIn(other, False)
        sharedNamespace = self.namespaceIn(shared, True)
        otherShims = self.runTwice(other, otherNamespace, "b")
        sharedShims = self.runTwice(shared, sharedNamespace, "a")

        for containerd, shims in ((other, otherShims), (shared, sharedShims)):
            expected = context(containerd.process.pid)  # type: ignore[union-attr]
            for shim in shims:
                self.assertEqual(context(shim), expected)
        self.assertEqual(context(otherShims[0])["nofile"], f"{NOFILE} {NOFILE}")
        self.assertNotEqual(
            context(sharedShims[0])["mnt"], context(otherShims[0])["mnt"]
        )
        servers = self.forkServers()
        otherServer, sharedServer = parentOf(otherShims[1]), parentOf(sharedShims[1])
        self.assertIn(otherServer, servers)
        self.assertIn(sharedServer, servers)
        self.assertNotEqual(otherServer, sharedServer)

        # B's containers are in cgroups of their own (runc's): remember
        # them, kill B's cgroup, then clean up after B by hand.
        otherTasks = parseTaskList(
            other.ctr("tasks", "ls", namespace=otherNamespace).out
        )
        self.removeCgroups(directories)
        for id, (pid, _) in otherTasks.items():
            host.kill(pid)
            subprocess.run(
                [
                    "runc",
                    "--root",
                    os.path.join(RUNC_ROOT, otherNamespace),
                    "delete",
                    "--force",
                    id,
                ],
                check=False,
                capture_output=True,
            )
        for shim in otherShims:
            waitUntil(lambda shim=shim: not host.isAlive(shim), 30, "B's shims to die")
        tasks = parseTaskList(shared.ctr("tasks", "ls", namespace=sharedNamespace).out)
        self.assertEqual(
            sorted(status for _, status in tasks.values()), ["RUNNING", "RUNNING"]
        )
        for shim in sharedShims:
            self.assertTrue(host.isAlive(shim))

    def test_commandLine(self) -> None:
        """
        A forked shim shows, in C{ps} and to C{pgrep -f} or C{pkill -f}, the
        command line it would have been spawned with (its namespace, id
        and address), not its fork server's, as a spawned one does.
        """
        shared = sharedContainerd()
        namespace = self.namespaceIn(shared, True)
        shims = self.runTwice(shared, namespace, "t")
        self.assertIn(parentOf(shims[1]), self.forkServers())
        for pid, id in zip(shims, ("t1", "t2"), strict=True):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read().replace(b"\0", b" ").decode()
            self.assertNotIn(FORK_SERVER_MODULE, line)
            self.assertIn(f" -namespace {namespace} -id {id} -address ", line)

    def test_stoppedServer(self) -> None:
        """
        With the fork server stopped (C{kill -STOP}), C{ctr run} still
        succeeds: C{start} gives up on the server within a bounded time,
        kills it, spawns the daemon itself, and the daemon logs why.
        """
        shared = sharedContainerd()
        namespace = self.namespaceIn(shared, True)
        _, forked = self.runTwice(shared, namespace, "s")
        server = parentOf(forked)
        self.assertIn(server, self.forkServers())
        offset = shared.logOffset()
        os.kill(server, signal.SIGSTOP)
        try:
            shim = self.runShim(shared, namespace, "s3")
        finally:
            if host.isAlive(server):
                os.kill(server, signal.SIGCONT)
        self.assertNotEqual(parentOf(shim), server)
        waitUntil(
            lambda: not host.isAlive(server), 30, "the stopped server to be killed"
        )
        self.assertIn("fork server not used: ", shared.log(since=offset))

    def test_shimCgroup(self) -> None:
        """
        The runc option C{ShimCgroup} (here through C{ctr run
        --runtime-config-path}, a C{runtimeoptions.v1.Options}) moves the
        daemon, forked or spawned, into that cgroup in every hierarchy that
        has it, as the Go shim does.
        """
        name = f"shimd-e2e-shimcg-{os.getpid()}"
        directories = ownCgroupDirectories(name)
        self.addCleanup(self.removeCgroups, directories)
        config = os.path.join(self.mktemp())
        with open(config, "w") as f:
            f.write(f'ShimCgroup = "/{name}"\n')
        shared = sharedContainerd()
        namespace = self.namespaceIn(shared, True)
        shims = []
        for id in ("g1", "g2"):
            result = shared.ctr(
                "run",
                "-d",
                "--runtime",
                SHIMD.runtimeArgument,
                "--runtime-config-path",
                os.path.abspath(config),
                "--rootfs",
                busyboxRootfs(),
                id,
                "/bin/sleep",
                "600",
                namespace=namespace,
            )
            self.assertEqual(result.code, 0, result.err)
            bundle = shared.bundlePath(namespace, id)
            shims.append(
                waitUntil(
                    lambda bundle=bundle: (host.processesWorkingIn(bundle) or [None])[
                        0
                    ],
                    60,
                    f"the shim of {id}",
                )
            )
        for shim in shims:
            for directory in directories:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    self.assertIn(str(shim), f.read().split(), directory)
