"""
End-to-end tests of a task's life as C{ctr} sees it: output, input, exit
statuses, exec, terminals and the events containerd publishes on the way.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.base import E2EMixin, Watchdog, runOnTerminal
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD

LARGE_SIZE = 100 * 1024 * 1024
LARGE_LINE = b"abcdefghijklmnopqrstuvwxyz0123456789\n"


def expectedLargeDigest() -> str:
    """
    The sha256 of C{yes abc...789 | head -c 104857600}.
    """
    digest = hashlib.sha256()
    block = LARGE_LINE * (1024 * 1024 // len(LARGE_LINE) + 1)
    block = block[: len(LARGE_LINE) * (len(block) // len(LARGE_LINE))]
    remaining = LARGE_SIZE
    while remaining:
        chunk = block[:remaining]
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


class LifecycleTestsMixin(E2EMixin):
    """
    Running tasks to completion with C{ctr run} and C{ctr task exec}.
    """

    def test_runEcho(self) -> None:
        """
        C{ctr run --rm ID echo hello} prints exactly C{hello\\n} on stdout,
        nothing on stderr, and exits 0.
        """
        result = self.runContainer("echo", "/bin/echo", "hello")
        self.assertEqual((result.code, result.out, result.err), (0, "hello\n", ""))

    def test_stdoutAndStderrKeptApart(self) -> None:
        """
        Without a terminal the container's stdout and stderr reach C{ctr}'s
        stdout and stderr separately, each complete and in order.
        """
        result = self.runContainer(
            "split",
            "/bin/sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
        )
        self.assertEqual(
            (result.code, result.out, result.err), (0, "out1\nout2\n", "err1\nerr2\n")
        )

    def test_stdin(self) -> None:
        """
        What is piped into C{ctr run} reaches the container's stdin.
        """
        result = self.runContainer(
            "stdin", "/bin/head", "-n", "1", input=b"line one\nline two\n"
        )
        self.assertEqual((result.code, result.out, result.err), (0, "line one\n", ""))

    def test_exitStatusZero(self) -> None:
        """
        C{ctr run} exits 0 when the container's init exits 0.
        """
        result = self.runContainer("exit0", "/bin/sh", "-c", "exit 0")
        self.assertEqual((result.code, result.out, result.err), (0, "", ""))

    def test_exitStatusThree(self) -> None:
        """
        C{ctr run} exits with the container's exit status, here 3, and
        prints nothing about it.
        """
        result = self.runContainer("exit3", "/bin/sh", "-c", "exit 3")
        self.assertEqual((result.code, result.out, result.err), (3, "", ""))

    def test_outputCompleteAtExit(self) -> None:
        """
        A container that writes a burst of output and exits at once gets all
        of it to C{ctr run}, every time: C{ctr} closes its fifos as soon as
        the task's C{Wait} returns, so the shim must have copied the output
        to the fifos by then.
        """
        size = 1 << 20
        for attempt in range(5):
            result = self.runContainer(
                f"burst{attempt}",
                "/bin/sh",
                "-c",
                f"yes 0123456789abcde | head -c {size}; echo done >&2",
            )
            self.skipKnownLostTail(result.code, len(result.out), size)
            self.assertEqual(
                (result.code, len(result.out), result.err),
                (0, size, "done\n"),
                f"attempt {attempt}",
            )

    def test_largeOutput(self) -> None:
        """
        100 MiB written to stdout by the container all reach C{ctr}'s stdout,
        byte for byte.
        """
        self.namespace.ids.add("large")
        command = self.namespace.ctrCommand(
            "run",
            "--rm",
            *self.runtimeOptions(),
            "--rootfs",
            busyboxRootfs(),
            "large",
            "/bin/sh",
            "-c",
            f"yes {LARGE_LINE.decode().strip()} | head -c {LARGE_SIZE}",
        )
        digest = hashlib.sha256()
        size = 0
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self.containerd.environment(),
            )
            timer = Watchdog(process, 180)
            assert process.stdout is not None
            with process.stdout:
                while chunk := process.stdout.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            code = process.wait()
            timer.cancel()
            stderr.seek(0)
            err = stderr.read()
        self.assertFalse(timer.fired, "ctr run of 100 MiB hung: killed after 180 s")
        self.assertEqual((code, err, size), (0, b"", LARGE_SIZE))
        self.assertEqual(digest.hexdigest(), expectedLargeDigest())

    def test_killedBySIGKILL(self) -> None:
        """
        A detached task killed with C{ctr task kill -s SIGKILL} stops with
        exit status 137: in C{/tasks/exit} (whose C{id} is the container id),
        in C{/tasks/delete}, and in the warning C{ctr task rm} prints.
        """
        pid = self.runDetached("kill9", "/bin/sleep", "1000")
        events = self.recordEvents()
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "kill9"))
        exit = events.waitForTopic("kill9", "/tasks/exit")
        self.assertEqual(
            (exit.payload["id"], exit.payload["pid"], exit.payload["exit_status"]),
            ("kill9", pid, 137),
        )
        self.waitForStatus("kill9", "STOPPED")
        result = self.ctr("task", "rm", "kill9")
        self.assertCtr(result)
        self.assertIn("task kill9 exit with non-zero exit code 137", result.err)
        delete = self.waitForTaskDelete(events, "kill9")
        self.assertEqual(
            (delete.payload["pid"], delete.payload["exit_status"]), (pid, 137)
        )
        self.assertEqual(delete.payload["exited_at"], exit.payload["exited_at"])

    def test_execKilledBySIGTERM(self) -> None:
        """
        An exec process (not its namespace's PID 1, so SIGTERM's default
        action applies) killed with C{ctr task kill --exec-id ID -s SIGTERM}
        exits 143: C{ctr task exec} exits 143 and C{/tasks/exit} carries the
        exec id and 143. The init process keeps running.
        """
        self.runDetached("term", "/bin/sleep", "1000")
        events = self.recordEvents()
        execution = subprocess.Popen(
            self.namespace.ctrCommand(
                "task", "exec", "--exec-id", "sleeper", "term", "/bin/sleep", "1000"
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.containerd.environment(),
        )
        timer = Watchdog(execution, 60)
        self.addCleanup(timer.cancel)
        started = events.waitForTopic("term", "/tasks/exec-started")
        self.assertCtr(
            self.ctr("task", "kill", "--exec-id", "sleeper", "-s", "SIGTERM", "term")
        )
        out, err = execution.communicate()
        self.assertEqual((execution.returncode, out, err), (143, b"", b""))
        exit = events.waitForTopic("term", "/tasks/exit")
        self.assertEqual(
            (exit.payload["id"], exit.payload["pid"], exit.payload["exit_status"]),
            ("sleeper", started.payload["pid"], 143),
        )
        self.assertEqual(self.statusOf("term"), "RUNNING")

    def test_detachedExec(self) -> None:
        """
        C{ctr task exec} in a detached container gives the exec's stdout,
        stderr and exit status, and the container keeps running.
        """
        self.runDetached("detached", "/bin/sleep", "1000")
        result = self.execute(
            "detached", "e1", "/bin/sh", "-c", "echo out; echo err >&2; exit 5"
        )
        self.assertEqual((result.code, result.out, result.err), (5, "out\n", "err\n"))
        result = self.execute("detached", "e2", "/bin/echo", "again")
        self.assertEqual((result.code, result.out, result.err), (0, "again\n", ""))
        self.assertEqual(self.statusOf("detached"), "RUNNING")

    def test_execProcessSpec(self) -> None:
        """
        The exec's process spec (JSON in an C{Any}) reaches runc whole: the
        working directory and user given to C{ctr task exec} apply.
        """
        self.runDetached("spec", "/bin/sleep", "1000")
        result = self.ctr(
            "task",
            "exec",
            "--exec-id",
            "who",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1000",
            "spec",
            "/bin/sh",
            "-c",
            "pwd; id -u; id -g",
        )
        self.assertEqual(
            (result.code, result.out, result.err), (0, "/tmp\n1000\n1000\n", "")
        )

    def test_execIDReusableAfterExit(self) -> None:
        """
        C{ctr task exec} deletes its exec when done, so the same exec id can
        be used again.
        """
        self.runDetached("reuse", "/bin/sleep", "1000")
        for _ in range(2):
            result = self.execute("reuse", "same", "/bin/echo", "hi")
            self.assertEqual((result.code, result.out, result.err), (0, "hi\n", ""))

    def test_terminal(self) -> None:
        """
        C{ctr run -t} gives the container a terminal: what it writes to
        stdout and stderr comes back as one stream with CRLF line endings,
        and C{ctr} exits with the container's exit status.
        """
        self.namespace.ids.add("tty")
        result = runOnTerminal(
            self.namespace.ctrCommand(
                "run",
                "--rm",
                "-t",
                *self.runtimeOptions(),
                "--rootfs",
                busyboxRootfs(),
                "tty",
                "/bin/sh",
                "-c",
                "echo hello; echo err >&2; tty; exit 4",
            ),
            self.containerd.environment(),
        )
        self.assertEqual(
            (result.output, result.code), (b"hello\r\nerr\r\n/dev/pts/0\r\n", 4)
        )

    def test_terminalSize(self) -> None:
        """
        C{ctr run -t} passes its own terminal's size on (through
        C{ResizePty}) to the container's terminal.
        """
        self.namespace.ids.add("ttysize")
        result = runOnTerminal(
            self.namespace.ctrCommand(
                "run",
                "--rm",
                "-t",
                *self.runtimeOptions(),
                "--rootfs",
                busyboxRootfs(),
                "ttysize",
                "/bin/sh",
                "-c",
                # ctr resizes only after Start: poll until it has.
                'until s=$(stty size 2>/dev/null) && [ -n "$s" ]'
                ' && [ "$s" != "0 0" ]; do sleep 0.05; done; echo "$s"',
            ),
            self.containerd.environment(),
            rows=33,
            columns=101,
        )
        self.assertEqual((result.output, result.code), (b"33 101\r\n", 0))

    def test_execTerminal(self) -> None:
        """
        C{ctr task exec -t} gives the exec a terminal of its own, with the
        size of C{ctr}'s terminal, CRLF line endings, stderr merged, and its
        exit status as C{ctr}'s.
        """
        self.runDetached("execpty", "/bin/sleep", "1000")
        result = runOnTerminal(
            self.namespace.ctrCommand(
                "task",
                "exec",
                "-t",
                "--exec-id",
                "shell",
                "execpty",
                "/bin/sh",
                "-c",
                # Wait for ctr's first resize, which comes after Start.
                'until s=$(stty size 2>/dev/null) && [ -n "$s" ]'
                ' && [ "$s" != "0 0" ]; do sleep 0.05; done;'
                ' echo "$s"; echo err >&2; tty; exit 6',
            ),
            self.containerd.environment(),
            rows=40,
            columns=120,
        )
        # Which pty the exec gets is runc's business: /dev/pts/0 with runc
        # 1.1.5, /dev/pts/1 with runc 1.3.6.
        self.assertRegex(result.output, rb"\A40 120\r\nerr\r\n/dev/pts/[0-9]+\r\n\Z")
        self.assertEqual(result.code, 6)
        self.assertEqual(self.statusOf("execpty"), "RUNNING")

    def test_eventsOfRun(self) -> None:
        """
        A plain C{ctr run --rm} gives exactly C{/tasks/create},
        C{/tasks/start}, C{/tasks/exit}, C{/tasks/delete}, in this order,
        with consistent pids and statuses; C{/tasks/delete} has no C{id}.
        """
        events = self.recordEvents()
        result = self.runContainer("plain", "/bin/sh", "-c", "exit 2")
        self.assertEqual(result.code, 2)
        self.waitForTaskDelete(events, "plain")
        events.waitForTopic("plain", "/containers/delete")
        events.sync()
        taskEvents = events.taskEvents("plain")
        self.assertEqual(
            [e.topic for e in taskEvents],
            ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"],
            events.describe(),
        )
        create, start, exit, delete = (e.payload for e in taskEvents)
        pid = create["pid"]
        self.assertEqual(create["bundle"], self.bundle("plain"))
        self.assertEqual(start, {"container_id": "plain", "pid": pid})
        self.assertEqual(
            (exit["id"], exit["pid"], exit["exit_status"]), ("plain", pid, 2)
        )
        self.assertEqual(
            delete,
            {
                "container_id": "plain",
                "pid": pid,
                "exit_status": 2,
                "exited_at": exit["exited_at"],
            },
        )

    def skipKnownLostTail(self, code: int, received: int, size: int) -> None:
        """
        Skip when the runtime lost the tail of a container's output at its
        exit in a way known and not ours to fix; shimd loses nothing.
        """

    def test_eventsOfExec(self) -> None:
        """
        An exec gives exactly C{/tasks/exec-added}, C{/tasks/exec-started},
        C{/tasks/exit} (with the exec id as C{id}), in this order; deleting
        the exec afterwards publishes nothing.
        """
        self.runDetached("withexec", "/bin/sleep", "1000")
        events = self.recordEvents()
        result = self.execute("withexec", "x7", "/bin/sh", "-c", "exit 7")
        self.assertEqual(result.code, 7)
        # Wait returns just before the shim queues /tasks/exit: ctr may be
        # done before the event is.
        events.waitForTopic("withexec", "/tasks/exit")
        events.sync()
        taskEvents = events.taskEvents("withexec")
        self.assertEqual(
            [e.topic for e in taskEvents],
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"],
            events.describe(),
        )
        added, started, exit = (e.payload for e in taskEvents)
        self.assertEqual(added, {"container_id": "withexec", "exec_id": "x7"})
        self.assertEqual(
            (started["container_id"], started["exec_id"]), ("withexec", "x7")
        )
        self.assertEqual(
            (exit["container_id"], exit["id"], exit["pid"], exit["exit_status"]),
            ("withexec", "x7", started["pid"], 7),
        )


class LifecycleTestsGo(LifecycleTestsMixin, TestCase):
    runtime = GO

    def skipKnownLostTail(self, code: int, received: int, size: int) -> None:
        """
        The Go shim reports an exit as soon as it reaps the process and
        copies the output beside it; C{ctr} closes its fifos once C{Wait}
        returns, and on a busy machine what the copy still held is lost
        (32 KB of 1 MiB here, beside a running suite; the README's "Exit
        after output" and C{tests/stress/test_tail.py} measure it).
        """
        if code == 0 and received < size:
            raise SkipTest(
                "the Go shim reported the exit before its output copy ended,"
                f" and ctr closed its fifos: {size - received} bytes lost"
            )


class LifecycleTestsShimd(LifecycleTestsMixin, TestCase):
    runtime = SHIMD
