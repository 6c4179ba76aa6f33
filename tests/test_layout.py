"""
The package layout's promises, read off the source: no import circle
between shimd's modules, and the framework layers (C{shimd.shim},
C{shimd.ttrpc}, C{shimd.wire}, C{shimd.interfaces}) import nothing of the
runc shim built on them (docs/architecture.rst).
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import shimd

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(shimd.__file__)))
FRAMEWORK = ("shimd.shim", "shimd.ttrpc", "shimd.wire", "shimd.interfaces")
RUNC_SHIM = "shimd.runc"


def shimdModules() -> dict[str, str]:
    """
    shimd's modules but the generated protobuf ones, by name: their files.
    """
    modules = {}
    for directory, _, files in os.walk(os.path.join(PACKAGE_ROOT, "shimd")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            module = os.path.relpath(path, PACKAGE_ROOT)[:-3].replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            if not module.startswith("shimd.protos"):
                modules[module] = path
    return modules


def within(module: str, packages: tuple[str, ...] | str) -> bool:
    """
    Whether C{module} is one of C{packages} or inside one.
    """
    if isinstance(packages, str):
        packages = (packages,)
    return any(module == p or module.startswith(p + ".") for p in packages)


def importGraph() -> dict[str, set[str]]:
    """
    Which of shimd's modules each imports, anywhere in it (a function's
    deferred import included), with the packages that importing a module
    runs.
    """
    modules = shimdModules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join([*parts, *([base] if base else [])])
                names.update(f"{base}.{alias.name}" for alias in node.names)
        imported = set()
        for name in names:
            found = known(name)
            while found:
                imported.add(found)
                found = known(found.rpartition(".")[0])
        imported.discard(module)
        graph[module] = imported
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected groups of more than one module (Tarjan's).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


class LayoutTests(SynchronousTestCase):
    """
    The import graph of shimd's source.
    """

    def test_noCircle(self) -> None:
        """
        No module imports, however indirectly, one that imports it.
        """
        graph = importGraph()
        self.assertIn("shimd.shim.launcher", graph)
        self.assertEqual(circles(graph), [])

    def test_circleFound(self) -> None:
        """
        L{circles} finds a circle, and only the modules on it.
        """
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(circles(graph), [["a", "b", "c"]])

    def test_frameworkApart(self) -> None:
        """
        The framework imports nothing of the runc shim: the launcher is
        given the runc manager by the runc shim's program.
        """
        graph = importGraph()
        crossings = {
            module: sorted(m for m in imported if within(m, RUNC_SHIM))
            for module, imported in graph.items()
            if within(module, FRAMEWORK)
        }
        self.assertEqual({m: i for m, i in crossings.items() if i}, {})
