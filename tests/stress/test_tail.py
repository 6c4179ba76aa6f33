"""
The tail of a process's output under load: every byte a process writes
reaches a client that stops reading as soon as C{Wait} returns, for TTY and
pipe execs and inits, while other containers burn CPU and write output; and
a killed task whose output nobody reads is reported stopped at once.

The clients are those of containerd's Go client: C{ctr run --rm} (with and
without C{-t}), whose C{Delete} closes its fifos before anything else once
C{Wait} has returned, and an exec client over the container's shim socket
that reads its fifos as containerd's C{cio} does (32 KiB at a time, in a
thread) and closes them the moment C{Wait} returns. Each process prints
C{seq -s " " 1 1000000}: about 6.9 MB on one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter

from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2
from tests.e2e.base import Watchdog, runOnTerminal
from tests.e2e.rootfs import busyboxRootfs
from tests.e2e.runtimes import GO, SHIMD
from tests.stress.base import AttachedReader, StressMixin, execSpec
from tests.stress.scale import Stopwatch, report, scaled

SEQ = ("/bin/busybox", "seq", "-s", " ", "1", "1000000")
EXPECTED = b" ".join(b"%d" % n for n in range(1, 1_000_001)) + b"\n"
TTY_EXECS = scaled(10, 100)
PIPE_EXECS = scaled(10, 100)
INITS = scaled(3, 20)
#: Containers that write output as fast as they can, and one that spins.
WRITERS = 2
SPINNERS = 1
#: Reader speeds (bytes per second, 0: as fast as it can) and the output
#: size for the loss measurement of an attached C{ctr run --rm}.
READER_SPEEDS = (0, 25_000_000, 5_000_000)
MEASURED_BYTES = scaled(16, 200) * 1024 * 1024


def lostBytes(received: bytes, expected: bytes) -> int:
    """
    How much of C{expected} did not arrive: its length less the longest
    prefix of it that C{received} holds.
    """
    low, high = 0, min(len(received), len(expected))
    while low < high:
        middle = (low + high + 1) // 2
        if received[:middle] == expected[:middle]:
            low = middle
        else:
            high = middle - 1
    return len(expected) - low


def givenUpDrains(log: str) -> list[str]:
    """
    The shim's lines in C{log} saying it gave up waiting for a process's
    output to reach its client (shimd's drain wait; none from the Go shim).
    """
    return [
        line for line in log.splitlines() if "gave up waiting for a process" in line
    ]


def readCounts(log: str) -> dict[str, int]:
    """
    How many bytes shimd read from each process it delivered the output
    of, and what ended its reading, by the debug lines in C{log}, as
    C{{"count (ending)": how often}}: a count short of the output's length
    says the bytes never came out of the process's pipe or terminal (none
    from the Go shim).
    """
    counts = re.findall(
        r"output reached its client .*? (\d+) bytes read from the process"
        r"(?: \(ended by ([^)]*)\))?",
        log,
    )
    return dict(
        Counter(f"{count} ({ending})" if ending else count for count, ending in counts)
    )


class TailTestsMixin(StressMixin):
    """
    Output tails under load, and the exit of a task nobody reads.
    """

    def assertComplete(self, failures: list[tuple[int, int]]) -> None:
        """
        For shimd, fail unless every process's output arrived whole. The Go
        shim reports an exit before its output is copied, and its client
        loses a tail now and then: for it the losses are only a figure.
        """
        if self.runtime is SHIMD:
            self.assertEqual(failures, [], "(index, bytes lost)")

    def startLoad(self) -> None:
        """
        Containers that write output (to C{/dev/null}, through their shims)
        and spin, stopped after the test.
        """
        for index in range(WRITERS):
            containerID = f"writer{index}"
            self.runDetached(
                containerID,
                "/bin/sh",
                "-c",
                "while :; do echo load load load load load load; done",
                options=["--log-uri", "file:///dev/null"],
            )
            self.addCleanup(self.killAndDelete, containerID)
        for index in range(SPINNERS):
            containerID = f"spinner{index}"
            self.runDetached(containerID, "/bin/sh", "-c", "while :; do :; done")
            self.addCleanup(self.killAndDelete, containerID)

    def attachedExec(self, containerID: str, execID: str, terminal: bool) -> bytes:
        """
        Run C{seq} as an exec over the shim's socket, with its output read
        from fifos as containerd's client reads them, and the fifos closed
        as soon as C{Wait} returns.

        @return: what the client read from stdout (and stderr).
        """
        directory = self.makeDirectory()
        stdout = os.path.join(directory, "stdout")
        stderr = "" if terminal else os.path.join(directory, "stderr")
        reader = AttachedReader([stdout] + ([stderr] if stderr else []))
        client = self.shimClient(containerID, timeout=120)
        try:
            spec = execSpec(*SEQ)
            client.call(
                "Exec",
                task_pb2.ExecProcessRequest(
                    id=containerID,
                    exec_id=execID,
                    terminal=terminal,
                    stdout=stdout,
                    stderr=stderr,
                    spec=spec,
                ),
            )
            client.call("Start", task_pb2.StartRequest(id=containerID, exec_id=execID))
            waited = client.call(
                "Wait", task_pb2.WaitRequest(id=containerID, exec_id=execID)
            )
        finally:
            received = reader.close()
        client.call("Delete", task_pb2.DeleteRequest(id=containerID, exec_id=execID))
        client.close()
        self.assertEqual(waited.exit_status, 0)
        return received

    def runExecs(self, terminal: bool, count: int, name: str) -> None:
        self.startLoad()
        self.runDetached("host", "/bin/sleep", "1000000")
        self.addCleanup(self.killAndDelete, "host")
        clock = Stopwatch()
        logStart = self.containerd.logOffset()
        failures = []
        for index in range(count):
            received = self.attachedExec("host", f"{name}{index}", terminal)
            if terminal:
                received = received.replace(b"\r\n", b"\n")
            if received != EXPECTED:
                failures.append((index, lostBytes(received, EXPECTED)))
        log = self.containerd.log(since=logStart)
        report(
            f"tail-{name}-{self.runtime.name}",
            execs=count,
            failed=len(failures),
            lost=failures[:10],
            gaveUp=givenUpDrains(log),
            shimRead=readCounts(log),
            seconds=clock.seconds(),
        )
        self.assertComplete(failures)

    def test_ttyExecs(self) -> None:
        """
        TTY execs printing 6.9 MB on one line, one after another (10; 100
        under C{SHIMD_STRESS=full}), under load: each client, which closes
        its fifo as soon as C{Wait} returns, got every byte.

        This lost a process's last writes now and then (up to 12 KB, 1 exec
        in about 50 beside a running suite) until the shim read a pty
        master on to C{EIO} after epoll reported its hangup: the shim's
        counts of bytes read (C{shimRead}) were short by them, each with its
        reading ended by the hangup ("closed"), not by C{EIO}.
        """
        self.runExecs(True, TTY_EXECS, "tty")

    def test_pipeExecs(self) -> None:
        """
        The same with pipes (no terminal), stdout and stderr fifos.
        """
        self.runExecs(False, PIPE_EXECS, "pipe")

    def runInit(self, containerID: str, terminal: bool) -> bytes:
        """
        C{ctr run --rm} of C{seq}, on a terminal with C{-t}.

        @return: what C{ctr} printed.
        """
        self.namespace.ids.add(containerID)
        argv = self.containerd.ctrCommand(
            "run",
            "--rm",
            *(["-t"] if terminal else []),
            *self.runtimeOptions(),
            "--rootfs",
            busyboxRootfs(),
            containerID,
            *SEQ,
            namespace=self.namespace.name,
        )
        if terminal:
            result = runOnTerminal(argv, self.containerd.environment(), timeout=120)
            self.assertEqual(result.code, 0, result.output[-200:])
            return result.output.replace(b"\r\n", b"\n")
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self.containerd.environment(),
            timeout=120,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        return completed.stdout

    def runInits(self, terminal: bool, name: str) -> None:
        self.startLoad()
        clock = Stopwatch()
        failures = []
        for index in range(INITS):
            received = self.runInit(f"{name}{index}", terminal)
            if received != EXPECTED:
                failures.append((index, lostBytes(received, EXPECTED)))
        report(
            f"tail-{name}-{self.runtime.name}",
            inits=INITS,
            failed=len(failures),
            lost=failures[:10],
            seconds=clock.seconds(),
        )
        self.assertComplete(failures)

    def test_ttyInits(self) -> None:
        """
        C{ctr run --rm -t} of the same, under load (3; 20 under
        C{SHIMD_STRESS=full}): C{ctr} printed every byte.
        """
        self.runInits(True, "ttyinit")

    def test_pipeInits(self) -> None:
        """
        C{ctr run --rm} of the same, without a terminal.
        """
        self.runInits(False, "pipeinit")

    def test_killUnread(self) -> None:
        """
        An attached C{ctr run} is SIGKILLed while its container floods its
        output, which nobody reads any more; C{ctr task kill -s SIGKILL},
        then one second later C{ctr task rm}, succeed. (How long the task
        took to be reported stopped, if it was within that second, is a
        figure, not an assertion.)
        """
        self.namespace.ids.add("unread")
        argv = self.containerd.ctrCommand(
            "run",
            *self.runtimeOptions(),
            "--rootfs",
            busyboxRootfs(),
            "unread",
            "/bin/sh",
            "-c",
            "while :; do echo unread unread unread unread; done",
            namespace=self.namespace.name,
        )
        attached = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.containerd.environment(),
        )
        watchdog = Watchdog(attached, 120)
        self.addCleanup(watchdog.cancel)
        self.waitForStatus("unread", "RUNNING")
        attached.send_signal(signal.SIGKILL)
        attached.wait()
        # Let the container fill the fifo nobody reads.
        time.sleep(0.5)
        started = time.monotonic()
        self.assertCtr(self.ctr("task", "kill", "-s", "SIGKILL", "unread"))
        stoppedAfter = None
        while time.monotonic() - started < 1.0:
            if self.statusOf("unread") == "STOPPED":
                stoppedAfter = round(time.monotonic() - started, 3)
                break
            time.sleep(0.01)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        removed = self.ctr("task", "rm", "unread")
        report(f"kill-unread-{self.runtime.name}", stoppedAfterSeconds=stoppedAfter)
        self.assertCtr(removed, what="ctr task rm one second after the kill")
        self.assertCtr(self.ctr("containers", "rm", "unread"))

    def test_readerSpeeds(self) -> None:
        """
        How much of the output of an attached C{ctr run --rm} (16 MiB; 200
        MiB under C{SHIMD_STRESS=full}) is lost with a reader at several
        speeds: a figure for each runtime. shimd loses none.
        """
        losses = {}
        for speed in READER_SPEEDS:
            containerID = f"speed{speed // 1_000_000}"
            self.namespace.ids.add(containerID)
            argv = self.containerd.ctrCommand(
                "run",
                "--rm",
                *self.runtimeOptions(),
                "--rootfs",
                busyboxRootfs(),
                containerID,
                "/bin/head",
                "-c",
                str(MEASURED_BYTES),
                "/dev/zero",
                namespace=self.namespace.name,
            )
            ctr = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self.containerd.environment(),
            )
            watchdog = Watchdog(ctr, 600)
            assert ctr.stdout is not None
            received = readAtSpeed(ctr.stdout.fileno(), speed)
            ctr.wait()
            watchdog.cancel()
            losses[speed] = MEASURED_BYTES - received
        report(
            f"reader-speeds-{self.runtime.name}",
            bytes=MEASURED_BYTES,
            lostBySpeed={str(speed): lost for speed, lost in losses.items()},
        )
        if self.runtime is SHIMD:
            self.assertEqual(set(losses.values()), {0}, losses)


def readAtSpeed(fd: int, speed: int) -> int:
    """
    Read C{fd} to its end, at most C{speed} bytes per second (in 16 KiB
    reads; as fast as possible for 0).

    @return: how many bytes were read.
    """
    total = 0
    started = time.monotonic()
    while True:
        chunk = os.read(fd, 16 * 1024 if speed else 1 << 20)
        if not chunk:
            return total
        total += len(chunk)
        if speed:
            ahead = total / speed - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


class TailTestsShimd(TailTestsMixin, TestCase):
    runtime = SHIMD


class TailTestsGo(TailTestsMixin, TestCase):
    runtime = GO
