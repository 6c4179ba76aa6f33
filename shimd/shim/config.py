# -*- test-case-name: tests.test_tap -*-
"""
The shim's configuration, as every plugin sees it.
"""

from __future__ import annotations

import attr

from shimd import RUNTIME_NAME


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
    """

    namespace: str
    id: str = ""
    address: str = ""
    ttrpcAddress: str = ""
    publishBinary: str = "containerd"
    bundle: str = ""
    debug: bool = False
    runtimeName: str = RUNTIME_NAME
