"""
shimd's own plugins, a dropin like any other: the event publisher, the
shutdown service, the runc task service and what it is given (the runc
runtime, the reaper, the mounter, the OOM watcher).
"""

from shimd.runc.plugins import mounterPlugin, oomPlugin, reaperPlugin, runcPlugin
from shimd.runc.task.service import taskPlugin
from shimd.shim.events import publisherPlugin
from shimd.shim.shutdown import shutdownPlugin

__all__ = [
    "mounterPlugin",
    "oomPlugin",
    "publisherPlugin",
    "reaperPlugin",
    "runcPlugin",
    "shutdownPlugin",
    "taskPlugin",
]
