"""
The measures taken through containerd with C{ctr}, as a user sees them: a
whole container's life, start, exec, kill and delete, bursts of concurrent
starts and removes, and stdout throughput.

Each function runs both shims interleaved (L{rounds}) and returns the raw
samples, in seconds or MiB/s, by shim name.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from benchmarks.harness import Bench, BenchError, rounds

Samples = dict[str, list[float]]

MIB = 1 << 20


def _empty() -> Samples:
    return {"shimd": [], "go": []}


def lifecycle(bench: Bench, count: int, warmups: int) -> Samples:
    """
    C{ctr run --rm --rootfs R ID /bin/true}, wall time.
    """
    samples = _empty()
    for index, order in rounds(warmups + count):
        for shim in order:
            containerID = bench.newID(shim, "life")
            elapsed = bench.timed(
                *bench.runArguments(shim, containerID, ["/bin/true"], ["--rm"])
            )
            if index >= warmups:
                samples[shim.name].append(elapsed)
    return samples


def taskCycle(bench: Bench, count: int, execs: int) -> dict[str, Samples]:
    """
    A sleeping container's life in steps: C{ctr run -d} (which returns once
    the task is started), C{execs} times C{ctr task exec --exec-id X ID
    /bin/true}, and C{ctr task rm -f} (SIGKILL, wait for the exit, delete).

    @return: the samples of C{"start"}, C{"exec"} and C{"remove"}.
    """
    found = {"start": _empty(), "exec": _empty(), "remove": _empty()}
    for _, order in rounds(count):
        for shim in order:
            containerID, elapsed = bench.runDetached(shim, "task")
            try:
                found["start"][shim.name].append(elapsed)
                for execIndex in range(execs):
                    found["exec"][shim.name].append(
                        bench.timed(
                            "task",
                            "exec",
                            "--exec-id",
                            f"x{execIndex}",
                            containerID,
                            "/bin/true",
                        )
                    )
                found["remove"][shim.name].append(bench.remove(containerID))
            except BaseException:
                bench.removeQuietly([containerID])
                raise
    return found


def _runConcurrently(bench: Bench, commands: list[list[str]]) -> float:
    """
    Start every C{ctr} command at once and wait for all of them.

    @return: the wall time from the first start to the last exit.
    @raise BenchError: when any of them fails.
    """
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            bench.ctrCommand(*command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=bench.environment(),
        )
        for command in commands
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    elapsed = time.perf_counter() - started
    for command, process, error in zip(commands, processes, errors, strict=True):
        if process.returncode != 0:
            raise BenchError(
                f"ctr {' '.join(command)}: exit {process.returncode}: "
                + error.decode("utf-8", "replace").strip()
            )
    return elapsed


def bursts(bench: Bench, count: int, size: int) -> dict[str, Samples]:
    """
    C{size} concurrent C{ctr run -d}, then C{size} concurrent C{ctr task rm
    -f}; the wall time of each burst.

    @return: the samples of C{"start"} and C{"remove"}.
    """
    found = {"start": _empty(), "remove": _empty()}
    for _, order in rounds(count):
        for shim in order:
            ids = [bench.newID(shim, "burst") for _ in range(size)]
            try:
                found["start"][shim.name].append(
                    _runConcurrently(
                        bench,
                        [
                            bench.runArguments(
                                shim, containerID, ["/bin/sleep", "100000"], ["-d"]
                            )
                            for containerID in ids
                        ],
                    )
                )
                found["remove"][shim.name].append(
                    _runConcurrently(
                        bench,
                        [["task", "rm", "-f", containerID] for containerID in ids],
                    )
                )
                bench.ctrOK("containers", "rm", *ids)
            except BaseException:
                bench.removeQuietly(ids)
                raise
    return found


def _readAll(fd: int) -> tuple[int, float, float, int]:
    """
    Read a pipe to its end.

    @return: the bytes read, the times of the first and last reads, and the
        size of the first read.
    """
    total = 0
    first = last = 0.0
    firstSize = 0
    while True:
        chunk = os.read(fd, 4 * MIB)
        if not chunk:
            break
        last = time.perf_counter()
        if not total:
            first = last
            firstSize = len(chunk)
        total += len(chunk)
    return total, first, last, firstSize


def throughput(bench: Bench, count: int, size: int) -> Samples:
    """
    A container writes C{size} bytes of zeros to its stdout (busybox C{dd},
    64 KiB blocks); the shim copies them to C{ctr}, which writes them to a
    pipe that this process reads.

    @return: MiB/s from the first byte read to the last, by shim.
    """
    block = 65536
    if size % block:
        raise ValueError(f"size {size} is not a multiple of {block}")
    samples = _empty()
    for _, order in rounds(count):
        for shim in order:
            containerID = bench.newID(shim, "stdout")
            command = [
                "/bin/busybox",
                "dd",
                "if=/dev/zero",
                f"bs={block}",
                f"count={size // block}",
            ]
            process = subprocess.Popen(
                bench.ctrCommand(
                    *bench.runArguments(shim, containerID, command, ["--rm"])
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=bench.environment(),
            )
            watchdog = threading.Timer(600, process.kill)
            watchdog.start()
            try:
                assert process.stdout is not None
                total, first, last, firstSize = _readAll(process.stdout.fileno())
                code = process.wait()
            finally:
                watchdog.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()
            if code != 0 or total != size:
                bench.removeQuietly([containerID])
                raise BenchError(
                    f"stdout of {shim.label}: ctr exited {code} after {total} of "
                    f"{size} bytes"
                )
            if last <= first:
                raise BenchError(f"stdout of {shim.label}: all in one read")
            samples[shim.name].append((total - firstSize) / MIB / (last - first))
    return samples
