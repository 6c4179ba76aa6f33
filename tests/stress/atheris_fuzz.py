"""
The fuzz cases of L{tests.stress.fuzz}, driven by atheris (libFuzzer)
instead of hypothesis, against a live shim::

    python -m tests.stress.atheris_fuzz SOCKET CONTAINER [libFuzzer flags]

SOCKET is the shim's socket path, CONTAINER the id of a container it runs
(its probe, and protected from the cases). libFuzzer's flags follow, e.g.
C{-runs=10000 -seed=1}. The case generator and the specification's oracle
are instrumented, so libFuzzer keeps the inputs that reach new kinds of
case. It exits 0 when every case was answered as the specification allows.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from tests.stress import fuzz

from google.protobuf.message import Message

from shimd.protos import task_pb2


def main(argv: list[str]) -> None:
    path, containerID = argv[1], argv[2]

    def answered(response: Message) -> bool:
        return (
            isinstance(response, task_pb2.StateResponse) and response.id == containerID
        )

    probe = fuzz.Probe("State", task_pb2.StateRequest(id=containerID), answered)
    protected = {containerID}

    def testOneInput(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        case = fuzz.encodable(lambda: fuzz.buildCase(fuzz.ProviderSource(provider)))
        if case is None:
            return
        payload, _ = case
        if not fuzz.safeToSend(payload, protected):
            return
        fuzz.exercise(path, payload, probe)

    atheris.Setup([argv[0], *argv[3:]], testOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
