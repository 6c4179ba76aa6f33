# -*- test-case-name: tests.test_cgroups -*-
"""
The mount table, C{/proc/<pid>/mountinfo}: where cgroup hierarchies are
mounted and what filesystem a path is on.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from shimd.runc.cgroups.files import readText

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """
    One line of C{/proc/<pid>/mountinfo}, the fields we use.

    @ivar root: the path, inside its filesystem, that is mounted.
    @ivar mountPoint: where it is mounted.
    @ivar fsType: C{cgroup}, C{cgroup2}, C{tmpfs}...
    @ivar superOptions: the per-superblock options; for a v1 cgroup mount,
        its controllers (and C{name=...} for a named hierarchy).
    """

    root: str
    mountPoint: str
    fsType: str
    superOptions: tuple[str, ...]


def unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parseMountInfo(text: str) -> list[Mount]:
    """
    Parse the text of a C{mountinfo} file; malformed lines are skipped.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            fsType = fields[separator + 1]
            superOptions = fields[separator + 3]
        except (ValueError, IndexError):
            continue
        mounts.append(
            Mount(
                root=unescape(fields[3]),
                mountPoint=unescape(fields[4]),
                fsType=fsType,
                superOptions=tuple(superOptions.split(",")),
            )
        )
    return mounts


def readMountInfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    return parseMountInfo(readText(path))
