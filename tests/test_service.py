# -*- test-case-name: tests.test_service -*-
"""
Tests for L{shimd.shim.service}: the shim service that initialises the plugins,
serves their ttrpc services on an owner-only unix socket, and on the way out
runs the shutdown callbacks and removes the socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectError
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from shimd.interfaces import (
    IPluginContext,
    IShutdown,
    ITTRPCInterceptor,
    ITTRPCService,
)
from shimd.protos import task_pb2
from shimd.shim.address import Listener, listenerFromFD, listenerFromPath
from shimd.shim.config import ShimConfig
from shimd.shim.plugin import (
    EVENT_PLUGIN,
    INTERNAL_PLUGIN,
    TTRPC_PLUGIN,
    PluginError,
    Registration,
)
from shimd.shim.service import ShimService
from shimd.shim.shutdown import ShutdownService
from shimd.ttrpc.client import ServiceClient, TTRPCClientProtocol, connectTTRPC
from shimd.ttrpc.server import CallContext, ServiceRegistry

TASK = task_pb2.DESCRIPTOR.services_by_name["Task"]


def temporaryDirectory(case: SynchronousTestCase) -> str:
    """
    A fresh directory under C{/tmp}, short enough for socket paths, removed
    after the test.
    """
    directory = tempfile.mkdtemp(prefix="shimd-service-", dir="/tmp")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def boundSocket(path: str | bytes, listening: bool = True) -> socket.socket:
    """
    A unix socket bound (owner-only, for a filesystem path) to C{path}, and
    listening, as C{start} hands it to the daemon.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(previous)
    if listening:
        listener.listen(16)
    return listener


@implementer(ITTRPCService)
class FakeTask:
    """
    A ttrpc plugin's instance: answers C{Task.Connect}, and registers a
    shutdown callback that waits until the test releases it.
    """

    def __init__(self, shutdown: IShutdown) -> None:
        self.shutdownCalled: Deferred[None] = Deferred()
        self.release: Deferred[None] = Deferred()
        shutdown.register(self.stopping)

    def stopping(self) -> Deferred[None]:
        self.shutdownCalled.callback(None)
        return self.release

    def registerTTRPC(self, registry: ServiceRegistry) -> None:
        registry.register(TASK, self)

    def Connect(
        self, request: task_pb2.ConnectRequest, context: CallContext
    ) -> task_pb2.ConnectResponse:
        return task_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=4242)


class Plugins:
    """
    A set of test plugins, registered in reverse dependency order, that
    record the order they are initialised in.
    """

    def __init__(self) -> None:
        self.initialised: list[str] = []
        self.stops = 0
        self.task: FakeTask | None = None
        self.extra: list[Registration] = []

    def recording(
        self, name: str, build: Callable[[IPluginContext], object]
    ) -> Callable[[IPluginContext], object]:
        def initialise(context: IPluginContext) -> object:
            self.initialised.append(name)
            return build(context)

        return initialise

    def stop(self) -> None:
        self.stops += 1

    def buildTask(self, context: IPluginContext) -> FakeTask:
        self.task = FakeTask(IShutdown(context.get(INTERNAL_PLUGIN, "shutdown")))
        return self.task

    def all(self) -> list[Registration]:
        return [
            Registration(
                TTRPC_PLUGIN,
                "task",
                self.recording("task", self.buildTask),
                requires=(EVENT_PLUGIN, INTERNAL_PLUGIN),
            ),
            Registration(
                INTERNAL_PLUGIN,
                "shutdown",
                self.recording(
                    "shutdown", lambda context: ShutdownService(reactor, self.stop)
                ),
            ),
            Registration(
                EVENT_PLUGIN, "publisher", self.recording("publisher", lambda c: None)
            ),
            *self.extra,
        ]


@implementer(ITTRPCInterceptor)
class RecordingInterceptor:
    """
    An interceptor plugin's instance: records each call's method, request
    and outcome, and tags the response.
    """

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.calls: list[tuple[str, str, str]] = []

    def intercept(self, request: Any, context: CallContext, proceed: Any) -> Any:
        self.calls.append(("before", context.method, request.id))
        response = proceed(request, context)
        self.calls.append(("after", context.method, type(response).__name__))
        response.task_pid += self.tag
        return response


