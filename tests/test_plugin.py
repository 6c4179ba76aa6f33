# -*- test-case-name: tests.test_plugin -*-
"""
Tests for L{shimd.shim.plugin}: registration, dependency order, initialisation
and discovery of third-party plugins.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from shimd.interfaces import IPluginContext, IShimPlugin
from shimd.shim.config import PluginSettings, ShimConfig
from shimd.shim.plugin import (
    ALL_TYPES,
    EVENT_PLUGIN,
    INTERNAL_PLUGIN,
    TTRPC_PLUGIN,
    PluginContext,
    PluginError,
    PluginRegistry,
    Registration,
    SkipPlugin,
)

HOOK_PLUGIN = "io.example.hook.v1"


def plugin(
    type: str,
    id: str,
    requires: Iterable[str] = (),
    initialiser: Callable[[IPluginContext], object] | None = None,
) -> Registration:
    """
    A registration whose instance is its own name, unless told otherwise.
    """
    if initialiser is None:

        def initialiser(context: IPluginContext) -> object:
            return f"{type}.{id}"

    return Registration(type, id, initialiser, requires=tuple(requires))


def registryOf(*plugins: IShimPlugin) -> PluginRegistry:
    registry = PluginRegistry()
    for each in plugins:
        registry.register(each)
    return registry


def names(plugins: Iterable[IShimPlugin]) -> list[str]:
    return [f"{each.type}.{each.id}" for each in plugins]


def makeContext() -> PluginContext:
    return PluginContext(Clock(), ShimConfig(namespace="ns", id="c1"))


class RegistrationTests(SynchronousTestCase):
    """
    L{Registration} is a plugin given by its parts.
    """

    def test_interface(self) -> None:
        """
        A L{Registration} provides L{IShimPlugin} and L{IPlugin}, so that a
        dropin can hold one.
        """
        registration = plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN])
        self.assertTrue(verifyObject(IShimPlugin, registration))
        self.assertTrue(IPlugin.providedBy(registration))

    def test_requiresTuple(self) -> None:
        """
        Requirements are kept as a tuple.
        """
        registration = Registration(
            "t", "i", lambda context: None, requires=[EVENT_PLUGIN]
        )
        self.assertEqual(registration.requires, (EVENT_PLUGIN,))
        self.assertEqual(Registration("t", "i", lambda context: None).requires, ())

    def test_initialise(self) -> None:
        """
        L{Registration.initialise} calls the initialiser with the context.
        """
        seen: list[IPluginContext] = []

        def initialiser(context: IPluginContext) -> object:
            seen.append(context)
            return "instance"

        context = makeContext()
        self.assertEqual(
            Registration("t", "i", initialiser).initialise(context), "instance"
        )
        self.assertEqual(seen, [context])


class OrderTests(SynchronousTestCase):
    """
    L{PluginRegistry.ordered} puts each plugin after those it requires.
    """

    def test_builtinShape(self) -> None:
        """
        The event and internal plugins come before the ttrpc plugin that
        requires them, whatever order they were registered in.
        """
        registry = registryOf(
            plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN, INTERNAL_PLUGIN]),
            plugin(INTERNAL_PLUGIN, "shutdown"),
            plugin(EVENT_PLUGIN, "publisher"),
        )
        self.assertEqual(
            names(registry.ordered()),
            [
                f"{EVENT_PLUGIN}.publisher",
                f"{INTERNAL_PLUGIN}.shutdown",
                f"{TTRPC_PLUGIN}.task",
            ],
        )

    def test_registrationOrderKept(self) -> None:
        """
        Plugins without requirements keep their registration order.
        """
        registry = registryOf(
            plugin("c", "1"), plugin("a", "1"), plugin("b", "1"), plugin("a", "2")
        )
        self.assertEqual(names(registry.ordered()), ["c.1", "a.1", "b.1", "a.2"])

    def test_onlyDependenciesMove(self) -> None:
        """
        A plugin is moved only as far as its requirements need: those
        registered before a dependant that needs nothing stay in place.
        """
        registry = registryOf(
            plugin("x", "free"),
            plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN, INTERNAL_PLUGIN]),
            plugin(EVENT_PLUGIN, "publisher"),
            plugin("y", "free"),
            plugin(INTERNAL_PLUGIN, "shutdown"),
        )
        self.assertEqual(
            names(registry.ordered()),
            [
                "x.free",
                f"{EVENT_PLUGIN}.publisher",
                f"{INTERNAL_PLUGIN}.shutdown",
                f"{TTRPC_PLUGIN}.task",
                "y.free",
            ],
        )

    def test_everyPluginOfType(self) -> None:
        """
        Requiring a type puts the plugin after every plugin of that type.
        """
        registry = registryOf(
            plugin("user", "1", ["dep"]),
            plugin("dep", "a"),
            plugin("other", "1"),
            plugin("dep", "b"),
        )
        ordered = names(registry.ordered())
        self.assertEqual(ordered, ["dep.a", "dep.b", "user.1", "other.1"])

    def test_transitive(self) -> None:
        """
        Requirements are followed through.
        """
        registry = registryOf(
            plugin("c", "1", ["b"]), plugin("b", "1", ["a"]), plugin("a", "1")
        )
        self.assertEqual(names(registry.ordered()), ["a.1", "b.1", "c.1"])

    def test_allTypes(self) -> None:
        """
        A plugin requiring C{"*"} comes after every plugin of another type.
        """
        registry = registryOf(
            plugin(HOOK_PLUGIN, "last", [ALL_TYPES]),
            plugin(EVENT_PLUGIN, "publisher"),
            plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN, INTERNAL_PLUGIN]),
            plugin(INTERNAL_PLUGIN, "shutdown"),
        )
        ordered = names(registry.ordered())
        self.assertEqual(ordered[-1], f"{HOOK_PLUGIN}.last")
        self.assertEqual(
            ordered[:-1],
            [
                f"{EVENT_PLUGIN}.publisher",
                f"{INTERNAL_PLUGIN}.shutdown",
                f"{TTRPC_PLUGIN}.task",
            ],
        )

    def test_empty(self) -> None:
        """
        No plugins, no order.
        """
        self.assertEqual(PluginRegistry().ordered(), [])

    def test_missingRequirement(self) -> None:
        """
        A required type without a plugin is an error naming the plugin and
        the type.
        """
        registry = registryOf(
            plugin(EVENT_PLUGIN, "publisher"),
            plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN, INTERNAL_PLUGIN]),
        )
        error = self.assertRaises(PluginError, registry.ordered)
        self.assertIn(f"{TTRPC_PLUGIN}.task", str(error))
        self.assertIn(INTERNAL_PLUGIN, str(error))

    def test_cycle(self) -> None:
        """
        Requirements that form a cycle are an error naming the plugins in it,
        and not those outside it.
        """
        registry = registryOf(
            plugin("free", "1"),
            plugin("a", "1", ["b"]),
            plugin("b", "1", ["c"]),
            plugin("c", "1", ["a"]),
        )
        error = self.assertRaises(PluginError, registry.ordered)
        message = str(error)
        self.assertIn("cycle", message)
        for name in ("a.1", "b.1", "c.1"):
            self.assertIn(name, message)
        self.assertNotIn("free.1", message)

    def test_allTypesCycle(self) -> None:
        """
        Two plugins of different types that both require C{"*"} form a
        cycle.
        """
        registry = registryOf(plugin("a", "1", [ALL_TYPES]), plugin("b", "1", ["*"]))
        error = self.assertRaises(PluginError, registry.ordered)
        self.assertIn("a.1", str(error))
        self.assertIn("b.1", str(error))


class RegisterTests(SynchronousTestCase):
    """
    L{PluginRegistry.register} takes each type and id once.
    """

    def test_duplicate(self) -> None:
        """
        A second plugin of the same type and id is an error naming it.
        """
        registry = registryOf(plugin(EVENT_PLUGIN, "publisher"))
        error = self.assertRaises(
            PluginError, registry.register, plugin(EVENT_PLUGIN, "publisher")
        )
        self.assertIn(f"{EVENT_PLUGIN}.publisher", str(error))

    def test_sameIdOtherType(self) -> None:
        """
        The same id under another type is another plugin.
        """
        registry = registryOf(plugin("a", "x"), plugin("b", "x"))
        self.assertEqual(names(registry.ordered()), ["a.x", "b.x"])


class InitialiseTests(SynchronousTestCase):
    """
    L{PluginRegistry.initialise} builds every plugin, in order, into the
    context.
    """

    def test_order(self) -> None:
        """
        Each initialiser sees the instances of the plugins it requires.
        """
        calls: list[str] = []

        def publisher(context: IPluginContext) -> object:
            calls.append("publisher")
            return "the publisher"

        def task(context: IPluginContext) -> object:
            calls.append("task")
            return ("task", context.get(EVENT_PLUGIN), context.get(INTERNAL_PLUGIN))

        def shutdown(context: IPluginContext) -> object:
            calls.append("shutdown")
            return "the shutdown service"

        registry = registryOf(
            plugin(TTRPC_PLUGIN, "task", [EVENT_PLUGIN, INTERNAL_PLUGIN], task),
            plugin(EVENT_PLUGIN, "publisher", initialiser=publisher),
            plugin(INTERNAL_PLUGIN, "shutdown", initialiser=shutdown),
        )
        context = makeContext()
        self.assertIs(registry.initialise(context), context)
        self.assertEqual(calls, ["publisher", "shutdown", "task"])
        self.assertEqual(
            context.get(TTRPC_PLUGIN, "task"),
            ("task", "the publisher", "the shutdown service"),
        )

    def test_skip(self) -> None:
        """
        A plugin whose initialiser raises L{SkipPlugin} is left out; the
        others are initialised.
        """

        def skipped(context: IPluginContext) -> object:
            raise SkipPlugin("no cgroups here")

        registry = registryOf(
            plugin("a", "1"),
            plugin("b", "skipped", initialiser=skipped),
            plugin("c", "1"),
        )
        context = registry.initialise(makeContext())
        self.assertEqual(context.getAll("b"), {})
        self.assertRaises(PluginError, context.get, "b")
        self.assertEqual(context.get("a"), "a.1")
        self.assertEqual(context.get("c"), "c.1")

    def test_errorPropagates(self) -> None:
        """
        Any other exception from an initialiser stops initialisation.
        """

        def broken(context: IPluginContext) -> object:
            raise ZeroDivisionError()

        registry = registryOf(
            plugin("a", "1", initialiser=broken), plugin("b", "1", ["a"])
        )
        context = makeContext()
        self.assertRaises(ZeroDivisionError, registry.initialise, context)
        self.assertEqual(context.getAll("b"), {})


class PluginContextTests(SynchronousTestCase):
    """
    L{PluginContext} holds the configuration and the instances.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = ShimConfig(namespace="ns", id="c1")
        self.context = PluginContext(self.clock, self.config)

    def test_interface(self) -> None:
        """
        L{PluginContext} provides L{IPluginContext}, with the reactor and
        configuration it was given.
        """
        self.assertTrue(verifyObject(IPluginContext, self.context))
        self.assertIs(self.context.reactor, self.clock)
        self.assertIs(self.context.config, self.config)

    def test_getOne(self) -> None:
        """
        With one instance of a type, L{PluginContext.get} returns it.
        """
        instance = object()
        self.context.add(plugin("a", "1"), instance)
        self.assertIs(self.context.get("a"), instance)
        self.assertIs(self.context.get("a", "1"), instance)

    def test_getNone(self) -> None:
        """
        Without an instance of the type, L{PluginContext.get} raises
        L{PluginError} naming the type.
        """
        error = self.assertRaises(PluginError, self.context.get, "a")
        self.assertIn("a", str(error))
        error = self.assertRaises(PluginError, self.context.get, "a", "1")
        self.assertIn("a.1", str(error))

    def test_getSeveral(self) -> None:
        """
        With several instances of a type, L{PluginContext.get} needs an id.
        """
        first, second = object(), object()
        self.context.add(plugin("a", "1"), first)
        self.context.add(plugin("a", "2"), second)
        error = self.assertRaises(PluginError, self.context.get, "a")
        self.assertIn("found 2", str(error))
        self.assertIs(self.context.get("a", "1"), first)
        self.assertIs(self.context.get("a", "2"), second)
        self.assertRaises(PluginError, self.context.get, "a", "3")

    def test_pluginConfig(self) -> None:
        """
        L{PluginContext.pluginConfig} gives a plugin its table of the
        settings, and an empty one to a plugin without one.
        """
        settings = PluginSettings(plugins={"a.1": {"path": "/x"}})
        context = PluginContext(self.clock, self.config, settings)
        self.assertEqual(context.pluginConfig("a", "1"), {"path": "/x"})
        self.assertEqual(context.pluginConfig("a", "2"), {})

    def test_instancesInOrder(self) -> None:
        """
        L{PluginContext.instances} lists the instances as they were added.
        """
        self.context.add(plugin("b", "1"), "first")
        self.context.add(plugin("a", "1"), "second")
        self.assertEqual(self.context.instances(), ["first", "second"])

    def test_getAll(self) -> None:
        """
        L{PluginContext.getAll} gives every instance of a type by id, as a
        copy.
        """
        self.assertEqual(self.context.getAll("a"), {})
        self.context.add(plugin("a", "1"), "one")
        self.context.add(plugin("a", "2"), "two")
        self.context.add(plugin("b", "1"), "other")
        instances = self.context.getAll("a")
        self.assertEqual(instances, {"1": "one", "2": "two"})
        instances.clear()
        self.assertEqual(self.context.getAll("a"), {"1": "one", "2": "two"})


