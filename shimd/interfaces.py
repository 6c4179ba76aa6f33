# -*- test-case-name: tests.test_plugin -*-
"""
The interfaces between shimd's parts: plugins and the registry that starts
them, and the services plugins provide to each other (the event publisher,
the shutdown service, ttrpc services and the task runtime).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from shimd.ttrpc.server import ServiceRegistry


class IShimPlugin(Interface):
    """
    A plugin: a typed, named factory for one part of the shim, initialised by
    the registry after the plugins it requires.

    Third-party plugins provide this interface and
    L{twisted.plugin.IPlugin}, in a module of the L{shimd.plugins} package
    (or of any C{shimd/plugins} directory on C{sys.path}).
    """

    type = Attribute(
        "The plugin type, e.g. C{io.containerd.ttrpc.v1}: what kind of part "
        "it provides."
    )
    id = Attribute("The plugin id, unique among the plugins of its type.")
    requires = Attribute(
        "The plugin types that must be initialised before this one, as a "
        "sequence of strings; C{'*'} means every other type."
    )

    def initialise(context: IPluginContext) -> object:
        """
        Build the plugin's instance.

        @param context: gives the configuration and the instances of the
            plugins this one requires.
        @return: the instance, which provides the interfaces its type implies
            (L{ITTRPCService} for C{io.containerd.ttrpc.v1}, for example).
        @raise shimd.shim.plugin.SkipPlugin: to leave this plugin out, e.g. where
            the platform lacks what it needs.
        """


class IPluginContext(Interface):
    """
    What a plugin sees while it is initialised.
    """

    reactor = Attribute("The reactor the shim runs on.")
    config = Attribute("The shim's configuration: a L{shimd.shim.config.ShimConfig}.")

    def get(type: str, id: str | None = None) -> object:
        """
        The instance of the initialised plugin of C{type} and C{id}, or of the
        only one of C{type} when C{id} is L{None}.

        @raise shimd.shim.plugin.PluginError: when there is none, or several.
        """

    def getAll(type: str) -> dict[str, object]:
        """
        The instances of every initialised plugin of C{type}, by id.
        """

    def pluginConfig(type: str, id: str) -> Mapping[str, object]:
        """
        The settings of the plugin C{TYPE.ID} from the shim's settings file
        (its C{[plugins."TYPE.ID"]} table), empty when it has none.
        """


class ITTRPCInterceptor(Interface):
    """
    Wraps every unary ttrpc call the shim serves, as Go's
    C{TTRPCServerUnaryOptioner} lets a shim plugin do (for tracing, auditing,
    access control). A plugin instance of any type that provides it is
    applied, in the order of initialisation, the first outermost.
    """

    def intercept(request: Message, context: object, proceed: object) -> object:
        """
        Handle one call.

        @param request: the decoded request message.
        @param context: the L{shimd.ttrpc.server.CallContext}: service,
            method, metadata, deadline.
        @param proceed: call C{proceed(request, context)} to go on to the
            next interceptor or the method itself; it returns the response,
            a L{Deferred} of it, or raises.
        @return: the response, or a L{Deferred} of it; an exception (or a
            failed Deferred) is the call's status (see
            L{shimd.ttrpc.status.statusFromException}).
        """


class IPublisher(Interface):
    """
    Publishes task events to containerd, in the order they were published.
    """

    def publish(topic: str, event: Message) -> None:
        """
        Queue one event for delivery. Never blocks and never fails: delivery
        is retried while containerd is unreachable.

        @param topic: e.g. C{/tasks/exit}.
        @param event: the event message, e.g. a C{containerd.events.TaskExit}.
        """

    def close() -> object:
        """
        Stop accepting events and deliver those already queued.

        @return: a Deferred that fires once the queue is empty or delivery
            has been given up.
        """


class IShutdown(Interface):
    """
    The internal shutdown service: it ends the shim process, once, after
    running the callbacks registered with it.
    """

    def register(callback: Callable[[], Any]) -> None:
        """
        Run C{callback} (a no-argument callable, which may return a Deferred)
        when shutdown starts.
        """

    def shutdown() -> None:
        """
        Start shutting down; calling it again does nothing.
        """

    def isShutdown() -> bool:
        """
        Whether shutdown has started.
        """

    def runCallbacks() -> object:
        """
        Run the registered callbacks, as the shim stops for whatever reason
        (C{Shutdown}, or a signal), waiting for them a bounded time.

        @return: a Deferred that fires when they are done or time is up.
        """


class ITTRPCService(Interface):
    """
    A service served on the shim's ttrpc socket.
    """

    def registerTTRPC(registry: ServiceRegistry) -> None:
        """
        Register the service's handlers with a
        L{shimd.ttrpc.server.ServiceRegistry}.
        """
