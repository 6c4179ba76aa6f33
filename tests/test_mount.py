# -*- test-case-name: tests.test_mount -*-
"""
Tests for L{shimd.runc.mount}: the option parser against containerd 1.6's
C{parseMountOptions}, the system calls each mount makes (recorded, so that no
root is needed), and real mounts in temporary directories when run as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import shimd.runc.mount
from shimd.protos.mount_pb2 import Mount
from shimd.runc.mount import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    PAGE_SIZE,
    LibcSyscalls,
    MountError,
    MountOptions,
    UnsupportedMountError,
    describeMount,
    goErrorText,
    mount,
    mountAll,
    parseOptions,
    unmountAll,
)

Call = tuple[object, ...]


class RecordingSyscalls:
    """
    A stand-in for L{LibcSyscalls} that records each call and keeps count of
    the mounts stacked on each target, so that umount2 fails with C{EINVAL}
    once nothing is left, as the kernel's does.

    @ivar calls: C{("mount", source, target, fstype, flags, data)} and
        C{("umount2", target, flags)}, in order.
    @ivar failures: errno to fail with, by index into L{calls}.
    @ivar stacks: how many mounts are on each target.
    """

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.calls: list[Call] = []
        self.failures = failures or {}
        self.stacks: dict[str, int] = {}

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        code = self.failures.get(len(self.calls) - 1)
        if code is not None:
            raise OSError(code, os.strerror(code))

    def mount(
        self, source: str, target: str, fstype: str, flags: int, data: str
    ) -> None:
        self._record(("mount", source, target, fstype, flags, data))
        changes = MS_REMOUNT | MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE
        if not flags & changes:
            self.stacks[target] = self.stacks.get(target, 0) + 1

    def umount2(self, target: str, flags: int) -> None:
        self._record(("umount2", target, flags))
        if not self.stacks.get(target):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.stacks[target] -= 1


class ParseOptionsTests(SynchronousTestCase):
    """
    L{parseOptions} parses as containerd 1.6.20's C{parseMountOptions} in
    C{mount/mount_linux.go}, with propagation words apart.
    """

    # (options, flags, data, propagation, loop)
    CASES: Sequence[tuple[list[str], int, str, int, bool]] = [
        ([], 0, "", 0, False),
        (["rbind", "rw"], MS_BIND | MS_REC, "", 0, False),
        (["bind", "ro"], MS_BIND | MS_RDONLY, "", 0, False),
        (["rbind", "ro"], MS_BIND | MS_REC | MS_RDONLY, "", 0, False),
        # A later word overrides an earlier one.
        (["ro", "rw"], 0, "", 0, False),
        (["rw", "ro"], MS_RDONLY, "", 0, False),
        (["nosuid", "suid"], 0, "", 0, False),
        (["suid", "nosuid"], MS_NOSUID, "", 0, False),
        (["nodev", "dev"], 0, "", 0, False),
        (["noexec", "exec"], 0, "", 0, False),
        (["nosuid", "nodev", "noexec"], MS_NOSUID | MS_NODEV | MS_NOEXEC, "", 0, False),
        # Clearing what is not set changes nothing.
        (["dev", "exec", "suid", "rw", "async"], 0, "", 0, False),
        (["sync"], MS_SYNCHRONOUS, "", 0, False),
        (["sync", "async"], 0, "", 0, False),
        (["dirsync"], MS_DIRSYNC, "", 0, False),
        (["mand"], MS_MANDLOCK, "", 0, False),
        (["mand", "nomand"], 0, "", 0, False),
        (["noatime"], MS_NOATIME, "", 0, False),
        (["noatime", "atime"], 0, "", 0, False),
        (["nodiratime"], MS_NODIRATIME, "", 0, False),
        (["nodiratime", "diratime"], 0, "", 0, False),
        (["relatime"], MS_RELATIME, "", 0, False),
        (["relatime", "norelatime"], 0, "", 0, False),
        (["strictatime"], MS_STRICTATIME, "", 0, False),
        (["strictatime", "nostrictatime"], 0, "", 0, False),
        (["remount", "ro"], MS_REMOUNT | MS_RDONLY, "", 0, False),
        # "rw" clears only MS_RDONLY.
        (["rbind", "nosuid", "rw"], MS_BIND | MS_REC | MS_NOSUID, "", 0, False),
        # "defaults" has no flags in Go's table, so Go puts it in the data.
        (["defaults"], 0, "defaults", 0, False),
        (["ro", "defaults", "rw"], 0, "defaults", 0, False),
        # Everything else is data, in order.
        (
            ["lowerdir=/l2:/l1", "upperdir=/u", "workdir=/w"],
            0,
            "lowerdir=/l2:/l1,upperdir=/u,workdir=/w",
            0,
            False,
        ),
        (["size=64k", "ro", "mode=755"], MS_RDONLY, "size=64k,mode=755", 0, False),
        (
            ["index=off", "userxattr", "volatile"],
            0,
            "index=off,userxattr,volatile",
            0,
            False,
        ),
        # Words are matched exactly, and newer ones are not in 1.6's table.
        (["RO", "Bind"], 0, "RO,Bind", 0, False),
        (["lazytime", "nosymfollow"], 0, "lazytime,nosymfollow", 0, False),
        (["a", "", "b"], 0, "a,,b", 0, False),
        # Propagation words are collected apart from the flags.
        (["shared"], 0, "", MS_SHARED, False),
        (["rshared"], 0, "", MS_SHARED | MS_REC, False),
        (["private"], 0, "", MS_PRIVATE, False),
        (["rprivate"], 0, "", MS_PRIVATE | MS_REC, False),
        (["slave"], 0, "", MS_SLAVE, False),
        (["rslave"], 0, "", MS_SLAVE | MS_REC, False),
        (["unbindable"], 0, "", MS_UNBINDABLE, False),
        (["runbindable"], 0, "", MS_UNBINDABLE | MS_REC, False),
        (["bind", "rprivate"], MS_BIND, "", MS_PRIVATE | MS_REC, False),
        (
            ["rbind", "private", "ro"],
            MS_BIND | MS_REC | MS_RDONLY,
            "",
            MS_PRIVATE,
            False,
        ),
        # "loop" is neither a flag nor data.
        (["loop"], 0, "", 0, True),
        (["loop", "ro", "noload"], MS_RDONLY, "noload", 0, True),
    ]

    def test_table(self) -> None:
        """
        Each case parses to its flags, data, propagation and loop.
        """
        for options, flags, data, propagation, loop in self.CASES:
            self.assertEqual(
                parseOptions(options),
                MountOptions(flags, data, propagation, loop),
                f"options {options!r}",
            )

    def test_iterable(self) -> None:
        """
        The options may be any iterable, such as a protobuf repeated field.
        """
        message = Mount(options=["rbind", "ro", "x=1"])
        self.assertEqual(
            parseOptions(message.options),
            MountOptions(MS_BIND | MS_REC | MS_RDONLY, "x=1"),
        )

    def test_repr(self) -> None:
        """
        L{MountOptions} shows its fields, the flags in hex.
        """
        self.assertEqual(
            repr(MountOptions(MS_BIND | MS_RDONLY, "a=1", MS_PRIVATE, True)),
            "MountOptions(flags=0x1001, data='a=1', propagation=0x40000, loop=True)",
        )
        self.assertNotEqual(MountOptions(), object())


class ConstantsTests(SynchronousTestCase):
    """
    The C{MS_*} constants are the kernel's.
    """

    HEADER = "/usr/include/linux/mount.h"

    def test_header(self) -> None:
        """
        Each C{MS_*} constant the module defines has the value
        C{<linux/mount.h>} gives it.
        """
        try:
            with open(self.HEADER) as f:
                header = f.read()
        except OSError as e:
            raise SkipTest(f"cannot read {self.HEADER}: {e}") from e
        values = {}
        for name, value in re.findall(
            r"^#define\s+(MS_\w+)\s+(\d+|\(1\s*<<\s*\d+\))", header, re.MULTILINE
        ):
            shift = re.fullmatch(r"\(1\s*<<\s*(\d+)\)", value)
            values[name] = 1 << int(shift.group(1)) if shift else int(value)
        defined = [name for name in dir(shimd.runc.mount) if name.startswith("MS_")]
        self.assertEqual(len(defined), 19)
        for name in defined:
            self.assertEqual(getattr(shimd.runc.mount, name), values[name], name)


class ErrorTextTests(SynchronousTestCase):
    """
    L{goErrorText} words an errno as Go's C{syscall.Errno} does, and
    L{describeMount} a mount as Go's C{%v}.
    """

    def test_errorText(self) -> None:
        """
        The C library's text, with a lower-case initial, except where Go
        keeps an acronym; an unknown number is C{errno N}.
        """
        self.assertEqual(goErrorText(errno.ENOENT), "no such file or directory")
        self.assertEqual(goErrorText(errno.EINVAL), "invalid argument")
        self.assertEqual(goErrorText(errno.EBUSY), "device or resource busy")
        self.assertEqual(goErrorText(errno.EPERM), "operation not permitted")
        self.assertEqual(goErrorText(errno.EDOTDOT), "RFS specific error")
        self.assertEqual(goErrorText(4000), "errno 4000")

    def test_describe(self) -> None:
        """
        C{&{type source [options]}}, options separated by spaces.
        """
        self.assertEqual(
            describeMount("bind", "/src", ["rbind", "ro"]), "&{bind /src [rbind ro]}"
        )
        self.assertEqual(describeMount("tmpfs", "tmpfs", []), "&{tmpfs tmpfs []}")


class MountCallsTests(SynchronousTestCase):
    """
    L{mount} makes the system calls Go's C{(*mount.Mount).Mount} makes.
    """

    def setUp(self) -> None:
        self.syscalls = RecordingSyscalls()

    def mount(self, type: str, source: str, options: Sequence[str]) -> None:
        mount(type, source, "/t", options, syscalls=self.syscalls)

    def test_bindReadWrite(self) -> None:
        """
        An C{rbind,rw} mount, as snapshotters give for a rootfs, is one call.
        """
        self.mount("bind", "/src", ["rbind", "rw"])
        self.assertEqual(
            self.syscalls.calls, [("mount", "/src", "/t", "bind", MS_BIND | MS_REC, "")]
        )

    def test_bindReadOnly(self) -> None:
        """
        A read-only bind mount takes a second call, a remount with every
        flag, since the kernel ignores C{MS_RDONLY} when it binds.
        """
        self.mount("bind", "/src", ["rbind", "ro", "nosuid"])
        flags = MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID
        self.assertEqual(
            self.syscalls.calls,
            [
                ("mount", "/src", "/t", "bind", flags, ""),
                ("mount", "", "/t", "", flags | MS_REMOUNT, ""),
            ],
        )

    def test_bindNoRemountWithoutReadOnly(self) -> None:
        """
        Like Go, a bind mount without C{ro} gets no remount, whatever other
        flags it has.
        """
        self.mount("bind", "/src", ["bind", "nosuid", "nodev"])
        self.assertEqual(
            self.syscalls.calls,
            [("mount", "/src", "/t", "bind", MS_BIND | MS_NOSUID | MS_NODEV, "")],
        )

    def test_readOnlyNotBind(self) -> None:
        """
        C{ro} on a mount that is not a bind mount takes effect at once.
        """
        self.mount("tmpfs", "tmpfs", ["ro", "size=1m"])
        self.assertEqual(
            self.syscalls.calls,
            [("mount", "tmpfs", "/t", "tmpfs", MS_RDONLY, "size=1m")],
        )

    def test_overlay(self) -> None:
        """
        An overlay's options are its data, in order.
        """
        self.mount(
            "overlay", "overlay", ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"]
        )
        self.assertEqual(
            self.syscalls.calls,
            [
                (
                    "mount",
                    "overlay",
                    "/t",
                    "overlay",
                    0,
                    "lowerdir=/a:/b,upperdir=/u,workdir=/w",
                )
            ],
        )

    def test_propagation(self) -> None:
        """
        Propagation is changed by a call of its own, after the mount and
        before the read-only remount, which is Go's order. Neither of the
        other calls carries it.
        """
        self.mount("bind", "/src", ["rbind", "rshared", "ro"])
        flags = MS_BIND | MS_REC | MS_RDONLY
        self.assertEqual(
            self.syscalls.calls,
            [
                ("mount", "/src", "/t", "bind", flags, ""),
                ("mount", "", "/t", "", MS_SHARED | MS_REC, ""),
                ("mount", "", "/t", "", flags | MS_REMOUNT, ""),
            ],
        )

    def test_remountWithoutData(self) -> None:
        """
        A C{remount} without data skips the first call, as in Go: a
        read-only bind remount is then the only call, and a plain
        C{remount,ro} makes none at all.
        """
        self.mount("", "", ["remount", "bind", "ro"])
        self.assertEqual(
            self.syscalls.calls,
            [("mount", "", "/t", "", MS_REMOUNT | MS_BIND | MS_RDONLY, "")],
        )
        self.syscalls.calls.clear()
        self.mount("", "", ["remount", "ro"])
        self.assertEqual(self.syscalls.calls, [])

    def test_remountWithData(self) -> None:
        """
        A C{remount} with data is made, with the data.
        """
        self.mount("tmpfs", "tmpfs", ["remount", "size=2m"])
        self.assertEqual(
            self.syscalls.calls,
            [("mount", "tmpfs", "/t", "tmpfs", MS_REMOUNT, "size=2m")],
        )

    def test_failure(self) -> None:
        """
        A failed call raises L{MountError} with its errno and Go's text,
        naming the mount and the target.
        """
        self.syscalls.failures[0] = errno.ENOENT
        error = self.assertRaises(
            MountError, self.mount, "bind", "/missing", ["rbind", "rw"]
        )
        self.assertIsInstance(error, OSError)
        self.assertEqual(error.errno, errno.ENOENT)
        self.assertEqual(error.reason, "no such file or directory")
        self.assertEqual(error.target, "/t")
        self.assertEqual(error.description, "&{bind /missing [rbind rw]}")
        self.assertEqual(
            str(error),
            "mount &{bind /missing [rbind rw]} on /t: no such file or directory",
        )
        self.assertEqual(
            error.rootfsMessage,
            "failed to mount rootfs component &{bind /missing [rbind rw]}: "
            "no such file or directory",
        )
        self.assertIsInstance(error.__cause__, OSError)

    def test_remountFailure(self) -> None:
        """
        A failed remount says so; the mount before it stays, as in Go.
        """
        self.syscalls.failures[1] = errno.EPERM
        error = self.assertRaises(
            MountError, self.mount, "bind", "/src", ["bind", "ro"]
        )
        self.assertEqual(
            str(error),
            "mount &{bind /src [bind ro]} on /t (remount): operation not permitted",
        )
        self.assertEqual(self.syscalls.stacks, {"/t": 1})

    def test_propagationFailure(self) -> None:
        """
        A failed propagation change says so.
        """
        self.syscalls.failures[1] = errno.EINVAL
        error = self.assertRaises(
            MountError, self.mount, "bind", "/src", ["bind", "shared"]
        )
        self.assertEqual(
            str(error),
            "mount &{bind /src [bind shared]} on /t (propagation): invalid argument",
        )

    def assertUnsupported(
        self, type: str, options: Sequence[str], message: str
    ) -> UnsupportedMountError:
        """
        Mounting fails as unsupported, with C{message}, and makes no call.
        """
        error = self.assertRaises(
            UnsupportedMountError, self.mount, type, "src", options
        )
        self.assertIsInstance(error, MountError)
        self.assertIsInstance(error, OSError)
        self.assertIsInstance(error, NotImplementedError)
        self.assertEqual(error.errno, errno.EOPNOTSUPP)
        self.assertEqual(error.reason, message)
        self.assertEqual(
            str(error), f"mount {describeMount(type, 'src', options)} on /t: {message}"
        )
        self.assertEqual(self.syscalls.calls, [])
        return error

    def test_loop(self) -> None:
        """
        C{loop} is not supported.
        """
        self.assertUnsupported("ext4", ["loop", "ro"], "loop mounts are not supported")

    def test_fuse(self) -> None:
        """
        C{fuse.*} and C{fuse3.*} types, which Go mounts with a helper
        program, are not supported.
        """
        self.assertUnsupported(
            "fuse.sshfs", [], "fuse.* mounts are not supported (they need mount.fuse)"
        )
        self.assertUnsupported(
            "fuse3.fuse-overlayfs",
            ["lowerdir=/a"],
            "fuse3.* mounts are not supported (they need mount.fuse3)",
        )

    def test_fuseExact(self) -> None:
        """
        Only the C{fuse.} and C{fuse3.} prefixes go to a helper in Go: a
        plain C{fuse} type is mounted directly.
        """
        self.mount("fuse", "src", ["fd=3"])
        self.assertEqual(
            self.syscalls.calls, [("mount", "src", "/t", "fuse", 0, "fd=3")]
        )

    def longLowerdir(self, size: int, parent: str = "/var/lib/snapshots") -> str:
        """
        A C{lowerdir=} option of exactly C{size} bytes listing directories
        under C{parent}, which Go would compact.
        """
        dirs: list[str] = []
        while len("lowerdir=" + ":".join(dirs)) + len(parent) + 10 < size:
            dirs.append(f"{parent}/{len(dirs)}/fs")
        option = "lowerdir=" + ":".join(dirs)
        return option + "x" * (size - len(option))

    def test_overlayCompactTooLong(self) -> None:
        """
        Overlay options Go would compact, and that do not fit in a page as
        they are, are not supported.
        """
        option = self.longLowerdir(PAGE_SIZE)
        self.assertEqual(len(option), PAGE_SIZE)
        self.assertUnsupported(
            "overlay",
            [option],
            f"overlay options of {PAGE_SIZE} bytes are not supported (mount(2) "
            f"takes {PAGE_SIZE - 1} at most without lowerdir compaction)",
        )

    def test_overlayCompactFits(self) -> None:
        """
        Overlay options Go would compact, that fit in a page as they are,
        are mounted as they are.
        """
        rest = ["upperdir=/u", "workdir=/w"]
        size = PAGE_SIZE - 1 - len("".join(f",{o}" for o in rest))
        options = [self.longLowerdir(size), *rest]
        data = ",".join(options)
        self.assertEqual(len(data), PAGE_SIZE - 1)
        self.mount("overlay", "overlay", options)
        self.assertEqual(
            self.syscalls.calls, [("mount", "overlay", "/t", "overlay", 0, data)]
        )

    def test_overlayNoCommonParent(self) -> None:
        """
        Long overlay options Go would not compact (a single lower directory,
        or lower directories with no common parent but C{/}) get Go's length
        check: more than a page is too long.
        """
        for option in [
            "lowerdir=/" + "a" * PAGE_SIZE,
            "lowerdir=" + ":".join(f"/{n}/fs" for n in range(PAGE_SIZE // 4)),
        ]:
            error = self.assertRaises(MountError, self.mount, "overlay", "o", [option])
            self.assertNotIsInstance(error, UnsupportedMountError)
            self.assertEqual(error.reason, "mount options is too long")
            self.assertEqual(error.errno, errno.E2BIG)
        self.assertEqual(self.syscalls.calls, [])

    def test_tooLong(self) -> None:
        """
        Data longer than a page is too long for any type, as in Go; a page
        exactly is passed on.
        """
        error = self.assertRaises(
            MountError, self.mount, "tmpfs", "tmpfs", ["x" * (PAGE_SIZE + 1)]
        )
        self.assertEqual(
            error.rootfsMessage,
            f"failed to mount rootfs component {error.description}: "
            "mount options is too long",
        )
        self.assertEqual(self.syscalls.calls, [])
        self.mount("tmpfs", "tmpfs", ["x" * PAGE_SIZE])
        self.assertEqual(len(self.syscalls.calls), 1)

    def test_goCompactionCases(self) -> None:
        """
        Go's own C{compactLowerdirOption} cases: options are compacted only
        with several lower directories under a common parent other than
        C{/}.
        """
        cases = [
            ([], False),
            (["workdir=a", "lowerdir=b"], False),
            (["lowerdir=/snapshots/1/fs:/snapshots/10/fs"], True),
            (["lowerdir=/snapshots/1/fs:/snapshots/10/fs:/snapshots/2/fs"], True),
            (["lowerdir=/snapshots/1/fs:/other_snapshots/1/fs"], False),
            (["lowerdir=/a/x:/a/y"], True),
            (["lowerdir=/ax:/ay"], False),
        ]
        for options, compacted in cases:
            self.assertEqual(
                shimd.runc.mount._wouldCompact(options),
                compacted,
                f"options {options!r}",
            )


class MountAllCallsTests(SynchronousTestCase):
    """
    L{mountAll} mounts a rootfs in order, and cleans up when one fails.
    """

    def setUp(self) -> None:
        self.syscalls = RecordingSyscalls()
        self.target = self.mktemp()
        os.makedirs(self.target)
        self.mounts = [
            Mount(type="bind", source="/a", target="/ignored", options=["rbind", "rw"]),
            Mount(type="overlay", source="overlay", options=["lowerdir=/l"]),
            Mount(type="bind", source="/c", options=["bind", "ro"]),
        ]

    def test_inOrder(self) -> None:
        """
        Each mount goes onto the target, in order; their C{target} fields are
        ignored.
        """
        mountAll(self.mounts, self.target, syscalls=self.syscalls)
        t = self.target
        self.assertEqual(
            self.syscalls.calls,
            [
                ("mount", "/a", t, "bind", MS_BIND | MS_REC, ""),
                ("mount", "overlay", t, "overlay", 0, "lowerdir=/l"),
                ("mount", "/c", t, "bind", MS_BIND | MS_RDONLY, ""),
                ("mount", "", t, "", MS_BIND | MS_RDONLY | MS_REMOUNT, ""),
            ],
        )
        self.assertEqual(self.syscalls.stacks, {t: 3})

    def test_empty(self) -> None:
        """
        No mounts, no calls.
        """
        mountAll([], self.target, syscalls=self.syscalls)
        self.assertEqual(self.syscalls.calls, [])

    def test_failure(self) -> None:
        """
        When a mount fails, everything on the target is unmounted, with
        umount2 and no flags until C{EINVAL}, and the error is raised.
        """
        self.syscalls.failures[1] = errno.EINVAL
        error = self.assertRaises(
            MountError, mountAll, self.mounts, self.target, syscalls=self.syscalls
        )
        self.assertEqual(error.description, "&{overlay overlay [lowerdir=/l]}")
        t = self.target
        self.assertEqual(
            self.syscalls.calls,
            [
                ("mount", "/a", t, "bind", MS_BIND | MS_REC, ""),
                ("mount", "overlay", t, "overlay", 0, "lowerdir=/l"),
                ("umount2", t, 0),
                ("umount2", t, 0),
            ],
        )
        self.assertEqual(self.syscalls.stacks, {t: 0})

    def test_failedRemount(self) -> None:
        """
        A mount whose read-only remount failed is unmounted too.
        """
        self.syscalls.failures[3] = errno.EPERM
        self.assertRaises(
            MountError, mountAll, self.mounts, self.target, syscalls=self.syscalls
        )
        self.assertEqual(self.syscalls.calls[4:], [("umount2", self.target, 0)] * 4)
        self.assertEqual(self.syscalls.stacks, {self.target: 0})

    def test_unsupported(self) -> None:
        """
        An unsupported mount after others undoes them too.
        """
        mounts = [*self.mounts[:1], Mount(type="ext4", source="/img", options=["loop"])]
        self.assertRaises(
            UnsupportedMountError, mountAll, mounts, self.target, syscalls=self.syscalls
        )
        self.assertEqual(self.syscalls.stacks, {self.target: 0})

    def test_cleanupFailure(self) -> None:
        """
        If the cleanup fails too, the mount's error is raised, with the
        cleanup's as a note.
        """
        self.syscalls.failures.update({1: errno.EINVAL, 2: errno.EBUSY})
        error = self.assertRaises(
            MountError, mountAll, self.mounts, self.target, syscalls=self.syscalls
        )
        self.assertEqual(error.errno, errno.EINVAL)
        self.assertEqual(
            error.__notes__,
            [f"cleaning up: unmount {self.target}: device or resource busy"],
        )


class UnmountAllCallsTests(SynchronousTestCase):
    """
    L{unmountAll} calls umount2 until nothing is mounted.
    """

    def setUp(self) -> None:
        self.syscalls = RecordingSyscalls()
        self.target = self.mktemp()
        os.makedirs(self.target)

    def test_stacked(self) -> None:
        """
        Each mount is taken off in turn, with no flags, until C{EINVAL}.
        """
        self.syscalls.stacks[self.target] = 3
        unmountAll(self.target, syscalls=self.syscalls)
        self.assertEqual(self.syscalls.calls, [("umount2", self.target, 0)] * 4)
        self.assertEqual(self.syscalls.stacks, {self.target: 0})

    def test_flags(self) -> None:
        """
        Flags, if given, are passed on.
        """
        unmountAll(self.target, MNT_DETACH, syscalls=self.syscalls)
        self.assertEqual(self.syscalls.calls, [("umount2", self.target, MNT_DETACH)])

    def test_enoent(self) -> None:
        """
        C{ENOENT}, the target gone meanwhile, ends it quietly.
        """
        self.syscalls.failures[0] = errno.ENOENT
        unmountAll(self.target, syscalls=self.syscalls)
        self.assertEqual(len(self.syscalls.calls), 1)

    def test_busy(self) -> None:
        """
        Another error, C{EBUSY} say, is raised at once, naming the target in
        Go's words.
        """
        self.syscalls.stacks[self.target] = 2
        self.syscalls.failures[1] = errno.EBUSY
        error = self.assertRaises(
            MountError, unmountAll, self.target, syscalls=self.syscalls
        )
        self.assertEqual(error.errno, errno.EBUSY)
        self.assertIsNone(error.description)
        self.assertEqual(str(error), f"unmount {self.target}: device or resource busy")
        self.assertEqual(len(self.syscalls.calls), 2)

    def test_noTarget(self) -> None:
        """
        An empty target, and a missing one, are left alone.
        """
        unmountAll("", syscalls=self.syscalls)
        unmountAll(os.path.join(self.target, "missing"), syscalls=self.syscalls)
        self.assertEqual(self.syscalls.calls, [])


def mountPoints() -> list[tuple[str, str, str, str]]:
    """
    Every mount in C{/proc/self/mountinfo}, in order, as (mount point,
    per-mount options, optional fields, filesystem type).
    """

    def unescape(field: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fields = before.split()
            points.append(
                (
                    unescape(fields[4]),
                    fields[5],
                    " ".join(fields[6:]),
                    after.split()[0],
                )
            )
    return points


def mountsOn(path: str) -> list[tuple[str, str, str, str]]:
    """
    The mounts on C{path}, bottom first.
    """
    path = os.path.realpath(path)
    return [point for point in mountPoints() if point[0] == path]


def detachAll(path: str) -> None:
    """
    Lazily unmount everything on C{path}, with C{ctypes} directly, so that
    cleanup does not depend on the code under test.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    while libc.umount2(os.fsencode(path), MNT_DETACH) == 0:
        pass


