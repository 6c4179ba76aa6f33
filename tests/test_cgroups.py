# -*- test-case-name: tests.test_cgroups -*-
"""
Tests for L{shimd.runc.cgroups}: mode detection, loading a process's cgroup,
v1 and v2 statistics from fixture trees, the OOM watchers on a real
reactor, and (as root on a cgroup v1 host) the real thing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import ICgroup, IOOMWatcher
from shimd.protos import cgroups_v1_pb2, cgroups_v2_pb2
from shimd.runc.cgroups.errors import CgroupError, CgroupNotFound
from shimd.runc.cgroups.files import MAX_UINT32, MAX_UINT64, parseUint
from shimd.runc.cgroups.load import loadCgroup, parseProcCgroup
from shimd.runc.cgroups.mode import cgroupMode
from shimd.runc.cgroups.mountinfo import parseMountInfo
from shimd.runc.cgroups.oom import V1OOMWatcher, V2OOMWatcher, newOOMWatcher
from shimd.runc.cgroups.v1 import V1_TYPE_URL, V1Cgroup, hugePageSizes
from shimd.runc.cgroups.v2 import V2_TYPE_URL, V2Cgroup
from tests.fakes import FakeCgroup, FakeOOMWatcher, FakeV2Cgroup


def words(text: str) -> list[str]:
    return text.split()


def writeTree(base: str, files: Mapping[str, str]) -> None:
    """
    Create files (and their directories) under C{base}.
    """
    for name, content in files.items():
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)


def mountLine(
    mountID: int, mountPoint: str, fsType: str, superOptions: str, root: str = "/"
) -> str:
    """
    A C{mountinfo} line, as the kernel writes it.
    """
    escaped = mountPoint.replace(" ", "\\040")
    optional = "shared:5 " if fsType.startswith("cgroup") else ""
    return (
        f"{mountID} 25 0:{mountID} {root} {escaped} rw,nosuid,nodev,noexec,relatime "
        f"{optional}- {fsType} {fsType} {superOptions}"
    )


HYBRID_MOUNTINFO = "\n".join(
    [
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        mountLine(31, "/sys/fs/cgroup", "tmpfs", "ro,mode=755"),
        mountLine(32, "/sys/fs/cgroup/unified", "cgroup2", "rw,nsdelegate"),
        mountLine(33, "/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
        mountLine(34, "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        mountLine(35, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        "",
    ]
)
LEGACY_MOUNTINFO = "\n".join(
    [
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        mountLine(31, "/sys/fs/cgroup", "tmpfs", "ro,mode=755"),
        mountLine(34, "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        mountLine(35, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        "",
    ]
)
UNIFIED_MOUNTINFO = "\n".join(
    [
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        mountLine(
            31, "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate,memory_recursiveprot"
        ),
        "",
    ]
)


class ModeTests(SynchronousTestCase):
    """
    L{cgroupMode} reads the filesystem type of the mount on the root.
    """

    def mode(self, text: str, root: str = "/sys/fs/cgroup") -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return cgroupMode(root, mountinfo=path)

    def test_unified(self) -> None:
        self.assertEqual(self.mode(UNIFIED_MOUNTINFO), "v2")
        self.assertEqual(self.mode(UNIFIED_MOUNTINFO, "/sys/fs/cgroup/"), "v2")

    def test_hybrid(self) -> None:
        """
        cgroup2 at C{/sys/fs/cgroup/unified} does not make a v2 host.
        """
        self.assertEqual(self.mode(HYBRID_MOUNTINFO), "v1")

    def test_legacy(self) -> None:
        self.assertEqual(self.mode(LEGACY_MOUNTINFO), "v1")

    def test_unknown(self) -> None:
        """
        Nothing mounted on the root, or no mount table at all: v1.
        """
        self.assertEqual(self.mode("22 1 254:0 / / rw - ext4 /dev/vda rw\n"), "v1")
        self.assertEqual(cgroupMode(mountinfo=self.mktemp()), "v1")

    def test_stacked(self) -> None:
        """
        Of two mounts on the root, the later one is on top.
        """
        text = UNIFIED_MOUNTINFO + mountLine(40, "/sys/fs/cgroup", "tmpfs", "rw")
        self.assertEqual(self.mode(text), "v1")
        text = LEGACY_MOUNTINFO + mountLine(40, "/sys/fs/cgroup", "cgroup2", "rw")
        self.assertEqual(self.mode(text), "v2")

    def test_containingMount(self) -> None:
        """
        Like C{statfs}, the answer is the filesystem C{root} is on, even
        when it is not a mount point itself.
        """
        text = mountLine(31, "/sys/fs", "cgroup2", "rw")
        self.assertEqual(self.mode(text), "v2")
        text = mountLine(31, "/sys/fs/cgroup", "cgroup2", "rw")
        self.assertEqual(self.mode(text, "/sys/fs/cgroupx"), "v1")
        self.assertEqual(self.mode(text, "/sys/fs"), "v1")
        self.assertEqual(self.mode(UNIFIED_MOUNTINFO, "/sys/fs/cgroup/a/b"), "v2")

    def test_escapedMountPoint(self) -> None:
        text = mountLine(31, "/tmp/my cgroups", "cgroup2", "rw")
        self.assertEqual(self.mode(text, "/tmp/my cgroups"), "v2")

    def test_parseMountInfo(self) -> None:
        """
        Optional fields are skipped; super options are split; malformed
        lines are ignored.
        """
        mounts = parseMountInfo(HYBRID_MOUNTINFO + "garbage\n")
        self.assertEqual(len(mounts), 6)
        cpu = mounts[4]
        self.assertEqual(cpu.mountPoint, "/sys/fs/cgroup/cpu,cpuacct")
        self.assertEqual(cpu.root, "/")
        self.assertEqual(cpu.fsType, "cgroup")
        self.assertEqual(cpu.superOptions, ("rw", "cpu", "cpuacct"))

    def test_thisHost(self) -> None:
        """
        The real mount table gives an answer.
        """
        self.assertIn(cgroupMode(), ("v1", "v2"))


class ParseTests(SynchronousTestCase):
    def test_procCgroup(self) -> None:
        controllers, unified = parseProcCgroup(
            "12:pids:/a\n4:cpu,cpuacct:/b\n1:name=systemd:/c\n0::/d\n"
        )
        self.assertEqual(
            controllers,
            {"pids": "/a", "cpu": "/b", "cpuacct": "/b", "name=systemd": "/c"},
        )
        self.assertEqual(unified, "/d")

    def test_procCgroupPathWithColon(self) -> None:
        controllers, unified = parseProcCgroup("0::/a:b\n")
        self.assertEqual((controllers, unified), ({}, "/a:b"))

    def test_procCgroupInvalid(self) -> None:
        self.assertRaises(CgroupError, parseProcCgroup, "0:/x\n")

    def test_parseUint(self) -> None:
        """
        Go's rules: strict unsigned decimals, negatives are 0.
        """
        self.assertEqual(parseUint("0"), 0)
        self.assertEqual(parseUint(str(MAX_UINT64)), MAX_UINT64)
        self.assertEqual(parseUint("-1"), 0)
        self.assertEqual(parseUint("-99999999999999999999999"), 0)
        for bad in ("", "max", "+1", " 1", "1_000", "1.5", "-0", str(MAX_UINT64 + 1)):
            self.assertRaises(CgroupError, parseUint, bad)
        self.assertEqual(parseUint(str(MAX_UINT32), bits=32), MAX_UINT32)
        self.assertRaises(CgroupError, parseUint, str(MAX_UINT32 + 1), bits=32)

    def test_hugePageSizes(self) -> None:
        """
        Directory names become the page sizes the hugetlb files use, in name
        order.
        """
        base = self.mktemp()
        for name in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB"):
            os.makedirs(os.path.join(base, name))
        self.assertEqual(hugePageSizes(base), ["1GB", "2MB", "64KB"])
        os.makedirs(os.path.join(base, "hugepages-1536kB"))
        self.assertEqual(hugePageSizes(base), ["1GB", "1.5MB", "2MB", "64KB"])


class LoadTests(SynchronousTestCase):
    """
    L{loadCgroup} from fake C{/proc} files and cgroup trees.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.proc = os.path.join(self.base, "proc")
        self.root = os.path.join(self.base, "cgroup")
        os.makedirs(os.path.join(self.proc, "self"))

    def writeProc(self, pid: int, cgroupText: str, mountinfo: str) -> None:
        writeTree(
            self.proc,
            {f"{pid}/cgroup": cgroupText, "self/mountinfo": mountinfo},
        )

    def v1Mounts(self) -> str:
        root = self.root
        return "\n".join(
            [
                mountLine(31, root, "tmpfs", "ro,mode=755"),
                mountLine(32, f"{root}/unified", "cgroup2", "rw,nsdelegate"),
                mountLine(33, f"{root}/systemd", "cgroup", "rw,xattr,name=systemd"),
                mountLine(34, f"{root}/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
                mountLine(35, f"{root}/memory", "cgroup", "rw,memory"),
                mountLine(36, f"{root}/pids", "cgroup", "rw,pids"),
                mountLine(37, f"{root}/blkio", "cgroup", "rw,blkio", root="/outer"),
                "",
            ]
        )

    def test_v1(self) -> None:
        """
        Each controller's line of C{/proc/<pid>/cgroup} joins the mount point
        of its hierarchy (relative to the mount's root); a combined
        C{cpu,cpuacct} hierarchy serves both; named hierarchies, cgroup2 and
        controllers whose directory does not exist are left out.
        """
        os.makedirs(os.path.join(self.root, "cpu,cpuacct/k8s/c1"))
        os.makedirs(os.path.join(self.root, "memory/k8s/c1"))
        os.makedirs(os.path.join(self.root, "blkio/k8s/c1"))
        os.makedirs(os.path.join(self.root, "systemd/k8s/c1"))
        os.makedirs(os.path.join(self.root, "pids"))
        self.writeProc(
            42,
            "12:pids:/k8s/c1\n"
            "8:blkio:/outer/k8s/c1\n"
            "5:memory:/k8s/c1\n"
            "4:cpu,cpuacct:/k8s/c1\n"
            "1:name=systemd:/k8s/c1\n"
            "0::/k8s/c1\n",
            self.v1Mounts(),
        )
        cgroup = loadCgroup(42, procRoot=self.proc, root=self.root)
        assert isinstance(cgroup, V1Cgroup)
        self.assertEqual(
            cgroup.paths,
            {
                "cpu": f"{self.root}/cpu,cpuacct/k8s/c1",
                "cpuacct": f"{self.root}/cpu,cpuacct/k8s/c1",
                "memory": f"{self.root}/memory/k8s/c1",
                "blkio": f"{self.root}/blkio/k8s/c1",
            },
        )
        self.assertEqual(cgroup.memoryPath, f"{self.root}/memory/k8s/c1")
        self.assertEqual(cgroup.typeURL, "io.containerd.cgroups.v1.Metrics")
        self.assertTrue(verifyObject(ICgroup, cgroup))
        self.assertTrue(cgroup.exists())
        shutil.rmtree(os.path.join(self.root, "blkio/k8s/c1"))
        self.assertFalse(cgroup.exists())

    def test_v1ModeGiven(self) -> None:
        os.makedirs(os.path.join(self.root, "memory/c1"))
        self.writeProc(42, "5:memory:/c1\n", self.v1Mounts())
        cgroup = loadCgroup(42, mode="v1", procRoot=self.proc, root=self.root)
        assert isinstance(cgroup, V1Cgroup)
        self.assertEqual(cgroup.paths, {"memory": f"{self.root}/memory/c1"})

    def test_v1Deleted(self) -> None:
        """
        When none of the process's cgroup directories exists, the cgroup is
        gone.
        """
        self.writeProc(42, "5:memory:/c1\n4:cpu,cpuacct:/c1\n", self.v1Mounts())
        exception = self.assertRaises(
            CgroupNotFound, loadCgroup, 42, procRoot=self.proc, root=self.root
        )
        self.assertIn("deleted", str(exception))

    def test_noProcess(self) -> None:
        writeTree(self.proc, {"self/mountinfo": self.v1Mounts()})
        exception = self.assertRaises(
            CgroupNotFound, loadCgroup, 42, procRoot=self.proc, root=self.root
        )
        self.assertIn("process 42 not found", str(exception))

    def test_v2(self) -> None:
        os.makedirs(os.path.join(self.root, "kubepods/c1"))
        self.writeProc(
            42, "0::/kubepods/c1\n", mountLine(31, self.root, "cgroup2", "rw")
        )
        cgroup = loadCgroup(42, procRoot=self.proc, root=self.root)
        assert isinstance(cgroup, V2Cgroup)
        self.assertEqual(cgroup.path, f"{self.root}/kubepods/c1")
        self.assertEqual(cgroup.mountPoint, self.root)
        self.assertEqual(cgroup.typeURL, "io.containerd.cgroups.v2.Metrics")
        self.assertTrue(verifyObject(ICgroup, cgroup))
        self.assertTrue(cgroup.exists())
        os.rmdir(cgroup.path)
        self.assertFalse(cgroup.exists())

    def test_v2Gone(self) -> None:
        self.writeProc(42, "0::/c1\n", mountLine(31, self.root, "cgroup2", "rw"))
        self.assertRaises(
            CgroupNotFound, loadCgroup, 42, procRoot=self.proc, root=self.root
        )

    def test_v2NoUnifiedLine(self) -> None:
        self.writeProc(42, "5:memory:/c1\n", "")
        self.assertRaises(
            CgroupError, loadCgroup, 42, mode="v2", procRoot=self.proc, root=self.root
        )

    def test_v2InvalidPath(self) -> None:
        """
        A path outside the process's cgroup namespace, or not clean, is
        refused as Go's C{VerifyGroupPath} refuses it.
        """
        for path in ("/../../c1", "/a//b", "relative"):
            self.writeProc(42, f"0::{path}\n", "")
            self.assertRaises(
                CgroupError,
                loadCgroup,
                42,
                mode="v2",
                procRoot=self.proc,
                root=self.root,
            )


MEMORY_STAT_V1 = words(
    """
    cache rss rss_huge shmem mapped_file dirty writeback workingset_refault_anon
    workingset_refault_file swap swapcached pgpgin pgpgout pgfault pgmajfault
    inactive_anon active_anon inactive_file active_file unevictable
    hierarchical_memory_limit hierarchical_memsw_limit total_cache total_rss
    total_rss_huge total_shmem total_mapped_file total_dirty total_writeback
    total_workingset_refault_anon total_workingset_refault_file total_swap
    total_swapcached total_pgpgin total_pgpgout total_pgfault total_pgmajfault
    total_inactive_anon total_active_anon total_inactive_file total_active_file
    total_unevictable
"""
)
MEMORY_STAT_V1_VALUES = {key: 1000 + i for i, key in enumerate(MEMORY_STAT_V1)}

# MemoryStat fields 1-32 and their memory.stat keys, written out from
# cgroups/memory.go.
MEMORY_FIELDS_V1 = {
    "cache": "cache",
    "rss": "rss",
    "rss_huge": "rss_huge",
    "mapped_file": "mapped_file",
    "dirty": "dirty",
    "writeback": "writeback",
    "pg_pg_in": "pgpgin",
    "pg_pg_out": "pgpgout",
    "pg_fault": "pgfault",
    "pg_maj_fault": "pgmajfault",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_swap_limit": "hierarchical_memsw_limit",
    "total_cache": "total_cache",
    "total_rss": "total_rss",
    "total_rss_huge": "total_rss_huge",
    "total_mapped_file": "total_mapped_file",
    "total_dirty": "total_dirty",
    "total_writeback": "total_writeback",
    "total_pg_pg_in": "total_pgpgin",
    "total_pg_pg_out": "total_pgpgout",
    "total_pg_fault": "total_pgfault",
    "total_pg_maj_fault": "total_pgmajfault",
    "total_inactive_anon": "total_inactive_anon",
    "total_active_anon": "total_active_anon",
    "total_inactive_file": "total_inactive_file",
    "total_active_file": "total_active_file",
    "total_unevictable": "total_unevictable",
}

PARTITIONS = (
    "major minor  #blocks  name\n"
    "\n"
    "   8        0  488386584 sda\n"
    "   8        1     524288 sda1\n"
    "   8       16  976762584 sdb\n"
    " 253        0   10485760 dm-0\n"
    " 253        0   10485760 dm-0-again\n"
)


def memoryFiles() -> dict[str, str]:
    files = {
        "memory.stat": "".join(
            f"{key} {value}\n" for key, value in MEMORY_STAT_V1_VALUES.items()
        ),
        "memory.oom_control": "oom_kill_disable 1\nunder_oom 0\noom_kill 4\n",
    }
    for number, prefix in enumerate(
        ("memory.", "memory.memsw.", "memory.kmem.", "memory.kmem.tcp.")
    ):
        files[prefix + "usage_in_bytes"] = f"{number}1\n"
        files[prefix + "max_usage_in_bytes"] = f"{number}2\n"
        files[prefix + "failcnt"] = f"{number}3\n"
        files[prefix + "limit_in_bytes"] = "9223372036854771712\n"
    return files


def blkioLines(*devices: tuple[int, int, int]) -> str:
    lines = []
    total = 0
    for major, minor, value in devices:
        for op, share in (("Read", 1), ("Write", 2)):
            lines.append(f"{major}:{minor} {op} {value * share}")
        for op in ("Sync", "Async", "Discard"):
            lines.append(f"{major}:{minor} {op} 0")
        lines.append(f"{major}:{minor} Total {value * 3}")
        total += value * 3
    lines.append(f"Total {total}")
    return "\n".join(lines) + "\n"


class V1StatsTests(SynchronousTestCase):
    """
    L{V1Cgroup.stats} from a fixture tree with each controller in its own
    directory (C{cpu} and C{cpuacct} sharing one, as on a combined mount).
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.proc = os.path.join(self.base, "proc")
        self.hugepages = os.path.join(self.base, "hugepages")
        for name in ("hugepages-2048kB", "hugepages-1048576kB"):
            os.makedirs(os.path.join(self.hugepages, name))
        writeTree(self.proc, {"partitions": PARTITIONS})
        cpu = os.path.join(self.base, "cpu,cpuacct/c1")
        self.paths = {
            "cpu": cpu,
            "cpuacct": cpu,
            "memory": os.path.join(self.base, "memory/c1"),
            "pids": os.path.join(self.base, "pids/c1"),
            "blkio": os.path.join(self.base, "blkio/c1"),
            "hugetlb": os.path.join(self.base, "hugetlb/c1"),
            "rdma": os.path.join(self.base, "rdma/c1"),
            "freezer": os.path.join(self.base, "freezer/c1"),
        }
        for path in self.paths.values():
            os.makedirs(path, exist_ok=True)

    def write(self, controller: str, files: Mapping[str, str]) -> None:
        writeTree(self.paths[controller], files)

    def cgroup(self) -> V1Cgroup:
        return V1Cgroup(self.paths, procRoot=self.proc, hugePagesDir=self.hugepages)

    def writeAll(self) -> None:
        self.write(
            "cpu",
            {
                "cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 123456789\n"
                "nr_bursts 0\nburst_time 0\n",
                "cpuacct.stat": "user 1234\nsystem 567\n",
                "cpuacct.usage": "18374000000\n",
                "cpuacct.usage_percpu": "100 200 300 400 \n",
            },
        )
        self.write("memory", memoryFiles())
        self.write("pids", {"pids.current": "7\n", "pids.max": "max\n"})
        self.write(
            "blkio",
            {
                "blkio.io_serviced_recursive": blkioLines((8, 0, 10), (8, 16, 1)),
                "blkio.io_service_bytes_recursive": blkioLines((8, 0, 4096)),
                "blkio.io_queued_recursive": blkioLines(),
                "blkio.io_service_time_recursive": blkioLines((8, 0, 5)),
                "blkio.io_wait_time_recursive": blkioLines((8, 0, 6)),
                "blkio.io_merged_recursive": blkioLines((253, 0, 7)),
                "blkio.time_recursive": "8:0 777\n",
                "blkio.sectors_recursive": "8:0 88\n9:9 99\n",
                "blkio.throttle.io_serviced": blkioLines((8, 0, 1000)),
                "blkio.throttle.io_service_bytes": blkioLines((8, 0, 2000)),
            },
        )
        hugetlb = {}
        for size, base in (("2MB", 10), ("1GB", 20)):
            hugetlb[f"hugetlb.{size}.usage_in_bytes"] = f"{base + 1}\n"
            hugetlb[f"hugetlb.{size}.max_usage_in_bytes"] = f"{base + 2}\n"
            hugetlb[f"hugetlb.{size}.failcnt"] = f"{base + 3}\n"
            hugetlb[f"hugetlb.{size}.limit_in_bytes"] = "9223372036854771712\n"
        self.write("hugetlb", hugetlb)
        self.write(
            "rdma",
            {
                "rdma.current": "mlx4_0 hca_handle=2 hca_object=2000\n"
                "ocrdma1 hca_handle=3 hca_object=max\n",
                "rdma.max": "mlx4_0 hca_handle=max hca_object=max\n"
                "ocrdma1 hca_handle=10 hca_object=99999999999\n",
            },
        )

    def test_everything(self) -> None:
        self.writeAll()
        metrics = self.cgroup().stats()
        self.assertIsInstance(metrics, cgroups_v1_pb2.Metrics)

        self.assertEqual(
            [(h.pagesize, h.usage, h.max, h.failcnt) for h in metrics.hugetlb],
            [("1GB", 21, 22, 23), ("2MB", 11, 12, 13)],
        )
        self.assertEqual((metrics.pids.current, metrics.pids.limit), (7, 0))

        usage = metrics.cpu.usage
        self.assertEqual(usage.total, 18374000000)
        self.assertEqual(usage.user, 1234 * 10_000_000)
        self.assertEqual(usage.kernel, 567 * 10_000_000)
        self.assertEqual(list(usage.per_cpu), [100, 200, 300, 400])
        throttling = metrics.cpu.throttling
        self.assertEqual(
            (
                throttling.periods,
                throttling.throttled_periods,
                throttling.throttled_time,
            ),
            (10, 3, 123456789),
        )

        memory = metrics.memory
        self.assertEqual(len(MEMORY_FIELDS_V1), 32)
        for field, key in MEMORY_FIELDS_V1.items():
            self.assertEqual(getattr(memory, field), MEMORY_STAT_V1_VALUES[key], field)
        self.assertEqual(memory.pg_pg_in, MEMORY_STAT_V1_VALUES["pgpgin"])
        self.assertEqual(
            memory.hierarchical_swap_limit,
            MEMORY_STAT_V1_VALUES["hierarchical_memsw_limit"],
        )
        for number, field in enumerate(("usage", "swap", "kernel", "kernel_tcp")):
            entry = getattr(memory, field)
            self.assertEqual(
                (entry.usage, entry.max, entry.failcnt, entry.limit),
                (int(f"{number}1"), int(f"{number}2"), int(f"{number}3"), 2**63 - 4096),
                field,
            )
        oom = metrics.memory_oom_control
        self.assertEqual((oom.oom_kill_disable, oom.under_oom, oom.oom_kill), (1, 0, 4))

        blkio = metrics.blkio
        serviced = [
            (e.device, e.major, e.minor, e.op, e.value)
            for e in blkio.io_serviced_recursive
        ]
        self.assertEqual(
            serviced,
            [
                ("/dev/sda", 8, 0, "Read", 10),
                ("/dev/sda", 8, 0, "Write", 20),
                ("/dev/sda", 8, 0, "Sync", 0),
                ("/dev/sda", 8, 0, "Async", 0),
                ("/dev/sda", 8, 0, "Discard", 0),
                ("/dev/sda", 8, 0, "Total", 30),
                ("/dev/sdb", 8, 16, "Read", 1),
                ("/dev/sdb", 8, 16, "Write", 2),
                ("/dev/sdb", 8, 16, "Sync", 0),
                ("/dev/sdb", 8, 16, "Async", 0),
                ("/dev/sdb", 8, 16, "Discard", 0),
                ("/dev/sdb", 8, 16, "Total", 3),
            ],
        )
        self.assertEqual(blkio.io_service_bytes_recursive[1].value, 8192)
        self.assertEqual(len(blkio.io_queued_recursive), 0)
        self.assertEqual(blkio.io_service_time_recursive[0].value, 5)
        self.assertEqual(blkio.io_wait_time_recursive[0].value, 6)
        self.assertEqual(blkio.io_merged_recursive[0].device, "/dev/dm-0")
        self.assertEqual(
            [(e.op, e.device, e.value) for e in blkio.io_time_recursive],
            [("", "/dev/sda", 777)],
        )
        self.assertEqual(
            [(e.device, e.major, e.minor, e.value) for e in blkio.sectors_recursive],
            [("/dev/sda", 8, 0, 88), ("", 9, 9, 99)],
        )

        rdma = metrics.rdma
        self.assertEqual(
            [(e.device, e.hca_handles, e.hca_objects) for e in rdma.current],
            [("mlx4_0", 2, 2000), ("ocrdma1", 3, MAX_UINT32)],
        )
        self.assertEqual(
            [(e.device, e.hca_handles, e.hca_objects) for e in rdma.limit],
            [("mlx4_0", MAX_UINT32, MAX_UINT32), ("ocrdma1", 10, 0)],
        )
        self.assertEqual(len(metrics.network), 0)
        self.assertFalse(metrics.HasField("cgroup_stats"))

    def test_roundTrip(self) -> None:
        """
        The message survives the wire, with its type URL.
        """
        self.writeAll()
        metrics = self.cgroup().stats()
        again = cgroups_v1_pb2.Metrics.FromString(metrics.SerializeToString())
        self.assertEqual(again, metrics)
        self.assertEqual(V1_TYPE_URL, again.DESCRIPTOR.full_name)

    def test_nothing(self) -> None:
        """
        With no file at all, only the (empty) cpu usage and throttling, and
        an empty blkio, are there, as in Go, whose C{Stat} creates the first
        two before reading anything, and whose blkio controller creates its
        message before it reads its first file.
        """
        metrics = self.cgroup().stats()
        self.assertEqual([f.name for f, _ in metrics.ListFields()], ["cpu", "blkio"])
        self.assertTrue(metrics.cpu.HasField("usage"))
        self.assertTrue(metrics.cpu.HasField("throttling"))
        self.assertEqual(
            metrics.SerializeToString(), b"\x1a\x04\x0a\x00\x12\x00\x2a\x00"
        )

    def test_cgroupGone(self) -> None:
        """
        Stats of a removed cgroup are nearly empty, not an error: Go's
        C{IgnoreNotExist} swallows every missing file.
        """
        self.writeAll()
        for path in set(self.paths.values()):
            shutil.rmtree(path)
        metrics = self.cgroup().stats()
        self.assertEqual([f.name for f, _ in metrics.ListFields()], ["cpu", "blkio"])

    def test_memoryPartial(self) -> None:
        """
        A missing file ends the memory controller's reading where it is: the
        entries read so far stay, later ones are 0.
        """
        files = memoryFiles()
        del files["memory.memsw.failcnt"]
        self.write("memory", files)
        memory = self.cgroup().stats().memory
        self.assertEqual((memory.usage.usage, memory.usage.limit), (1, 2**63 - 4096))
        self.assertEqual((memory.swap.usage, memory.swap.max), (11, 12))
        self.assertEqual((memory.swap.failcnt, memory.swap.limit), (0, 0))
        self.assertEqual(memory.kernel.usage, 0)
        self.assertTrue(memory.HasField("kernel_tcp"))

    def test_memoryNoOOMControl(self) -> None:
        files = memoryFiles()
        del files["memory.oom_control"]
        self.write("memory", files)
        metrics = self.cgroup().stats()
        self.assertFalse(metrics.HasField("memory_oom_control"))
        self.assertTrue(metrics.memory.HasField("usage"))
        self.assertEqual(metrics.memory.usage.usage, 0)
        self.assertEqual(metrics.memory.cache, MEMORY_STAT_V1_VALUES["cache"])

    def test_memoryMissingKeys(self) -> None:
        """
        Keys missing from C{memory.stat} are 0.
        """
        files = memoryFiles()
        files["memory.stat"] = "cache 5\n"
        self.write("memory", files)
        memory = self.cgroup().stats().memory
        self.assertEqual(
            (memory.cache, memory.rss, memory.total_unevictable), (5, 0, 0)
        )

    def test_malformed(self) -> None:
        """
        A malformed file fails the whole call, as it does in Go.
        """
        files = memoryFiles()
        files["memory.stat"] = "cache 5 6\n"
        self.write("memory", files)
        self.assertRaises(CgroupError, self.cgroup().stats)

    def test_unreadable(self) -> None:
        """
        A file that cannot be read for another reason than not existing is
        an error too.
        """
        self.write("pids", {"pids.max": "max\n"})
        os.makedirs(os.path.join(self.paths["pids"], "pids.current"))
        self.assertRaises(CgroupError, self.cgroup().stats)

    def test_pidsLimit(self) -> None:
        self.write("pids", {"pids.current": "1\n", "pids.max": "512\n"})
        pids = self.cgroup().stats().pids
        self.assertEqual((pids.current, pids.limit), (1, 512))

    def test_pidsNoMax(self) -> None:
        self.write("pids", {"pids.current": "1\n"})
        self.assertFalse(self.cgroup().stats().HasField("pids"))

    def test_cpuacctBadStat(self) -> None:
        self.write("cpu", {"cpuacct.stat": "user 1\n"})
        self.assertRaises(CgroupError, self.cgroup().stats)
        self.write("cpu", {"cpuacct.stat": "system 1\nuser 2\n"})
        self.assertRaises(CgroupError, self.cgroup().stats)

    def test_cpuacctWithoutPercpu(self) -> None:
        """
        cpuacct fills its fields only once every file was read.
        """
        self.write(
            "cpu", {"cpuacct.stat": "user 1\nsystem 2\n", "cpuacct.usage": "3\n"}
        )
        usage = self.cgroup().stats().cpu.usage
        self.assertEqual((usage.total, usage.user, usage.kernel), (0, 0, 0))

    def test_blkioThrottleFallback(self) -> None:
        """
        Without the CFQ files, the throttle files fill io_serviced and
        io_service_bytes.
        """
        self.write(
            "blkio",
            {
                "blkio.throttle.io_serviced": blkioLines((8, 0, 1000)),
                "blkio.throttle.io_service_bytes": blkioLines((8, 16, 2000)),
                "blkio.throttle.io_serviced_recursive": blkioLines((8, 0, 5)),
            },
        )
        blkio = self.cgroup().stats().blkio
        self.assertEqual(
            [(e.op, e.value) for e in blkio.io_serviced_recursive][:2],
            [("Read", 1000), ("Write", 2000)],
        )
        self.assertEqual(blkio.io_service_bytes_recursive[0].device, "/dev/sdb")
        self.assertEqual(len(blkio.io_time_recursive), 0)

    def test_blkioEmptyCFQ(self) -> None:
        """
        CFQ files with no device entries (a device on another scheduler)
        also fall back to the throttle files.
        """
        files = {
            f"blkio.{name}": "Total 0\n"
            for name in (
                "io_serviced_recursive",
                "io_service_bytes_recursive",
                "io_queued_recursive",
                "io_service_time_recursive",
                "io_wait_time_recursive",
                "io_merged_recursive",
                "time_recursive",
                "sectors_recursive",
            )
        }
        files["blkio.throttle.io_serviced"] = blkioLines((8, 0, 1))
        files["blkio.throttle.io_service_bytes"] = blkioLines((8, 0, 512))
        self.write("blkio", files)
        blkio = self.cgroup().stats().blkio
        self.assertEqual(len(blkio.io_serviced_recursive), 6)
        self.assertEqual(blkio.io_service_bytes_recursive[0].value, 512)

    def test_blkioNothing(self) -> None:
        """
        The blkio message is there, empty, when its controller is there
        without files.
        """
        metrics = self.cgroup().stats()
        self.assertTrue(metrics.HasField("blkio"))
        self.assertEqual(metrics.blkio.ByteSize(), 0)

    def test_blkioNoPartitions(self) -> None:
        self.write("blkio", {"blkio.throttle.io_serviced": blkioLines((8, 0, 1))})
        os.remove(os.path.join(self.proc, "partitions"))
        metrics = self.cgroup().stats()
        self.assertTrue(metrics.HasField("blkio"))
        self.assertEqual(len(metrics.blkio.io_serviced_recursive), 0)

    def test_blkioInvalid(self) -> None:
        self.write("blkio", {"blkio.throttle.io_serviced": "8:0\n"})
        self.assertRaises(CgroupError, self.cgroup().stats)

    def test_hugetlbPartial(self) -> None:
        """
        Page sizes are read in order until one has a missing file.
        """
        self.write(
            "hugetlb",
            {
                "hugetlb.1GB.usage_in_bytes": "1\n",
                "hugetlb.1GB.max_usage_in_bytes": "2\n",
                "hugetlb.1GB.failcnt": "3\n",
                "hugetlb.2MB.usage_in_bytes": "4\n",
            },
        )
        hugetlb = self.cgroup().stats().hugetlb
        self.assertEqual([(h.pagesize, h.failcnt) for h in hugetlb], [("1GB", 3)])

    def test_hugetlbNoPageSizes(self) -> None:
        """
        A host without a hugepages directory has no hugetlb statistics.
        """
        cgroup = V1Cgroup(self.paths, procRoot=self.proc, hugePagesDir=self.mktemp())
        self.assertEqual(len(cgroup.stats().hugetlb), 0)

    def test_rdmaDeviceRemoved(self) -> None:
        """
        Files of different lengths (a device removed between the reads) give
        no rdma statistics.
        """
        self.write(
            "rdma",
            {
                "rdma.current": "mlx4_0 hca_handle=2 hca_object=2000\n",
                "rdma.max": "mlx4_0 hca_handle=max hca_object=max\nx y z\n",
            },
        )
        self.assertFalse(self.cgroup().stats().HasField("rdma"))

    def test_onlySomeControllers(self) -> None:
        """
        Controllers the cgroup is not in are not read.
        """
        self.writeAll()
        cgroup = V1Cgroup(
            {"pids": self.paths["pids"]},
            procRoot=self.proc,
            hugePagesDir=self.hugepages,
        )
        metrics = cgroup.stats()
        self.assertEqual([f.name for f, _ in metrics.ListFields()], ["pids", "cpu"])


MEMORY_STAT_V2 = words(
    """
    anon file kernel kernel_stack pagetables sec_pagetables percpu sock vmalloc
    shmem zswap zswapped file_mapped file_dirty file_writeback swapcached anon_thp
    file_thp shmem_thp inactive_anon active_anon inactive_file active_file
    unevictable slab_reclaimable slab_unreclaimable slab workingset_refault_anon
    workingset_refault_file workingset_refault workingset_activate_anon
    workingset_activate_file workingset_activate workingset_restore_anon
    workingset_restore_file workingset_nodereclaim pgscan pgsteal pgscan_kswapd
    pgscan_direct pgsteal_kswapd pgsteal_direct pgfault pgmajfault pgrefill
    pgactivate pgdeactivate pglazyfree pglazyfreed zswpin zswpout thp_fault_alloc
    thp_collapse_alloc
"""
)
MEMORY_STAT_V2_VALUES = {key: 5000 + i for i, key in enumerate(MEMORY_STAT_V2)}
MEMORY_FIELDS_V2 = words(
    """
    anon file kernel_stack slab sock shmem file_mapped file_dirty file_writeback
    anon_thp inactive_anon active_anon inactive_file active_file unevictable
    slab_reclaimable slab_unreclaimable pgfault pgmajfault workingset_refault
    workingset_activate workingset_nodereclaim pgrefill pgscan pgsteal pgactivate
    pgdeactivate pglazyfree pglazyfreed thp_fault_alloc thp_collapse_alloc
"""
)


def v2Files() -> dict[str, str]:
    return {
        "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
        "cgroup.events": "populated 1\nfrozen 0\n",
        "cpu.stat": "usage_usec 1000\nuser_usec 600\nsystem_usec 400\n"
        "nr_periods 5\nnr_throttled 2\nthrottled_usec 300\n"
        "nr_bursts 0\nburst_usec 0\n",
        "memory.stat": "".join(
            f"{key} {value}\n" for key, value in MEMORY_STAT_V2_VALUES.items()
        ),
        "memory.current": "123456\n",
        "memory.max": "max\n",
        "memory.swap.current": "789\n",
        "memory.swap.max": "1048576\n",
        "memory.events": "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 0\n",
        "pids.current": "3\n",
        "pids.max": "max\n",
        "io.stat": "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n"
        "253:0 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=9 dios=10\n",
        "hugetlb.2MB.current": "0\n",
        "hugetlb.2MB.max": "max\n",
        "hugetlb.2MB.rsvd.current": "0\n",
        "hugetlb.2MB.rsvd.max": "max\n",
        "hugetlb.2MB.events": "max 0\n",
        "hugetlb.1GB.current": "1073741824\n",
        "hugetlb.1GB.max": "2147483648\n",
        "rdma.current": "mlx4_0 hca_handle=2 hca_object=2000\n",
        "rdma.max": "mlx4_0 hca_handle=max hca_object=40\n",
    }


class V2StatsTests(TestCase):
    """
    L{V2Cgroup.stats} from a fixture tree.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.path = os.path.join(self.root, "pod", "c1")
        os.makedirs(self.path)

    def cgroup(self, files: Mapping[str, str]) -> V2Cgroup:
        writeTree(self.path, files)
        return V2Cgroup(self.path, self.root)

    def test_everything(self) -> None:
        metrics = self.cgroup(v2Files()).stats()
        self.assertIsInstance(metrics, cgroups_v2_pb2.Metrics)
        self.assertEqual((metrics.pids.current, metrics.pids.limit), (3, MAX_UINT64))
        cpu = metrics.cpu
        self.assertEqual(
            (
                cpu.usage_usec,
                cpu.user_usec,
                cpu.system_usec,
                cpu.nr_periods,
                cpu.nr_throttled,
                cpu.throttled_usec,
            ),
            (1000, 600, 400, 5, 2, 300),
        )
        memory = metrics.memory
        self.assertEqual(len(MEMORY_FIELDS_V2), 31)
        for field in MEMORY_FIELDS_V2:
            self.assertEqual(
                getattr(memory, field), MEMORY_STAT_V2_VALUES[field], field
            )
        self.assertEqual(
            (memory.usage, memory.usage_limit, memory.swap_usage, memory.swap_limit),
            (123456, MAX_UINT64, 789, 1048576),
        )
        events = metrics.memory_events
        self.assertEqual(
            (events.low, events.high, events.max, events.oom, events.oom_kill),
            (1, 2, 3, 4, 5),
        )
        self.assertEqual(
            [
                (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios)
                for e in metrics.io.usage
            ],
            [(8, 0, 1, 2, 3, 4), (253, 0, 5, 6, 7, 8)],
        )
        self.assertEqual(
            sorted((h.pagesize, h.current, h.max) for h in metrics.hugetlb),
            [("1GB", 1073741824, 2147483648), ("2MB", 0, MAX_UINT64)],
        )
        self.assertEqual(
            [(e.device, e.hca_handles, e.hca_objects) for e in metrics.rdma.current],
            [("mlx4_0", 2, 2000)],
        )
        self.assertEqual(
            [(e.device, e.hca_handles, e.hca_objects) for e in metrics.rdma.limit],
            [("mlx4_0", MAX_UINT32, 40)],
        )
        again = cgroups_v2_pb2.Metrics.FromString(metrics.SerializeToString())
        self.assertEqual(again, metrics)
        self.assertEqual(V2_TYPE_URL, "io.containerd.cgroups.v2.Metrics")

    def test_minimal(self) -> None:
        """
        With only C{cgroup.controllers}, pids, cpu, memory, io and rdma are
        there but empty; memory_events and hugetlb are not.
        """
        metrics = self.cgroup({"cgroup.controllers": ""}).stats()
        self.assertEqual(
            [f.name for f, _ in metrics.ListFields()],
            ["pids", "cpu", "memory", "rdma", "io"],
        )
        self.assertEqual(metrics.ByteSize(), 10)

    def test_controllersNotEnabled(self) -> None:
        """
        C{cpu.stat} and C{memory.stat} are read only for controllers listed
        in C{cgroup.controllers}; the other files regardless.
        """
        files = v2Files()
        files["cgroup.controllers"] = "pids\n"
        metrics = self.cgroup(files).stats()
        self.assertEqual(metrics.cpu.usage_usec, 0)
        self.assertEqual(metrics.memory.anon, 0)
        self.assertEqual(metrics.memory.usage, 123456)
        self.assertEqual(metrics.pids.current, 3)

    def test_gone(self) -> None:
        """
        Without C{cgroup.controllers} the call fails, as in Go.
        """
        self.assertRaises(CgroupNotFound, V2Cgroup(self.path + "x").stats)

    def test_pidsLimit(self) -> None:
        files = v2Files()
        files["pids.max"] = "100\n"
        files["pids.current"] = "garbage\n"
        pids = self.cgroup(files).stats().pids
        self.assertEqual((pids.current, pids.limit), (0, 100))

    def test_unparsableSingleValue(self) -> None:
        """
        A single-value memory file that does not parse is 0, and logged.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        files = v2Files()
        files["memory.max"] = "lots\n"
        metrics = self.cgroup(files).stats()
        self.assertEqual(metrics.memory.usage_limit, 0)
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["log_level"], LogLevel.error)

    def test_malformedStat(self) -> None:
        files = v2Files()
        files["memory.stat"] = "anon\n"
        self.assertRaises(CgroupError, self.cgroup(files).stats)

    def test_ioStatEdges(self) -> None:
        """
        Lines without a device are skipped, unknown keys ignored, and a bad
        device number ends the list.
        """
        files = v2Files()
        files["io.stat"] = (
            "8:0 rbytes=1 junk wios=x\n"
            "nodevice rbytes=2\n"
            "\n"
            "8:16 rbytes=3\n"
            "x:1 rbytes=4\n"
            "8:32 rbytes=5\n"
        )
        usage = self.cgroup(files).stats().io.usage
        self.assertEqual(
            [(e.major, e.minor, e.rbytes, e.wios) for e in usage],
            [(8, 0, 1, 0), (8, 16, 3, 0)],
        )

    def test_noMemoryEvents(self) -> None:
        files = v2Files()
        del files["memory.events"]
        self.assertFalse(self.cgroup(files).stats().HasField("memory_events"))


class InterfaceTests(SynchronousTestCase):
    """
    What the task service sees of a cgroup and of an OOM watcher: the real
    ones and the task tests' fakes provide the same interfaces.
    """

    def test_v1EnableControllers(self) -> None:
        """
        L{V1Cgroup.enableControllers} does nothing: each v1 controller is
        a hierarchy of its own.
        """
        root = os.path.abspath(self.mktemp())
        writeTree(root, {"memory/c1/memory.limit_in_bytes": "100\n"})
        cgroup = V1Cgroup({"memory": os.path.join(root, "memory/c1")})
        cgroup.enableControllers()
        self.assertEqual(
            os.listdir(os.path.join(root, "memory/c1")), ["memory.limit_in_bytes"]
        )

    def test_fakes(self) -> None:
        """
        L{FakeCgroup}, L{FakeV2Cgroup} and L{FakeOOMWatcher} provide
        L{ICgroup} and L{IOOMWatcher}.
        """
        self.assertTrue(verifyObject(ICgroup, FakeCgroup()))
        self.assertTrue(verifyObject(ICgroup, FakeV2Cgroup()))
        self.assertTrue(verifyObject(IOOMWatcher, FakeOOMWatcher()))


class EnableControllersTests(TestCase):
    """
    L{V2Cgroup.enableControllers} writes the root's controllers into the
    C{cgroup.subtree_control} of each ancestor, not the cgroup's own.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        writeTree(
            self.root,
            {
                "cgroup.controllers": "cpuset cpu io memory pids\n",
                "cgroup.subtree_control": "",
                "a/cgroup.subtree_control": "",
                "a/b/cgroup.subtree_control": "",
                "a/b/c/cgroup.subtree_control": "",
            },
        )

    def read(self, name: str) -> str:
        with open(os.path.join(self.root, name, "cgroup.subtree_control")) as f:
            return f.read()

    def test_ancestors(self) -> None:
        V2Cgroup(os.path.join(self.root, "a/b/c"), self.root).enableControllers()
        expected = "+cpuset +cpu +io +memory +pids"
        self.assertEqual(self.read(""), expected)
        self.assertEqual(self.read("a"), expected)
        self.assertEqual(self.read("a/b"), expected)
        self.assertEqual(self.read("a/b/c"), "")
        self.assertEqual(len(self.logged), 0)

    def test_root(self) -> None:
        """
        The root itself has no ancestor to write to.
        """
        V2Cgroup(self.root, self.root).enableControllers()
        self.assertEqual(self.read(""), "")

    def test_lastErrorLogged(self) -> None:
        """
        Only the last write's failure is logged; an earlier one is forgotten
        once a later write succeeds.
        """
        os.remove(os.path.join(self.root, "cgroup.subtree_control"))
        V2Cgroup(os.path.join(self.root, "a/b/c"), self.root).enableControllers()
        self.assertEqual(len(self.logged), 0)
        os.remove(os.path.join(self.root, "a/b/cgroup.subtree_control"))
        V2Cgroup(os.path.join(self.root, "a/b/c"), self.root).enableControllers()
        self.assertEqual(len(self.logged), 1)
        self.assertIn("failed to enable controllers", self.logged[0]["log_format"])

    def test_noRootControllers(self) -> None:
        os.remove(os.path.join(self.root, "cgroup.controllers"))
        V2Cgroup(os.path.join(self.root, "a/b/c"), self.root).enableControllers()
        self.assertEqual(self.read("a"), "")
        self.assertEqual(len(self.logged), 1)


