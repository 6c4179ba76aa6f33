# -*- test-case-name: tests.test_plugin -*-
"""
The interfaces between shimd's parts: plugins and the registry that starts
them, and the services plugins provide to each other (the event publisher,
the shutdown service, ttrpc services and the task runtime); and the runc
shim's parts (cgroups, OOM watching and stdio).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IConsumer
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


# The runc shim: cgroups and OOM watching.


class ICgroup(Interface):
    """
    A container's cgroup.
    """

    typeURL = Attribute(
        "The type URL of the C{Any} that carries L{stats}' message: "
        "C{io.containerd.cgroups.v1.Metrics} or "
        "C{io.containerd.cgroups.v2.Metrics}."
    )

    def stats() -> Any:
        """
        Read the cgroup's statistics.

        @return: a C{Metrics} message of the cgroup's version.
        @raise shimd.runc.cgroups.errors.CgroupError: a file could not be read
            or parsed.
        """

    def exists() -> bool:
        """
        Whether the cgroup still exists.
        """

    def enableControllers() -> None:
        """
        Make every controller available to the container's cgroup, as the Go
        shim does at the C{Start} of a container's init: on cgroup v2, by
        enabling them in the C{cgroup.subtree_control} of its ancestors; on
        v1, where each controller is its own hierarchy, nothing.
        """


OOMCallback = Callable[[str], None]


class IOOMWatcher(Interface):
    """
    Watches containers' cgroups for out-of-memory kills.
    """

    def add(containerID: str, cgroup: ICgroup, onOOM: OOMCallback) -> None:
        """
        Start watching a container's cgroup.

        @param containerID: passed to C{onOOM}.
        @param cgroup: the cgroup, of the watcher's version.
        @param onOOM: called with C{containerID} on each OOM event, in the
            reactor thread.
        @raise shimd.runc.cgroups.errors.CgroupError: the cgroup cannot be
            watched; the Go shim logs this and carries on without OOM events
            for the container.
        """

    def check(containerID: str) -> None:
        """
        Look at a watched container's cgroup now and report an OOM kill not
        reported yet, without waiting for the kernel's notification to be
        handled. Called when one of its processes has been reaped: a kill
        is counted before its SIGKILL is sent, so C{/tasks/oom} then comes
        before that process's C{/tasks/exit} (as containerd 2.3's shim
        sends it, pull request 12714). Nothing happens for a container not
        watched.
        """

    def remove(containerID: str) -> None:
        """
        Stop watching a container, if it is watched.
        """

    def stop() -> None:
        """
        Stop watching every container.
        """


# The runc shim: stdio.


class IOutputSink(IConsumer):
    """
    Where a copy of a process's output goes: a fifo or pipe (the client's
    fifo, a logging binary's pipe, the terminal's copy to stdout) or a
    regular file (C{file://}, or a path that is not a fifo).

    A copy's reader writes to it as a streaming producer, pausing while it
    is full, and asks it to finish at the end of the process's output; the
    process's stdio aborts it when the process is deleted.
    """

    finished = Attribute(
        "A Deferred that fires with None once everything written has been "
        "flushed and the sink closed, or once it has been lost or aborted."
    )
    moved = Attribute(
        "How many bytes it has written where the client reads: progress "
        "that the wait for the output to be delivered watches."
    )

    def loseConnection() -> None:
        """
        Finish: close once what is buffered has been written (a sink shared
        by several copies, as stdout and stderr share a C{file://} target,
        closes when the last of them has finished).
        """

    def abortConnection() -> None:
        """
        Close now, dropping whatever is still buffered.
        """


class IProcessIO(Interface):
    """
    The stdio of one container process, whatever its mode (none, pipes to
    fifos or files, a logging binary, a terminal).

    Its life: L{runcStdio} and L{consoleSocket} go on runc's command line;
    L{prepare} before runc runs; L{spawned} once runc is running; L{attach}
    once runc has created the process; L{waitDrained} and L{close} when the
    process is deleted.
    """

    stdin = Attribute("The client's stdin string, as requested.")
    stdout = Attribute("The client's stdout string, as requested.")
    stderr = Attribute("The client's stderr string, as requested.")
    runcStdio = Attribute(
        "The descriptors runc gives the process, by number (0, 1, 2)."
    )
    consoleSocket = Attribute(
        "The path of the unix socket runc sends the pty master on "
        "(C{--console-socket}), or None without a terminal."
    )

    def prepare() -> Deferred[None]:
        """
        Get ready before runc runs: start a logging binary, for one.

        @return: a Deferred that fires once ready.
        """

    def spawned() -> None:
        """
        runc has its copies of the process's ends: close the shim's, so that
        the process's exit ends its output.
        """

    def attach() -> Deferred[None]:
        """
        Start copying, now that runc has created the process.

        @return: a Deferred that fires once the copies run.
        @raise shimd.runc.stdio.errors.StdioError: what was asked for cannot
            be opened.
        """

    def closeStdin() -> None:
        """
        Close the shim's keep-alive writer on the stdin fifo (C{CloseIO}).
        """

    def resize(width: int, height: int) -> None:
        """
        Set the terminal's window size; nothing without a terminal.
        """

    def waitDrained(timeout: float) -> Deferred[None]:
        """
        Wait for the process's output to reach its client (the exit after
        output rule), giving up when it stops moving or after C{timeout}
        seconds in all.

        @return: a Deferred that fires with None, never failing.
        """

    def close() -> Deferred[None]:
        """
        Stop every copy and close every descriptor.

        @return: a Deferred that fires once closed (a logging binary
            stopped, for one).
        """
