# -*- test-case-name: tests.test_task_state -*-
"""
Tests for L{shimd.runc.task.state}: every move of the init and exec state
machines, legal or refused, against the transitions of the Go shim
(C{pkg/process/init_state.go}, C{exec_state.go}: each state's C{transition}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from shimd.runc.task.state import ProcessState, State
from shimd.ttrpc.status import Code, TTRPCError

C, CC, R, PG, PD, S, D = (
    State.CREATED,
    State.CREATED_CHECKPOINT,
    State.RUNNING,
    State.PAUSING,
    State.PAUSED,
    State.STOPPED,
    State.DELETED,
)

# The legal moves, written out from the Go source; PAUSING stands for Go's
# running state with its pausing flag.
INIT_LEGAL = {
    (C, R), (C, S), (C, D),
    (CC, R), (CC, S), (CC, D),
    (R, PG), (R, S),
    (PG, PD), (PG, R), (PG, S),
    (PD, R), (PD, S),
    (S, D),
}  # fmt: skip
EXEC_LEGAL = {(C, R), (C, S), (C, D), (R, S), (S, D)}
EXEC_STATES = (C, R, S, D)

GO_NAME = {CC: "created", PG: "running"}


def machine(init: bool, state: State) -> ProcessState:
    """
    An init's (or an exec's) state machine put in C{state} directly, to try
    one move from it.
    """
    made = ProcessState.forInit() if init else ProcessState.forExec()
    return ProcessState(made.transitions, made.refusals, state)


class TransitionTests(SynchronousTestCase):
    """
    L{ProcessState.transition}.
    """

    def check(
        self, init: bool, legal: set[tuple[State, State]], states: tuple[State, ...]
    ) -> None:
        for source in states:
            for target in State:
                states_ = machine(init, source)
                label = f"{source.value} -> {target.value}"
                if (source, target) in legal:
                    states_.transition(target)
                    self.assertIs(states_.current, target, label)
                    continue
                error = self.assertRaises(TTRPCError, states_.transition, target)
                self.assertEqual(
                    (error.code, error.message),
                    (
                        Code.UNKNOWN,
                        f"invalid state transition"
                        f' "{GO_NAME.get(source, source.value)}"'
                        f' to "{GO_NAME.get(target, target.value)}"',
                    ),
                    label,
                )
                self.assertIs(states_.current, source, label)

    def test_init(self) -> None:
        """
        The init moves along Go's transitions and refuses every other move
        with Go's text, staying where it was.
        """
        self.check(True, INIT_LEGAL, tuple(State))

    def test_exec(self) -> None:
        """
        An exec moves along Go's exec transitions only: it never pauses.
        """
        self.check(False, EXEC_LEGAL, EXEC_STATES)

    def test_pausedToCreated(self) -> None:
        """
        The move the issue names, paused to created, is refused.
        """
        states = ProcessState.forInit()
        for step in (R, PG, PD):
            states.transition(step)
        error = self.assertRaises(TTRPCError, states.transition, C)
        self.assertEqual(
            error.message, 'invalid state transition "paused" to "created"'
        )
        self.assertIs(states.current, PD)

    def test_initial(self) -> None:
        """
        An init starts created, or created from a checkpoint; an exec created.
        """
        self.assertIs(ProcessState.forInit().current, C)
        self.assertIs(ProcessState.forInit(checkpoint=True).current, CC)
        self.assertIs(ProcessState.forExec().current, C)

    def test_refuse(self) -> None:
        """
        L{ProcessState.refuse} raises the state's refusal, and allows the rest.
        """
        states = ProcessState.forInit()
        states.refuse("start")
        error = self.assertRaises(TTRPCError, states.refuse, "pause")
        self.assertEqual(
            (error.code, error.message),
            (Code.UNKNOWN, "cannot pause task in created state"),
        )
