"""
One client process of the C{State} load: C{python -m benchmarks.load}.

Each client of the requests-per-second measure is a process of its own, with
its own connection, so that the clients run in parallel and the Python
client is not the bottleneck of the measure (the GIL would serialise
threads). A client connects and makes a first call, prints C{ready}, reads
the start time (on the system-wide monotonic clock) from its stdin, calls
from then until the window closes, and prints what it did as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from benchmarks.ttrpcclient import StateLoop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--duration", type=float, required=True)
    options = parser.parse_args(argv)
    loop = StateLoop(options.address, options.namespace, options.id)
    try:
        loop.run(16)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        startAt = float(sys.stdin.readline())
        delay = startAt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late = time.monotonic() - startAt
        count = loop.runUntil(startAt + options.duration)
        overrun = time.monotonic() - startAt - options.duration
    finally:
        loop.close()
    json.dump({"count": count, "late": late, "overrun": overrun}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
