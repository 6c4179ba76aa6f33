"""
End-to-end tests of the examples under C{examples/}, which build on shimd's
seams without touching shimd: the audit interceptor plugin and the crun
runtime plugin (issue 12).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.base import E2EMixin
from tests.e2e.containerd import (
    RUNC_ROOT,
    PrivateContainerd,
    parseMetricsTable,
    waitUntil,
)
from tests.e2e.runtimes import SHIMD

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "examples",
)
MiB = 1024 * 1024


class ExampleContainerd(PrivateContainerd):
    """
    A private containerd whose shims find an example's dropin on their
    C{PYTHONPATH} and L{settings} in C{$SHIMD_CONFIG}.

    @cvar example: the example's directory under C{examples/}.
    """

    example = ""

    def __init__(self) -> None:
        super().__init__()
        self.pluginPath = os.path.join(self.baseDir, f"{self.example}-plugin")
        shutil.copytree(os.path.join(EXAMPLES, self.example, "src"), self.pluginPath)
        self.settingsPath = os.path.join(self.baseDir, "shimd.toml")
        with open(self.settingsPath, "w") as f:
            f.write(self.settings())

    def settings(self) -> str:
        """
        The shim's settings file (TOML).
        """
        raise NotImplementedError()

    def environment(self) -> dict[str, str]:
        env = super().environment()
        paths = [self.pluginPath, *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["SHIMD_CONFIG"] = self.settingsPath
        return env


class AuditContainerd(ExampleContainerd):
    """
    Shims with the audit example, writing its lines to L{auditLog}.
    """

    example = "audit"

    def settings(self) -> str:
        self.auditLog = os.path.join(self.baseDir, "audit.jsonl")
        return f'[plugins."io.example.audit.v1.audit"]\npath = "{self.auditLog}"\n'


class ExampleMixin(E2EMixin):
    """
    A test of one example, with a containerd of its own.
    """

    runtime = SHIMD

    def startContainerd(self, containerd: PrivateContainerd) -> PrivateContainerd:
        self.addCleanup(containerd.destroy)
        containerd.start()
        return containerd


class AuditExampleTests(ExampleMixin, TestCase):
    """
    The audit example, put on the path of shimd's shims, writes one line per
    task RPC.
    """

    def makeContainerd(self) -> PrivateContainerd:
        self.audit = AuditContainerd()
        return self.startContainerd(self.audit)

    def auditLines(self) -> list[dict[str, object]]:
        try:
            with open(self.audit.auditLog) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def test_auditLines(self) -> None:
        """
        A busybox container run to completion leaves a line for each task
        RPC: C{Create}, C{Start}, C{Wait} and C{Delete} of it, each with
        the container id, status C{OK} and a duration.
        """
        result = self.runContainer("audited", "/bin/echo", "hello")
        self.assertCtr(result, what="ctr run")
        self.assertEqual(result.out.strip(), "hello")

        def deleted() -> bool:
            return any(line["method"] == "Delete" for line in self.auditLines())

        waitUntil(deleted, 30, "the audit line of Delete")
        lines = [line for line in self.auditLines() if line["id"] == "audited"]
        methods = [line["method"] for line in lines]
        for method in ("Create", "Start", "Wait", "Delete"):
            self.assertIn(method, methods)
        self.assertLess(methods.index("Create"), methods.index("Start"))
        for line in lines:
            self.assertEqual(line["code"], "OK", line)
            self.assertIsInstance(line["ms"], float)
            self.assertGreaterEqual(line["ms"], 0)


CRUN_ROOT = "/run/containerd/crun"
#: Where a hybrid cgroup host mounts its cgroup2 hierarchy.
HYBRID_UNIFIED = "/sys/fs/cgroup/unified"
#: The oldest crun tried: Debian 13's. Debian 12's 1.8 fails on this
#: project's CI host.
CRUN_OLDEST = (1, 21)


def crunProblem() -> str | None:
    """
    Why the crun example cannot be tried here, or L{None}.
    """
    crun = shutil.which("crun")
    if crun is None:
        return "crun is not installed (the sid host leg has Debian's crun 1.28)"
    output = subprocess.run(
        [crun, "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"crun version (\d+)\.(\d+)", output)
    if match is None:
        return f"{crun} --version says no version: {output!r}"
    version = (int(match[1]), int(match[2]))
    if version < CRUN_OLDEST:
        return f"crun {version[0]}.{version[1]} is older than the oldest tried, 1.21"
    return None


class CrunContainerd(ExampleContainerd):
    """
    Shims with the crun example, and runc's runtime plugin disabled.

    crun refuses a hybrid cgroup host whose cgroup2 hierarchy holds a
    controller ("cgroups in hybrid mode not supported, drop all controllers
    from cgroupv2"): on such a host containerd runs in a mount namespace of
    its own without the cgroup2 mount, where the host looks like a cgroup
    v1 one to it, its shims and crun.
    """

    example = "crun"

    def __init__(self) -> None:
        super().__init__()
        if os.path.ismount(HYBRID_UNIFIED):
            self.wrapper = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'umount {HYBRID_UNIFIED} && exec "$@"',
                "sh",
            ]

    def settings(self) -> str:
        return 'disabled = ["io.shimd.runtime.v1.runc"]\n'


class CrunExampleTests(ExampleMixin, TestCase):
    """
    The crun example, put on the path of shimd's shims with runc's runtime
    plugin disabled, runs busybox containers with crun.
    """

    def setUp(self) -> None:
        problem = crunProblem()
        if problem is not None:
            raise SkipTest(problem)
        super().setUp()

    def makeContainerd(self) -> PrivateContainerd:
        return self.startContainerd(CrunContainerd())

    def stateOf(self, root: str, containerID: str) -> str:
        return os.path.join(root, self.namespace.name, containerID)

    def test_runToCompletion(self) -> None:
        """
        C{ctr run --rm} through shimd with crun: the container's output and
        exit status reach ctr, and neither crun nor runc keeps any state.
        """
        result = self.runContainer(
            "once", "/bin/sh", "-c", "echo hello; echo err >&2; exit 3"
        )
        self.assertEqual((result.code, result.out), (3, "hello\n"), result)
        self.assertIn("err", result.err)
        self.assertFalse(os.path.exists(self.stateOf(CRUN_ROOT, "once")))
        self.assertFalse(os.path.exists(self.stateOf(RUNC_ROOT, "once")))

    @inlineCallbacks
    def test_lifecycle(self) -> Generator[Deferred[Any], Any, None]:
        """
        A detached container runs under crun (its state is in crun's root,
        none in runc's); an exec, pause and resume, metrics and an update
        of the memory limit go through crun; kill and delete leave nothing.
        """
        self.runDetached(
            "long", "/bin/sleep", "1000", options=["--memory-limit", str(64 * MiB)]
        )
        self.assertTrue(os.path.isdir(self.stateOf(CRUN_ROOT, "long")))
        self.assertFalse(os.path.exists(self.stateOf(RUNC_ROOT, "long")))
        executed = self.execute("long", "hi", "/bin/echo", "hi")
        self.assertEqual((executed.code, executed.out), (0, "hi\n"), executed)
        self.assertCtr(self.ctr("task", "pause", "long"), what="ctr task pause")
        self.assertEqual(self.statusOf("long"), "PAUSED")
        self.assertCtr(self.ctr("task", "resume", "long"), what="ctr task resume")
        self.assertEqual(self.statusOf("long"), "RUNNING")
        table = parseMetricsTable(self.ctr("task", "metrics", "long").out)
        self.assertEqual(table.get("memory.limit_in_bytes"), str(64 * MiB), table)
        yield self.updateResources("long", {"memory": {"limit": 48 * MiB}})
        table = parseMetricsTable(self.ctr("task", "metrics", "long").out)
        self.assertEqual(table.get("memory.limit_in_bytes"), str(48 * MiB), table)
        self.killAndDelete("long")
        self.assertFalse(os.path.exists(self.stateOf(CRUN_ROOT, "long")))
