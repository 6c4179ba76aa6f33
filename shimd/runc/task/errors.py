# -*- test-case-name: tests.test_task_service -*-
"""
The task API's errors, with the codes containerd acts on and the Go shim's
texts (C{"<context>: <class>"}, which containerd's C{FromGRPC} strips back).
"""

from __future__ import annotations

from shimd.ttrpc.status import Code, TTRPCError


def notFound(context: str) -> TTRPCError:
    return TTRPCError(Code.NOT_FOUND, f"{context}: not found")


def alreadyExists(context: str) -> TTRPCError:
    return TTRPCError(Code.ALREADY_EXISTS, f"{context}: already exists")


def failedPrecondition(context: str) -> TTRPCError:
    return TTRPCError(Code.FAILED_PRECONDITION, f"{context}: failed precondition")


def invalidArgument(context: str) -> TTRPCError:
    return TTRPCError(Code.INVALID_ARGUMENT, f"{context}: invalid argument")


def unknown(message: str) -> TTRPCError:
    """
    An error containerd does not classify: invalid state transitions and
    runc failures.
    """
    return TTRPCError(Code.UNKNOWN, message)


def containerNotCreated() -> TTRPCError:
    return notFound("container not created")
