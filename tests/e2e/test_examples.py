"""
End-to-end tests of the examples under C{examples/}, which build on shimd's
seams without touching shimd: the audit interceptor plugin (issue 12).
"""

from __future__ import annotations

import json
import os
import shutil

from twisted.trial.unittest import TestCase

from tests.e2e.base import E2EMixin
from tests.e2e.containerd import PrivateContainerd, waitUntil
from tests.e2e.runtimes import SHIMD

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "examples",
)


class AuditContainerd(PrivateContainerd):
    """
    A private containerd whose shims find the audit example on their
    C{PYTHONPATH} and its settings in C{$SHIMD_CONFIG}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pluginPath = os.path.join(self.baseDir, "audit-plugin")
        shutil.copytree(os.path.join(EXAMPLES, "audit", "src"), self.pluginPath)
        self.auditLog = os.path.join(self.baseDir, "audit.jsonl")
        self.settingsPath = os.path.join(self.baseDir, "shimd.toml")
        with open(self.settingsPath, "w") as f:
            f.write(
                f'[plugins."io.example.audit.v1.audit"]\npath = "{self.auditLog}"\n'
            )

    def environment(self) -> dict[str, str]:
        env = super().environment()
        paths = [self.pluginPath, *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["SHIMD_CONFIG"] = self.settingsPath
        return env


class AuditExampleTests(E2EMixin, TestCase):
    """
    The audit example, put on the path of shimd's shims, writes one line per
    task RPC.
    """

    runtime = SHIMD

    def makeContainerd(self) -> PrivateContainerd:
        containerd = AuditContainerd()
        self.addCleanup(containerd.destroy)
        containerd.start()
        self.audit = containerd
        return containerd

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
