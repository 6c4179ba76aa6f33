# -*- test-case-name: tests.test_plugin -*-
"""
The plugin registry: plugins register by type and id, declare the plugin
types they require, and are initialised in dependency order, as containerd's
shim does with its plugin graph.

Every plugin, shimd's own included, is a dropin: an object providing
L{IShimPlugin} and L{IPlugin} in a module of the L{shimd.plugins} package
(or of any C{shimd/plugins} directory on C{sys.path}), found through
Twisted's plugin cache (C{dropin.cache}), so that a shim imports only the
dropins that hold shim plugins. shimd's own are in L{shimd.plugins.builtin}:
the event publisher (C{io.containerd.event.v1}), the internal shutdown
service (C{io.containerd.internal.v1}) and the runc task service
(C{io.containerd.ttrpc.v1}), which requires both.

L{PluginSettings} (from the file C{$SHIMD_CONFIG} names) disables plugins,
lets a third party's plugin replace a built-in one of the same type and id,
and gives each plugin its own settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attr
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from shimd.interfaces import IPluginContext, IShimPlugin
from shimd.shim.config import PluginSettings, ShimConfig

EVENT_PLUGIN = "io.containerd.event.v1"
INTERNAL_PLUGIN = "io.containerd.internal.v1"
TTRPC_PLUGIN = "io.containerd.ttrpc.v1"
ALL_TYPES = "*"
BUILTIN_DROPIN = "builtin"

log = Logger()


class PluginError(Exception):
    """
    The plugins cannot be initialised as registered: a requirement is missing,
    requirements form a cycle, an id is registered twice, or a lookup found
    no instance or several.
    """


class SkipPlugin(Exception):
    """
    Raised by a plugin's initialiser to leave the plugin out.
    """


def _types(types: Iterable[str]) -> tuple[str, ...]:
    return tuple(types)


@implementer(IShimPlugin, IPlugin)
@attr.s(frozen=True, auto_attribs=True)
class Registration:
    """
    A plugin given as a type, an id, its requirements and an initialiser: a
    module-level one in a dropin is found by L{PluginRegistry.discover}.
    """

    type: str
    id: str
    initialiser: Callable[[IPluginContext], object]
    requires: Sequence[str] = attr.ib(default=(), converter=_types)

    def initialise(self, context: IPluginContext) -> object:
        return self.initialiser(context)


@implementer(IPluginContext)
class PluginContext:
    """
    The context plugins are initialised in; it collects their instances.
    """

    def __init__(
        self,
        reactor: Any,
        config: ShimConfig,
        settings: PluginSettings | None = None,
    ) -> None:
        """
        @param settings: the plugins' settings; none by default.
        """
        self.reactor = reactor
        self.config = config
        self.settings = PluginSettings() if settings is None else settings
        self._instances: dict[str, dict[str, object]] = {}
        self._ordered: list[object] = []

    def add(self, plugin: IShimPlugin, instance: object) -> None:
        self._instances.setdefault(plugin.type, {})[plugin.id] = instance
        self._ordered.append(instance)

    def pluginConfig(self, type: str, id: str) -> Mapping[str, object]:
        return self.settings.plugins.get(f"{type}.{id}", {})

    def instances(self) -> list[object]:
        """
        Every initialised plugin's instance, in the order of initialisation.
        """
        return list(self._ordered)

    def get(self, type: str, id: str | None = None) -> object:
        instances = self._instances.get(type, {})
        if id is not None:
            if id not in instances:
                raise PluginError(f"no initialised plugin {type}.{id}")
            return instances[id]
        if len(instances) != 1:
            raise PluginError(
                f"expected one initialised plugin of type {type}, "
                f"found {len(instances)}"
            )
        return next(iter(instances.values()))

    def getAll(self, type: str) -> dict[str, object]:
        return dict(self._instances.get(type, {}))


class PluginRegistry:
    """
    Plugins by type and id, and the order to initialise them in.
    """

    def __init__(self) -> None:
        self._plugins: dict[tuple[str, str], IShimPlugin] = {}

    def register(self, plugin: IShimPlugin) -> None:
        """
        @raise PluginError: when a plugin of the same type and id is already
            registered.
        """
        key = (plugin.type, plugin.id)
        if key in self._plugins:
            raise PluginError(f"plugin {plugin.type}.{plugin.id} registered twice")
        self._plugins[key] = plugin

    def discover(
        self, package: Any = None, settings: PluginSettings | None = None
    ) -> None:
        """
        Register the plugins of the dropins in C{package} (by default
        L{shimd.plugins}): those of L{BUILTIN_DROPIN} first, then the
        others', by dropin name. A dropin is imported only when Twisted's
        cache says that it holds a shim plugin.

        A plugin named (C{TYPE.ID}) in the settings' C{disabled} list is left
        out. A plugin with the type and id of one already registered replaces
        it when the settings' C{replace} list names it, and is otherwise
        left out with a warning: a stray dropin does not stop the shim.
        """
        import warnings

        from twisted.plugin import getCache

        if package is None:
            import shimd.plugins as package
        if settings is None:
            settings = PluginSettings()
        with warnings.catch_warnings():
            # An editable install's path finder makes Twisted's module walker
            # warn about a "PEP 302 violation"; the plugins are found anyway.
            warnings.filterwarnings("ignore", message=".*PEP 302 violation")
            dropins = getCache(package)
        names = sorted(dropins, key=lambda name: (name != BUILTIN_DROPIN, name))
        for name in names:
            for cached in dropins[name].plugins:
                if IShimPlugin not in cached.provided:
                    continue
                plugin = IShimPlugin(cached.load())
                self._add(plugin, settings, dropin=name)

    def _add(self, plugin: IShimPlugin, settings: PluginSettings, dropin: str) -> None:
        name = _name(plugin)
        if name in settings.disabled:
            log.info("plugin {plugin} disabled", plugin=name)
            return
        key = (plugin.type, plugin.id)
        if key in self._plugins:
            if name not in settings.replace:
                log.warn(
                    "plugin {plugin} of dropin {dropin} left out: one is "
                    "already registered (name it in replace to replace it)",
                    plugin=name,
                    dropin=dropin,
                )
                return
            log.info(
                "plugin {plugin} replaced by dropin {dropin}",
                plugin=name,
                dropin=dropin,
            )
            del self._plugins[key]
        self._plugins[key] = plugin

    def ordered(self) -> list[IShimPlugin]:
        """
        Every plugin, each after all the plugins of the types it requires.

        @raise PluginError: naming the plugin and the type, when a required
            type has no plugin; naming the plugins, when requirements form a
            cycle.
        """
        byType: dict[str, list[str]] = {}
        for plugin in self._plugins.values():
            byType.setdefault(plugin.type, []).append(_name(plugin))
        dependencies: dict[str, list[str]] = {}
        for plugin in self._plugins.values():
            needed: list[str] = []
            for required in plugin.requires:
                if required == ALL_TYPES:
                    needed.extend(_name(p) for p in self._plugins.values())
                elif required in byType:
                    needed.extend(byType[required])
                else:
                    raise PluginError(
                        f"plugin {_name(plugin)} requires a plugin of type "
                        f"{required}, and none is registered"
                    )
            dependencies[_name(plugin)] = [
                name for name in needed if name != _name(plugin)
            ]
        plugins = {_name(p): p for p in self._plugins.values()}
        return [plugins[name] for name in _topological(dependencies)]

    def initialise(self, context: PluginContext) -> PluginContext:
        """
        Initialise every plugin in dependency order, adding each instance to
        C{context}. A plugin that raises L{SkipPlugin} is left out.

        @return: C{context}.
        """
        for plugin in self.ordered():
            try:
                instance = plugin.initialise(context)
            except SkipPlugin as reason:
                log.info(
                    "skipping plugin {plugin}: {reason}",
                    plugin=_name(plugin),
                    reason=reason,
                )
                continue
            context.add(plugin, instance)
        return context


def _name(plugin: IShimPlugin) -> str:
    return f"{plugin.type}.{plugin.id}"


def _topological(dependencies: dict[str, list[str]]) -> list[str]:
    """
    Order plugin names after the names they depend on, keeping registration
    order where the graph leaves it free.

    @raise PluginError: naming the plugins of a cycle.
    """
    ordered: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(plugin: str) -> None:
        if plugin in done:
            return
        if plugin in path:
            cycle = [*path[path.index(plugin) :], plugin]
            raise PluginError("plugin requirements form a cycle: " + " -> ".join(cycle))
        path.append(plugin)
        for dependency in dependencies[plugin]:
            visit(dependency)
        path.pop()
        done.add(plugin)
        ordered.append(plugin)

    for plugin in dependencies:
        visit(plugin)
    return ordered
