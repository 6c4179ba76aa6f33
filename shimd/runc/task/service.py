# -*- test-case-name: tests.test_task_service -*-
"""
The task service plugin (C{io.containerd.ttrpc.v1}, id C{task}): the
C{containerd.task.v2.Task} API on runc.

The handlers stay thin: they find the container and process a call names,
let the L{Container} and its process state machines do the work, and publish
the events. Every call is keyed by container id and exec id, so one shim
serves a whole pod, and one container's failure touches no other.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from google.protobuf.empty_pb2 import Empty
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from shimd.interfaces import (
    IMounter,
    IOCIRuntimeFactory,
    IPluginContext,
    IPublisher,
    IReaper,
    IShutdown,
    ITTRPCService,
)
from shimd.protos import events_pb2, runc_options_pb2, task_pb2
from shimd.runc.cgroups import load
from shimd.runc.client import reactorSpawner
from shimd.runc.plugins import RUNTIME_PLUGIN, runtimeID
from shimd.runc.stdio import create
from shimd.runc.task import errors
from shimd.runc.task.container import Container, Environment, decodeOptions
from shimd.runc.task.process import Process
from shimd.runc.task.state import State
from shimd.shim.events import anyOf
from shimd.shim.plugin import EVENT_PLUGIN, INTERNAL_PLUGIN, TTRPC_PLUGIN, Registration
from shimd.ttrpc.server import CallContext, ServiceRegistry

TASK_SERVICE = task_pb2.DESCRIPTOR.services_by_name["Task"]
# containerd 2.x's task API v3: the v2 service's methods and messages, field
# for field, under another package name. containerd 2.x's ctr talks to a
# shim directly in it (ctr shim state, ...) whatever version the shim's
# start claimed.
TASK_SERVICE_V3 = "containerd.task.v3.Task"
MAX_IDENTIFIER_LENGTH = 76
IDENTIFIER = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")

T = TypeVar("T")


def validateIdentifier(identifier: str) -> None:
    """
    Check an id before it is used in a path, as containerd's C{identifiers}
    package does.

    @raise TTRPCError: C{INVALID_ARGUMENT}, with containerd's text.
    """
    if not identifier:
        raise errors.invalidArgument("identifier must not be empty")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise errors.invalidArgument(
            f"identifier {json.dumps(identifier)} greater than maximum length "
            f"({MAX_IDENTIFIER_LENGTH} characters)"
        )
    if not IDENTIFIER.match(identifier):
        raise errors.invalidArgument(
            f"identifier {json.dumps(identifier)} must match {IDENTIFIER.pattern}"
        )


def asynchronous(
    method: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., Deferred[T]]:
    """
    Serve an C{async} handler as one that returns a Deferred; cancelling the
    Deferred (the client's deadline passed, or it went away) cancels what the
    handler awaits.
    """

    @functools.wraps(method)
    def handler(*args: Any) -> Deferred[T]:
        return Deferred.fromCoroutine(method(*args))

    return handler


def timestamp(target: Any, secondsAndNanos: tuple[int, int]) -> None:
    target.seconds, target.nanos = secondsAndNanos


@implementer(ITTRPCService)
class TaskService:
    """
    The Task API. Each RPC is a method of the same name taking the decoded
    request and the call context.
    """

    log = Logger()

    def __init__(
        self,
        environment: Environment,
        publisher: IPublisher,
        shutdown: IShutdown,
    ) -> None:
        self._environment = environment
        self._publisher = publisher
        self._shutdown = shutdown
        self._containers: dict[str, Container] = {}
        self._creating: set[str] = set()
        shutdown.register(publisher.close)

    def registerTTRPC(self, registry: ServiceRegistry) -> None:
        registry.register(TASK_SERVICE, self)
        registry.register(TASK_SERVICE, self, name=TASK_SERVICE_V3)

    def _container(self, id: str) -> Container:
        container = self._containers.get(id)
        if container is None:
            raise errors.containerNotCreated()
        return container

    def _process(self, id: str, execID: str) -> tuple[Container, Process]:
        container = self._container(id)
        return container, container.process(execID)

    @asynchronous
    async def Create(
        self, request: task_pb2.CreateTaskRequest, context: CallContext
    ) -> task_pb2.CreateTaskResponse:
        validateIdentifier(request.id)
        if request.id in self._containers or request.id in self._creating:
            raise errors.alreadyExists(f"container {request.id}")
        if not os.path.isabs(request.bundle) or not os.path.isdir(request.bundle):
            raise errors.invalidArgument(
                f"bundle {request.bundle!r} is not a directory"
            )
        options = decodeOptions(request.options)
        container = Container(self._environment, request, options)
        self._creating.add(request.id)
        try:
            pid = await container.create()
        finally:
            self._creating.discard(request.id)
        self._containers[request.id] = container
        return task_pb2.CreateTaskResponse(pid=pid)

    @asynchronous
    async def Start(
        self, request: task_pb2.StartRequest, context: CallContext
    ) -> task_pb2.StartResponse:
        container, process = self._process(request.id, request.exec_id)
        return task_pb2.StartResponse(pid=await container.start(process))

    @asynchronous
    async def Delete(
        self, request: task_pb2.DeleteRequest, context: CallContext
    ) -> task_pb2.DeleteResponse:
        container, process = self._process(request.id, request.exec_id)
        await container.delete(process)
        response = task_pb2.DeleteResponse(
            pid=process.pid, exit_status=process.exitStatus()
        )
        timestamp(response.exited_at, process.exitedAt())
        if process is container.init:
            self._containers.pop(request.id, None)
            event = events_pb2.TaskDelete(
                container_id=container.id,
                pid=process.pid,
                exit_status=process.exitStatus(),
            )
            timestamp(event.exited_at, process.exitedAt())
            container.publish("/tasks/delete", event)
        return response

    def Exec(self, request: task_pb2.ExecProcessRequest, context: CallContext) -> Empty:
        container = self._container(request.id)
        validateIdentifier(request.exec_id)
        container.addExec(request)
        container.publish(
            "/tasks/exec-added",
            events_pb2.TaskExecAdded(
                container_id=container.id, exec_id=request.exec_id
            ),
        )
        return Empty()

    def State(
        self, request: task_pb2.StateRequest, context: CallContext
    ) -> task_pb2.StateResponse:
        container, process = self._process(request.id, request.exec_id)
        status = process.status
        if process is not container.init and container.init.state in (
            State.PAUSED,
            State.PAUSING,
        ):
            status = container.init.status
        response = task_pb2.StateResponse(
            id=process.id,
            bundle=container.bundle,
            pid=process.pid,
            status=status,
            stdin=process.stdin,
            stdout=process.stdout,
            stderr=process.stderr,
            terminal=process.terminal,
            exit_status=process.exitStatus(),
        )
        timestamp(response.exited_at, process.exitedAt())
        return response

    @asynchronous
    async def Wait(
        self, request: task_pb2.WaitRequest, context: CallContext
    ) -> task_pb2.WaitResponse:
        _, process = self._process(request.id, request.exec_id)
        await process.wait()
        response = task_pb2.WaitResponse(exit_status=process.exitStatus())
        timestamp(response.exited_at, process.exitedAt())
        return response

    @asynchronous
    async def Kill(self, request: task_pb2.KillRequest, context: CallContext) -> Empty:
        container, process = self._process(request.id, request.exec_id)
        await container.kill(process, request.signal, request.all)
        return Empty()

    @asynchronous
    async def Pids(
        self, request: task_pb2.PidsRequest, context: CallContext
    ) -> task_pb2.PidsResponse:
        container = self._container(request.id)
        response = task_pb2.PidsResponse()
        for pid, execID in await container.pids():
            info = response.processes.add(pid=pid)
            if execID:
                info.info.CopyFrom(
                    anyOf(runc_options_pb2.ProcessDetails(exec_id=execID))
                )
        return response

    @asynchronous
    async def Pause(
        self, request: task_pb2.PauseRequest, context: CallContext
    ) -> Empty:
        container = self._container(request.id)
        await container.pause()
        container.publish(
            "/tasks/paused", events_pb2.TaskPaused(container_id=container.id)
        )
        return Empty()

    @asynchronous
    async def Resume(
        self, request: task_pb2.ResumeRequest, context: CallContext
    ) -> Empty:
        container = self._container(request.id)
        await container.resume()
        container.publish(
            "/tasks/resumed", events_pb2.TaskResumed(container_id=container.id)
        )
        return Empty()

    @asynchronous
    async def Checkpoint(
        self, request: task_pb2.CheckpointTaskRequest, context: CallContext
    ) -> Empty:
        container = self._container(request.id)
        await container.checkpoint(request.path, request.options)
        return Empty()

    @asynchronous
    async def Update(
        self, request: task_pb2.UpdateTaskRequest, context: CallContext
    ) -> Empty:
        container = self._container(request.id)
        await container.update(request.resources)
        return Empty()

    def ResizePty(
        self, request: task_pb2.ResizePtyRequest, context: CallContext
    ) -> Empty:
        container, process = self._process(request.id, request.exec_id)
        container.resize(process, request.width, request.height)
        return Empty()

    def CloseIO(self, request: task_pb2.CloseIORequest, context: CallContext) -> Empty:
        container, process = self._process(request.id, request.exec_id)
        container.closeIO(process)
        return Empty()

    def Stats(
        self, request: task_pb2.StatsRequest, context: CallContext
    ) -> task_pb2.StatsResponse:
        container = self._container(request.id)
        return task_pb2.StatsResponse(stats=container.stats())

    def Connect(
        self, request: task_pb2.ConnectRequest, context: CallContext
    ) -> task_pb2.ConnectResponse:
        container = self._containers.get(request.id)
        return task_pb2.ConnectResponse(
            shim_pid=os.getpid(), task_pid=container.init.pid if container else 0
        )

    def Shutdown(
        self, request: task_pb2.ShutdownRequest, context: CallContext
    ) -> Empty:
        if not self._containers and not self._creating:
            self._shutdown.shutdown()
        return Empty()

    def publishOOM(self, containerID: str) -> None:
        """
        The kernel OOM-killed in a container's cgroup: C{/tasks/oom}, which
        is not ordered with the other events, as in the Go shim.
        """
        self._publisher.publish(
            "/tasks/oom", events_pb2.TaskOOM(container_id=containerID)
        )


def _initialise(context: IPluginContext) -> TaskService:
    reactor = context.reactor
    publisher = IPublisher(context.get(EVENT_PLUGIN, "publisher"))
    environment = Environment(
        reactor=reactor,
        namespace=context.config.namespace,
        reaper=IReaper(context.get(INTERNAL_PLUGIN, "reaper")),
        runtime=IOCIRuntimeFactory(context.get(RUNTIME_PLUGIN, runtimeID(context))),
        mounter=IMounter(context.get(INTERNAL_PLUGIN, "mount")),
        spawn=reactorSpawner(reactor),
        createIO=create.createIO,
        loadCgroup=load.loadCgroup,
        publish=publisher.publish,
        oomWatcher=context.get(INTERNAL_PLUGIN, "oom"),
    )
    service = TaskService(
        environment, publisher, IShutdown(context.get(INTERNAL_PLUGIN, "shutdown"))
    )
    environment.onOOM = service.publishOOM
    return service


taskPlugin = Registration(
    TTRPC_PLUGIN,
    "task",
    _initialise,
    requires=(EVENT_PLUGIN, INTERNAL_PLUGIN, RUNTIME_PLUGIN),
)
