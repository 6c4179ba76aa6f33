"""
End-to-end tests of failures: what C{ctr} reports when runc fails or a
request does not fit the task's state. containerd turns the shim's ttrpc
status codes into errors whose text ends with the code (C{: unknown},
C{: not found}, C{: already exists}; containerd 2.x leaves UNKNOWN unmarked),
so these tests pin the codes; the
messages before them are the Go shim's and need not match word for word.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.e2e.base import E2EMixin
from tests.e2e.containerd import unknownSuffix
from tests.e2e.runtimes import GO, SHIMD


class ErrorTestsMixin(E2EMixin):
    """
    Requests that fail.
    """

    def assertCtrError(self, args: tuple[str, ...], suffix: str) -> str:
        """
        Run C{ctr args}, check that it fails (exit code 1) and that its last
        stderr line ends with C{suffix}, the text of a code.

        @return: that last line.
        """
        result = self.ctr(*args)
        self.assertEqual((result.code, result.out), (1, ""), result)
        lastLine = result.err.rstrip("\n").rpartition("\n")[2]
        self.assertTrue(lastLine.startswith("ctr: "), result.err)
        self.assertTrue(lastLine.endswith(suffix), f"{lastLine!r} lacks {suffix!r}")
        return lastLine

    def test_createFailure(self) -> None:
        """
        A task whose command does not exist fails in C{Create}: C{ctr}
        reports C{failed to create shim task: OCI runtime create failed:}
        with runc's reason and the UNKNOWN code. No C{/tasks/*} event is
        published, and nothing is left behind.
        """
        events = self.recordEvents()
        result = self.runContainer("broken", "/bin/nonexistent")
        self.assertEqual((result.code, result.out), (1, ""))
        prefix = "ctr: failed to create shim task: OCI runtime create failed: "
        self.assertTrue(result.err.startswith(prefix), result.err)
        self.assertIn('exec: "/bin/nonexistent"', result.err)
        self.assertIn("no such file or directory", result.err)
        self.assertTrue(result.err.endswith(unknownSuffix() + "\n"), result.err)
        events.waitForTopic("broken", "/containers/delete")
        events.sync()
        self.assertEqual(events.topics("broken"), [], events.describe())

    def test_execFailure(self) -> None:
        """
        An exec whose command does not exist fails in C{Start}: C{ctr task
        exec} reports C{OCI runtime exec failed:} with runc's reason and the
        UNKNOWN code. Only C{/tasks/exec-added} is published for it (no
        start, no exit); the container keeps running and the exec id can be
        used again.
        """
        self.runDetached("execfails", "/bin/sleep", "1000")
        events = self.recordEvents()
        result = self.execute("execfails", "bad", "/bin/nonexistent")
        self.assertEqual((result.code, result.out), (1, ""))
        self.assertTrue(
            result.err.startswith("ctr: OCI runtime exec failed: "), result.err
        )
        self.assertIn("no such file or directory", result.err)
        self.assertTrue(result.err.endswith(unknownSuffix() + "\n"), result.err)
        events.waitForTopic("execfails", "/tasks/exec-added")
        events.sync()
        self.assertEqual(
            events.topics("execfails"), ["/tasks/exec-added"], events.describe()
        )
        self.assertEqual(self.statusOf("execfails"), "RUNNING")
        result = self.execute("execfails", "bad", "/bin/echo", "fine")
        self.assertEqual((result.code, result.out), (0, "fine\n"))

    def test_duplicateExecID(self) -> None:
        """
        An exec id already in use by a running exec is refused with
        ALREADY_EXISTS.
        """
        self.runDetached("twice", "/bin/sleep", "1000")
        args = ("task", "exec", "-d", "--exec-id", "dup", "twice", "/bin/sleep", "1000")
        self.assertCtr(self.ctr(*args), what="first ctr task exec -d")
        self.assertCtrError(args, ": already exists")

    def test_requestsInTheWrongState(self) -> None:
        """
        Requests that do not fit the task's state fail with the codes
        containerd expects: exec or pause while paused and resume while
        running are UNKNOWN; deleting a running task is refused by
        containerd itself (from C{State}) as FAILED_PRECONDITION; once the
        task has exited, kill is NOT_FOUND and exec is UNKNOWN.
        """
        self.runDetached("states", "/bin/sleep", "1000")
        self.assertCtrError(("task", "resume", "states"), unknownSuffix())
        self.assertCtrError(
            ("task", "rm", "states"),
            "stopped before deletion: running: failed precondition",
        )
        self.assertCtr(self.ctr("task", "pause", "states"), what="ctr task pause")
        self.assertCtrError(("task", "pause", "states"), unknownSuffix())
        self.assertCtrError(
            ("task", "exec", "--exec-id", "p", "states", "/bin/true"), unknownSuffix()
        )
        self.assertCtr(self.ctr("task", "resume", "states"), what="ctr task resume")
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "states"))
        self.waitForStatus("states", "STOPPED")
        self.assertCtrError(("task", "kill", "-s", "SIGKILL", "states"), ": not found")
        self.assertCtrError(
            ("task", "exec", "--exec-id", "s", "states", "/bin/true"), unknownSuffix()
        )
        self.assertCtr(self.ctr("task", "rm", "states"), what="ctr task rm")


class ErrorTestsGo(ErrorTestsMixin, TestCase):
    runtime = GO


class ErrorTestsShimd(ErrorTestsMixin, TestCase):
    runtime = SHIMD
