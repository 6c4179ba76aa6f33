# -*- test-case-name: tests.test_mount -*-
"""
Mounting a task's root filesystem, the way containerd's Go shim does.

C{Create} mounts each entry of C{CreateTaskRequest.rootfs}, in order, onto
C{<bundle>/rootfs} with L{mountAll}; C{Delete}, and a C{Create} that fails
after mounting, take them all off again with L{unmountAll}. The options are
containerd's fstab-style words, parsed by L{parseOptions} as containerd 1.6's
C{mount/mount_linux.go} parses them.

Everything here is synchronous, and cheap enough for the reactor thread:
mount(2) and umount2(2) on local filesystems do not wait on I/O. The module
uses the standard library alone, and loads C{ctypes} only when it first makes
a system call, so that the launcher can import it on containerd's critical
path.

Not supported, unlike the Go shim; each raises L{UnsupportedMountError}
before that mount makes any system call, so that C{Create} can report it
(and L{mountAll} takes off the mounts before it):

  - the C{loop} option, for which Go attaches a loop device to the source;
  - C{fuse.*} and C{fuse3.*} types, for which Go runs the C{mount.fuse} or
    C{mount.fuse3} helper;
  - overlay mounts whose C{lowerdir} Go would shorten (options of a page less
    512 bytes or more, and the lower directories share a parent), when the
    data does not fit in a page as it is. Go mounts those from a child process
    that changes directory to the common parent; a process-wide C{chdir} has
    no place in a reactor. Data that does fit is mounted as it is, which gives
    the same filesystem.

Other differences from Go's C{mount} package:

  - The propagation words (C{shared}, C{rprivate}, ...) are parsed and
    applied after the mount. containerd 1.6.20's table lacks them, so Go
    passes them on in the data string, where a bind mount ignores them and
    most filesystems reject them.
  - L{unmountAll} does not retry C{EBUSY} (Go retries 50 times, 50 ms apart,
    which would stall the reactor for 2.5 s); it raises, and the caller may
    try again later. It does not call C{fusermount} for FUSE mounts either:
    root's umount2(2) unmounts them. It stops quietly at C{ENOENT} as well as
    at C{EINVAL}.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterable, Sequence

# typing costs milliseconds to import, and the launcher may import this
# module: mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Protocol

    class MountLike(Protocol):
        """
        One rootfs entry: a C{containerd.types.Mount} message, or anything
        with the same fields. Its C{target} is not used.
        """

        @property
        def type(self) -> str: ...

        @property
        def source(self) -> str: ...

        @property
        def options(self) -> Sequence[str]: ...

    class Syscalls(Protocol):
        """
        The two system calls this module makes, so that tests can record them.
        Both raise L{OSError} with the C{errno} on failure.
        """

        def mount(
            self, source: str, target: str, fstype: str, flags: int, data: str
        ) -> None: ...

        def umount2(self, target: str, flags: int) -> None: ...


# From <linux/mount.h>.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# From <sys/mount.h>.
MNT_FORCE = 0x1
MNT_DETACH = 0x2

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Go's table: each word clears (True) or sets (False) its flags. A word whose
# flags are 0, i.e. "defaults", is not a flag to Go: it goes into the data.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}

_PROPAGATION = {
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

_LOOP = "loop"
_HELPER_TYPES = (("fuse.", "mount.fuse"), ("fuse3.", "mount.fuse3"))
_BIND_READ_ONLY = MS_BIND | MS_RDONLY
# Go shortens an overlay's lowerdir once its options come this close to a page.
_COMPACT_MARGIN = 512


class MountOptions:
    """
    Option words, parsed for mount(2).

    @ivar flags: the C{MS_*} flags for the mount itself.
    @ivar data: the words that are not flags, joined with C{","}: the
        filesystem's own options.
    @ivar propagation: the C{MS_SHARED}, C{MS_PRIVATE}, C{MS_SLAVE} or
        C{MS_UNBINDABLE} flags, with C{MS_REC} for the C{r} forms, which take
        a second call after the mount; 0 for none.
    @ivar loop: whether C{loop} was asked for.
    """

    __slots__ = ("data", "flags", "loop", "propagation")

    def __init__(
        self, flags: int = 0, data: str = "", propagation: int = 0, loop: bool = False
    ) -> None:
        self.flags = flags
        self.data = data
        self.propagation = propagation
        self.loop = loop

    def _fields(self) -> tuple[int, str, int, bool]:
        return (self.flags, self.data, self.propagation, self.loop)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MountOptions):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"MountOptions(flags={self.flags:#x}, data={self.data!r}, "
            f"propagation={self.propagation:#x}, loop={self.loop!r})"
        )


class MountError(OSError):
    """
    A mount or unmount failed. C{str()} gives a message naming the mount.

    @ivar errno: the error number; C{EOPNOTSUPP} for an unsupported mount.
    @ivar reason: why, worded as Go words it (C{"invalid argument"}).
    @ivar description: the mount as Go's C{%v} prints a containerd
        C{*mount.Mount} (C{"&{bind /src [rbind ro]}"}), or L{None} for an
        unmount.
    @ivar target: the mount point.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        target: str,
        description: str | None = None,
        step: str = "",
    ) -> None:
        """
        @param step: which call failed when a mount takes several, e.g.
            C{"remount"}, for the message; empty for the mount itself.
        """
        if description is None:
            message = f"unmount {target}: {reason}"
        else:
            during = f" ({step})" if step else ""
            message = f"mount {description} on {target}{during}: {reason}"
        super().__init__(code, message)
        self.reason = reason
        self.description = description
        self.target = target

    def __str__(self) -> str:
        return str(self.strerror)

    @property
    def rootfsMessage(self) -> str:
        """
        The error the Go shim's C{Create} gives when this rootfs mount fails:
        C{"failed to mount rootfs component &{...}: <reason>"}.
        """
        return f"failed to mount rootfs component {self.description}: {self.reason}"


