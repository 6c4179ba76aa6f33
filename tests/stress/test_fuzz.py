"""
Malformed frames and messages on the socket of a live shimd shim, which
runs a real container through containerd: each case gets the answers the
ttrpc specification allows, or a closed connection, while another client's
C{State} calls and the container's output carry on, and the shim's memory
stays flat.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable

from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from shimd.protos import task_pb2, task_types_pb2
from shimd.ttrpc.framing import REQUEST, Frame
from tests.e2e import host
from tests.e2e.containerd import waitUntil
from tests.e2e.runtimes import SHIMD
from tests.stress import fuzz
from tests.stress.base import CounterOutput, StressMixin, counterScript
from tests.stress.client import StatePounder, requestFrame
from tests.stress.proc import rssKiB
from tests.stress.scale import Stopwatch, report, scaled

try:
    import atheris  # type: ignore[import-untyped]  # noqa: F401
except ImportError:
    ATHERIS = False
else:
    ATHERIS = True

FRAMES = scaled(1_000, 10_000)
WARM_UP = 300
ATHERIS_RUNS = scaled(300, 10_000)
# The shim's resident memory may grow by this much over a run, whatever
# its length: allocator noise, not something that grows with the input.
RSS_ALLOWANCE_KIB = 6 * 1024
SEED = int(os.environ.get("SHIMD_FUZZ_SEED", "20261129"))
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def running(response: Message) -> bool:
    """
    Whether a C{State} answer says the target container is running.
    """
    return (
        isinstance(response, task_pb2.StateResponse)
        and response.id == "target"
        and response.status == task_types_pb2.RUNNING
    )


class FuzzTests(StressMixin, TestCase):
    """
    A shimd shim with a container writing a counter, fuzzed.
    """

    runtime = SHIMD

    def setUp(self) -> None:
        super().setUp()
        self.output = os.path.join(self.makeDirectory(), "out")
        self.pid = self.runDetached(
            "target",
            "/bin/sh",
            "-c",
            counterScript(),
            options=["--log-uri", f"file://{self.output}"],
        )
        self.path = host.socketPath(self.shimAddressOf("target"))
        self.shim = self.shimPid("target")
        self.probe = fuzz.Probe("State", task_pb2.StateRequest(id="target"), running)
        self.pounder = StatePounder(self.path, "target", connections=4)
        self.pounder.start()
        self.addCleanup(self.pounder.stop)

    def counter(self) -> int:
        """
        The highest number the container has written so far.
        """
        with open(self.output, "rb") as f:
            return CounterOutput.parse(f.read()).highest

    def fuzzWithHypothesis(self, frames: int, seedOffset: int) -> int:
        """
        Send hypothesis's cases until at least C{frames} frames have gone.

        @return: the frames sent.
        """
        sent = [0]
        protected = {"target"}

        def once(data: st.DataObject) -> None:
            case = fuzz.encodable(lambda: fuzz.buildCase(fuzz.HypothesisSource(data)))
            assume(case is not None)
            assert case is not None
            payload, count = case
            assume(fuzz.safeToSend(payload, protected))
            fuzz.exercise(self.path, payload, self.probe)
            sent[0] += count

        while sent[0] < frames:
            run: Callable[[], None] = seed(SEED + seedOffset)(
                settings(
                    max_examples=max((frames - sent[0]) // 2, 10),
                    deadline=None,
                    database=None,
                    phases=[Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )(given(st.data())(once))
            )
            run()
            seedOffset += 1
        return sent[0]

    def assertCarriedOn(self, callsBefore: int, counterBefore: int) -> None:
        """
        The other client's C{State} calls all succeeded, and kept coming;
        the shim is the same process; the container runs, with the same
        pid, and its output still flows.
        """
        self.assertEqual(self.pounder.failures, [])
        waitUntil(
            lambda: self.pounder.calls > callsBefore + 100, 30, "more State calls"
        )
        self.assertTrue(host.isAlive(self.shim))
        self.assertEqual(self.shimPid("target"), self.shim)
        self.assertEqual(self.taskStatus("target"), (self.pid, "RUNNING"))
        waitUntil(lambda: self.counter() > counterBefore + 10, 30, "the output to flow")

    def test_hypothesis(self) -> None:
        """
        hypothesis's cases (truncated headers, wrong and huge lengths,
        unknown message types and flags, garbage envelopes and payloads,
        unknown services and methods, invalid ids in every Task method; at
        least 1,000 frames, 10,000 under C{SHIMD_STRESS=full}): every answer
        is one the specification allows, every complete request frame is
        answered and the connection stays in step, an incomplete one is
        closed. Throughout, another client's C{State} calls succeed and the
        container's output flows; the shim's resident memory after the run
        is within a small constant of what it was after a warm-up.
        """
        self.fuzzWithHypothesis(WARM_UP, 0)
        rssBefore = rssKiB(self.shim)
        callsBefore, counterBefore = self.pounder.calls, self.counter()
        clock = Stopwatch()
        sent = self.fuzzWithHypothesis(FRAMES, 1000)
        seconds = clock.seconds()
        rssAfter = rssKiB(self.shim)
        self.assertCarriedOn(callsBefore, counterBefore)
        report(
            "fuzz-hypothesis",
            frames=sent,
            seconds=seconds,
            rssBeforeKiB=rssBefore,
            rssAfterKiB=rssAfter,
            stateCalls=self.pounder.calls - callsBefore,
        )
        self.assertGreaterEqual(sent, FRAMES)
        self.assertLessEqual(rssAfter - rssBefore, RSS_ALLOWANCE_KIB)

    def test_atheris(self) -> None:
        """
        The same cases driven by atheris (libFuzzer, coverage-guided on the
        case generator and the oracle), for 300 runs, 10,000 under
        C{SHIMD_STRESS=full}, with the same checks.
        """
        if not ATHERIS:
            raise self.skipTest("atheris is not installed")
        self.fuzzWithHypothesis(WARM_UP, 0)
        rssBefore = rssKiB(self.shim)
        callsBefore, counterBefore = self.pounder.calls, self.counter()
        artifacts = self.makeDirectory()
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [SOURCE_ROOT, environment.get("PYTHONPATH")])
        )
        clock = Stopwatch()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.stress.atheris_fuzz",
                self.path,
                "target",
                f"-runs={ATHERIS_RUNS}",
                f"-seed={SEED}",
                "-max_len=4096",
                f"-artifact_prefix={artifacts}/",
            ],
            cwd=artifacts,
            env=environment,
            capture_output=True,
            timeout=scaled(300, 3000),
        )
        seconds = clock.seconds()
        self.assertEqual(
            result.returncode, 0, result.stderr.decode("utf-8", "replace")[-4000:]
        )
        rssAfter = rssKiB(self.shim)
        self.assertCarriedOn(callsBefore, counterBefore)
        report(
            "fuzz-atheris",
            runs=ATHERIS_RUNS,
            seconds=seconds,
            rssBeforeKiB=rssBefore,
            rssAfterKiB=rssAfter,
        )
        self.assertLessEqual(rssAfter - rssBefore, RSS_ALLOWANCE_KIB)

    def test_limits(self) -> None:
        """
        The frames at the edges, with the Go shim's texts: a payload of
        4 MiB + 1 byte, sent whole, is skipped and answered
        C{RESOURCE_EXHAUSTED} on its stream, and the same connection then
        answers a good call; a header claiming 4 GiB - 1 followed by 8 MiB
        is neither answered nor buffered, and the connection closes when the
        client's side does; an even stream id gets C{INVALID_ARGUMENT}. The
        shim's memory does not keep the big frames.
        """
        rssBefore = rssKiB(self.shim)
        oversized = fuzz.header(fuzz.MAX_MESSAGE_SIZE + 1, 41, REQUEST, 0) + bytes(
            fuzz.MAX_MESSAGE_SIZE + 1
        )
        expectation = fuzz.exercise(self.path, oversized, self.probe)
        self.assertEqual(expectation.pending(), 0)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(self.path)
            connection.sendall(fuzz.header(0xFFFFFFFF, 43, REQUEST, 0))
            chunk = bytes(1 << 20)
            for _ in range(8):
                connection.sendall(chunk)
            connection.shutdown(socket.SHUT_WR)
            self.assertEqual(connection.recv(100), b"")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(self.path)
            connection.sendall(
                requestFrame(40, "State", task_pb2.StateRequest(id="target"))
                + requestFrame(45, "State", task_pb2.StateRequest(id="target"))
            )
            answers: dict[int, Frame] = {}
            receiver = fuzz.FrameReceiver()
            while len(answers) < 2:
                data = connection.recv(1 << 16)
                self.assertNotEqual(data, b"", "connection closed")
                for frame in receiver.feed(data):
                    assert isinstance(frame, Frame)
                    answers[frame.streamID] = frame
        status = fuzz.ttrpc_pb2.Response.FromString(answers[40].payload).status
        self.assertEqual(
            (status.code, status.message),
            (3, "StreamID must be odd for client initiated streams"),
        )
        good = fuzz.ttrpc_pb2.Response.FromString(answers[45].payload)
        self.assertFalse(good.HasField("status"))
        self.assertLessEqual(rssKiB(self.shim) - rssBefore, RSS_ALLOWANCE_KIB)
        self.assertEqual(self.pounder.failures, [])
