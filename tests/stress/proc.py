"""
What a process holds, read from C{/proc}: resident memory, open file
descriptors, child processes and zombies, and the unix sockets it listens on.

The stress tests take a L{Snapshot} of a shim before and after a run and
compare them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from tests.e2e import host


def status(pid: int) -> dict[str, str]:
    """
    C{/proc/PID/status} as a mapping.
    """
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def rssKiB(pid: int) -> int:
    """
    The resident set size of C{pid}, in KiB.
    """
    return int(status(pid)["VmRSS"].split()[0])


def fdTargets(pid: int) -> list[str]:
    """
    What each open descriptor of C{pid} refers to (C{readlink} of
    C{/proc/PID/fd/N}), sorted.
    """
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return sorted(targets)


def stateAndParent(pid: int) -> tuple[str, int] | None:
    """
    The state letter and parent pid of C{pid}, or L{None} when it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def children(pid: int) -> dict[int, str]:
    """
    The children of C{pid}: C{{child pid: state letter}}.
    """
    found = {}
    for candidate in host.pids():
        info = stateAndParent(candidate)
        if info is not None and info[1] == pid:
            found[candidate] = info[0]
    return found


def zombies(pid: int) -> list[int]:
    """
    Children of C{pid} that have exited and not been reaped.
    """
    return sorted(child for child, state in children(pid).items() if state == "Z")


def kinds(targets: list[str]) -> Counter[str]:
    """
    Descriptor targets counted by kind (C{socket}, C{pipe}, C{anon_inode},
    or the file's path), so that a difference names what leaked.
    """
    counted: Counter[str] = Counter()
    for target in targets:
        if target.startswith(("socket:", "pipe:")):
            counted[target.split(":", 1)[0]] += 1
        elif target.startswith("anon_inode:"):
            counted[target] += 1
        else:
            counted[target] += 1
    return counted


@dataclass
class Snapshot:
    """
    What a process holds at one moment.
    """

    pid: int
    rss: int
    fds: list[str] = field(default_factory=list)
    zombies: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, pid: int) -> Snapshot:
        return cls(pid, rssKiB(pid), fdTargets(pid), zombies(pid))

    def fdDifference(self, later: Snapshot) -> str:
        """
        The descriptors held in C{later} and not now, or the reverse, by
        kind; empty when the same.
        """
        before, after = kinds(self.fds), kinds(later.fds)
        grown = after - before
        shrunk = before - after
        parts = []
        if grown:
            parts.append(f"more: {dict(grown)}")
        if shrunk:
            parts.append(f"fewer: {dict(shrunk)}")
        return "; ".join(parts)


def socketInodes(pid: int) -> set[int]:
    """
    Inodes of the sockets C{pid} has open.
    """
    inodes = set()
    for target in fdTargets(pid):
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def unixSocketNames(inodes: set[int]) -> dict[int, str]:
    """
    The names C{/proc/net/unix} gives the unix sockets among C{inodes}
    (an abstract name starts with C{@}; unnamed sockets are left out).
    """
    names = {}
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and int(fields[6]) in inodes:
                names[int(fields[6])] = fields[7]
    return names