def eventControl(directory: str) -> tuple[int, int]:
    """
    The eventfd and file descriptor numbers a watcher wrote to
    C{cgroup.event_control}, checking its exact text.
    """
    with open(os.path.join(directory, "cgroup.event_control")) as f:
        text = f.read()
    match = re.fullmatch(r"(\d+) (\d+) ", text)
    assert match is not None, text
    return int(match.group(1)), int(match.group(2))


def fakeMemoryCgroup(base: str) -> V1Cgroup:
    memory = os.path.join(base, "memory", "c1")
    writeTree(
        memory,
        {
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            "cgroup.event_control": "",
        },
    )
    pids = os.path.join(base, "pids", "c1")
    os.makedirs(pids)
    return V1Cgroup({"memory": memory, "pids": pids})


class V1OOMWatcherUnitTests(SynchronousTestCase):
    """
    L{V1OOMWatcher} on a L{MemoryReactor}, driving the eventfd reader by
    hand.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.watcher = V1OOMWatcher(self.reactor)
        self.addCleanup(self.watcher.stop)
        self.base = os.path.abspath(self.mktemp())
        self.cgroup = fakeMemoryCgroup(self.base)
        self.ooms: list[str] = []

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IOOMWatcher, self.watcher))
        self.assertIsInstance(newOOMWatcher("v1", self.reactor), V1OOMWatcher)
        self.assertIsInstance(newOOMWatcher("v2", self.reactor), V2OOMWatcher)

    def test_register(self) -> None:
        """
        C{add} writes C{"<eventfd> <oom_control fd> "} to
        C{cgroup.event_control} and watches the eventfd in the reactor; the
        eventfd is non-blocking and close-on-exec.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        [reader] = self.reactor.getReaders()
        self.assertEqual(reader.fileno(), efd)
        self.assertTrue(fcntl.fcntl(efd, fcntl.F_GETFL) & os.O_NONBLOCK)
        self.assertTrue(fcntl.fcntl(efd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)

    def test_signal(self) -> None:
        """
        Each signal of the eventfd is an OOM; a read with nothing to read is
        not.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        [reader] = self.reactor.getReaders()
        os.eventfd_write(efd, 3)
        reader.doRead()
        self.assertEqual(self.ooms, ["c1"])
        reader.doRead()
        self.assertEqual(self.ooms, ["c1"])
        os.eventfd_write(efd, 1)
        reader.doRead()
        self.assertEqual(self.ooms, ["c1", "c1"])

    def test_check(self) -> None:
        """
        C{check} reads a signal the reactor has not handled yet, once; it
        does nothing for a container not watched.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        [reader] = self.reactor.getReaders()
        os.eventfd_write(efd, 1)
        self.watcher.check("c1")
        self.watcher.check("c2")
        self.assertEqual(self.ooms, ["c1"])
        reader.doRead()
        self.assertEqual(self.ooms, ["c1"])

    def test_cgroupGone(self) -> None:
        """
        A signal that finds the cgroup gone (any of its controllers) closes
        the eventfd and forgets the container.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        [reader] = self.reactor.getReaders()
        os.rmdir(self.cgroup.paths["pids"])
        os.eventfd_write(efd, 1)
        reader.doRead()
        self.assertEqual(self.ooms, [])
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertEqual(reader.fileno(), -1)

    def test_remove(self) -> None:
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        [reader] = self.reactor.getReaders()
        self.watcher.remove("c1")
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertEqual(reader.fileno(), -1)
        self.watcher.remove("c1")

    def test_addAgain(self) -> None:
        """
        Adding a container again replaces its watch.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        [first] = self.reactor.getReaders()
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        [second] = self.reactor.getReaders()
        self.assertIsNot(first, second)
        self.assertEqual(first.fileno(), -1)

    def test_stop(self) -> None:
        other = fakeMemoryCgroup(os.path.join(self.base, "other"))
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.watcher.add("c2", other, self.ooms.append)
        self.assertEqual(len(self.reactor.getReaders()), 2)
        self.watcher.stop()
        self.assertEqual(self.reactor.getReaders(), [])

    def test_callbackFails(self) -> None:
        """
        A failing callback is logged; the watch goes on.
        """

        def fail(containerID: str) -> None:
            self.ooms.append(containerID)
            raise RuntimeError("boom")

        self.watcher.add("c1", self.cgroup, fail)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        [reader] = self.reactor.getReaders()
        for _ in range(2):
            os.eventfd_write(efd, 1)
            reader.doRead()
        self.assertEqual(self.ooms, ["c1", "c1"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_noMemoryController(self) -> None:
        cgroup = V1Cgroup({"pids": self.cgroup.paths["pids"]})
        self.assertRaises(CgroupError, self.watcher.add, "c1", cgroup, print)
        self.assertRaises(
            CgroupError, self.watcher.add, "c1", V2Cgroup(self.base), print
        )

    def test_noEventControl(self) -> None:
        """
        A memory cgroup without C{cgroup.event_control} cannot be watched;
        nothing is left open.
        """
        before = set(os.listdir("/proc/self/fd"))
        os.remove(os.path.join(self.cgroup.paths["memory"], "cgroup.event_control"))
        self.assertRaises(CgroupError, self.watcher.add, "c1", self.cgroup, print)
        os.remove(os.path.join(self.cgroup.paths["memory"], "memory.oom_control"))
        self.assertRaises(CgroupError, self.watcher.add, "c1", self.cgroup, print)
        self.assertEqual(set(os.listdir("/proc/self/fd")), before)
        self.assertEqual(self.reactor.getReaders(), [])


def waitUntil(
    condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> Deferred[None]:
    """
    Fire when C{condition()} is true, polling on the global reactor; fail
    after C{timeout} seconds.
    """

    @inlineCallbacks
    def poll() -> Any:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            yield deferLater(reactor, interval, lambda: None)

    return poll()


def settle() -> Deferred[None]:
    """
    Let the reactor run a little, for events that must not come.
    """
    return deferLater(reactor, 0.05, lambda: None)


class V1OOMWatcherReactorTests(TestCase):
    """
    L{V1OOMWatcher} on the real reactor, with an eventfd signalled by the
    test.
    """

    timeout = 10

    def setUp(self) -> None:
        self.watcher = V1OOMWatcher(reactor)
        self.addCleanup(self.watcher.stop)
        self.cgroup = fakeMemoryCgroup(os.path.abspath(self.mktemp()))
        self.ooms: list[str] = []

    @inlineCallbacks
    def test_oom(self) -> Any:
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        os.eventfd_write(efd, 1)
        yield waitUntil(lambda: self.ooms == ["c1"])
        os.eventfd_write(efd, 1)
        yield waitUntil(lambda: self.ooms == ["c1", "c1"])

    @inlineCallbacks
    def test_gone(self) -> Any:
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        efd, _ = eventControl(self.cgroup.paths["memory"])
        shutil.rmtree(self.cgroup.paths["memory"])
        os.eventfd_write(efd, 1)
        yield waitUntil(lambda: not self.watcher._watches)
        yield settle()
        self.assertEqual(self.ooms, [])


class V2OOMWatcherTests(TestCase):
    """
    L{V2OOMWatcher} with real inotify on a temporary directory.
    """

    timeout = 10

    def setUp(self) -> None:
        self.watcher = V2OOMWatcher(reactor)
        self.addCleanup(self.watcher.stop)
        self.path = os.path.abspath(self.mktemp())
        writeTree(
            self.path,
            {
                "memory.events": self.memoryEvents(0),
                "cgroup.events": "populated 1\nfrozen 0\n",
            },
        )
        self.cgroup = V2Cgroup(self.path, os.path.dirname(self.path))
        self.ooms: list[str] = []

    def memoryEvents(self, oomKill: int) -> str:
        return f"low 0\nhigh 0\nmax {oomKill * 3}\noom {oomKill}\noom_kill {oomKill}\n"

    def write(self, name: str, content: str) -> None:
        with open(os.path.join(self.path, name), "r+") as f:
            f.truncate()
            f.write(content)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IOOMWatcher, self.watcher))

    @inlineCallbacks
    def test_oomKillGrows(self) -> Any:
        """
        An OOM is reported when C{oom_kill} grows past the last value seen;
        other changes are not OOMs.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("memory.events", self.memoryEvents(1))
        yield waitUntil(lambda: self.ooms == ["c1"])
        self.write("memory.events", self.memoryEvents(1).replace("high 0", "high 9"))
        yield settle()
        self.assertEqual(self.ooms, ["c1"])
        self.write("memory.events", self.memoryEvents(3))
        yield waitUntil(lambda: self.ooms == ["c1", "c1"])
        self.write("cgroup.events", "populated 1\nfrozen 1\n")
        yield settle()
        self.assertEqual(self.ooms, ["c1", "c1"])
        self.assertIn("c1", self.watcher._watches)

    @inlineCallbacks
    def test_check(self) -> Any:
        """
        C{check} reads C{memory.events} at once and reports a kill before
        its inotify event is handled, which then reports nothing more; it
        does nothing for a container not watched.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("memory.events", self.memoryEvents(1))
        self.watcher.check("c1")
        self.watcher.check("c2")
        self.assertEqual(self.ooms, ["c1"])
        yield settle()
        self.assertEqual(self.ooms, ["c1"])
        self.assertIn("c1", self.watcher._watches)

    @inlineCallbacks
    def test_earlierKills(self) -> Any:
        """
        The first value seen counts from 0, as in Go: kills from before the
        watch are reported at the first change.
        """
        self.write("memory.events", self.memoryEvents(2))
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("cgroup.events", "populated 1\nfrozen 1\n")
        yield waitUntil(lambda: self.ooms == ["c1"])

    @inlineCallbacks
    def test_depopulated(self) -> Any:
        """
        C{populated 0} ends the watch, after a last look at C{memory.events}:
        the kill that emptied the cgroup is still reported.
        """
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("memory.events", self.memoryEvents(1))
        self.write("cgroup.events", "populated 0\nfrozen 0\n")
        yield waitUntil(lambda: not self.watcher._watches)
        self.assertEqual(self.ooms, ["c1"])
        self.write("memory.events", self.memoryEvents(2))
        yield settle()
        self.assertEqual(self.ooms, ["c1"])

    def writeParent(self, oomKill: int) -> None:
        """
        Give the cgroup's parent a C{memory.events}, which counts its
        children's kills too.
        """
        with open(os.path.join(os.path.dirname(self.path), "memory.events"), "w") as f:
            f.write(self.memoryEvents(oomKill))

    @inlineCallbacks
    def test_removed(self) -> Any:
        """
        The cgroup's removal ends the watch without an OOM, when its
        parent's C{oom_kill} count has not grown (or cannot be read).
        """
        self.writeParent(4)
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        shutil.rmtree(self.path)
        yield waitUntil(lambda: not self.watcher._watches)
        self.assertEqual(self.ooms, [])

    @inlineCallbacks
    def test_removedAfterKill(self) -> Any:
        """
        A cgroup removed before its C{memory.events} was read after a kill
        (systemd removes a scope as soon as it is empty) is reported OOM
        when its parent's C{oom_kill} count grew since the container's
        last look.
        """
        self.writeParent(4)
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("cgroup.events", "populated 1\nfrozen 1\n")
        yield settle()
        self.writeParent(5)
        shutil.rmtree(self.path)
        yield waitUntil(lambda: not self.watcher._watches)
        self.assertEqual(self.ooms, ["c1"])

    @inlineCallbacks
    def test_removedAfterReportedKill(self) -> Any:
        """
        A kill already read in the container's own C{memory.events} is not
        reported again when the cgroup is then removed.
        """
        self.writeParent(4)
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.writeParent(5)
        self.write("memory.events", self.memoryEvents(1))
        yield waitUntil(lambda: self.ooms == ["c1"])
        shutil.rmtree(self.path)
        yield waitUntil(lambda: not self.watcher._watches)
        self.assertEqual(self.ooms, ["c1"])

    @inlineCallbacks
    def test_independent(self) -> Any:
        """
        One container's watch ending leaves the others watched.
        """
        otherPath = os.path.abspath(self.mktemp())
        writeTree(
            otherPath,
            {
                "memory.events": self.memoryEvents(0),
                "cgroup.events": "populated 1\n",
            },
        )
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.watcher.add("c2", V2Cgroup(otherPath), self.ooms.append)
        shutil.rmtree(otherPath)
        yield waitUntil(lambda: list(self.watcher._watches) == ["c1"])
        self.write("memory.events", self.memoryEvents(1))
        yield waitUntil(lambda: self.ooms == ["c1"])

    @inlineCallbacks
    def test_remove(self) -> Any:
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.watcher.remove("c1")
        self.write("memory.events", self.memoryEvents(1))
        yield settle()
        self.assertEqual(self.ooms, [])

    @inlineCallbacks
    def test_malformed(self) -> Any:
        """
        A C{memory.events} that cannot be parsed ends the watch with a
        warning.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.watcher.add("c1", self.cgroup, self.ooms.append)
        self.write("memory.events", "oom_kill lots\n")
        yield waitUntil(lambda: not self.watcher._watches)
        self.assertEqual(self.ooms, [])
        self.assertEqual([e["log_level"] for e in logged], [LogLevel.warn])

    def test_missingFiles(self) -> None:
        os.remove(os.path.join(self.path, "cgroup.events"))
        self.assertRaises(CgroupError, self.watcher.add, "c1", self.cgroup, print)
        self.assertEqual(self.watcher._watches, {})

    def test_wrongCgroup(self) -> None:
        self.assertRaises(
            CgroupError, self.watcher.add, "c1", V1Cgroup({"memory": self.path}), print
        )


MEMORY_ROOT = "/sys/fs/cgroup/memory"
PIDS_ROOT = "/sys/fs/cgroup/pids"


def requireRealV1() -> None:
    """
    Skip unless we are root on a host whose cgroup v1 memory controller is
    at L{MEMORY_ROOT}.
    """
    if os.geteuid() != 0:
        raise SkipTest("needs root, to create cgroups")
    if cgroupMode() != "v1":
        raise SkipTest("needs a cgroup v1 (legacy or hybrid) host")
    if not os.path.exists(os.path.join(MEMORY_ROOT, "cgroup.event_control")):
        raise SkipTest(f"needs the v1 memory controller at {MEMORY_ROOT}")


class RealCgroup:
    """
    Cgroups made for a test under each named v1 controller, and a child
    process in them; everything is undone by L{cleanUp}.
    """

    def __init__(self, controllers: Mapping[str, str]) -> None:
        name = f"shimd-test-{uuid.uuid4().hex[:12]}"
        self.paths = {
            controller: os.path.join(root, name)
            for controller, root in controllers.items()
        }
        self.child: subprocess.Popen[bytes] | None = None
        for path in self.paths.values():
            os.mkdir(path)

    def write(self, controller: str, name: str, value: str) -> None:
        with open(os.path.join(self.paths[controller], name), "w") as f:
            f.write(value)

    def spawn(self, command: str) -> subprocess.Popen[bytes]:
        """
        Start C{sh -c} that moves itself into the cgroups, then runs
        C{command}.
        """
        moves = " && ".join(
            f"echo $$ > {path}/cgroup.procs" for path in self.paths.values()
        )
        self.child = subprocess.Popen(
            ["sh", "-c", f"{moves} && {command}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        return self.child

    def contains(self, pid: int) -> bool:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
        name = os.path.basename(next(iter(self.paths.values())))
        return text.count(f"/{name}\n") == len(self.paths)

    def cleanUp(self) -> None:
        if self.child is not None:
            if self.child.poll() is None:
                self.child.send_signal(signal.SIGKILL)
            self.child.wait(10)
            if self.child.stdin is not None:
                self.child.stdin.close()
        for path in self.paths.values():
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


class RealHostTests(TestCase):
    """
    Against the real cgroup v1 hierarchy of this host.
    """

    timeout = 60

    def setUp(self) -> None:
        requireRealV1()

    def test_stats(self) -> None:
        """
        A process moved into new memory and pids cgroups is loaded from its
        pid, and its statistics show it.
        """
        real = RealCgroup({"memory": MEMORY_ROOT, "pids": PIDS_ROOT})
        self.addCleanup(real.cleanUp)
        child = real.spawn("exec sleep 60")
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{child.pid}/comm") as f:
                comm = f.read().strip()
            if comm == "sleep" and real.contains(child.pid):
                break
            self.assertLess(time.monotonic(), deadline, "child never settled")
            time.sleep(0.01)

        cgroup = loadCgroup(child.pid)
        assert isinstance(cgroup, V1Cgroup)
        self.assertEqual(cgroup.paths["memory"], real.paths["memory"])
        self.assertEqual(cgroup.paths["pids"], real.paths["pids"])
        self.assertTrue(cgroup.exists())
        metrics = cgroup.stats()
        self.assertEqual(metrics.DESCRIPTOR.full_name, cgroup.typeURL)
        self.assertGreater(metrics.memory.usage.usage, 0)
        self.assertGreater(metrics.memory.usage.limit, 0)
        self.assertEqual((metrics.pids.current, metrics.pids.limit), (1, 0))
        self.assertTrue(metrics.HasField("memory_oom_control"))
        self.assertTrue(metrics.HasField("blkio"))
        self.assertGreater(metrics.cpu.usage.total, 0)

        real.write("pids", "pids.max", "64")
        self.assertEqual(cgroup.stats().pids.limit, 64)

        child.kill()
        child.wait(10)
        real.cleanUp()
        self.assertFalse(cgroup.exists())
        self.assertRaises(CgroupNotFound, loadCgroup, child.pid)

    @inlineCallbacks
    def test_oom(self) -> Any:
        """
        A process over its 16 MiB memory limit is killed, and the watcher
        reports the OOM; removing the cgroup then ends the watch.
        """
        real = RealCgroup({"memory": MEMORY_ROOT})
        self.addCleanup(real.cleanUp)
        limit = str(16 << 20)
        real.write("memory", "memory.limit_in_bytes", limit)
        if os.path.exists(
            os.path.join(real.paths["memory"], "memory.memsw.limit_in_bytes")
        ):
            real.write("memory", "memory.memsw.limit_in_bytes", limit)
        hog = (
            "tail /dev/zero"
            if shutil.which("tail")
            else "python3 -c 'b\"x\" * (64 << 20)'"
        )
        child = real.spawn(f"read _ && exec {hog}")
        yield waitUntil(lambda: real.contains(child.pid))

        cgroup = loadCgroup(child.pid)
        assert isinstance(cgroup, V1Cgroup)
        watcher = V1OOMWatcher(reactor)
        self.addCleanup(watcher.stop)
        ooms: list[str] = []
        watcher.add("oom-test", cgroup, ooms.append)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()

        yield waitUntil(lambda: bool(ooms), timeout=30)
        self.assertEqual(ooms[0], "oom-test")
        yield waitUntil(lambda: child.poll() is not None, timeout=10)
        self.assertEqual(child.returncode, -signal.SIGKILL)
        self.assertGreaterEqual(cgroup.stats().memory_oom_control.oom_kill, 1)

        count = len(ooms)
        real.cleanUp()
        yield waitUntil(lambda: not watcher._watches)
        self.assertEqual(len(ooms), count)
