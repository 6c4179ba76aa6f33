# -*- test-case-name: tests.test_stdio -*-
"""
Choosing a process's stdio from what it asked for, as the Go shim does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shimd.runc.stdio.binary import BinaryIO
from shimd.runc.stdio.console import ConsoleIO
from shimd.runc.stdio.errors import StdioError
from shimd.runc.stdio.pipes import PipeIO
from shimd.runc.stdio.processio import NullIO, ProcessIO


def createIO(
    reactor: Any,
    spawn: Callable[..., Any],
    containerID: str,
    namespace: str,
    stdin: str,
    stdout: str,
    stderr: str,
    terminal: bool,
    ioUID: int = 0,
    ioGID: int = 0,
) -> ProcessIO:
    """
    The stdio a process asked for.

    @param spawn: starts a logging binary (C{reactor.spawnProcess}'s shape).
    @raise StdioError: for an unknown URI scheme.
    """
    scheme = urlsplit(stdout).scheme if "://" in stdout else ""
    if scheme not in ("", "fifo", "file", "binary"):
        raise StdioError(f"unknown STDIO scheme {scheme}")
    binary = None
    if scheme == "binary":
        binary = BinaryIO(
            reactor, spawn, stdin, stdout, stderr, containerID, namespace, terminal
        )
        if not terminal:
            return binary
    if terminal:
        return ConsoleIO(reactor, stdin, stdout, stderr, binary)
    if not (stdin or stdout or stderr):
        return NullIO(reactor)
    return PipeIO(reactor, stdin, stdout, stderr, ioUID, ioGID)