PLUGIN_MODULE = '''\
"""
A third-party plugin, for the tests.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from shimd.interfaces import IShimPlugin


@implementer(IShimPlugin, IPlugin)
class HookPlugin:
    type = "io.example.hook.v1"
    id = "hook"
    requires = ("io.containerd.event.v1",)

    def initialise(self, context):
        return ("hooked", context.get("io.containerd.event.v1"))


@implementer(IPlugin)
class OtherPlugin:
    """
    A plugin for something else: not a shim plugin.
    """


hook = HookPlugin()
other = OtherPlugin()
'''


class DiscoverTests(SynchronousTestCase):
    """
    L{PluginRegistry.discover} registers the plugins L{twisted.plugin} finds.
    """

    def makePackage(self) -> Any:
        """
        Make and import a plugin package holding L{PLUGIN_MODULE}.
        """
        name = "shimd_test_plugins_" + uuid.uuid4().hex
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, name))
        with open(os.path.join(base, name, "__init__.py"), "w"):
            pass
        with open(os.path.join(base, name, "hook.py"), "w") as f:
            f.write(textwrap.dedent(PLUGIN_MODULE))
        sys.path.insert(0, base)
        self.addCleanup(sys.path.remove, base)
        self.addCleanup(self.forget, name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    def forget(self, name: str) -> None:
        for module in list(sys.modules):
            if module == name or module.startswith(name + "."):
                del sys.modules[module]

    def test_discover(self) -> None:
        """
        An object providing both L{IShimPlugin} and L{IPlugin} in a module of
        the package is registered and initialised with the others; an
        L{IPlugin} that is not a shim plugin is not.
        """
        registry = PluginRegistry()
        registry.discover(self.makePackage())
        registry.register(plugin(EVENT_PLUGIN, "publisher"))
        ordered = registry.ordered()
        self.assertEqual(
            names(ordered), [f"{EVENT_PLUGIN}.publisher", f"{HOOK_PLUGIN}.hook"]
        )
        self.assertTrue(verifyObject(IShimPlugin, ordered[1]))
        context = registry.initialise(makeContext())
        self.assertEqual(
            context.get(HOOK_PLUGIN, "hook"), ("hooked", f"{EVENT_PLUGIN}.publisher")
        )

    def test_defaultPackage(self) -> None:
        """
        Without a package, L{PluginRegistry.discover} finds shimd's own
        plugins, a dropin in L{shimd.plugins}.
        """
        registry = PluginRegistry()
        registry.discover()
        builtins = {
            f"{EVENT_PLUGIN}.publisher",
            f"{INTERNAL_PLUGIN}.shutdown",
            "io.shimd.runtime.v1.runc",
            f"{INTERNAL_PLUGIN}.reaper",
            f"{INTERNAL_PLUGIN}.mount",
            f"{INTERNAL_PLUGIN}.oom",
            f"{TTRPC_PLUGIN}.task",
        }
        ordered = names(registry.ordered())
        self.assertEqual(builtins - set(ordered), set())
        self.assertEqual(ordered[-1], f"{TTRPC_PLUGIN}.task")

    def test_duplicateLeftOut(self) -> None:
        """
        A discovered plugin with the type and id of a registered one is left
        out, and the shim starts with the registered one.
        """
        registry = registryOf(plugin(HOOK_PLUGIN, "hook"), plugin(EVENT_PLUGIN, "p"))
        registry.discover(self.makePackage())
        context = registry.initialise(makeContext())
        self.assertEqual(context.get(HOOK_PLUGIN, "hook"), f"{HOOK_PLUGIN}.hook")

    def test_replace(self) -> None:
        """
        Named in the settings' C{replace} list, a discovered plugin replaces
        a registered one of the same type and id.
        """
        registry = registryOf(plugin(HOOK_PLUGIN, "hook"), plugin(EVENT_PLUGIN, "p"))
        settings = PluginSettings(replace=frozenset({f"{HOOK_PLUGIN}.hook"}))
        registry.discover(self.makePackage(), settings)
        context = registry.initialise(makeContext())
        self.assertEqual(
            context.get(HOOK_PLUGIN, "hook"), ("hooked", f"{EVENT_PLUGIN}.p")
        )

    def test_disabled(self) -> None:
        """
        A plugin named in the settings' C{disabled} list is left out.
        """
        registry = PluginRegistry()
        settings = PluginSettings(disabled=frozenset({f"{HOOK_PLUGIN}.hook"}))
        registry.discover(self.makePackage(), settings)
        self.assertEqual(names(registry.ordered()), [])

    def test_secondOfAType(self) -> None:
        """
        A second plugin of a type that has one (another event publisher)
        does not stop the built-in plugins from starting: they look each
        other up by type and id.
        """
        registry = PluginRegistry()
        registry.discover()
        registry.register(plugin(EVENT_PLUGIN, "another"))
        names_ = names(registry.ordered())
        self.assertIn(f"{EVENT_PLUGIN}.another", names_)
        self.assertIn(f"{TTRPC_PLUGIN}.task", names_)


class BuiltinTests(SynchronousTestCase):
    """
    L{shimd.plugins.builtin} holds the publisher, the shutdown service, the
    task service and the runtime, reaper, mounter and OOM watcher it is
    given.
    """

    def test_builtin(self) -> None:
        """
        The built-in plugins, by type and id; the task service requires the
        others.
        """
        from shimd.plugins import builtin

        plugins = [
            builtin.publisherPlugin,
            builtin.shutdownPlugin,
            builtin.runcPlugin,
            builtin.reaperPlugin,
            builtin.mounterPlugin,
            builtin.oomPlugin,
            builtin.taskPlugin,
        ]
        self.assertEqual(
            [(each.type, each.id) for each in plugins],
            [
                (EVENT_PLUGIN, "publisher"),
                (INTERNAL_PLUGIN, "shutdown"),
                ("io.shimd.runtime.v1", "runc"),
                (INTERNAL_PLUGIN, "reaper"),
                (INTERNAL_PLUGIN, "mount"),
                (INTERNAL_PLUGIN, "oom"),
                (TTRPC_PLUGIN, "task"),
            ],
        )
        for each in plugins:
            self.assertTrue(verifyObject(IShimPlugin, each))
            self.assertTrue(IPlugin.providedBy(each))
        self.assertEqual(
            set(plugins[-1].requires),
            {EVENT_PLUGIN, INTERNAL_PLUGIN, "io.shimd.runtime.v1"},
        )
        registry = registryOf(*reversed(plugins))
        self.assertEqual(names(registry.ordered())[-1], f"{TTRPC_PLUGIN}.task")
