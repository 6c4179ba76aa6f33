# -*- test-case-name: tests.test_tap -*-
"""
The shim's configuration, as every plugin sees it: parsed once, from the
launcher's flags (L{ShimConfig.fromFlags}) or from C{twistd shim}'s options
(L{shimd.shim.tap.Options.shimConfig}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attr

from shimd import RUNTIME_NAME

if TYPE_CHECKING:
    from shimd.shim.flags import Flags

CONFIG_VARIABLE = "SHIMD_CONFIG"


class ConfigError(Exception):
    """
    The settings file cannot be read, or is not valid.
    """


def _names(value: object, key: str, path: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key} must be a list of plugin names")
    return frozenset(value)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class PluginSettings:
    """
    What the shim's settings file says of plugins (TOML)::

        disabled = ["io.example.v1.noisy"]        # TYPE.ID of plugins left out
        replace = ["io.containerd.ttrpc.v1.task"] # built-ins a dropin replaces
        [plugins."io.example.v1.audit"]           # one plugin's own settings
        path = "/var/log/audit.jsonl"

    @ivar disabled: the names (C{TYPE.ID}) of the plugins to leave out.
    @ivar replace: the names of the registered plugins that a later
        dropin's plugin of the same type and id replaces.
    @ivar plugins: each plugin's own settings, by name.
    """

    disabled: frozenset[str] = frozenset()
    replace: frozenset[str] = frozenset()
    plugins: Mapping[str, Mapping[str, object]] = attr.ib(factory=dict)

    @classmethod
    def load(cls, path: str) -> PluginSettings:
        """
        Read a settings file; no path, no settings.

        @raise ConfigError: when it cannot be read or is not valid.
        """
        if not path:
            return cls()
        import tomllib

        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"shim settings {path}: {e}") from e
        plugins = document.get("plugins", {})
        if not isinstance(plugins, dict) or not all(
            isinstance(v, dict) for v in plugins.values()
        ):
            raise ConfigError(f"{path}: plugins must be a table of tables")
        return cls(
            disabled=_names(document.get("disabled", []), "disabled", path),
            replace=_names(document.get("replace", []), "replace", path),
            plugins=plugins,
        )


def ttrpcAddressOf(address: str, environ: Mapping[str, str], given: str = "") -> str:
    """
    containerd's ttrpc address, where events go: the one given, or else
    C{$TTRPC_ADDRESS}, or else containerd's gRPC address with C{.ttrpc}
    appended, as containerd names it.
    """
    ttrpcAddress = given or environ.get("TTRPC_ADDRESS", "")
    if not ttrpcAddress and address:
        ttrpcAddress = address + ".ttrpc"
    return ttrpcAddress


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class ShimConfig:
    """
    What the shim was started with.

    @ivar namespace: the containerd namespace of every task this shim serves.
    @ivar id: the id the shim was started for (the first container, or the
        group).
    @ivar address: containerd's gRPC address, part of the socket address key.
    @ivar ttrpcAddress: containerd's ttrpc address, where events go.
    @ivar bundle: the directory the shim was started in.
    @ivar debug: whether debug logging was asked for.
    @ivar settingsPath: the shim's settings file (L{PluginSettings}), from
        C{$SHIMD_CONFIG}, or C{""} for none.
    """

    namespace: str
    id: str = ""
    address: str = ""
    ttrpcAddress: str = ""
    publishBinary: str = "containerd"
    bundle: str = ""
    debug: bool = False
    runtimeName: str = RUNTIME_NAME
    settingsPath: str = ""

    @classmethod
    def fromFlags(
        cls, flags: Flags, environ: Mapping[str, str], cwd: str
    ) -> ShimConfig:
        """
        The configuration of a daemon run from the launcher's parsed flags.

        @param environ: the daemon's environment (C{TTRPC_ADDRESS}).
        @param cwd: the daemon's working directory, the bundle unless
            C{-bundle} names one.
        """
        return cls(
            namespace=flags.namespace,
            id=flags.id,
            address=flags.address,
            ttrpcAddress=ttrpcAddressOf(flags.address, environ),
            publishBinary=flags.publishBinary,
            bundle=flags.bundle or cwd,
            debug=flags.debug,
            settingsPath=environ.get(CONFIG_VARIABLE, ""),
        )