class UnsupportedMountError(MountError, NotImplementedError):
    """
    The Go shim can make this mount, but this one cannot: see the module
    docstring.
    """

    def __init__(self, reason: str, *, target: str, description: str) -> None:
        super().__init__(
            errno.EOPNOTSUPP, reason, target=target, description=description
        )


class LibcSyscalls:
    """
    The real mount(2) and umount2(2), through C{ctypes}, which is loaded on
    first use.
    """

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None

    def _load(self) -> ctypes.CDLL:
        if self._libc is None:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            text = ctypes.c_char_p
            libc.mount.argtypes = [text, text, text, ctypes.c_ulong, text]
            libc.mount.restype = ctypes.c_int
            libc.umount2.argtypes = [text, ctypes.c_int]
            libc.umount2.restype = ctypes.c_int
            self._libc = libc
        return self._libc

    @staticmethod
    def _fail() -> OSError:
        import ctypes

        code = ctypes.get_errno()
        return OSError(code, os.strerror(code))

    def mount(
        self, source: str, target: str, fstype: str, flags: int, data: str
    ) -> None:
        """
        Call mount(2). Empty data goes as C{NULL}, as Go's C{unix.Mount}
        passes it: some filesystems reject an empty string.
        """
        result = self._load().mount(
            os.fsencode(source),
            os.fsencode(target),
            os.fsencode(fstype),
            flags,
            os.fsencode(data) if data else None,
        )
        if result != 0:
            raise self._fail()

    def umount2(self, target: str, flags: int) -> None:
        """
        Call umount2(2).
        """
        if self._load().umount2(os.fsencode(target), flags) != 0:
            raise self._fail()


LIBC = LibcSyscalls()


def goErrorText(code: int) -> str:
    """
    An error number's text as Go's C{syscall.Errno} gives it: the C library's
    text with a lower-case initial (C{"no such file or directory"}).
    """
    text = os.strerror(code)
    if text.startswith("Unknown error"):
        return f"errno {code}"
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def describeMount(type: str, source: str, options: Sequence[str]) -> str:
    """
    A mount as Go's C{%v} prints a containerd C{*mount.Mount}, for messages
    that match the Go shim's: C{"&{overlay overlay [lowerdir=/l workdir=/w]}"}.
    """
    return f"&{{{type} {source} [{' '.join(options)}]}}"


def parseOptions(options: Iterable[str]) -> MountOptions:
    """
    Parse fstab-style option words as containerd's C{parseMountOptions}
    does. A flag word sets or clears its C{MS_*} flags, so a later word
    overrides an earlier one (C{["ro", "rw"]} is read-write); a propagation
    word adds to L{MountOptions.propagation}; C{loop} sets
    L{MountOptions.loop}; every other word, C{defaults} included, goes into
    the data, in order.

    @param options: the words, e.g. C{["rbind", "ro"]}.
    @return: the parsed options.
    """
    flags = 0
    propagation = 0
    loop = False
    data = []
    for option in options:
        clear, flag = _FLAGS.get(option, (False, 0))
        if flag:
            if clear:
                flags &= ~flag
            else:
                flags |= flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        elif option == _LOOP:
            loop = True
        else:
            data.append(option)
    return MountOptions(flags, ",".join(data), propagation, loop)


def _goDir(path: str) -> str:
    """
    Go's C{path.Dir}: everything up to the last slash, cleaned.
    """
    cleaned = posixpath.normpath(path[: path.rfind("/") + 1])
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _wouldCompact(options: Sequence[str]) -> bool:
    """
    Whether Go's C{compactLowerdirOption} would rewrite these overlay
    options: the first C{lowerdir=} lists several directories whose longest
    common prefix lies below some directory other than C{/}.
    """
    lowerdirs = next((o for o in options if o.startswith("lowerdir=")), None)
    if lowerdirs is None:
        return False
    dirs = lowerdirs[len("lowerdir=") :].split(":")
    if len(dirs) == 1:
        return False
    common = posixpath.commonprefix([min(dirs), max(dirs)])
    return common != "" and _goDir(common) != "/"


