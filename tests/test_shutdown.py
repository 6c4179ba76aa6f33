# -*- test-case-name: tests.test_shutdown -*-
"""
Tests for L{shimd.shim.shutdown}: the internal shutdown service, which ends the
shim once, after its callbacks, within a bounded time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import IShutdown
from shimd.shim.config import ShimConfig
from shimd.shim.plugin import INTERNAL_PLUGIN, PluginContext
from shimd.shim.shutdown import CALLBACK_TIMEOUT, ShutdownService, shutdownPlugin


class ShutdownServiceTests(SynchronousTestCase):
    """
    L{ShutdownService} stops once and runs its callbacks, bounded in time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.stops = 0
        self.service = ShutdownService(self.clock, self.stop)

    def stop(self) -> None:
        self.stops += 1

    def test_interface(self) -> None:
        """
        L{ShutdownService} provides L{IShutdown}.
        """
        self.assertTrue(verifyObject(IShutdown, self.service))

    def test_shutdownOnce(self) -> None:
        """
        L{ShutdownService.shutdown} calls C{stop} the first time only.
        """
        self.assertFalse(self.service.isShutdown())
        self.service.shutdown()
        self.assertTrue(self.service.isShutdown())
        self.assertEqual(self.stops, 1)
        self.service.shutdown()
        self.assertEqual(self.stops, 1)

    def test_shutdownRunsNoCallbacks(self) -> None:
        """
        L{ShutdownService.shutdown} only stops: the callbacks run when the
        stopping shim calls L{ShutdownService.runCallbacks}.
        """
        calls: list[str] = []
        self.service.register(lambda: calls.append("called"))
        self.service.shutdown()
        self.assertEqual(calls, [])

    def test_runCallbacks(self) -> None:
        """
        L{ShutdownService.runCallbacks} calls every callback, in registration
        order, and fires once they have returned.
        """
        calls: list[int] = []

        def recorder(index: int) -> Callable[[], None]:
            return lambda: calls.append(index)

        for index in range(3):
            self.service.register(recorder(index))
        done = self.service.runCallbacks()
        self.assertEqual(calls, [0, 1, 2])
        self.assertIsNone(self.successResultOf(done))
        self.assertTrue(self.service.isShutdown())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.stops, 0)

    def test_noCallbacks(self) -> None:
        """
        Without callbacks, L{ShutdownService.runCallbacks} fires at once.
        """
        self.assertIsNone(self.successResultOf(self.service.runCallbacks()))

    def test_onceOnly(self) -> None:
        """
        Callbacks run once, however often L{ShutdownService.runCallbacks} is
        called.
        """
        calls: list[str] = []
        self.service.register(lambda: calls.append("called"))
        self.service.runCallbacks()
        self.successResultOf(self.service.runCallbacks())
        self.assertEqual(calls, ["called"])

    def test_waitsForDeferreds(self) -> None:
        """
        The result fires only once the Deferreds the callbacks return have.
        """
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        self.service.register(lambda: first)
        self.service.register(lambda: succeed("ready"))
        self.service.register(lambda: second)
        done = self.service.runCallbacks()
        self.assertNoResult(done)
        second.callback(None)
        self.assertNoResult(done)
        self.clock.advance(CALLBACK_TIMEOUT / 2)
        first.callback(None)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failingCallback(self) -> None:
        """
        A callback that raises, or whose Deferred fails, is logged and does
        not keep the others from running or the result from firing.
        """
        calls: list[str] = []

        def broken() -> None:
            calls.append("broken")
            raise ZeroDivisionError("synchronous")

        self.service.register(lambda: calls.append("before"))
        self.service.register(broken)
        self.service.register(lambda: fail(KeyError("asynchronous")))
        self.service.register(lambda: calls.append("after"))
        done = self.service.runCallbacks()
        self.assertEqual(calls, ["before", "broken", "after"])
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_timeout(self) -> None:
        """
        A callback that never finishes is abandoned after L{CALLBACK_TIMEOUT}
        seconds, with an error logged, and the result fires.
        """
        events: list[dict[str, object]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        never: Deferred[None] = Deferred()
        finished: Deferred[None] = Deferred()
        self.service.register(lambda: never)
        self.service.register(lambda: finished)
        done = self.service.runCallbacks()
        finished.callback(None)
        self.clock.advance(CALLBACK_TIMEOUT - 0.001)
        self.assertNoResult(done)
        self.clock.advance(0.001)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        errors = [
            event
            for event in events
            if event.get("log_level") == LogLevel.error
            and event.get("timeout") == CALLBACK_TIMEOUT
        ]
        self.assertEqual(len(errors), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_laterRegistration(self) -> None:
        """
        A callback registered after the callbacks ran is run by the next
        L{ShutdownService.runCallbacks}.
        """
        self.successResultOf(self.service.runCallbacks())
        calls: list[str] = []
        self.service.register(lambda: calls.append("late"))
        self.successResultOf(self.service.runCallbacks())
        self.assertEqual(calls, ["late"])


class PluginTests(SynchronousTestCase):
    """
    L{shutdownPlugin} is the internal plugin that makes the service.
    """

    def test_plugin(self) -> None:
        """
        The plugin is C{io.containerd.internal.v1.shutdown}, requires nothing,
        and stops the reactor.
        """
        self.assertEqual(
            (shutdownPlugin.type, shutdownPlugin.id, shutdownPlugin.requires),
            (INTERNAL_PLUGIN, "shutdown", ()),
        )
        stops: list[str] = []

        class Reactor(Clock):
            def stop(self) -> None:
                stops.append("stopped")

        context = PluginContext(Reactor(), ShimConfig(namespace="ns"))
        service = shutdownPlugin.initialise(context)
        self.assertIsInstance(service, ShutdownService)
        assert isinstance(service, ShutdownService)
        service.shutdown()
        self.assertEqual(stops, ["stopped"])