class ShimServiceTests(TestCase):
    """
    L{ShimService} on the real reactor and a real unix socket.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "s", "shim.sock")
        self.plugins = Plugins()
        self.config = ShimConfig(namespace="sxref", id="sx1")
        self.clients: list[TTRPCClientProtocol] = []

    def service(self, listener: Listener, plugins: Any = None) -> ShimService:
        """
        A shim service on C{listener}, with the test plugins by default, and
        no plugin discovery.
        """
        return ShimService(
            self.config,
            reactor,
            listener,
            plugins=self.plugins.all() if plugins is None else plugins,
            discover=False,
        )

    def started(self, listener: Listener) -> ShimService:
        """
        A shim service started on C{listener}, and stopped after the test.
        """
        service = self.service(listener)
        service.startService()
        self.addCleanup(self.stopped, service)
        return service

    @inlineCallbacks
    def stopped(self, service: ShimService) -> Any:
        """
        Stop a service if it runs, releasing its shutdown callback, and close
        the test's client connections.
        """
        if self.plugins.task is not None and not self.plugins.task.release.called:
            self.plugins.task.release.callback(None)
        if service.running:
            yield service.stopService()
        for client in self.clients:
            client.transport.loseConnection()
            yield client.whenClosed

    @inlineCallbacks
    def connect(self, path: str) -> Any:
        """
        Call C{Task.Connect} over a new client connection to C{path}.

        @return: a Deferred of the response.
        """
        protocol = yield connectTTRPC(reactor, reactor, path)  # type: ignore[arg-type]
        self.clients.append(protocol)
        response = yield ServiceClient(protocol, TASK).call(
            "Connect", task_pb2.ConnectRequest(id="sx1"), timeout=30
        )
        return response

    def test_pluginOrder(self) -> None:
        """
        The plugins are initialised in dependency order: the publisher and
        the shutdown service before the ttrpc plugin that requires them,
        whatever the order they were registered in.
        """
        self.started(listenerFromPath(self.path))
        order = self.plugins.initialised
        self.assertEqual(sorted(order), ["publisher", "shutdown", "task"])
        self.assertLess(order.index("publisher"), order.index("task"))
        self.assertLess(order.index("shutdown"), order.index("task"))

    @inlineCallbacks
    def test_servesTTRPCPlugins(self) -> Any:
        """
        The services of the C{io.containerd.ttrpc.v1} plugins answer on the
        socket.
        """
        self.started(listenerFromPath(self.path))
        response = yield self.connect(self.path)
        self.assertEqual(response.task_pid, 4242)
        self.assertEqual(response.shim_pid, os.getpid())

    @inlineCallbacks
    def test_interceptors(self) -> Any:
        """
        Plugin instances that provide L{ITTRPCInterceptor} wrap every call
        of the ttrpc services, the first initialised outermost.
        """
        outer, inner = RecordingInterceptor(1), RecordingInterceptor(10)
        self.plugins.extra = [
            Registration("io.example.v1", "outer", lambda context: outer),
            Registration(
                "io.example.v1", "inner", lambda context: inner, requires=["io.x"]
            ),
            Registration("io.x", "x", lambda context: None),
        ]
        self.started(listenerFromPath(self.path))
        response = yield self.connect(self.path)
        self.assertEqual(response.task_pid, 4242 + 10 + 1)
        self.assertEqual(
            outer.calls,
            [("before", "Connect", "sx1"), ("after", "Connect", "ConnectResponse")],
        )
        self.assertEqual(inner.calls, outer.calls)

    def test_socketOwnerOnly(self) -> None:
        """
        A socket the service binds itself is owner-only (0600) once it
        listens, in an owner-only directory it creates.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.started(listenerFromPath(self.path))
        mode = os.stat(self.path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        self.assertEqual(
            stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o700
        )
        messages = [formatEvent(event) for event in logged]
        self.assertIn(f"serving on {self.path} for namespace sxref", messages)

    @inlineCallbacks
    def test_inheritedSocketOwnerOnly(self) -> Any:
        """
        An inherited socket stays owner-only (0600) after the service adopts
        it, although Twisted makes the sockets it adopts world-writable
        (0666); and a blocking inherited socket is served all the same.
        """
        os.mkdir(os.path.dirname(self.path), 0o700)
        listener = boundSocket(self.path)
        self.assertTrue(listener.getblocking())
        self.started(listenerFromFD(listener.detach()))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        response = yield self.connect(self.path)
        self.assertEqual(response.task_pid, 4242)

    @inlineCallbacks
    def test_stopService(self) -> Any:
        """
        L{ShimService.stopService} stops listening, runs the shutdown
        callbacks and waits for them, then removes the socket file.
        """
        service = self.started(listenerFromPath(self.path))
        yield self.connect(self.path)
        task = self.plugins.task
        assert task is not None
        stopped = service.stopService()
        yield task.shutdownCalled
        self.assertNoResult(stopped)
        try:
            yield connectTTRPC(reactor, reactor, self.path)  # type: ignore[arg-type]
        except ConnectError:
            pass
        else:
            self.fail("the service still accepts connections")
        task.release.callback(None)
        yield stopped
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(self.plugins.stops, 0)

    @inlineCallbacks
    def test_stopServiceInherited(self) -> Any:
        """
        L{ShimService.stopService} removes the path of an inherited socket
        too.
        """
        os.mkdir(os.path.dirname(self.path), 0o700)
        service = self.started(listenerFromFD(boundSocket(self.path).detach()))
        assert self.plugins.task is not None
        self.plugins.task.release.callback(None)
        yield service.stopService()
        self.assertFalse(os.path.exists(self.path))

    def test_missingRequirement(self) -> None:
        """
        A plugin whose requirement no plugin provides makes
        L{ShimService.startService} raise L{PluginError} naming the plugin and
        the missing type, before anything listens.
        """
        lonely = Registration(
            TTRPC_PLUGIN, "lonely", lambda context: None, requires=(EVENT_PLUGIN,)
        )
        service = self.service(listenerFromPath(self.path), plugins=[lonely])
        error = self.assertRaises(PluginError, service.startService)
        self.assertIn("io.containerd.ttrpc.v1.lonely", str(error))
        self.assertIn(EVENT_PLUGIN, str(error))
        self.assertFalse(os.path.exists(self.path))

    @inlineCallbacks
    def test_pathInUse(self) -> Any:
        """
        L{ShimService.startService} refuses a path another shim listens on,
        and stopping the service then leaves that shim's socket alone.
        """
        os.mkdir(os.path.dirname(self.path), 0o700)
        other = boundSocket(self.path)
        self.addCleanup(other.close)
        service = self.service(listenerFromPath(self.path))
        self.assertRaises(RuntimeError, service.startService)
        assert self.plugins.task is not None
        self.plugins.task.release.callback(None)
        yield service.stopService()
        self.assertTrue(os.path.exists(self.path))


class ListenerTests(SynchronousTestCase):
    """
    L{listenerFromFD} and L{listenerFromPath} say where the shim serves.
    """

    def test_fromPath(self) -> None:
        """
        L{listenerFromPath} binds nothing until opened, and keeps the path
        absolute.
        """
        listener = listenerFromPath("relative.sock")
        self.assertIsNone(listener.fd)
        self.assertEqual(listener.path, os.path.abspath("relative.sock"))
        self.assertFalse(os.path.exists(listener.path))

    def test_fromFD(self) -> None:
        """
        L{listenerFromFD} takes the descriptor as it is and finds its path.
        """
        path = os.path.join(temporaryDirectory(self), "shim.sock")
        listener = boundSocket(path)
        self.addCleanup(listener.close)
        found = listenerFromFD(listener.fileno())
        self.assertEqual(found.fd, listener.fileno())
        self.assertEqual(found.path, path)

    def test_openSetsNonBlocking(self) -> None:
        """
        L{Listener.open} hands over the inherited descriptor in non-blocking
        mode, for the reactor: a blocking listener accepts nothing under it.
        """
        path = os.path.join(temporaryDirectory(self), "shim.sock")
        listener = boundSocket(path)
        fd = listener.detach()
        self.addCleanup(os.close, fd)
        self.assertEqual(listenerFromFD(fd).open(), fd)
        self.assertFalse(os.get_blocking(fd))

    def test_abstractRefused(self) -> None:
        """
        L{listenerFromFD} refuses an abstract socket, which containers
        sharing the host's network namespace could reach, with a
        L{ValueError}, and leaves the descriptor open.
        """
        name = f"\0shimd-test-{os.getpid()}".encode()
        listener = boundSocket(name)
        self.addCleanup(listener.close)
        error = self.assertRaises(ValueError, listenerFromFD, listener.fileno())
        self.assertIn("not a filesystem unix socket", str(error))
        self.assertEqual(listener.getsockname(), name)

    def test_unboundRefused(self) -> None:
        """
        L{listenerFromFD} refuses an unbound socket: it has no path to serve
        on or to remove.
        """
        unbound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(unbound.close)
        self.assertRaises(ValueError, listenerFromFD, unbound.fileno())
