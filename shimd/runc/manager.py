# -*- test-case-name: tests.test_launcher -*-
"""
What is runc's in the launcher's C{start} and C{delete} (Go's
C{cmd/containerd-shim-runc-v2/manager}): which shim serves a container (its
grouping annotations), moving the shim into the runtime options'
C{ShimCgroup}, and C{delete}'s clean-up after a shim that went away (runc's
force delete, the rootfs unmount, the init pid).

Standard library only: the launcher imports it on containerd's critical
path.
"""

from __future__ import annotations

import os
import sys

from shimd import RUNTIME_NAME, wire
from shimd.runc.options import DEFAULT_ROOT, globalArguments
from shimd.shim import spawn
from shimd.shim.errors import LaunchError

GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
#: The module that runs the runc shim's program.
PROGRAM = "shimd.runc.shim"
#: The fields of C{containerd.runc.v1.Options} read here.
SHIM_CGROUP_FIELD = 3
BINARY_NAME_FIELD = 6


def group(bundle: str, id: str) -> str:
    """
    The key of the shim that serves the container in C{bundle}: its
    grouping annotation (L{groupKey}).

    @raise LaunchError: when its C{config.json} cannot be read.
    """
    return groupKey(readSpec(bundle), id)


def configure(pid: int, options: wire.Message) -> None:
    """
    Move a new daemon into the C{ShimCgroup} its container's runc options
    (decoded by field number) name, if any, as the Go shim does.
    """
    shimCgroup = wire.lastString(options, SHIM_CGROUP_FIELD)
    if shimCgroup:
        joinCgroup(pid, shimCgroup)


def features(optionsAny: bytes) -> bytes:
    """
    C{runc features} of the runc binary the options C{Any} names (runc on
    C{$PATH} by default), for C{-info}.
    """
    from shimd.shim.bootstrap import decodeOptionsAny, runcFeatures

    binary = wire.lastString(decodeOptionsAny(optionsAny), BINARY_NAME_FIELD)
    return runcFeatures(binary or "runc", spawn.capture)


def groupKey(spec: dict[str, object], id: str) -> str:
    """
    The key that decides which shim serves a container: the first grouping
    annotation present in its OCI spec, or else its own id.
    """
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        for name in GROUP_ANNOTATIONS:
            if name in annotations:
                return str(annotations[name])
    return id


def readSpec(bundle: str) -> dict[str, object]:
    """
    Read what C{start} needs of a bundle's OCI runtime spec. A spec that
    names no grouping annotation at all (the usual case) needs no JSON
    parser: it is an empty spec here.

    @raise LaunchError: when it is missing, or is not a JSON object.
    """
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LaunchError(f"read {path}: {e}") from e
    if not any(name.encode() in data for name in GROUP_ANNOTATIONS):
        return {}
    import json

    try:
        spec = json.loads(data)
    except ValueError as e:
        raise LaunchError(f"read {path}: {e}") from e
    if not isinstance(spec, dict):
        raise LaunchError(f"read {path}: not a JSON object")
    return spec


def joinCgroup(pid: int, cgroup: str) -> None:
    """
    Move a process into a cgroup: the one path on cgroup v2, or the same path
    under every v1 controller that has it.
    """
    # Only a container with a ShimCgroup needs the mount table, whose parser
    # imports re and typing: not on every start.
    from shimd.runc.cgroups.mode import cgroupMode

    relative = cgroup.lstrip("/")
    if cgroupMode() == "v2":
        targets = [os.path.join("/sys/fs/cgroup", relative)]
    else:
        targets = [
            os.path.join("/sys/fs/cgroup", controller, relative)
            for controller in sorted(os.listdir("/sys/fs/cgroup"))
        ]
        targets = [t for t in targets if os.path.isdir(t)]
    if not targets:
        raise LaunchError(f"cgroup {cgroup} does not exist")
    for target in targets:
        with open(os.path.join(target, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def runcRoot(bundle: str) -> str:
    """
    runc's state root for a bundle's container: the C{root} of the options
    the daemon wrote to C{options.json}, or runc's default. The usual
    C{{}} needs no JSON parser.
    """
    try:
        with open(os.path.join(bundle, "options.json"), "rb") as f:
            data = f.read().strip()
    except OSError:
        return DEFAULT_ROOT
    if b'"root"' not in data:
        return DEFAULT_ROOT
    import json

    try:
        options = json.loads(data)
    except ValueError:
        return DEFAULT_ROOT
    root = options.get("root") if isinstance(options, dict) else None
    return root if isinstance(root, str) and root else DEFAULT_ROOT


def isMountPoint(path: str) -> bool:
    """
    Whether something is mounted on C{path}, from this process's mount
    table: cheaper than loading libc to try unmounting what is not mounted.
    """
    escaped = (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return True
    return f" {escaped} ".encode() in table


def stop(bundle: str, namespace: str, id: str) -> int:
    """
    Clean up after a container whose shim is gone, as the Go shim's manager
    C{Stop} does: force-delete it with runc (the binary named in the
    bundle's C{runtime} file), unmount its rootfs, and read its init pid.

    @return: the init pid, or -1 when it is not known.
    @raise LaunchError: when the bundle names no runtime.
    """
    runtimePath = os.path.join(bundle, "runtime")
    try:
        with open(runtimePath) as f:
            runcBinary = f.read().strip() or "runc"
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise LaunchError(f"open {runtimePath}: {reason}") from e
    root = os.path.join(runcRoot(bundle), namespace)
    if os.path.exists(os.path.join(root, id)):
        logPath = os.path.join(bundle, "log.json")
        spawn.run(
            [runcBinary, *globalArguments(root, logPath), "delete", "--force", id]
        )
    rootfs = os.path.join(bundle, "rootfs")
    if isMountPoint(rootfs):
        from shimd.runc.mount import unmountAll

        try:
            unmountAll(rootfs)
        except OSError as e:
            print(f"{RUNTIME_NAME}: {e}", file=sys.stderr)
    try:
        with open(os.path.join(bundle, "init.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return -1
