# -*- test-case-name: tests.test_plugin -*-
"""
The interfaces between shimd's parts: plugins and the registry that starts
them, and the services plugins provide to each other (the event publisher,
the shutdown service, ttrpc services and the task runtime).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from twisted.internet.defer import Deferred

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


# -- The runc shim's seams: the OCI runtime, the reaper, mounts --------------


class IOCIRuntime(Interface):
    """
    An OCI runtime (runc, or one that takes runc's command line, such as
    crun) as configured for one container: what the task code asks of it.
    Every call returns a Deferred; a failure is a
    L{shimd.runc.client.RuncError} whose message is the Go shim's text.
    The calls that start a process (C{create}, C{exec}, C{restore}) give it
    C{stdio}, a child fd map, and have it write its pid to C{pidFile}.
    """

    def create(
        id: str,
        bundle: str,
        pidFile: str,
        stdio: dict[int, int],
        consoleSocket: str | None = None,
        noPivot: bool = False,
        noNewKeyring: bool = False,
    ) -> Deferred[Any]:
        """
        Create the container from C{bundle}, its init stopped before the
        user's process.
        """

    def start(id: str) -> Deferred[Any]:
        """
        Start a created container's process.
        """

    def exec(
        id: str,
        processPath: str,
        pidFile: str,
        stdio: dict[int, int],
        consoleSocket: str | None = None,
    ) -> Deferred[Any]:
        """
        Run the OCI process in the JSON file C{processPath} in the container,
        detached.
        """

    def restore(
        id: str,
        bundle: str,
        imagePath: str,
        workPath: str,
        pidFile: str,
        stdio: dict[int, int],
        parentPath: str = "",
        consoleSocket: str | None = None,
        noPivot: bool = False,
    ) -> Deferred[Any]:
        """
        Restore the container from the checkpoint in C{imagePath}, detached.
        """

    def kill(id: str, signal: int, all: bool = False) -> Deferred[Any]:
        """
        Signal the container's init, or every process of it with C{all}.
        """

    def delete(id: str, force: bool = False) -> Deferred[Any]:
        """
        Delete the container's runtime state.
        """

    def pause(id: str) -> Deferred[Any]:
        """
        Freeze the container.
        """

    def resume(id: str) -> Deferred[Any]:
        """
        Thaw the container.
        """

    def update(id: str, resources: bytes) -> Deferred[Any]:
        """
        Apply the OCI C{LinuxResources} JSON C{resources}.
        """

    def ps(id: str) -> Deferred[list[int]]:
        """
        @return: a Deferred that fires with the host pids of the container's
            processes.
        """

    def checkpoint(
        id: str,
        imagePath: str,
        workPath: str,
        openTCP: bool = False,
        externalUnixSockets: bool = False,
        terminal: bool = False,
        fileLocks: bool = False,
        emptyNamespaces: Sequence[str] = (),
        leaveRunning: bool = True,
    ) -> Deferred[Any]:
        """
        Checkpoint the container into C{imagePath}.
        """

    def lastError() -> str:
        """
        @return: the last error the runtime logged for this container (its
            C{log.json}), or an empty string.
        """


class IOCIRuntimeFactory(Interface):
    """
    What a runtime plugin (type C{io.shimd.runtime.v1}) provides: the OCI
    runtime for each container.
    """

    def runtime(options: Any, namespace: str, bundle: str) -> IOCIRuntime:
        """
        @param options: the container's C{containerd.runc.v1.Options}
            (binary name, root, criu path, systemd cgroups).
        @param namespace: the containerd namespace, which keeps each
            namespace's runtime state apart.
        @param bundle: the container's bundle directory.
        @return: the runtime, configured for that container.
        """


class IReaper(Interface):
    """
    Reaps the shim's children and routes each exit to whoever watches its
    pid.
    """

    def install(reactor: Any) -> None:
        """
        Start reaping; called once the reactor runs.
        """

    def launching() -> Any:
        """
        Say a process is being launched: exits reaped before its pid is
        watched are kept for it.

        @return: an object whose C{done()} ends the launch, once the pid is
            watched.
        """

    def watch(pid: int) -> Deferred[Any]:
        """
        @return: a Deferred that fires with the L{shimd.shim.reaper.Exit} of
            C{pid}.
        """


class IMounter(Interface):
    """
    Mounts a container's rootfs and takes it down again.
    """

    def mountAll(mounts: Iterable[Any], target: str) -> None:
        """
        Mount each of C{mounts} (C{containerd.types.Mount}s) on C{target},
        each on top of the one before; on a failure, unmount what was
        mounted.

        @raise shimd.runc.mount.MountError: the failure.
        """

    def unmountAll(target: str) -> None:
        """
        Unmount everything stacked on C{target}.

        @raise OSError: when something there cannot be unmounted.
        """
