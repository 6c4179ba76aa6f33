# -*- test-case-name: tests.test_cgroups -*-
"""
Which cgroup mode the host runs: the one answer the launcher (standard
library only) and the runc shim both use.

Go's C{cgroups.Mode()} (C{github.com/containerd/cgroups}) calls C{statfs}
on C{/sys/fs/cgroup}: a cgroup2 filesystem there is I{unified}; anything
else is I{legacy}, or I{hybrid} when C{/sys/fs/cgroup/unified} is cgroup2.
The shim treats only unified as v2: a hybrid host (v1 controllers, with
cgroup2 mounted at C{/sys/fs/cgroup/unified}) is a v1 host, as it is for
the Go shim. Python's standard library has no C{statfs}, so the
filesystem type comes from the mount table instead, which gives the same
answer: the type of the mount the path is on.
"""

from __future__ import annotations

import os

from shimd.runc.cgroups.mountinfo import readMountInfo

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroupMode(root: str = CGROUP_ROOT, mountinfo: str = "/proc/self/mountinfo") -> str:
    """
    The cgroup mode, as the shim uses it.

    Go's C{cgroups.Mode()} calls C{statfs} on C{/sys/fs/cgroup}; the same
    answer comes from the filesystem type of the mount C{root} is on: the
    mount with the longest mount point containing it (the last one, when
    several are stacked there), which on any sane host is a mount on
    C{root} itself.

    @param root: the cgroup mount point to check.
    @param mountinfo: the C{mountinfo} file to read.
    @return: C{"v2"} when C{root} is a cgroup2 mount (unified), C{"v1"}
        otherwise: legacy, hybrid, or nothing known.
    """
    try:
        mounts = readMountInfo(mountinfo)
    except OSError:
        return "v1"
    target = os.path.normpath(root)
    fsType = None
    longest = -1
    for mount in mounts:
        mountPoint = mount.mountPoint
        contains = target == mountPoint or target.startswith(
            mountPoint.rstrip("/") + "/"
        )
        if contains and len(mountPoint) >= longest:
            longest = len(mountPoint)
            fsType = mount.fsType
    return "v2" if fsType == "cgroup2" else "v1"
