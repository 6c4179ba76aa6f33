# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{shimd.shim.tap} and the C{shim} twistd plugin: the options of
C{twistd shim}, the configuration they make, and L{shimd.shim.tap.makeService}.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import shimd
from shimd.shim.config import ConfigError, PluginSettings, ShimConfig
from shimd.shim.flags import parseFlags
from shimd.shim.service import ShimService
from shimd.shim.tap import Options, makeService

# The directory holding both shimd/ and twisted/plugins/shimd_plugin.py.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(shimd.__file__)))


def pluginEnvironment() -> dict[str, str]:
    """
    The environment for a child Python that must find the C{shim} plugin.

    Twisted finds plugins by walking C{twisted/plugins} directories under the
    C{sys.path} entries; a strict editable install (a path finder, as
    setuptools makes by default) puts no directory of ours on C{sys.path}, so
    the source root is added here. A regular install copies the plugin into
    C{site-packages/twisted/plugins} and needs nothing.
    """
    environment = dict(os.environ)
    paths = [SOURCE_ROOT, *filter(None, [environment.get("PYTHONPATH")])]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def twistdCommand() -> list[str]:
    """
    How to run this interpreter's twistd. (C{python -m twisted} is
    C{twist}, which has no C{-n}.)
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class OptionsTests(SynchronousTestCase):
    """
    L{Options} parses C{twistd shim}'s command line.
    """

    def setUp(self) -> None:
        self.addCleanup(self.restoreEnvironment, os.environ.get("TTRPC_ADDRESS"))
        os.environ.pop("TTRPC_ADDRESS", None)

    def restoreEnvironment(self, value: str | None) -> None:
        if value is None:
            os.environ.pop("TTRPC_ADDRESS", None)
        else:
            os.environ["TTRPC_ADDRESS"] = value

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_namespaceRequired(self) -> None:
        """
        Without a namespace (or with an empty one) the options are refused
        with the Go shim's text.
        """
        for argv in (["--socket", "/s"], ["--namespace", "", "--socket", "/s"]):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertEqual(str(error), "shim namespace cannot be empty")

    def test_socketOrFD(self) -> None:
        """
        Exactly one of C{--socket} and C{--socket-fd} is required.
        """
        self.assertRaises(UsageError, self.parse, "--namespace", "ns")
        self.assertRaises(
            UsageError,
            self.parse,
            "--namespace",
            "ns",
            "--socket",
            "/s",
            "--socket-fd",
            "3",
        )
        self.assertEqual(
            self.parse("--namespace", "ns", "--socket", "/s")["socket"], "/s"
        )
        self.assertEqual(
            self.parse("--namespace", "ns", "--socket-fd", "3")["socket-fd"], 3
        )

    def test_socketFDInteger(self) -> None:
        """
        C{--socket-fd} must be a number.
        """
        self.assertRaises(
            UsageError, self.parse, "--namespace", "ns", "--socket-fd", "three"
        )

    def test_config(self) -> None:
        """
        L{Options.shimConfig} carries every option into the L{ShimConfig}
        the plugins see.
        """
        options = self.parse(
            "--namespace",
            "sxref",
            "--id",
            "sx1",
            "--address",
            "/run/c.sock",
            "--publish-binary",
            "/usr/bin/containerd",
            "--bundle",
            "/b/sx1",
            "--socket",
            "/s",
            "--debug",
        )
        self.assertEqual(
            options.shimConfig(),
            ShimConfig(
                namespace="sxref",
                id="sx1",
                address="/run/c.sock",
                ttrpcAddress="/run/c.sock.ttrpc",
                publishBinary="/usr/bin/containerd",
                bundle="/b/sx1",
                debug=True,
            ),
        )

    def test_configDefaults(self) -> None:
        """
        Without options, the bundle is the working directory, debug is off,
        and the publish binary is C{containerd}.
        """
        config = self.parse("--namespace", "ns", "--socket", "/s").shimConfig()
        self.assertEqual(config.bundle, os.getcwd())
        self.assertFalse(config.debug)
        self.assertEqual(config.publishBinary, "containerd")
        self.assertEqual(config.ttrpcAddress, "")

    def test_ttrpcAddressOption(self) -> None:
        """
        C{--ttrpc-address} gives the events address, over C{$TTRPC_ADDRESS}
        and the gRPC address.
        """
        os.environ["TTRPC_ADDRESS"] = "/from/env.ttrpc"
        options = self.parse(
            "--namespace",
            "ns",
            "--socket",
            "/s",
            "--address",
            "/a.sock",
            "--ttrpc-address",
            "/given.ttrpc",
        )
        self.assertEqual(options.shimConfig().ttrpcAddress, "/given.ttrpc")

    def test_ttrpcAddressEnvironment(self) -> None:
        """
        Without C{--ttrpc-address}, C{$TTRPC_ADDRESS} (which containerd sets)
        gives the events address, over the gRPC address.
        """
        os.environ["TTRPC_ADDRESS"] = "/from/env.ttrpc"
        options = self.parse(
            "--namespace", "ns", "--socket", "/s", "--address", "/a.sock"
        )
        self.assertEqual(options.shimConfig().ttrpcAddress, "/from/env.ttrpc")

    def test_ttrpcAddressDerived(self) -> None:
        """
        With neither, the events address is the gRPC address + C{.ttrpc}, as
        containerd derives it.
        """
        options = self.parse(
            "--namespace", "ns", "--socket", "/s", "--address", "/a.sock"
        )
        self.assertEqual(options.shimConfig().ttrpcAddress, "/a.sock.ttrpc")


class FromFlagsTests(SynchronousTestCase):
    """
    L{ShimConfig.fromFlags} makes, from the launcher's parsed flags, the
    same configuration C{twistd shim}'s options make.
    """

    def test_sameAsOptions(self) -> None:
        """
        The daemon's flags and the equivalent C{twistd shim} options give
        equal configurations.
        """
        common = ["namespace", "sxref", "id", "sx1", "address", "/run/c.sock"]
        common += ["publish-binary", "/usr/bin/containerd"]
        flags = parseFlags(
            [*(f"-{w}" if i % 2 == 0 else w for i, w in enumerate(common)), "-debug"]
        )
        options = Options()
        long = [f"--{w}" if i % 2 == 0 else w for i, w in enumerate(common)]
        options.parseOptions([*long, "--debug", "--bundle", "/b/sx1", "--socket", "/s"])
        environ = {k: v for k, v in os.environ.items() if k != "TTRPC_ADDRESS"}
        self.patch(os, "environ", environ)
        self.assertEqual(
            ShimConfig.fromFlags(flags, environ, "/b/sx1"), options.shimConfig()
        )

    def test_ttrpcAddressFromEnvironment(self) -> None:
        """
        C{$TTRPC_ADDRESS} is where events go, and C{-bundle} overrides the
        working directory.
        """
        flags = parseFlags(["-namespace", "ns", "-bundle", "/b", "-address", "/a"])
        config = ShimConfig.fromFlags(flags, {"TTRPC_ADDRESS": "/t.ttrpc"}, "/cwd")
        self.assertEqual((config.ttrpcAddress, config.bundle), ("/t.ttrpc", "/b"))


class PluginSettingsTests(SynchronousTestCase):
    """
    L{PluginSettings.load} reads the shim's settings file, which
    C{$SHIMD_CONFIG} names.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_none(self) -> None:
        """
        No path, no settings.
        """
        self.assertEqual(PluginSettings.load(""), PluginSettings())

    def test_load(self) -> None:
        """
        The disabled and replace lists, and each plugin's table.
        """
        path = self.write(
            'disabled = ["a.b"]\nreplace = ["c.d"]\n[plugins."e.f"]\npath = "/x"\n'
        )
        self.assertEqual(
            PluginSettings.load(path),
            PluginSettings(
                disabled=frozenset({"a.b"}),
                replace=frozenset({"c.d"}),
                plugins={"e.f": {"path": "/x"}},
            ),
        )

    def test_invalid(self) -> None:
        """
        A missing file, bad TOML or a list of the wrong kind is a
        L{ConfigError} naming the file.
        """
        for path in (
            self.mktemp(),
            self.write("disabled = [\n"),
            self.write("disabled = [1]\n"),
            self.write("plugins = 3\n"),
        ):
            error = self.assertRaises(ConfigError, PluginSettings.load, path)
            self.assertIn(path, str(error))

    def test_fromEnvironment(self) -> None:
        """
        The daemon's configuration names the file C{$SHIMD_CONFIG} names.
        """
        flags = parseFlags(["-namespace", "ns"])
        config = ShimConfig.fromFlags(flags, {"SHIMD_CONFIG": "/etc/s.toml"}, "/")
        self.assertEqual(config.settingsPath, "/etc/s.toml")


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds the shim service from parsed options.
    """

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--namespace", "sxref", *argv])
        return options

    def test_fromPath(self) -> None:
        """
        With C{--socket}, L{makeService} returns an L{IService} that will
        bind that path, with the options' configuration, on the given
        reactor, and binds nothing yet.
        """
        directory = tempfile.mkdtemp(prefix="shimd-tap-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "shim.sock")
        memory = MemoryReactorClock()
        service = makeService(self.options("--socket", path, "--id", "sx1"), memory)
        self.assertTrue(verifyObject(IService, service))
        assert isinstance(service, ShimService)
        self.assertIs(service.reactor, memory)
        self.assertEqual(service.config.namespace, "sxref")
        self.assertEqual(service.config.id, "sx1")
        self.assertEqual(service.listener.path, path)
        self.assertIsNone(service.listener.fd)
        self.assertFalse(os.path.exists(path))

    def test_fromFD(self) -> None:
        """
        With C{--socket-fd}, L{makeService} serves the inherited socket, whose
        path it finds.
        """
        directory = tempfile.mkdtemp(prefix="shimd-tap-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "shim.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen(1)
        options = self.options("--socket-fd", str(listener.fileno()))
        service = makeService(options, MemoryReactorClock())
        assert isinstance(service, ShimService)
        self.assertEqual(service.listener.fd, listener.fileno())
        self.assertEqual(service.listener.path, path)


class PluginTests(SynchronousTestCase):
    """
    The C{shim} twistd plugin in L{twisted.plugins.shimd_plugin}.
    """

    def test_found(self) -> None:
        """
        L{getPlugins} finds an L{IServiceMaker} with the tapname C{shim}, whose
        options and service come from L{shimd.shim.tap}.
        """
        if SOURCE_ROOT not in sys.path:
            # See pluginEnvironment.
            self.patch(sys, "path", [SOURCE_ROOT, *sys.path])
        [maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "shim"]
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertIs(maker.options, Options)
        self.assertTrue(maker.description)

    def test_importIsLight(self) -> None:
        """
        Importing the plugin module, as twistd's plugin scan does, imports
        nothing of shimd: not L{shimd.shim.tap}, not L{shimd.shim.service}.
        """
        code = (
            "import sys, twisted.plugins.shimd_plugin\n"
            "print(sorted(m for m in sys.modules"
            " if m == 'shimd' or m.startswith('shimd.')))\n"
        )
        output = subprocess.run(
            [sys.executable, "-c", code],
            env=pluginEnvironment(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.assertEqual(output.strip(), "[]")

    def test_twistdHelp(self) -> None:
        """
        C{twistd -n shim --help} lists the shim's options.
        """
        result = subprocess.run(
            [*twistdCommand(), "-n", "shim", "--help"],
            env=pluginEnvironment(),
            cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in (
            "--namespace",
            "--socket=",
            "--socket-fd=",
            "--ttrpc-address=",
            "--debug",
        ):
            self.assertIn(option, result.stdout)
        self.assertIn("Usage: twistd [options] shim [options]", result.stdout)