class RealMountTests(SynchronousTestCase):
    """
    Real mounts, as root, in a temporary directory under C{/tmp}.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("mount(2) needs root; run these tests as root")
        self.root = tempfile.mkdtemp(prefix="shimd-mount-", dir="/tmp")
        self.addCleanup(self.removeRoot)
        self.target = self.directory("rootfs")
        try:
            mount("bind", self.directory("probe"), self.target, ["bind"])
        except MountError as e:
            raise SkipTest(f"cannot mount here: {e}") from e
        detachAll(self.target)

    def removeRoot(self) -> None:
        """
        Take off anything still mounted under the temporary directory, then
        remove it; refuse to remove it if something stays mounted.
        """
        inside = [
            point
            for point, _, _, _ in mountPoints()
            if point == self.root or point.startswith(self.root + "/")
        ]
        for point in reversed(inside):
            detachAll(point)
        left = [p for p, _, _, _ in mountPoints() if p.startswith(self.root + "/")]
        if left:
            self.fail(f"still mounted, so not removed: {left}")
        shutil.rmtree(self.root)

    def directory(self, *names: str) -> str:
        path = os.path.join(self.root, *names)
        os.makedirs(path, exist_ok=True)
        return path

    def writeFile(self, path: str, content: str) -> None:
        with open(path, "w") as f:
            f.write(content)

    def readFile(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def test_bindReadWrite(self) -> None:
        """
        An C{rbind,rw} bind mount, as snapshotters give for a rootfs, shows
        the source's files through the target, writable; L{unmountAll} takes
        it off.
        """
        source = self.directory("source")
        self.writeFile(os.path.join(source, "hello"), "hi")
        mountAll(
            [Mount(type="bind", source=source, options=["rbind", "rw"])], self.target
        )
        self.assertEqual(len(mountsOn(self.target)), 1)
        self.assertEqual(self.readFile(os.path.join(self.target, "hello")), "hi")
        self.writeFile(os.path.join(self.target, "new"), "written")
        self.assertEqual(self.readFile(os.path.join(source, "new")), "written")
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])
        self.assertFalse(os.path.exists(os.path.join(self.target, "hello")))

    def test_bindReadOnly(self) -> None:
        """
        A bind mount with C{ro} really is read-only, which takes the
        remount: a bare C{MS_BIND | MS_RDONLY} mount (the control) stays
        writable.
        """
        source = self.directory("source")
        self.writeFile(os.path.join(source, "hello"), "hi")
        control = self.directory("control")
        LibcSyscalls().mount(source, control, "bind", MS_BIND | MS_RDONLY, "")
        self.writeFile(os.path.join(control, "control"), "written")
        self.assertTrue(mountsOn(control)[0][1].startswith("rw"))

        mount("bind", source, self.target, ["rbind", "ro", "nosuid", "nodev"])
        self.assertEqual(self.readFile(os.path.join(self.target, "hello")), "hi")
        error = self.assertRaises(
            OSError, self.writeFile, os.path.join(self.target, "new"), "x"
        )
        self.assertEqual(error.errno, errno.EROFS)
        options = mountsOn(self.target)[0][1].split(",")
        self.assertEqual(options[0], "ro")
        self.assertIn("nosuid", options)
        self.assertIn("nodev", options)
        # The source itself stays writable.
        self.writeFile(os.path.join(source, "new"), "x")
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_overlay(self) -> None:
        """
        An overlay mount, as the overlayfs snapshotter gives, shows the
        lower directories' files, takes writes into the upper one, and is
        taken off by L{unmountAll}.
        """
        lower1, lower2 = self.directory("lower1"), self.directory("lower2")
        upper, work = self.directory("upper"), self.directory("work")
        self.writeFile(os.path.join(lower1, "shadowed"), "lower1")
        self.writeFile(os.path.join(lower2, "shadowed"), "lower2")
        self.writeFile(os.path.join(lower2, "bottom"), "bottom")
        mountAll(
            [
                Mount(
                    type="overlay",
                    source="overlay",
                    options=[
                        f"lowerdir={lower1}:{lower2}",
                        f"upperdir={upper}",
                        f"workdir={work}",
                    ],
                )
            ],
            self.target,
        )
        [(_, _, _, fstype)] = mountsOn(self.target)
        self.assertEqual(fstype, "overlay")
        self.assertEqual(self.readFile(os.path.join(self.target, "shadowed")), "lower1")
        self.assertEqual(self.readFile(os.path.join(self.target, "bottom")), "bottom")
        self.writeFile(os.path.join(self.target, "new"), "upper")
        self.assertEqual(self.readFile(os.path.join(upper, "new")), "upper")
        self.assertFalse(os.path.exists(os.path.join(lower1, "new")))
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])
        self.assertEqual(os.listdir(self.target), [])

    def test_overlayLongLowerdir(self) -> None:
        """
        An overlay whose options are long enough that Go would compact them,
        but that fit in a page, is mounted as it is.
        """
        lowers: list[str] = []
        while sum(len(lower) + 1 for lower in lowers) < PAGE_SIZE - 400:
            lowers.append(self.directory("layers", str(len(lowers)), "fs"))
        self.writeFile(os.path.join(lowers[-1], "bottom"), "bottom")
        options = [
            "lowerdir=" + ":".join(lowers),
            f"upperdir={self.directory('upper')}",
            f"workdir={self.directory('work')}",
        ]
        self.assertGreaterEqual(sum(map(len, options)), PAGE_SIZE - 512)
        self.assertTrue(shimd.runc.mount._wouldCompact(options))
        mount("overlay", "overlay", self.target, options)
        self.assertEqual(self.readFile(os.path.join(self.target, "bottom")), "bottom")
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_propagation(self) -> None:
        """
        A propagation word changes the new mount's propagation.
        """
        source = self.directory("source")
        mount("bind", source, self.target, ["rbind", "rw", "shared"])
        [(_, _, optional, _)] = mountsOn(self.target)
        self.assertIn("shared:", optional)
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_stacked(self) -> None:
        """
        L{unmountAll} takes off every mount stacked on the target.
        """
        mounts = []
        for n in range(3):
            source = self.directory(f"source{n}")
            self.writeFile(os.path.join(source, "which"), str(n))
            mounts.append(Mount(type="bind", source=source, options=["rbind", "rw"]))
        mounts.append(Mount(type="tmpfs", source="tmpfs", options=["size=1m"]))
        mountAll(mounts, self.target)
        self.assertEqual(len(mountsOn(self.target)), 4)
        self.assertEqual(os.listdir(self.target), [])
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_mountAllFailure(self) -> None:
        """
        When the second mount fails, L{mountAll} takes the first off again
        and raises the second's error, which words it as the Go shim does.
        """
        source = self.directory("source")
        missing = os.path.join(self.root, "missing")
        mounts = [
            Mount(type="bind", source=source, options=["rbind", "rw"]),
            Mount(type="bind", source=missing, options=["rbind", "rw"]),
        ]
        error = self.assertRaises(MountError, mountAll, mounts, self.target)
        self.assertEqual(error.errno, errno.ENOENT)
        self.assertEqual(
            error.rootfsMessage,
            f"failed to mount rootfs component &{{bind {missing} [rbind rw]}}: "
            "no such file or directory",
        )
        self.assertEqual(mountsOn(self.target), [])

    def test_mountAllUnsupported(self) -> None:
        """
        An unsupported mount after a good one leaves nothing mounted either.
        """
        mounts = [
            Mount(type="bind", source=self.directory("source"), options=["rbind"]),
            Mount(type="ext4", source="/image", options=["loop"]),
        ]
        self.assertRaises(UnsupportedMountError, mountAll, mounts, self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_unmountBusy(self) -> None:
        """
        With no flags, as in the Go shim, a busy mount is not detached:
        L{unmountAll} raises C{EBUSY} and the mount stays, until the file
        is closed.
        """
        mount("tmpfs", "tmpfs", self.target, ["size=1m"])
        with open(os.path.join(self.target, "open"), "w"):
            error = self.assertRaises(MountError, unmountAll, self.target)
            self.assertEqual(error.errno, errno.EBUSY)
            self.assertEqual(len(mountsOn(self.target)), 1)
        unmountAll(self.target)
        self.assertEqual(mountsOn(self.target), [])

    def test_notMounted(self) -> None:
        """
        L{unmountAll} leaves a directory with nothing mounted alone, and a
        missing one.
        """
        unmountAll(self.target)
        unmountAll(os.path.join(self.root, "missing"))
        self.assertTrue(os.path.isdir(self.target))

    def test_libcErrors(self) -> None:
        """
        L{LibcSyscalls} raises the kernel's errno.
        """
        syscalls = LibcSyscalls()
        error = self.assertRaises(
            OSError,
            syscalls.mount,
            os.path.join(self.root, "missing"),
            self.target,
            "bind",
            MS_BIND,
            "",
        )
        self.assertEqual(error.errno, errno.ENOENT)
        error = self.assertRaises(OSError, syscalls.umount2, self.target, 0)
        self.assertEqual(error.errno, errno.EINVAL)
