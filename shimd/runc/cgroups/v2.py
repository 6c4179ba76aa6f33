# -*- test-case-name: tests.test_cgroups -*-
"""
A cgroup on a unified (v2) host and its statistics, filled into
C{io.containerd.cgroups.v2.Metrics} as the C{v2} package of
C{github.com/containerd/cgroups} fills it.
"""

from __future__ import annotations

import os

from twisted.logger import Logger
from zope.interface import implementer

from shimd.interfaces import ICgroup
from shimd.protos import cgroups_v2_pb2
from shimd.runc.cgroups.errors import CgroupError, CgroupNotFound
from shimd.runc.cgroups.files import (
    MAX_UINT64,
    parseKeyValuesV2,
    parseUint,
    rdmaEntries,
    readText,
    strictUint,
    uintOrZero,
)
from shimd.runc.cgroups.mode import CGROUP_ROOT

V2_TYPE_URL = cgroups_v2_pb2.Metrics.DESCRIPTOR.full_name

# v2 MemoryStat fields 1-31 are read from the memory.stat key of the same
# name.
V2_MEMORY_STAT_FIELDS = tuple(
    field.name
    for field in cgroups_v2_pb2.MemoryStat.DESCRIPTOR.fields
    if field.number <= 31
)
_V2_MEMORY_FILES = (
    ("usage", "memory.current"),
    ("usage_limit", "memory.max"),
    ("swap_usage", "memory.swap.current"),
    ("swap_limit", "memory.swap.max"),
)
_V2_CPU_FIELDS = (
    "usage_usec",
    "user_usec",
    "system_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
)
V2_MEMORY_EVENTS = ("low", "high", "max", "oom", "oom_kill")

log = Logger()