def mount(
    type: str,
    source: str,
    target: str,
    options: Sequence[str],
    *,
    syscalls: Syscalls = LIBC,
) -> None:
    """
    Mount one filesystem on C{target}, as Go's C{(*mount.Mount).Mount} does.

    That takes up to three calls: the mount itself, with every flag but the
    propagation ones (skipped for a C{remount} without data); then the
    propagation change, if any; then, for a bind mount with C{ro}, a remount
    with all the flags, because the kernel ignores C{MS_RDONLY} and the
    other per-mount flags when it makes a bind mount. (Like Go, a bind mount
    without C{ro} gets no remount, so C{nosuid} and the like do not take.)
    If a later call fails the earlier ones stay done, as in Go: L{mountAll}
    cleans up.

    @param type: the filesystem type, C{"overlay"} or C{"bind"} say.
    @param source: what to mount: a path, device or name.
    @param target: the directory to mount it on.
    @param options: fstab-style words; see L{parseOptions}.
    @param syscalls: what makes the system calls; tests pass a recorder.
    @raise UnsupportedMountError: for what this module does not do; see the
        module docstring. Nothing has been mounted.
    @raise MountError: if a call fails, or the options are longer than a
        page.
    """
    description = describeMount(type, source, options)
    for prefix, helper in _HELPER_TYPES:
        if type.startswith(prefix):
            raise UnsupportedMountError(
                f"{prefix}* mounts are not supported (they need {helper})",
                target=target,
                description=description,
            )
    parsed = parseOptions(options)
    size = len(os.fsencode(parsed.data))
    if (
        type == "overlay"
        and sum(len(os.fsencode(o)) for o in options) >= PAGE_SIZE - _COMPACT_MARGIN
        and _wouldCompact(options)
        and size >= PAGE_SIZE
    ):
        raise UnsupportedMountError(
            f"overlay options of {size} bytes are not supported "
            f"(mount(2) takes {PAGE_SIZE - 1} at most without lowerdir compaction)",
            target=target,
            description=description,
        )
    if size > PAGE_SIZE:
        raise MountError(
            errno.E2BIG,
            "mount options is too long",
            target=target,
            description=description,
        )
    if parsed.loop:
        raise UnsupportedMountError(
            "loop mounts are not supported",
            target=target,
            description=description,
        )

    def call(step: str, source: str, fstype: str, flags: int, data: str) -> None:
        try:
            syscalls.mount(source, target, fstype, flags, data)
        except OSError as e:
            code = e.errno or errno.EIO
            raise MountError(
                code,
                goErrorText(code),
                target=target,
                description=description,
                step=step,
            ) from e

    flags = parsed.flags
    if not flags & MS_REMOUNT or parsed.data:
        call("", source, type, flags, parsed.data)
    if parsed.propagation:
        call("propagation", "", "", parsed.propagation, "")
    if flags & _BIND_READ_ONLY == _BIND_READ_ONLY:
        call("remount", "", "", flags | MS_REMOUNT, "")


def mountAll(
    mounts: Iterable[MountLike], target: str, *, syscalls: Syscalls = LIBC
) -> None:
    """
    Mount each of C{mounts}, in order, on C{target}, each on top of the one
    before: what C{Create} does with C{CreateTaskRequest.rootfs}. The mounts'
    own C{target} fields are ignored, as the Go shim ignores them.

    If one fails, everything on C{target} is unmounted again (with
    L{unmountAll}, as the Go shim cleans up) before its error is raised; an
    error in that cleanup is added to the error as a note.

    @param mounts: the mounts, e.g. C{containerd.types.Mount} messages.
    @param target: the mount point, C{<bundle>/rootfs}.
    @param syscalls: what makes the system calls; tests pass a recorder.
    @raise MountError: the failure, as from L{mount}.
    """
    try:
        for each in mounts:
            mount(each.type, each.source, target, each.options, syscalls=syscalls)
    except Exception as e:
        try:
            unmountAll(target, syscalls=syscalls)
        except OSError as cleanup:
            e.add_note(f"cleaning up: {cleanup}")
        raise


def unmountAll(target: str, flags: int = 0, *, syscalls: Syscalls = LIBC) -> None:
    """
    Unmount everything stacked on C{target}, as Go's C{mount.UnmountAll}
    does: umount2(2) again and again until it fails with C{EINVAL}, i.e.
    nothing is mounted there (or with C{ENOENT}). An empty C{target}, or one
    that does not exist, is left alone: the Go shim calls this with an empty
    path when the task has no rootfs mounts.

    @param target: the mount point, C{<bundle>/rootfs}.
    @param flags: umount2(2) flags. The Go shim passes 0, not C{MNT_DETACH}:
        a busy mount is an error, not something left behind, unseen.
    @param syscalls: what makes the system calls; tests pass a recorder.
    @raise MountError: any other failure, C{EBUSY} for instance.
    """
    if not target:
        return
    try:
        os.stat(target)
    except FileNotFoundError:
        return
    except OSError:
        pass
    while True:
        try:
            syscalls.umount2(target, flags)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return
            code = e.errno or errno.EIO
            raise MountError(code, goErrorText(code), target=target) from e
