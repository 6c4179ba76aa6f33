"""
What the kernel says about the shim processes: memory (RSS and PSS from
C{smaps_rollup}), CPU time (C{stat} ticks and C{schedstat} nanoseconds), and
which processes are shims at all.

A shim is found by its working directory, the bundle of the container that
started it: every shim, Go or Python, spawned or forked, runs in its bundle,
whatever its command line says.
"""

from __future__ import annotations

import os

from tests.e2e import host

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FORK_SERVER_MODULE = "shimd.shim.forkserver"


def memory(pid: int) -> dict[str, int]:
    """
    C{{"rss": bytes, "pss": bytes, "uss": bytes}} of a process, from
    C{smaps_rollup}; USS is its private pages (clean and dirty), which no
    other process maps.

    @raise OSError: when the process is gone.
    """
    found = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                found[name.lower()] = int(rest.split()[0]) * 1024
            elif name in ("Private_Clean", "Private_Dirty"):
                found["uss"] += int(rest.split()[0]) * 1024
    return found


def cpuTicks(pid: int) -> int:
    """
    C{utime + stime} of a process (all its threads, live and dead), in
    clock ticks.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based).
    return int(fields[11]) + int(fields[12])


def cpuNanoseconds(pid: int) -> int:
    """
    Time on a CPU of a process's live threads, in nanoseconds, from each
    thread's C{schedstat}: much finer than the ticks of L{cpuTicks}.
    """
    total = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def parentOf(pid: int) -> int:
    """
    The parent pid of a process, or 0 when it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def isForkServer(pid: int) -> bool:
    """
    Whether a process is a shimd fork server.
    """
    return FORK_SERVER_MODULE in host.arguments(pid)


def shimsByBundle(bundlesDirectory: str) -> dict[int, str]:
    """
    The live processes working in a namespace's bundle directories:
    C{{pid: container id}}, the container being the one whose bundle the
    process works in (for a group, the container that started the shim).
    """
    found = {}
    for pid in host.processesWorkingIn(bundlesDirectory, below=True):
        cwd = host.workingDirectory(pid)
        if cwd is None:
            continue
        relative = os.path.relpath(cwd, bundlesDirectory)
        if "/" in relative or relative.startswith("."):
            continue
        found[pid] = relative
    return found
