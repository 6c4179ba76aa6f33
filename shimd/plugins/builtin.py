"""
shimd's own plugins, a dropin like any other: the event publisher, the
shutdown service and the runc task service.
"""

from shimd.runc.task.service import taskPlugin
from shimd.shim.events import publisherPlugin
from shimd.shim.shutdown import shutdownPlugin

__all__ = ["publisherPlugin", "shutdownPlugin", "taskPlugin"]
