# -*- test-case-name: tests.test_task_state -*-
"""
The one place that knows a process's states: which moves are legal for a
container's init process and for an exec, and which requests each state
refuses, with the Go shim's texts (C{pkg/process/init_state.go},
C{exec_state.go}, C{deleted_state.go}).

Init::

    created ──────────────┬─> running <─> pausing ─> paused ─> running
    created (checkpoint) ─┘      │           │          │
        │                        v           v          v
        └──────────────────────> stopped ──────────────────> deleted

An exec: created -> running -> stopped -> deleted, and created -> stopped or
deleted. C{pausing} is the Go shim's running state with its C{pausing} flag
set (C{runc pause} in flight); a failed pause goes back to running.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from shimd.protos import task_types_pb2
from shimd.runc.task import errors
from shimd.ttrpc.status import TTRPCError


class State(enum.Enum):
    CREATED = "created"
    CREATED_CHECKPOINT = "created-checkpoint"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


STATUS: dict[State, task_types_pb2.Status] = {
    State.CREATED: task_types_pb2.CREATED,
    State.CREATED_CHECKPOINT: task_types_pb2.CREATED,
    State.RUNNING: task_types_pb2.RUNNING,
    State.PAUSING: task_types_pb2.PAUSING,
    State.PAUSED: task_types_pb2.PAUSED,
    State.STOPPED: task_types_pb2.STOPPED,
    State.DELETED: task_types_pb2.STOPPED,
}

# The names the Go shim gives its states in its transition errors: it has
# no state of its own for a checkpoint's created or for pausing.
GO_NAMES: dict[State, str] = {
    State.CREATED_CHECKPOINT: "created",
    State.PAUSING: "running",
}

Transitions = Mapping[State, frozenset[State]]
Refusals = Mapping[str, Mapping[State, str]]

INIT_TRANSITIONS: Transitions = {
    State.CREATED: frozenset({State.RUNNING, State.STOPPED, State.DELETED}),
    State.CREATED_CHECKPOINT: frozenset({State.RUNNING, State.STOPPED, State.DELETED}),
    State.RUNNING: frozenset({State.PAUSING, State.STOPPED}),
    State.PAUSING: frozenset({State.PAUSED, State.RUNNING, State.STOPPED}),
    State.PAUSED: frozenset({State.RUNNING, State.STOPPED}),
    State.STOPPED: frozenset({State.DELETED}),
    State.DELETED: frozenset(),
}

EXEC_TRANSITIONS: Transitions = {
    State.CREATED: frozenset({State.RUNNING, State.STOPPED, State.DELETED}),
    State.RUNNING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset({State.DELETED}),
    State.DELETED: frozenset(),
}

INIT_REFUSALS: Refusals = {
    "start": {
        State.RUNNING: "cannot start a running process",
        State.PAUSING: "cannot start a paused process",
        State.PAUSED: "cannot start a paused process",
        State.STOPPED: "cannot start a stopped process",
        State.DELETED: "cannot start a deleted process",
    },
    "delete": {
        State.RUNNING: "cannot delete a running process",
        State.PAUSING: "cannot delete a paused process",
        State.PAUSED: "cannot delete a paused process",
    },
    "pause": {
        State.CREATED: "cannot pause task in created state",
        State.CREATED_CHECKPOINT: "cannot pause task in created state",
        State.PAUSING: "cannot pause a paused container",
        State.PAUSED: "cannot pause a paused container",
        State.STOPPED: "cannot pause a stopped container",
        State.DELETED: "cannot pause a deleted process",
    },
    "resume": {
        State.CREATED: "cannot resume task in created state",
        State.CREATED_CHECKPOINT: "cannot resume task in created state",
        State.RUNNING: "cannot resume a running process",
        State.PAUSING: "cannot resume a running process",
        State.STOPPED: "cannot resume a stopped container",
        State.DELETED: "cannot resume a deleted process",
    },
    "update": {
        State.STOPPED: "cannot update a stopped container",
        State.DELETED: "cannot update a deleted process",
    },
    "checkpoint": {
        State.CREATED: "cannot checkpoint a task in created state",
        State.CREATED_CHECKPOINT: "cannot checkpoint a task in created state",
        State.STOPPED: "cannot checkpoint a stopped container",
        State.DELETED: "cannot checkpoint a deleted process",
    },
    "exec": {
        State.CREATED_CHECKPOINT: "cannot exec in a created state",
        State.PAUSING: "cannot exec in a paused state",
        State.PAUSED: "cannot exec in a paused state",
        State.STOPPED: "cannot exec in a stopped state",
        State.DELETED: "cannot exec in a deleted state",
    },
    "resize": {State.DELETED: "cannot resize a deleted process"},
}

EXEC_REFUSALS: Refusals = {
    "start": {
        State.RUNNING: "cannot start a running process",
        State.STOPPED: "cannot start a stopped process",
        State.DELETED: "cannot start a deleted process",
    },
    "delete": {State.RUNNING: "cannot delete a running process"},
    "resize": {
        State.STOPPED: "cannot resize a stopped container",
        State.DELETED: "cannot resize a deleted process",
    },
}


def invalidTransition(source: State, target: State) -> TTRPCError:
    """
    The Go shim's error for a move its state machine does not allow.
    """
    return errors.unknown(
        f'invalid state transition "{GO_NAMES.get(source, source.value)}"'
        f' to "{GO_NAMES.get(target, target.value)}"'
    )


class ProcessState:
    """
    The state of one process: it moves only along its transitions, and
    refuses the requests its state does not allow.

    @ivar transitions: the legal moves, by source state.
    @ivar refusals: the Go text of each refused request, by request and state.
    """

    def __init__(
        self, transitions: Transitions, refusals: Refusals, initial: State
    ) -> None:
        self.transitions = transitions
        self.refusals = refusals
        self._current = initial

    @classmethod
    def forInit(cls, checkpoint: bool = False) -> ProcessState:
        """
        An init process's state: created, or created from a checkpoint.
        """
        initial = State.CREATED_CHECKPOINT if checkpoint else State.CREATED
        return cls(INIT_TRANSITIONS, INIT_REFUSALS, initial)

    @classmethod
    def forExec(cls) -> ProcessState:
        return cls(EXEC_TRANSITIONS, EXEC_REFUSALS, State.CREATED)

    @property
    def current(self) -> State:
        return self._current

    def transition(self, target: State) -> None:
        """
        Move to C{target}.

        @raise TTRPCError: C{UNKNOWN} with the Go text when the move is not
            legal from the current state; the state is then unchanged.
        """
        if target not in self.transitions.get(self._current, frozenset()):
            raise invalidTransition(self._current, target)
        self._current = target

    def refuse(self, operation: str) -> None:
        """
        @raise TTRPCError: C{UNKNOWN} with the Go text, when C{operation} is
            not allowed in the current state.
        """
        refusal = self.refusals.get(operation, {}).get(self._current)
        if refusal is not None:
            raise errors.unknown(refusal)
