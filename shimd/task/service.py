# -*- test-case-name: tests.test_task_service -*-
"""
The task service plugin (C{io.containerd.ttrpc.v1}, id C{task}): the
C{containerd.task.v2.Task} API.
"""

from __future__ import annotations

from zope.interface import implementer

from shimd.interfaces import IPluginContext, IPublisher, IShutdown, ITTRPCService
from shimd.plugin import EVENT_PLUGIN, INTERNAL_PLUGIN, TTRPC_PLUGIN, Registration
from shimd.protos import task_pb2
from shimd.ttrpc.server import ServiceRegistry

TASK_SERVICE = task_pb2.DESCRIPTOR.services_by_name["Task"]


@implementer(ITTRPCService)
class TaskService:
    """
    The Task API. Each RPC is a method of the same name taking the decoded
    request and the call context; a method not defined here answers
    C{UNIMPLEMENTED}.
    """

    def __init__(self, publisher: IPublisher, shutdown: IShutdown) -> None:
        self._publisher = publisher
        self._shutdown = shutdown
        shutdown.register(publisher.close)

    def registerTTRPC(self, registry: ServiceRegistry) -> None:
        registry.register(TASK_SERVICE, self)


def _initialise(context: IPluginContext) -> TaskService:
    return TaskService(
        IPublisher(context.get(EVENT_PLUGIN)),
        IShutdown(context.get(INTERNAL_PLUGIN, "shutdown")),
    )


taskPlugin = Registration(
    TTRPC_PLUGIN, "task", _initialise, requires=(EVENT_PLUGIN, INTERNAL_PLUGIN)
)
