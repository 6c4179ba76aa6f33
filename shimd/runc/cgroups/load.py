# -*- test-case-name: tests.test_cgroups -*-
"""
Finding a process's cgroup: C{/proc/<pid>/cgroup} read against the mount
table, as the Go shim loads the container's cgroup at C{Create}.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from shimd.runc.cgroups.errors import CgroupError, CgroupNotFound
from shimd.runc.cgroups.files import readText
from shimd.runc.cgroups.mode import CGROUP_ROOT, cgroupMode
from shimd.runc.cgroups.mountinfo import Mount, readMountInfo
from shimd.runc.cgroups.v1 import HUGEPAGES_DIR, PROC_ROOT, V1Cgroup
from shimd.runc.cgroups.v2 import V2Cgroup

# The v1 controllers the Go package knows (cgroups.defaults), minus the
# named systemd hierarchy, which is not a controller.
V1_CONTROLLERS = (
    "freezer",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "blkio",
    "rdma",
    "devices",
    "hugetlb",
)


def parseProcCgroup(text: str) -> tuple[dict[str, str], str | None]:
    """
    Parse a C{/proc/<pid>/cgroup} file.

    @return: the v1 path of every hierarchy, keyed by controller (a line
        C{3:cpu,cpuacct:/a} gives both C{cpu} and C{cpuacct}; named
        hierarchies appear as C{name=systemd}), and the v2 path from the
        C{0::} line, or L{None}.
    @raise CgroupError: for a line without three fields.
    """
    controllers: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            raise CgroupError(f"invalid cgroup entry: {line!r}")
        hierarchy, names, path = parts
        if names == "":
            if hierarchy == "0" and unified is None:
                unified = path
            continue
        for name in names.split(","):
            controllers[name] = path
    return controllers, unified


def _v1Directory(
    mounts: Iterable[Mount], controller: str, path: str, root: str
) -> str | None:
    """
    The directory of a v1 cgroup: C{path} (from C{/proc/<pid>/cgroup}) made
    relative to the root of the controller's mount, under its mount point.
    The first mount of the controller directly under C{root} is preferred,
    as the Go package only ever looks in C{/sys/fs/cgroup/<controller>}.
    """
    candidates = [
        mount
        for mount in mounts
        if mount.fsType == "cgroup" and controller in mount.superOptions
    ]
    if not candidates:
        return None
    preferred = [
        mount
        for mount in candidates
        if os.path.dirname(mount.mountPoint) == os.path.normpath(root)
    ]
    mount = (preferred or candidates)[0]
    mountRoot = mount.root.rstrip("/")
    if path == mountRoot or path.startswith(mountRoot + "/"):
        path = path[len(mountRoot) :]
    return os.path.normpath(mount.mountPoint + "/" + path.lstrip("/"))


def loadCgroup(
    pid: int,
    mode: str | None = None,
    procRoot: str = PROC_ROOT,
    root: str = CGROUP_ROOT,
    mountinfo: str | None = None,
    hugePagesDir: str = HUGEPAGES_DIR,
) -> V1Cgroup | V2Cgroup:
    """
    Load the cgroup of a running process (the container's init), as the Go
    shim does at C{Create} (C{runtime/v2/runc/container.go}).

    @param pid: the process.
    @param mode: C{"v1"} or C{"v2"}; by default, L{cgroupMode} of C{root}.
    @param procRoot: where C{/proc} is; C{<procRoot>/<pid>/cgroup} is read,
        and C{<procRoot>/partitions} for blkio device names.
    @param root: the cgroup2 mount point (v2; and, by default, where the
        mode is detected).
    @param mountinfo: the mount table to find v1 mounts in; by default
        C{<procRoot>/self/mountinfo}.
    @param hugePagesDir: lists the host's huge page sizes, for v1 hugetlb.
    @raise CgroupNotFound: the process is gone, or no directory of its
        cgroup exists.
    @raise CgroupError: the cgroup file is malformed, or names no cgroup of
        the mode.
    """
    if mountinfo is None:
        mountinfo = os.path.join(procRoot, "self", "mountinfo")
    if mode is None:
        mode = cgroupMode(root, mountinfo)
    cgroupFile = os.path.join(procRoot, str(pid), "cgroup")
    try:
        text = readText(cgroupFile)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise CgroupNotFound(f"process {pid} not found: {e}") from e
    except OSError as e:
        raise CgroupError(f"parse cgroup file {cgroupFile}: {e}") from e
    controllers, unified = parseProcCgroup(text)
    if mode == "v2":
        if unified is None:
            raise CgroupError(f"cgroup path not found in {cgroupFile}")
        if (
            not unified.startswith("/")
            or os.path.normpath(unified) != unified
            or unified.startswith(CGROUP_ROOT)
        ):
            raise CgroupError(f"cgroups: invalid group path {unified!r}")
        path = os.path.normpath(root + unified)
        if not os.path.isdir(path):
            raise CgroupNotFound(f"cgroup {path} of process {pid} does not exist")
        return V2Cgroup(path, root)
    try:
        mounts = readMountInfo(mountinfo)
    except OSError as e:
        raise CgroupError(f"cannot read the mount table: {e}") from e
    paths = {}
    for controller in V1_CONTROLLERS:
        if controller not in controllers:
            continue
        directory = _v1Directory(mounts, controller, controllers[controller], root)
        if directory is not None and os.path.lexists(directory):
            paths[controller] = directory
    if not paths:
        raise CgroupNotFound(f"cgroups: cgroup of process {pid} deleted")
    return V1Cgroup(paths, procRoot=procRoot, hugePagesDir=hugePagesDir)
