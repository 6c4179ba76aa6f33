# -*- test-case-name: tests.test_ttrpc -*-
"""
ttrpc status codes (the gRPC numeric codes) and the exception that carries a
code and message to the peer as a C{google.rpc.Status}.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class Code(IntEnum):
    """
    The gRPC status codes, as ttrpc carries them in C{google.rpc.Status}.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TTRPCError(Exception):
    """
    An error that reaches the peer as a ttrpc status: raised (or failed with)
    by a handler on the server side, and the failure of a call on the client
    side when the peer answered with a non-OK status.

    @ivar code: the status code.
    @ivar message: the status message, as the peer shows it to its user.
    """

    def __init__(self, code: Code | int, message: str) -> None:
        super().__init__(code, message)
        try:
            self.code: Code | int = Code(code)
        except ValueError:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, Code) else str(self.code)
        return f"{name}: {self.message}"


class ConnectionClosed(TTRPCError):
    """
    The connection was lost before the peer answered: Go's C{ttrpc.ErrClosed},
    which containerd reads as "the shim is gone".
    """

    def __init__(self) -> None:
        super().__init__(Code.UNAVAILABLE, "ttrpc: closed")


_ERRNO_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EPERM: Code.PERMISSION_DENIED,
}


def statusFromException(exception: BaseException) -> tuple[Code, str]:
    """
    Classify an exception that carries no explicit status, the way the Go
    ttrpc server's C{convertCode} does: end of file is C{OUT_OF_RANGE}, a
    missing file C{NOT_FOUND}, an existing one C{ALREADY_EXISTS}, a refused
    access C{PERMISSION_DENIED}, and anything else C{UNKNOWN}.

    @return: the code and the message to send.
    """
    if isinstance(exception, TTRPCError):
        return Code(exception.code), exception.message
    if isinstance(exception, EOFError):
        return Code.OUT_OF_RANGE, str(exception) or "EOF"
    if isinstance(exception, OSError) and exception.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exception.errno], str(exception)
    return Code.UNKNOWN, str(exception) or type(exception).__name__
