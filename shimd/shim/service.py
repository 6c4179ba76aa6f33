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

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from shimd.interfaces import IShimPlugin, IShutdown, ITTRPCInterceptor, ITTRPCService
from shimd.shim.address import SOCKET_MODE, Listener
from shimd.shim.config import PluginSettings, ShimConfig
from shimd.shim.interceptors import InterceptingRegistry
from shimd.shim.plugin import (
    INTERNAL_PLUGIN,
    TTRPC_PLUGIN,
    PluginContext,
    PluginRegistry,
)
from shimd.ttrpc.server import TTRPCServerFactory


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
        @param plugins: plugins to run besides those discovered.
        @param discover: whether to add the plugins of the dropins in
            L{shimd.plugins} (shimd's own among them).
        @raise shimd.shim.config.ConfigError: when the settings file named
            in C{config} cannot be read or is not valid.
        """
        self.config = config
        self.reactor = reactor
        self.listener = listener
        self.settings = PluginSettings.load(config.settingsPath)
        self.plugins = PluginRegistry()
        for plugin in plugins or ():
            self.plugins.register(plugin)
        if discover:
            self.plugins.discover(settings=self.settings)
        self.context: PluginContext | None = None
        self.port: IListeningPort | None = None
        # The socket file is ours to remove if it was handed to us, or once
        # we have bound it; not if its path turned out to be another shim's.
        self._ownsSocket = listener.fd is not None

    def startService(self) -> None:
        super().startService()
        self.context = self.plugins.initialise(
            PluginContext(self.reactor, self.config, self.settings)
        )
        interceptors = [
            ITTRPCInterceptor(instance)
            for instance in self.context.instances()
            if ITTRPCInterceptor.providedBy(instance)
        ]
        registry = InterceptingRegistry(interceptors)
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


def makeService(config: ShimConfig, listener: Listener, reactor: Any = None) -> Service:
    """
    The shim service for a parsed configuration, serving on C{listener}.

    @param reactor: the reactor to run on; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor
    return ShimService(config, reactor, listener)
