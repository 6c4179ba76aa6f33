"""
The two runtimes every end-to-end test runs against, and what a test needs
from the host before it can run at all.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass

from tests.e2e import host
from tests.e2e.containerd import SEARCH_PATH, missingExecutables

BUSYBOX = "/bin/busybox"
_PT_INTERP = 3


@dataclass(frozen=True)
class Runtime:
    """
    A shim to test.

    @ivar name: short name, used in namespaces and messages.
    @ivar binaryName: the shim executable's file name.
    @ivar runtimeArgument: what to give C{ctr run --runtime}.
    @ivar processPattern: a regular expression (C{pgrep -f} style) matching
        the command line of this runtime's shim processes.
    @ivar losesTaskDelete: whether the shim is known to exit, now and then,
        before it has published C{/tasks/delete} (see
        L{tests.e2e.base.E2EMixin.waitForTaskDelete}).
    @ivar losesOOM: whether the shim is known to miss, now and then, the
        kernel's OOM kill of a container that dies at once (see
        L{tests.e2e.base.E2EMixin.waitForOOM}).
    """

    name: str
    binaryName: str
    runtimeArgument: str
    processPattern: str
    losesTaskDelete: bool = False
    losesOOM: bool = False

    def binaryPath(self) -> str | None:
        """
        The absolute path of the shim executable, or L{None} when it is not
        installed. Found on C{PATH} (plus the sbin directories), else next to
        the running Python (a virtualenv's C{bin}).
        """
        if os.path.isabs(self.runtimeArgument):
            return self.runtimeArgument if _isExecutable(self.runtimeArgument) else None
        path = f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
        found = shutil.which(self.binaryName, path=path)
        if found is None:
            candidate = os.path.join(os.path.dirname(sys.executable), self.binaryName)
            if _isExecutable(candidate):
                found = candidate
        return os.path.abspath(found) if found else None

    def shimProcesses(
        self, namespace: str, containerID: str | None = None
    ) -> list[int]:
        """
        Live processes of this runtime serving C{namespace} (and, when given,
        the task or group C{containerID}).
        """
        found = []
        for pid in host.processesMatching(self.processPattern):
            argv = host.arguments(pid)
            if not host.hasFlag(argv, "-namespace", namespace):
                continue
            if containerID is not None and not host.hasFlag(argv, "-id", containerID):
                continue
            found.append(pid)
        return found


def _isExecutable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


BINARY_VARIABLE = "SHIMD_E2E_BINARY"


def _shimdBinary() -> str:
    """
    The shimd binary to test: C{$SHIMD_E2E_BINARY} if set (to test another
    build), else C{containerd-shim-pyrunc-v2} from C{PATH} or next to the
    running Python.
    """
    override = os.environ.get(BINARY_VARIABLE)
    if override:
        return os.path.abspath(override)
    name = "containerd-shim-pyrunc-v2"
    path = f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
    found = shutil.which(name, path=path)
    if found is None:
        found = os.path.join(os.path.dirname(sys.executable), name)
    return os.path.abspath(found)


GO = Runtime(
    name="go",
    binaryName="containerd-shim-runc-v2",
    runtimeArgument="io.containerd.runc.v2",
    processPattern=r"containerd-shim-runc-v2(\s|$)",
    losesTaskDelete=True,
    losesOOM=True,
)

SHIMD = Runtime(
    name="py",
    binaryName="containerd-shim-pyrunc-v2",
    runtimeArgument=_shimdBinary(),
    processPattern=r"containerd-shim-pyrunc-v2(\s|$)",
)


def isStaticExecutable(path: str) -> bool:
    """
    Whether C{path} is an ELF executable without a program interpreter, i.e.
    statically linked and so runnable in an otherwise empty rootfs.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:
                return False
            endian = "<" if header[5] == 1 else ">"
            (phoff,) = struct.unpack_from(endian + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for index in range(phnum):
        (kind,) = struct.unpack_from(endian + "I", table, index * phentsize)
        if kind == _PT_INTERP:
            return False
    return True


_criu: list[str | None] = []


def criuProblem() -> str | None:
    """
    Why criu cannot checkpoint and restore containers here, or L{None} when
    it can: missing, or failing C{criu check} (whose complaint is given).
    Asked once per process.
    """
    if not _criu:
        problem = None
        if os.geteuid() != 0:
            problem = "criu needs root privileges"
        elif missingExecutables(["criu"]):
            problem = "criu is not installed"
        else:
            path = f"{os.environ.get('PATH', '')}:{SEARCH_PATH}"
            check = subprocess.run(
                [shutil.which("criu", path=path) or "criu", "check"],
                capture_output=True,
                text=True,
                check=False,
            )
            if check.returncode != 0:
                lines = (check.stderr + check.stdout).strip().splitlines()
                problem = "criu check fails here: " + (lines[-1] if lines else "")
        _criu.append(problem)
    return _criu[0]


def missingPrerequisites(runtime: Runtime) -> list[str]:
    """
    What the host lacks for an end-to-end test of C{runtime}; empty when
    nothing.
    """
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges")
    missing += missingExecutables(["containerd", "ctr", "runc"])
    if not isStaticExecutable(BUSYBOX):
        missing.append(f"busybox-static ({BUSYBOX})")
    if runtime.binaryPath() is None:
        missing.append(f"the {runtime.binaryName} shim binary")
    return missing
