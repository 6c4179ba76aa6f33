# -*- test-case-name: tests.test_task_service -*-
"""
The plugins that give the runc shim's task service its seams: the OCI
runtime (type C{io.shimd.runtime.v1}; C{runc} by default), the reaper, the
rootfs mounter and the OOM watcher (C{io.containerd.internal.v1}, ids
C{reaper}, C{mount} and C{oom}). A third party replaces one by providing a
plugin of the same type and id. Another runtime (C{crun}, say) is a plugin
of the runtime type with its own id, which the task service takes when it is
the only one (L{runtimeID}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zope.interface import implementer

from shimd.interfaces import IMounter, IPluginContext
from shimd.runc import mount
from shimd.runc.cgroups import mode, oom
from shimd.runc.client import RuncRuntime, reactorSpawner
from shimd.shim.plugin import INTERNAL_PLUGIN, Registration
from shimd.shim.reaper import Reaper

RUNTIME_PLUGIN = "io.shimd.runtime.v1"
DEFAULT_RUNTIME = "runc"


@implementer(IMounter)
class Mounter:
    """
    Mounts with the system calls of L{shimd.runc.mount}.
    """

    def mountAll(self, mounts: Iterable[Any], target: str) -> None:
        mount.mountAll(mounts, target)

    def unmountAll(self, target: str) -> None:
        mount.unmountAll(target)


def runtimeID(context: IPluginContext) -> str:
    """
    The id of the runtime plugin the task service uses: C{runc}, unless the
    only runtime plugin there is has another id.
    """
    runtimes = context.getAll(RUNTIME_PLUGIN)
    if DEFAULT_RUNTIME in runtimes or len(runtimes) != 1:
        return DEFAULT_RUNTIME
    return next(iter(runtimes))


def _oomWatcher(context: IPluginContext) -> Any:
    return oom.newOOMWatcher(mode.cgroupMode(), context.reactor)


def _reaper(context: IPluginContext) -> Reaper:
    reaper = Reaper()
    context.reactor.callWhenRunning(reaper.install, context.reactor)
    return reaper


runcPlugin = Registration(
    RUNTIME_PLUGIN,
    DEFAULT_RUNTIME,
    lambda context: RuncRuntime(reactorSpawner(context.reactor)),
)
reaperPlugin = Registration(INTERNAL_PLUGIN, "reaper", _reaper)
mounterPlugin = Registration(INTERNAL_PLUGIN, "mount", lambda context: Mounter())
oomPlugin = Registration(INTERNAL_PLUGIN, "oom", _oomWatcher)
