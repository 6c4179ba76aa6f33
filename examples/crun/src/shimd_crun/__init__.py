"""
An example shimd runtime plugin, installed apart from shimd: containers run
with U{crun<https://github.com/containers/crun>} instead of runc, through
the task service's OCI runtime seam (L{shimd.interfaces.IOCIRuntimeFactory},
plugin type C{io.shimd.runtime.v1}, id C{crun}).

The task service takes the C{runc} runtime while there is one: disable it
in the shim's settings file (C{$SHIMD_CONFIG}) to have crun used::

    disabled = ["io.shimd.runtime.v1.runc"]
    [plugins."io.shimd.runtime.v1.crun"]
    root = "/run/containerd/crun"   # crun's state, one directory per namespace

A container's C{BinaryName} and C{Root} runc options, when given, win over
these settings, as they do for runc.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from shimd.interfaces import IOCIRuntime, IOCIRuntimeFactory, IPluginContext
from shimd.runc.client import Runc, RunResult, Spawner, reactorSpawner
from shimd.runc.options import globalArguments
from shimd.runc.plugins import RUNTIME_PLUGIN
from shimd.shim.plugin import Registration

PLUGIN_ID = "crun"
DEFAULT_BINARY = "crun"
DEFAULT_ROOT = "/run/containerd/crun"


@implementer(IOCIRuntime)
class Crun(Runc):
    """
    crun, as configured for one container. Its command line is runc's for
    every call the task service makes, except two: crun has no global
    C{--criu} flag (it links libcriu), and C{crun update} reads the new
    resources from a file (C{--resources FILE}, written in the bundle for
    the call), not from its input. Checkpoint and restore are runc's
    command lines, which crun does not all take: not supported here.
    """

    def globalArguments(self) -> list[str]:
        return globalArguments(self.root, self.logPath, "", self.systemdCgroup)

    def update(self, id: str, resources: bytes) -> Deferred[RunResult]:
        fd, path = tempfile.mkstemp(
            prefix="crun-update-", suffix=".json", dir=os.path.dirname(self.logPath)
        )
        with os.fdopen(fd, "wb") as f:
            f.write(resources)

        def removeFile(result: object) -> object:
            os.unlink(path)
            return result

        return self._run(["update", "--resources", path, id]).addBoth(removeFile)


@implementer(IOCIRuntimeFactory)
class CrunRuntime:
    """
    crun for each container: the runtime plugin C{crun}.

    @ivar binary: the crun executable, unless a container's options name one.
    @ivar root: the directory under which crun keeps each namespace's state.
    """

    def __init__(self, spawn: Spawner, binary: str, root: str) -> None:
        self.spawn = spawn
        self.binary = binary
        self.root = root

    def runtime(self, options: Any, namespace: str, bundle: str) -> Crun:
        return Crun(
            self.spawn,
            options.binary_name or self.binary,
            os.path.join(options.root or self.root, namespace),
            os.path.join(bundle, "log.json"),
            systemdCgroup=options.systemd_cgroup,
        )


def _initialise(context: IPluginContext) -> CrunRuntime:
    settings = context.pluginConfig(RUNTIME_PLUGIN, PLUGIN_ID)
    return CrunRuntime(
        reactorSpawner(context.reactor),
        str(settings.get("binary") or DEFAULT_BINARY),
        str(settings.get("root") or DEFAULT_ROOT),
    )


crunPlugin = Registration(RUNTIME_PLUGIN, PLUGIN_ID, _initialise)