@implementer(ICgroup)
class V2Cgroup:
    """
    A cgroup on a unified (v2) host: one directory.

    @ivar path: the cgroup's directory.
    @ivar mountPoint: the cgroup2 mount it is under.
    """

    typeURL = V2_TYPE_URL

    def __init__(self, path: str, mountPoint: str = CGROUP_ROOT) -> None:
        self.path = path
        self.mountPoint = mountPoint

    def __repr__(self) -> str:
        return f"<V2Cgroup {self.path!r}>"

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _readKeyValues(self, name: str) -> dict[str, int | str]:
        path = self._file(name)
        return parseKeyValuesV2(readText(path), path)

    def stats(self) -> cgroups_v2_pb2.Metrics:
        """
        Read the statistics the Go C{Manager.Stat} reads.

        @raise CgroupNotFound: the cgroup is gone (its C{cgroup.controllers}
            does not exist), which fails the Go call too.
        @raise CgroupError: a file could not be read or is malformed.
        """
        try:
            return self._stats()
        except FileNotFoundError as e:
            raise CgroupNotFound(str(e)) from e
        except OSError as e:
            raise CgroupError(str(e)) from e

    def _stats(self) -> cgroups_v2_pb2.Metrics:
        controllers = readText(self._file("cgroup.controllers")).split()
        values: dict[str, int | str] = {}
        for controller in controllers:
            if controller in ("cpu", "memory"):
                try:
                    values.update(self._readKeyValues(controller + ".stat"))
                except FileNotFoundError:
                    continue
        for name in ("pids.current", "pids.max"):
            try:
                text = readText(self._file(name)).strip()
            except FileNotFoundError:
                continue
            try:
                values[name] = parseUint(text)
            except CgroupError:
                values[name] = text
        try:
            events = self._readKeyValues("memory.events")
        except FileNotFoundError:
            events = {}

        metrics = cgroups_v2_pb2.Metrics()
        metrics.pids.current = _pidValue(values.get("pids.current"))
        metrics.pids.limit = _pidValue(values.get("pids.max"))
        metrics.cpu.SetInParent()
        for field in _V2_CPU_FIELDS:
            setattr(metrics.cpu, field, uintOrZero(values, field))
        memory = metrics.memory
        memory.SetInParent()
        for field in V2_MEMORY_STAT_FIELDS:
            setattr(memory, field, uintOrZero(values, field))
        for field, name in _V2_MEMORY_FILES:
            setattr(memory, field, self._singleValue(name))
        if events:
            metrics.memory_events.SetInParent()
            for field in V2_MEMORY_EVENTS:
                setattr(metrics.memory_events, field, uintOrZero(events, field))
        metrics.io.SetInParent()
        metrics.io.usage.extend(self._ioStats())
        metrics.rdma.SetInParent()
        for name, entries in (
            ("rdma.current", metrics.rdma.current),
            ("rdma.max", metrics.rdma.limit),
        ):
            try:
                lines = readText(self._file(name)).split("\n")
            except OSError:
                continue
            entries.extend(rdmaEntries(lines, cgroups_v2_pb2.RdmaEntry))
        metrics.hugetlb.extend(self._hugetlbStats())
        return metrics

    def _singleValue(self, name: str) -> int:
        """
        A single-value file: C{max} is 2^64-1; an unreadable file is 0, and
        so is one that does not parse (logged).
        """
        try:
            text = readText(self._file(name)).strip()
        except OSError:
            return 0
        if text == "max":
            return MAX_UINT64
        try:
            return parseUint(text)
        except CgroupError:
            log.error(
                "unable to parse {text!r} as a uint from cgroup file {path!r}",
                text=text,
                path=self._file(name),
            )
            return 0

    def _ioStats(self) -> list[cgroups_v2_pb2.IOEntry]:
        """
        Parse C{io.stat} (C{8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0
        dios=0}); an unreadable file gives no entries, and a bad device
        number ends the list there.
        """
        usage: list[cgroups_v2_pb2.IOEntry] = []
        try:
            text = readText(self._file("io.stat"))
        except OSError:
            return usage
        for line in text.split("\n"):
            parts = line.split(" ")
            if len(parts) < 2:
                continue
            device = parts[0].split(":")
            if len(device) != 2:
                continue
            try:
                major = strictUint(device[0])
                minor = strictUint(device[1])
            except CgroupError:
                return usage
            entry = cgroups_v2_pb2.IOEntry(major=major, minor=minor)
            for pair in parts[1:]:
                keyValue = pair.split("=")
                if len(keyValue) != 2:
                    continue
                try:
                    value = strictUint(keyValue[1])
                except CgroupError:
                    continue
                if keyValue[0] in ("rbytes", "wbytes", "rios", "wios"):
                    setattr(entry, keyValue[0], value)
            usage.append(entry)
        return usage

    def _hugetlbStats(self) -> list[cgroups_v2_pb2.HugeTlbStat]:
        """
        One entry per page size with C{hugetlb.<size>.current} or
        C{.max} files (C{max} is 2^64-1), in file-name order (the Go package
        gives them in map order, which is random).
        """
        stats: dict[str, cgroups_v2_pb2.HugeTlbStat] = {}
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return []
        for name in names:
            if "hugetlb" not in name or not name.endswith(("max", "current")):
                continue
            parts = name.split(".")
            if len(parts) < 3:
                continue
            try:
                text = readText(self._file(name)).strip()
            except OSError:
                continue
            if text == "max":
                value = MAX_UINT64
            else:
                try:
                    value = strictUint(text)
                except CgroupError:
                    continue
            stat = stats.setdefault(
                parts[1], cgroups_v2_pb2.HugeTlbStat(pagesize=parts[1])
            )
            if parts[2] == "max":
                stat.max = value
            elif parts[2] == "current":
                stat.current = value
        return list(stats.values())

    def enableControllers(self) -> None:
        """
        Enable, in every ancestor of this cgroup from the mount point down
        (not in the cgroup itself), every controller the root offers, by
        writing C{+<controller> ...} to its C{cgroup.subtree_control}: what
        the Go shim does at C{Start} of a container's init.

        Failures are logged, not raised: only the last write's error counts,
        as in Go, where a rootless shim may be refused a parent's file whose
        controllers are already on.
        """
        try:
            controllers = readText(
                os.path.join(self.mountPoint, "cgroup.controllers")
            ).split()
        except OSError as e:
            log.error("failed to get root controllers: {error}", error=e)
            return
        data = " ".join("+" + controller for controller in controllers)
        mountPoint = os.path.normpath(self.mountPoint)
        relative = os.path.relpath(os.path.normpath(self.path), mountPoint)
        ancestors = []
        if relative != "." and not relative.startswith(".."):
            parts = relative.split(os.sep)
            ancestors = [
                os.path.join(mountPoint, *parts[:depth]) for depth in range(len(parts))
            ]
        lastError: OSError | None = None
        for ancestor in ancestors:
            path = os.path.join(ancestor, "cgroup.subtree_control")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, data.encode())
                finally:
                    os.close(fd)
            except OSError as e:
                lastError = e
            else:
                lastError = None
        if lastError is not None:
            level = log.debug if runningInUserNS() else log.error
            level(
                "failed to enable controllers ({controllers}): {error}",
                controllers=controllers,
                error=lastError,
            )


def _pidValue(value: int | str | None) -> int:
    if isinstance(value, int):
        return value
    return MAX_UINT64 if value == "max" else 0


def runningInUserNS(uidMap: str = "/proc/self/uid_map") -> bool:
    """
    Whether this process runs in a user namespace: its uid map is anything
    but the full identity range.
    """
    try:
        fields = readText(uidMap).split()[:3]
    except OSError:
        return False
    return fields != ["0", "0", "4294967295"]
