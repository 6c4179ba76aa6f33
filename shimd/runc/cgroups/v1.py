# -*- test-case-name: tests.test_cgroups -*-
"""
A cgroup on a v1 (legacy or hybrid) host and its statistics, filled into
C{io.containerd.cgroups.v1.Metrics} as C{github.com/containerd/cgroups}
fills it, including which sub-messages are present although empty, because
that is visible on the wire.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from shimd.interfaces import ICgroup
from shimd.protos import cgroups_v1_pb2
from shimd.runc.cgroups.errors import CgroupError
from shimd.runc.cgroups.files import (
    MAX_UINT64,
    parseKeyValues,
    parseUint,
    rdmaEntries,
    readText,
    readUint,
    strictUint,
)

PROC_ROOT = "/proc"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"

# USER_HZ, which cpuacct.stat counts in. The Go package hard-codes it too:
# it is 100 on every Linux architecture.
CLOCK_TICKS = 100
NANOSECONDS_PER_SECOND = 1_000_000_000

V1_TYPE_URL = cgroups_v1_pb2.Metrics.DESCRIPTOR.full_name

# v1 MemoryStat fields 1-32 whose memory.stat key is not the field's name
# (cgroups/memory.go, parseStats); every other field is read from the key of
# its own name.
_V1_MEMORY_KEYS = {
    "pg_pg_in": "pgpgin",
    "pg_pg_out": "pgpgout",
    "pg_fault": "pgfault",
    "pg_maj_fault": "pgmajfault",
    "hierarchical_swap_limit": "hierarchical_memsw_limit",
    "total_pg_pg_in": "total_pgpgin",
    "total_pg_pg_out": "total_pgpgout",
    "total_pg_fault": "total_pgfault",
    "total_pg_maj_fault": "total_pgmajfault",
}
V1_MEMORY_STAT_FIELDS = tuple(
    (field.name, _V1_MEMORY_KEYS.get(field.name, field.name))
    for field in cgroups_v1_pb2.MemoryStat.DESCRIPTOR.fields
    if field.number <= 32
)

# The MemoryEntry fields and the file each is read from, per module.
_V1_MEMORY_MODULES = (
    ("usage", "memory."),
    ("swap", "memory.memsw."),
    ("kernel", "memory.kmem."),
    ("kernel_tcp", "memory.kmem.tcp."),
)
_V1_MEMORY_ENTRY_FILES = (
    ("usage", "usage_in_bytes"),
    ("max", "max_usage_in_bytes"),
    ("failcnt", "failcnt"),
    ("limit", "limit_in_bytes"),
)

# The CFQ blkio files and the BlkIOStat field each fills, in the order the
# Go package reads them; then the throttle files it falls back to.
_V1_BLKIO_CFQ = (
    ("sectors_recursive", "sectors_recursive"),
    ("io_service_bytes_recursive", "io_service_bytes_recursive"),
    ("io_serviced_recursive", "io_serviced_recursive"),
    ("io_queued_recursive", "io_queued_recursive"),
    ("io_service_time_recursive", "io_service_time_recursive"),
    ("io_wait_time_recursive", "io_wait_time_recursive"),
    ("io_merged_recursive", "io_merged_recursive"),
    ("time_recursive", "io_time_recursive"),
)
_V1_BLKIO_THROTTLE = (
    ("throttle.io_serviced", "io_serviced_recursive"),
    ("throttle.io_service_bytes", "io_service_bytes_recursive"),
)

_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", re.ASCII)
_BINARY_MULTIPLIERS = {
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
}
_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")

log = Logger()


def _ticksToNanoseconds(ticks: int) -> int:
    """
    Convert C{cpuacct.stat} ticks to nanoseconds with Go's uint64
    arithmetic, which wraps before it divides (after 5.8 years of CPU time,
    so only in theory).
    """
    return ((ticks * NANOSECONDS_PER_SECOND) & MAX_UINT64) // CLOCK_TICKS


@implementer(ICgroup)
class V1Cgroup:
    """
    A cgroup on a v1 (legacy or hybrid) host: one directory per controller.

    @ivar paths: the absolute directory of each controller, for the
        controllers the process was in when it was loaded and whose
        directory existed then.
    """

    typeURL = V1_TYPE_URL

    def __init__(
        self,
        paths: Mapping[str, str],
        procRoot: str = PROC_ROOT,
        hugePagesDir: str = HUGEPAGES_DIR,
    ) -> None:
        """
        @param paths: the directory of each controller.
        @param procRoot: where C{partitions} is read from.
        @param hugePagesDir: lists the huge page sizes the hugetlb files
            are named by.
        """
        self.paths = dict(paths)
        self._procRoot = procRoot
        self._hugePagesDir = hugePagesDir
        self._hugePageSizes: list[str] | None = None

    def __repr__(self) -> str:
        return f"<V1Cgroup {self.paths!r}>"

    @property
    def memoryPath(self) -> str | None:
        """
        The memory cgroup's directory, where OOM events are registered.
        """
        return self.paths.get("memory")

    def exists(self) -> bool:
        """
        Whether every controller directory still exists: the Go package
        calls the cgroup deleted as soon as one is gone.
        """
        return all(os.path.lexists(path) for path in self.paths.values())

    def enableControllers(self) -> None:
        """
        Nothing: on v1 every controller is a hierarchy of its own.
        """

    def stats(self) -> cgroups_v1_pb2.Metrics:
        """
        Read the statistics the Go package's C{Stat(cgroups.IgnoreNotExist)}
        reads: each controller's files in turn, stopping that controller at
        the first file that does not exist and keeping what it filled so far.

        @raise CgroupError: a file could not be read for another reason, or
            is malformed; the Go shim fails the whole call then, too.
        """
        metrics = cgroups_v1_pb2.Metrics()
        metrics.cpu.usage.SetInParent()
        metrics.cpu.throttling.SetInParent()
        readers: tuple[tuple[str, Callable[[str, Any], None]], ...] = (
            ("hugetlb", self._hugetlb),
            ("pids", self._pids),
            ("cpu", self._cpu),
            ("cpuacct", self._cpuacct),
            ("memory", self._memory),
            ("blkio", self._blkio),
            ("rdma", self._rdma),
        )
        for controller, reader in readers:
            directory = self.paths.get(controller)
            if directory is None:
                continue
            try:
                reader(directory, metrics)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise CgroupError(f"{controller}: {e}") from e
        return metrics

    def _pageSizes(self) -> list[str]:
        if self._hugePageSizes is None:
            try:
                self._hugePageSizes = hugePageSizes(self._hugePagesDir)
            except (OSError, CgroupError) as e:
                log.debug("no huge page sizes: {error}", error=e)
                self._hugePageSizes = []
        return self._hugePageSizes

    def _hugetlb(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        for size in self._pageSizes():
            stat = cgroups_v1_pb2.HugetlbStat(pagesize=size)
            prefix = os.path.join(directory, f"hugetlb.{size}.")
            stat.usage = readUint(prefix + "usage_in_bytes")
            stat.max = readUint(prefix + "max_usage_in_bytes")
            stat.failcnt = readUint(prefix + "failcnt")
            metrics.hugetlb.append(stat)

    def _pids(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        current = readUint(os.path.join(directory, "pids.current"))
        maximum = readText(os.path.join(directory, "pids.max")).strip()
        limit = 0 if maximum == "max" else parseUint(maximum)
        metrics.pids.current = current
        metrics.pids.limit = limit

    def _cpu(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        path = os.path.join(directory, "cpu.stat")
        throttling = metrics.cpu.throttling
        for key, value in parseKeyValues(readText(path), path).items():
            if key == "nr_periods":
                throttling.periods = value
            elif key == "nr_throttled":
                throttling.throttled_periods = value
            elif key == "throttled_time":
                throttling.throttled_time = value

    def _cpuacct(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        statPath = os.path.join(directory, "cpuacct.stat")
        fields = readText(statPath).split()
        if len(fields) != 4:
            raise CgroupError(f"{statPath!r} is expected to have 4 fields")
        if fields[0] != "user" or fields[2] != "system":
            raise CgroupError(f"unexpected fields in {statPath!r}: {fields!r}")
        user = _ticksToNanoseconds(strictUint(fields[1]))
        kernel = _ticksToNanoseconds(strictUint(fields[3]))
        total = readUint(os.path.join(directory, "cpuacct.usage"))
        perCPU = [
            strictUint(value)
            for value in readText(
                os.path.join(directory, "cpuacct.usage_percpu")
            ).split()
        ]
        usage = metrics.cpu.usage
        usage.total = total
        usage.user = user
        usage.kernel = kernel
        usage.per_cpu[:] = perCPU

    def _memory(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        statPath = os.path.join(directory, "memory.stat")
        text = readText(statPath)
        memory = metrics.memory
        memory.SetInParent()
        for field, _ in _V1_MEMORY_MODULES:
            getattr(memory, field).SetInParent()
        raw = parseKeyValues(text, statPath)
        for field, key in V1_MEMORY_STAT_FIELDS:
            setattr(memory, field, raw.get(key, 0))

        oomPath = os.path.join(directory, "memory.oom_control")
        text = readText(oomPath)
        oomControl = metrics.memory_oom_control
        oomControl.SetInParent()
        raw = parseKeyValues(text, oomPath)
        oomControl.oom_kill_disable = raw.get("oom_kill_disable", 0)
        oomControl.under_oom = raw.get("under_oom", 0)
        oomControl.oom_kill = raw.get("oom_kill", 0)

        for field, prefix in _V1_MEMORY_MODULES:
            entry = getattr(memory, field)
            for entryField, name in _V1_MEMORY_ENTRY_FILES:
                setattr(
                    entry, entryField, readUint(os.path.join(directory, prefix + name))
                )

    def _blkio(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        blkio = metrics.blkio
        blkio.SetInParent()
        settings: tuple[tuple[str, str], ...] = ()
        if os.path.lexists(os.path.join(directory, "blkio.io_serviced_recursive")):
            settings = _V1_BLKIO_CFQ
        devices = parsePartitions(readText(os.path.join(self._procRoot, "partitions")))
        size = 0
        for name, field in settings:
            size += self._blkioEntries(devices, directory, name, getattr(blkio, field))
        if size > 0:
            return
        # Even with CFQ in the kernel, the cgroup's devices may use another
        # scheduler: then the throttle files are all there is.
        for name, field in _V1_BLKIO_THROTTLE:
            self._blkioEntries(devices, directory, name, getattr(blkio, field))

    def _blkioEntries(
        self,
        devices: Mapping[tuple[int, int], str],
        directory: str,
        name: str,
        entries: Any,
    ) -> int:
        """
        Append the entries of one blkio file to a repeated field.

        @return: how many were appended.
        """
        path = os.path.join(directory, "blkio." + name)
        count = 0
        for line in readText(path).splitlines():
            fields = [field for field in re.split(r"[ :]", line) if field]
            if len(fields) < 3:
                if len(fields) == 2 and fields[0] == "Total":
                    continue
                raise CgroupError(f"invalid line found while parsing {path}: {line}")
            major = strictUint(fields[0])
            minor = strictUint(fields[1])
            op = ""
            valueField = 2
            if len(fields) == 4:
                op = fields[2]
                valueField = 3
            value = strictUint(fields[valueField])
            entries.add(
                op=op,
                device=devices.get((major, minor), ""),
                major=major,
                minor=minor,
                value=value,
            )
            count += 1
        return count

    def _rdma(self, directory: str, metrics: cgroups_v1_pb2.Metrics) -> None:
        current = readText(os.path.join(directory, "rdma.current")).split("\n")
        limit = readText(os.path.join(directory, "rdma.max")).split("\n")
        # A device removed between the two reads: no rdma statistics.
        if len(current) != len(limit):
            return
        rdma = metrics.rdma
        rdma.SetInParent()
        rdma.current.extend(rdmaEntries(current, cgroups_v1_pb2.RdmaEntry))
        rdma.limit.extend(rdmaEntries(limit, cgroups_v1_pb2.RdmaEntry))


def parsePartitions(text: str) -> dict[tuple[int, int], str]:
    """
    Device names by (major, minor) from the text of C{/proc/partitions}: the
    first name of a device number wins, as in the Go package.
    """
    devices: dict[tuple[int, int], str] = {}
    for line in text.splitlines()[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            key = (int(fields[0]), int(fields[1]))
        except ValueError as e:
            raise CgroupError(f"invalid partitions line {line!r}") from e
        devices.setdefault(key, "/dev/" + fields[3])
    return devices


def _goFloat(value: float) -> str:
    """
    Format a float as Go's C{%g} does for the sizes we meet.
    """
    return str(int(value)) if value.is_integer() else repr(value)


def hugePageSizes(directory: str = HUGEPAGES_DIR) -> list[str]:
    """
    The host's huge page sizes as the v1 hugetlb files name them
    (C{hugepages-2048kB} is C{2MB}), in directory order.

    @raise OSError: the directory cannot be listed.
    @raise CgroupError: an entry is not named C{hugepages-<size>}.
    """
    sizes = []
    for name in sorted(os.listdir(directory)):
        parts = name.split("-")
        match = _SIZE.fullmatch(parts[1]) if len(parts) > 1 else None
        if match is None:
            raise CgroupError(f"invalid huge page size in {name!r}")
        multiplier = _BINARY_MULTIPLIERS.get((match.group(2) or "").lower(), 1)
        # go-units' RAMInBytes truncates to an integer number of bytes.
        size = float(int(float(match.group(1)) * multiplier))
        unit = 0
        while size >= 1024 and unit < len(_SIZE_UNITS) - 1:
            size /= 1024
            unit += 1
        sizes.append(_goFloat(size) + _SIZE_UNITS[unit])
    return sizes
