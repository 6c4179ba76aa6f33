"""
Looking at the host from outside containerd: processes, cgroups, mounts and
unix sockets, as the kernel shows them under C{/proc} and C{/sys}.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal

CGROUP_ROOT = "/sys/fs/cgroup"
SOCKET_DIR = "/run/containerd/s"
_ACCEPTCON = 0x10000


def pids() -> list[int]:
    """
    Every process id there is now.
    """
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def arguments(pid: int) -> list[str]:
    """
    The argv of process C{pid}; empty when it is gone (or a kernel thread).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0")[:-1]]


def commandLine(pid: int) -> str:
    """
    The argv of process C{pid} joined with spaces, as C{pgrep -f} matches it.
    """
    return " ".join(arguments(pid))


def isAlive(pid: int) -> bool:
    """
    Whether C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill(pid: int) -> None:
    """
    SIGKILL C{pid}, if it is still there.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def hasFlag(argv: list[str], flag: str, value: str) -> bool:
    """
    Whether C{argv} passes C{value} to the Go-style C{flag} (C{-flag value},
    C{--flag value}, C{-flag=value} or C{--flag=value}).
    """
    name = flag.lstrip("-")
    for index, arg in enumerate(argv):
        if arg.lstrip("-") == name and arg.startswith("-"):
            if index + 1 < len(argv) and argv[index + 1] == value:
                return True
        elif arg.startswith("-") and arg.lstrip("-") == f"{name}={value}":
            return True
    return False


def processesWithArguments(flag: str, value: str) -> list[int]:
    """
    Live processes whose argv passes C{value} to C{flag}, Go flag style.
    """
    return [
        pid
        for pid in pids()
        if pid != os.getpid() and isAlive(pid) and hasFlag(arguments(pid), flag, value)
    ]


def workingDirectory(pid: int) -> str | None:
    """
    The working directory of process C{pid}, without the C{" (deleted)"}
    the kernel appends once it is removed; L{None} if unknown.
    """
    try:
        return os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return None


def processesWorkingIn(directory: str, below: bool = False) -> list[int]:
    """
    Live processes whose working directory is C{directory} (or, if C{below},
    anything under it). A shim runs in its bundle directory, whatever its
    command line looks like.
    """
    directory = directory.rstrip("/")
    found = []
    for pid in pids():
        cwd = workingDirectory(pid)
        if cwd is None or pid == os.getpid():
            continue
        inside = cwd == directory or (below and cwd.startswith(directory + "/"))
        if inside and isAlive(pid):
            found.append(pid)
    return found


def processesMatching(pattern: str) -> list[int]:
    """
    Live processes whose joined argv matches the regular expression
    C{pattern}, like C{pgrep -f}.
    """
    regex = re.compile(pattern)
    return [
        pid
        for pid in pids()
        if pid != os.getpid() and isAlive(pid) and regex.search(commandLine(pid))
    ]


def cgroupsOf(pid: int) -> dict[str, str]:
    """
    The cgroups of process C{pid} from C{/proc/PID/cgroup}: C{{controllers:
    path}}, the cgroup2 entry under the key C{""}.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    cgroups = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        cgroups[controllers] = path
    return cgroups


def v1CgroupDirectory(pid: int, controller: str) -> str:
    """
    The directory of the cgroup v1 C{controller} hierarchy that process
    C{pid} is in.
    """
    for controllers, path in cgroupsOf(pid).items():
        if controller in controllers.split(","):
            return os.path.join(CGROUP_ROOT, controller, path.lstrip("/"))
    raise AssertionError(f"process {pid} has no {controller} cgroup")


def processesInCgroup(prefix: str) -> list[int]:
    """
    Live processes in cgroup C{prefix} or below it, in any hierarchy.
    """
    found = []
    for pid in pids():
        for path in cgroupsOf(pid).values():
            if path == prefix or path.startswith(prefix + "/"):
                if isAlive(pid):
                    found.append(pid)
                break
    return found


def unified() -> bool:
    """
    Whether this is a unified (cgroup v2 only) host: cgroup2 mounted at
    C{/sys/fs/cgroup} itself.
    """
    return os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def cgroupDirectories(path: str) -> list[str]:
    """
    The existing directories of cgroup C{path} in every mounted hierarchy
    (v1 controllers, C{systemd}, C{unified}), or in the one hierarchy of a
    unified (v2) host.
    """
    if unified():
        # One hierarchy, mounted at the root.
        directory = os.path.join(CGROUP_ROOT, path.lstrip("/"))
        return [directory] if os.path.isdir(directory) else []
    found = []
    for hierarchy in sorted(os.listdir(CGROUP_ROOT)):
        directory = os.path.join(CGROUP_ROOT, hierarchy, path.lstrip("/"))
        if os.path.isdir(directory):
            found.append(directory)
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[tuple[str, str, str]]:
    """
    The mounts we see: C{(mount point, file system type, source)}.
    """
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            found.append(
                (
                    _unescape(fields[4]),
                    fields[separator + 1],
                    _unescape(fields[separator + 2]),
                )
            )
    return found


def mountsUnder(path: str) -> list[str]:
    """
    Mount points at or below C{path}, deepest first.
    """
    path = path.rstrip("/")
    points = {
        point
        for point, _, _ in mounts()
        if point == path or point.startswith(path + "/")
    }
    return sorted(points, key=len, reverse=True)


def shimAddress(containerdAddress: str, namespace: str, groupID: str) -> str:
    """
    The socket address of a shim, as containerd's C{shim.SocketAddress}
    computes it: C{unix:///run/containerd/s/<sha256 of address/ns/id>}.
    """
    key = os.path.normpath(os.path.join(containerdAddress, namespace, groupID))
    return f"unix://{SOCKET_DIR}/{hashlib.sha256(key.encode()).hexdigest()}"


def bundleShimAddress(bundle: str) -> str:
    """
    The address of the shim serving the task of C{bundle}, as the shim wrote
    it there: C{bootstrap.json} (C{{"version": 3, "address": ..., "protocol":
    "ttrpc"}}, the containerd 2.x Go shim) or else the plain C{address} file
    (the containerd 1.x Go shim, and shimd on every version).
    """
    try:
        with open(os.path.join(bundle, "bootstrap.json")) as f:
            return str(json.load(f)["address"])
    except FileNotFoundError:
        with open(os.path.join(bundle, "address")) as f:
            return f.read().strip()


def bundleTaskService(bundle: str) -> str:
    """
    The task service the shim of C{bundle} serves: C{containerd.task.v3.Task}
    when its C{bootstrap.json} says version 3 (the containerd 2.x Go shim,
    which serves no other), else C{containerd.task.v2.Task}.
    """
    try:
        with open(os.path.join(bundle, "bootstrap.json")) as f:
            version = json.load(f).get("version")
    except FileNotFoundError:
        version = 2
    return f"containerd.task.v{3 if version == 3 else 2}.Task"


def socketPath(address: str) -> str:
    """
    The file of a C{unix://} address.
    """
    return address.removeprefix("unix://")


def listeningSocketInodes(path: str) -> set[int]:
    """
    Inodes of the listening unix sockets bound to C{path}.
    """
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            listening = len(fields) >= 8 and int(fields[3], 16) & _ACCEPTCON
            if listening and fields[7] == path:
                inodes.add(int(fields[6]))
    return inodes


def processesListeningOn(path: str) -> list[int]:
    """
    Processes holding a listening unix socket bound to C{path}.
    """
    targets = {f"socket:[{inode}]" for inode in listeningSocketInodes(path)}
    found: list[int] = []
    if not targets:
        return found
    for pid in pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found
