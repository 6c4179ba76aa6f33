# -*- test-case-name: tests.test_shutdown -*-
"""
The internal shutdown service (C{io.containerd.internal.v1}, id
C{shutdown}): it ends the shim once, after the callbacks registered with it
have run (delivering queued events, for one), within a bounded time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from shimd.interfaces import IPluginContext, IShutdown
from shimd.shim.plugin import INTERNAL_PLUGIN, Registration

CALLBACK_TIMEOUT = 5.0


@implementer(IShutdown)
class ShutdownService:
    """
    Ends the shim process.

    @ivar stop: what ending the process means: stopping the reactor, for the
        daemon.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, stop: Callable[[], object]) -> None:
        self._clock = clock
        self._stop = stop
        self._callbacks: list[Callable[[], Any]] = []
        self._started = False

    def register(self, callback: Callable[[], Any]) -> None:
        self._callbacks.append(callback)

    def shutdown(self) -> None:
        if self._started:
            return
        self._started = True
        self._stop()

    def isShutdown(self) -> bool:
        return self._started

    def runCallbacks(self) -> Deferred[None]:
        """
        Run every registered callback, and wait for them at most
        L{CALLBACK_TIMEOUT} seconds.

        @return: a Deferred that fires when they are done or time is up.
        """
        self._started = True
        callbacks, self._callbacks = self._callbacks, []
        pending = [maybeDeferred(callback) for callback in callbacks]
        for call in pending:
            call.addTimeout(CALLBACK_TIMEOUT, self._clock, self._timedOut)
            call.addErrback(
                lambda failure: self.log.failure("shutdown callback failed", failure)
            )
        done: Deferred[None] = DeferredList(pending).addCallback(lambda _: None)
        return done

    def _timedOut(self, result: object, timeout: float) -> object:
        self.log.error(
            "shutdown callback did not finish within {timeout} s", timeout=timeout
        )
        return None


def _initialise(context: IPluginContext) -> ShutdownService:
    reactor = context.reactor
    return ShutdownService(reactor, reactor.stop)


shutdownPlugin = Registration(INTERNAL_PLUGIN, "shutdown", _initialise)
