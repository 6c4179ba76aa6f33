"""
Readers that are slow, stuck or absent: a client that stops reading a
container's output, an exec whose background child keeps its stdout open,
and a log fifo nobody reads. None of them may stop the shim from serving
everything else, and none may make it buffer without bound.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2, task_types_pb2
from tests.e2e import host
from tests.e2e.containerd import waitUntil
from tests.e2e.runtimes import GO, SHIMD, missingPrerequisites
from tests.stress.base import (
    CounterOutput,
    FifoDrain,
    StressMixin,
    counterScript,
    execSpec,
    groupOptions,
)
from tests.stress.client import ShimClient, requestFrame
from tests.stress.proc import Snapshot, rssKiB
from tests.stress.scale import Stopwatch, report, scaled

RSS_ALLOWANCE_KIB = 8 * 1024
REFUSED_CONNECTIONS = scaled(2_000, 20_000)
NOBODY = 65534


def blockedWriting(pid: int) -> bool:
    """
    Whether process C{pid} sleeps in a write to a pipe (or fifo).
    """
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "pipe" in f.read()
    except OSError:
        return False


class ReaderTestsMixin(StressMixin):
    """
    Slow and stuck readers of container output.
    """

    def test_stuckReader(self) -> None:
        """
        Two containers in one shim group: one floods a fifo whose reader
        stops reading, the other writes a counter to a C{file://} target.
        Once the fifo and the shim's bounded buffer are full the flooding
        container is simply paused, blocked in C{write} on its pipe, and
        still RUNNING; meanwhile the shim answers C{State} for both on new
        connections, the other container's output keeps flowing, and the
        shim's memory stays within a small bound. When the reader reads
        again the flood resumes, and not a line of it was lost.
        """
        directory = self.makeDirectory()
        group = groupOptions("readers")
        self.namespace.ids.add("readers")
        drain = FifoDrain(os.path.join(directory, "flood.fifo"))
        self.addCleanup(drain.stop)
        drain.paused.set()
        flood = self.runDetached(
            "flood",
            "/bin/sh",
            "-c",
            'i=0; while :; do echo "$i"; i=$((i+1)); done',
            options=[*group, "--log-uri", drain.path],
        )
        output = os.path.join(directory, "steady.log")
        self.runDetached(
            "steady",
            "/bin/sh",
            "-c",
            counterScript(),
            options=[*group, "--log-uri", f"file://{output}"],
        )
        shim = self.shimPid("flood")
        self.assertEqual(self.shimPid("steady"), shim)
        waitUntil(lambda: blockedWriting(flood), 30, "the flood to block")
        rssStalled = rssKiB(shim)

        def steady() -> int:
            with open(output, "rb") as f:
                return CounterOutput.parse(f.read()).highest

        start = steady()
        for _ in range(20):
            for containerID in ("flood", "steady"):
                with ShimClient(self.shimAddressOf(containerID)) as client:
                    state = client.call("State", task_pb2.StateRequest(id=containerID))
                self.assertEqual(state.status, task_types_pb2.RUNNING)
        waitUntil(lambda: steady() > start + 50, 30, "the steady output to flow")
        self.assertTrue(blockedWriting(flood), "the flood is no longer blocked")
        rssLater = rssKiB(shim)
        self.assertEqual(self.taskStatus("flood"), (flood, "RUNNING"))

        stalledAt = CounterOutput.parse(drain.data()).highest
        drain.paused.clear()
        waitUntil(
            lambda: CounterOutput.parse(drain.data()).highest > stalledAt + 100_000,
            60,
            "the flood to resume",
        )
        self.killAndDelete("flood")
        flooded = CounterOutput.parse(drain.stop())
        self.killAndDelete("steady")
        report(
            f"stuck-reader-{self.runtime.name}",
            rssStalledKiB=rssStalled,
            rssLaterKiB=rssLater,
            floodLines=flooded.lines,
            floodLost=flooded.lost,
        )
        self.assertEqual((flooded.lost, flooded.duplicated), (0, 0))
        self.assertLessEqual(rssLater - rssStalled, RSS_ALLOWANCE_KIB)

    def test_backgroundChildKeepsStdout(self) -> None:
        """
        An exec that leaves a background child holding its stdout: through
        C{ctr task exec}, the command returns with the exec's output and
        status; over the shim's socket, C{Wait} returns the exec's status
        and C{Delete} returns (after its bounded wait for the output),
        although the pipe never reaches end of input. The shim then holds
        the descriptors it held before the exec: the held pipe is closed.
        """
        self.runDetached("host", "/bin/sleep", "1000000")
        result = self.execute(
            "host", "bg1", "/bin/sh", "-c", "sleep 1000000 & echo hi", timeout=60
        )
        self.assertEqual((result.code, result.out), (0, "hi\n"))

        shim = self.shimPid("host")
        client = self.shimClient("host")
        client.call("State", task_pb2.StateRequest(id="host"))
        before = Snapshot.of(shim)
        drain = FifoDrain(os.path.join(self.makeDirectory(), "bg2.fifo"))
        self.addCleanup(drain.stop)
        client.call(
            "Exec",
            task_pb2.ExecProcessRequest(
                id="host",
                exec_id="bg2",
                stdout=drain.path,
                stderr=drain.path,
                spec=execSpec("/bin/sh", "-c", "sleep 1000000 & echo there; exit 4"),
            ),
        )
        client.call("Start", task_pb2.StartRequest(id="host", exec_id="bg2"))
        waited = client.call(
            "Wait", task_pb2.WaitRequest(id="host", exec_id="bg2"), timeout=60
        )
        self.assertEqual(waited.exit_status, 4)
        clock = Stopwatch()
        deleted = client.call(
            "Delete", task_pb2.DeleteRequest(id="host", exec_id="bg2"), timeout=60
        )
        seconds = clock.seconds()
        self.assertEqual(deleted.exit_status, 4)
        waitUntil(lambda: drain.data() == b"there\n", 10, "the exec's output")
        try:
            waitUntil(
                lambda: len(Snapshot.of(shim).fds) <= len(before.fds),
                10,
                "the exec's descriptors to close",
            )
        except AssertionError:
            pass
        held = before.fdDifference(Snapshot.of(shim))
        report(f"background-child-{self.runtime.name}", deleteSeconds=seconds)
        self.assertEqual(held, "", "descriptors held after Delete")
        self.killAndDelete("host")


class ReaderTestsGo(ReaderTestsMixin, TestCase):
    runtime = GO


class ReaderTestsShimd(ReaderTestsMixin, TestCase):
    runtime = SHIMD


REFUSER = textwrap.dedent(
    """\
    import socket, sys
    path, count = sys.argv[1], int(sys.argv[2])
    request = bytes.fromhex(sys.argv[3])
    refused = 0
    for _ in range(count):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(path)
            try:
                connection.sendall(request)
                answer = connection.recv(100)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            if answer == b"":
                refused += 1
    print(refused)
    """
)


DROPPED = re.compile(r"(\d+) log lines dropped while the log was full")


def _becomeNobodyGroup() -> None:
    os.setgroups([])
    os.setgid(NOBODY)


class LogFifoTests(TestCase):
    """
    A shimd daemon, started as containerd starts one, whose log fifo has a
    reader that never reads.
    """

    timeout = scaled(300, 1800)

    def setUp(self) -> None:
        missing = missingPrerequisites(SHIMD)
        if missing:
            raise self.skipTest("needs: " + ", ".join(missing))
        self.directory = tempfile.mkdtemp(prefix="shimd-logfifo-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.bundle = os.path.join(self.directory, "bundle")
        os.mkdir(self.bundle, 0o700)
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            f.write("{}")
        fifo = os.path.join(self.bundle, "log")
        os.mkfifo(fifo, 0o600)
        # The reader that never reads (until the end of the test).
        self.reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, self.reader)
        containerd = os.path.join(self.directory, "containerd.sock")
        self.namespace, self.shimID = "logfifo", f"logfifo-{os.getpid()}"
        key = f"{containerd}/{self.namespace}/{self.shimID}".encode()
        self.path = os.path.join("/run/containerd/s", hashlib.sha256(key).hexdigest())
        self.addCleanup(self.killDaemon)
        environment = dict(os.environ)
        environment["TTRPC_ADDRESS"] = os.path.join(self.directory, "none.ttrpc")
        result = subprocess.run(
            [
                SHIMD.binaryPath() or "containerd-shim-pyrunc-v2",
                "-namespace",
                self.namespace,
                "-address",
                containerd,
                "-id",
                self.shimID,
                "-debug",
                "start",
            ],
            cwd=self.bundle,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""), result)
        [self.daemon] = host.processesListeningOn(self.path)

    def killDaemon(self) -> None:
        """
        Kill whatever listens on the daemon's socket, and remove it.
        """
        for pid in host.processesListeningOn(self.path):
            host.kill(pid)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def fill(self) -> int:
        """
        Fill the log fifo from our side, as a daemon's logging would.

        @return: how many bytes it took.
        """
        writer = os.open(os.path.join(self.bundle, "log"), os.O_WRONLY | os.O_NONBLOCK)
        written = 0
        try:
            for size in (4096, 256, 16, 1):
                while True:
                    try:
                        written += os.write(writer, b"x" * size)
                    except OSError as e:
                        if e.errno != errno.EAGAIN:
                            raise
                        break
        finally:
            os.close(writer)
        return written

    def refuse(self, count: int) -> subprocess.Popen[bytes]:
        """
        Start a process that connects C{count} times as a peer of another
        group (root, with gid C{nobody}), sends C{Connect} each time and
        prints how many connections were closed unanswered.
        """
        frame = requestFrame(1, "Connect", task_pb2.ConnectRequest(id="x")).hex()
        return subprocess.Popen(
            [sys.executable, "-c", REFUSER, self.path, str(count), frame],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_becomeNobodyGroup,
        )

    def readLog(self) -> bytes:
        """
        Everything in the log fifo now, read without waiting.
        """
        data = b""
        while True:
            try:
                chunk = os.read(self.reader, 1 << 16)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk

    def connect(self) -> int:
        """
        C{Connect} over a new connection.

        @return: the shim pid it answers.
        """
        with ShimClient(self.path) as client:
            response = client.call("Connect", task_pb2.ConnectRequest(id="x"))
        pid: int = response.shim_pid
        return pid

    def test_fullLogFifo(self) -> None:
        """
        With the log fifo full and never read, the daemon (at debug level)
        is made to log a warning for each of thousands of connections it
        refuses (a peer whose group is not its own; 2,000, or 20,000 under
        C{SHIMD_STRESS=full}): it refuses every one, keeps answering
        C{Connect} on other connections throughout, and does not grow its
        memory; once the fifo is read again, its next line is preceded by
        the count of lines it dropped.
        """
        filled = self.fill()
        self.assertEqual(self.connect(), self.daemon)
        rssBefore = rssKiB(self.daemon)
        refuser = self.refuse(REFUSED_CONNECTIONS)
        answered = 0
        while refuser.poll() is None:
            self.assertEqual(self.connect(), self.daemon)
            answered += 1
        out, err = refuser.communicate()
        self.assertEqual(refuser.returncode, 0, err)
        self.assertEqual(int(out), REFUSED_CONNECTIONS)
        self.assertGreater(answered, 0)
        rssAfter = rssKiB(self.daemon)

        # Nothing was squeezed in after our filling: every line was dropped.
        logged = self.readLog()
        self.assertTrue(logged.endswith(b"x" * filled), logged[-200:])
        self.assertEqual(self.refuse(1).wait(60), 0)
        lines: list[bytes] = []

        def refusalLogged() -> bool:
            lines.extend(self.readLog().splitlines())
            return any(b"refused a connection" in line for line in lines)

        waitUntil(refusalLogged, 30, "the next line")
        dropped = [
            int(match.group(1))
            for line in lines
            if (match := DROPPED.search(line.decode()))
        ]
        self.assertEqual(len(dropped), 1, lines)
        self.assertGreaterEqual(dropped[0], REFUSED_CONNECTIONS)
        report(
            "log-fifo",
            refused=REFUSED_CONNECTIONS,
            dropped=dropped[0],
            connectsMeanwhile=answered,
            fifoBytes=filled,
            rssBeforeKiB=rssBefore,
            rssAfterKiB=rssAfter,
        )
        self.assertLessEqual(rssAfter - rssBefore, RSS_ALLOWANCE_KIB)
