"""
C{State} over ttrpc, straight to each shim's socket: the round-trip time of
one client, and the requests per second that 1 and 16 concurrent clients
get.

containerd polls C{State} (C{ctr task ls}, every C{Task.Status}), so it is
the task API's fast path: no runc, no disk, just the shim's request
handling. Both shims serve one running container; the socket comes from the
bundle's C{address} file, as containerd finds it.

The clients are identical for both shims. Latency is one connection calling
in a tight loop from this process; throughput uses one process per client
(L{benchmarks.load}), each with its own connection, all calling within the
same window of time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks import stats
from benchmarks.harness import SHIMS, Bench, BenchError, rounds
from benchmarks.ttrpcclient import StateLoop

Samples = dict[str, list[float]]
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _empty() -> Samples:
    return {"shimd": [], "go": []}


def latency(
    bench: Bench, targets: dict[str, tuple[str, str]], count: int, calls: int
) -> dict[str, Samples]:
    """
    C{count} interleaved batches of C{calls} sequential calls per shim.

    @param targets: C{{shim name: (address, container id)}}.
    @return: C{"p50"} and C{"p99"} of each batch in microseconds, and
        C{"all"}: every round trip.
    """
    found = {"p50": _empty(), "p99": _empty(), "all": _empty()}
    loops = {
        name: StateLoop(address, bench.namespace.name, containerID)
        for name, (address, containerID) in targets.items()
    }
    try:
        for loop in loops.values():
            loop.run(max(calls // 10, 10))
        for _, order in rounds(count):
            for shim in order:
                record: list[int] = []
                loops[shim.name].run(calls, record)
                micros = [value / 1000 for value in record]
                found["p50"][shim.name].append(stats.percentile(micros, 0.5))
                found["p99"][shim.name].append(stats.percentile(micros, 0.99))
                found["all"][shim.name].extend(micros)
    finally:
        for loop in loops.values():
            loop.close()
    return found


def _window(
    bench: Bench, address: str, containerID: str, clients: int, duration: float
) -> float:
    """
    C{clients} client processes calling for C{duration} seconds.

    @return: the requests per second they got, all together.
    """
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (PACKAGE_ROOT, environ.get("PYTHONPATH", "")) if p
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.load",
        "--address",
        address,
        "--namespace",
        bench.namespace.name,
        "--id",
        containerID,
        "--duration",
        str(duration),
    ]
    processes = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "ready":
                raise BenchError(
                    f"State client did not start: {line!r} {process.stderr.read()!r}"
                    if process.stderr
                    else f"State client did not start: {line!r}"
                )
        startAt = time.monotonic() + 0.05
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"{startAt}\n")
            process.stdin.flush()
        total = 0.0
        for process in processes:
            out, err = process.communicate(timeout=duration + 120)
            if process.returncode != 0:
                raise BenchError(f"State client failed: {err.strip()}")
            report = json.loads(out.strip().splitlines()[-1])
            span = duration + report["overrun"] - max(report["late"], 0.0)
            total += report["count"] / span
        return total
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def requestsPerSecond(
    bench: Bench,
    targets: dict[str, tuple[str, str]],
    clients: int,
    count: int,
    duration: float,
) -> Samples:
    """
    C{count} interleaved windows of C{clients} concurrent clients per shim.

    @return: requests per second of each window.
    """
    samples = _empty()
    for _, order in rounds(count):
        for shim in order:
            address, containerID = targets[shim.name]
            samples[shim.name].append(
                _window(bench, address, containerID, clients, duration)
            )
    return samples


def startTargets(bench: Bench) -> dict[str, tuple[str, str]]:
    """
    One sleeping container per shim.

    @return: C{{shim name: (shim address, container id)}}.
    """
    targets = {}
    for shim in SHIMS:
        containerID, _ = bench.runDetached(shim, "state")
        targets[shim.name] = (bench.shimAddress(containerID), containerID)
    return targets
