# -*- test-case-name: tests.test_service -*-
"""
The shim service: it initialises the plugins, serves the ttrpc services they
provide on the shim's socket, and on the way out runs the shutdown callbacks
and removes the socket file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from shimd.interfaces import IShimPlugin, IShutdown, ITTRPCService
from shimd.shim.config import ShimConfig
from shimd.shim.launcher import SOCKET_MODE, listen
from shimd.shim.plugin import (
    INTERNAL_PLUGIN,
    TTRPC_PLUGIN,
    PluginContext,
    PluginRegistry,
    builtinPlugins,
)
from shimd.ttrpc.server import ServiceRegistry, TTRPCServerFactory


@attr.s(auto_attribs=True)
class Listener:
    """
    Where the shim serves: an inherited listening socket, or a path to bind.

    @ivar fd: the inherited socket, or L{None} to bind C{path}.
    @ivar path: the socket's filesystem path, removed at shutdown.
    """

    fd: int | None
    path: str

    def open(self) -> int:
        """
        @return: a listening, non-blocking socket descriptor, ours to close.
        """
        if self.fd is None:
            listener = listen("unix://" + self.path)
            if listener is None:
                raise RuntimeError(f"a shim already listens on {self.path}")
            self.fd = listener.detach()
        os.set_blocking(self.fd, False)
        fd, self.fd = self.fd, None
        return fd


def listenerFromFD(fd: int) -> Listener:
    """
    Serve on an inherited listening unix socket; its bound path is removed at
    shutdown.
    """
    probe = socket.socket(fileno=os.dup(fd))
    try:
        name = probe.getsockname()
    finally:
        probe.close()
    path = name.decode() if isinstance(name, bytes) else name
    if not path or path.startswith("\0"):
        raise ValueError(f"fd {fd} is not a filesystem unix socket")
    return Listener(fd, path)


def listenerFromPath(path: str) -> Listener:
    """
    Bind and serve on a unix socket path, owner-only.
    """
    return Listener(None, os.path.abspath(path))


class ShimService(Service):
    """
    The shim: plugins, the ttrpc server and the socket.
    """

    log = Logger()

    def __init__(
        self,
        config: ShimConfig,
        reactor: Any,
        listener: Listener,
        plugins: Iterable[IShimPlugin] | None = None,
        discover: bool = True,
    ) -> None:
        """
        @param plugins: the plugins to run; the built-in ones by default.
        @param discover: whether to add third-party plugins found in
            L{shimd.plugins}.
        """
        self.config = config
        self.reactor = reactor
        self.listener = listener
        self.plugins = PluginRegistry()
        for plugin in builtinPlugins() if plugins is None else plugins:
            self.plugins.register(plugin)
        if discover:
            self.plugins.discover()
        self.context: PluginContext | None = None
        self.port: IListeningPort | None = None
        # The socket file is ours to remove if it was handed to us, or once
        # we have bound it; not if its path turned out to be another shim's.
        self._ownsSocket = listener.fd is not None

    def startService(self) -> None:
        super().startService()
        self.context = self.plugins.initialise(PluginContext(self.reactor, self.config))
        registry = ServiceRegistry()
        for instance in self.context.getAll(TTRPC_PLUGIN).values():
            ITTRPCService(instance).registerTTRPC(registry)
        factory = TTRPCServerFactory(registry, self.reactor)
        factory.noisy = False
        fd = self.listener.open()
        self._ownsSocket = True
        try:
            self.port = self.reactor.adoptStreamPort(fd, socket.AF_UNIX, factory)
        finally:
            os.close(fd)
        # Twisted makes an adopted unix socket world-writable (0666) as it
        # starts listening; make it owner-only again before the reactor runs
        # (the directory is owner-only, and peers are checked, besides).
        os.chmod(self.listener.path, SOCKET_MODE)
        self.log.info(
            "serving on {path} for namespace {namespace}",
            path=self.listener.path,
            namespace=self.config.namespace,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped: Deferred[Any] = maybeDeferred(
            self.port.stopListening if self.port is not None else lambda: None
        )
        if self.context is not None:
            shutdown = IShutdown(self.context.get(INTERNAL_PLUGIN, "shutdown"))
            stopped.addCallback(lambda _: shutdown.runCallbacks())
        stopped.addBoth(self._removeSocket)
        return stopped

    def _removeSocket(self, result: object) -> None:
        try:
            if self._ownsSocket:
                os.unlink(self.listener.path)
        except FileNotFoundError:
            pass
        self.log.info("shim stopped")
