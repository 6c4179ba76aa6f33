"""
C{python -m benchmarks.launcherprofile}: where shimd's launcher spends its time.

The lifecycle breakdown of the main benchmark (L{benchmarks.breakdown})
shows what the daemon costs next to the Go shim's; this tool looks inside
the two processes containerd waits for, the binary's C{start} and
C{delete}, which run a fresh Python each:

  - the start-up ladder: a bare interpreter, then with C{site}, then with
    what the console script imports (C{re}), then with C{shimd.runc.shim},
    then the whole binary (C{-v}), next to the Go shim's C{-v}; each step's
    median over interleaved runs;
  - C{-X importtime}: the launcher's imports, module by module;
  - C{cProfile} of real C{start} and C{delete} actions, run as containerd
    runs them (L{benchmarks.direct}), with the fork server warm: the time
    of each step of L{shimd.shim.launcher.start} and L{shimd.shim.launcher.delete}.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from benchmarks import stats
from benchmarks.direct import DirectShims
from benchmarks.harness import GO_SHIM, SHIMD_SHIM, Bench, missing

PROFILER = """
import cProfile, runpy, sys
output = sys.argv[1]
sys.argv = sys.argv[2:]
profiler = cProfile.Profile()
code = 0
profiler.enable()
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
finally:
    profiler.disable()
    profiler.dump_stats(output)
sys.exit(code)
"""

START_STEPS = (
    ("shim/launcher.py", "main", "main(), all of the action"),
    ("shim/bootstrap.py", "parseStartInput", "parse stdin and flags"),
    ("runc/manager.py", "group", "read config.json, group"),
    ("shim/address.py", "socketAddress", "socket address (sha256)"),
    ("shim/address.py", "listen", "bind and listen"),
    ("shim/address.py", "writeAddress", "write address"),
    ("shim/launcher.py", "launchDaemon", "get a daemon"),
    ("shim/forkserver.py", "socketPath", "  fork server path (fingerprint)"),
    ("shim/forkserver.py", "requestDaemon", "  fork server request"),
    ("shim/spawn.py", "spawnDaemon", "  spawn a daemon (no fork server)"),
    ("shim/launcher.py", "adjustOOMScore", "OOM score"),
    ("runc/manager.py", "configure", "join the shim cgroup"),
)
DELETE_STEPS = (
    ("shim/launcher.py", "main", "main(), all of the action"),
    ("shim/launcher.py", "delete", "delete()"),
    ("runc/manager.py", "stop", "  the runtime's clean-up"),
    ("shim/spawn.py", "run", "    runc delete --force"),
    ("runc/mount.py", "unmountAll", "    unmount rootfs (ctypes)"),
)
IMPORTED = (
    "site",
    "re",
    "shimd.runc.shim",
    "shimd.shim.launcher",
    "socket",
    "hashlib",
    "_hashlib",
    "json",
    "enum",
    "shimd.shim.forkserver",
    "shimd.shim.bootstrap",
    "shimd.wire",
)


def interpreterOf(script: str) -> str:
    """
    The interpreter of a script's C{#!} line (the shimd binary is a console
    script), or ours.
    """
    try:
        with open(script, "rb") as f:
            first = f.readline()
    except OSError:
        return sys.executable
    if first.startswith(b"#!"):
        return first[2:].decode().strip().split()[0]
    return sys.executable


def environment() -> dict[str, str]:
    environ = dict(os.environ)
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return environ


def ladder(rounds: int) -> list[tuple[str, float]]:
    """
    The start-up ladder, interleaved, median ms of each step.
    """
    python = interpreterOf(SHIMD_SHIM.binary)
    steps = [
        ("Python, no site (-I -S -c pass)", [python, "-I", "-S", "-c", "pass"]),
        (
            "  + import _socket, _sha256 (a lean floor)",
            [python, "-I", "-S", "-c", "import _socket, _sha256"],
        ),
        ("Python with site (-c pass)", [python, "-c", "pass"]),
        ("+ import re (the console script's)", [python, "-c", "import re"]),
        (
            "+ import shimd.runc.shim",
            [python, "-c", "import re, shimd.runc.shim"],
        ),
        (
            "+ import ctypes; CDLL(None) (delete)",
            [python, "-c", "import re, shimd.runc.shim, ctypes; ctypes.CDLL(None)"],
        ),
        ("shimd binary -v", [SHIMD_SHIM.binary, "-v"]),
        ("Go shim -v", [GO_SHIM.binary, "-v"]),
    ]
    environ = environment()
    samples: dict[str, list[float]] = {label: [] for label, _ in steps}
    for index in range(rounds):
        order = steps if index % 2 == 0 else steps[::-1]
        for label, command in order:
            started = time.perf_counter()
            subprocess.run(command, env=environ, stdout=subprocess.DEVNULL, check=True)
            samples[label].append((time.perf_counter() - started) * 1000)
    return [(label, stats.median(samples[label])) for label, _ in steps]


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def importTimes(rounds: int) -> list[tuple[str, float, float]]:
    """
    C{-X importtime} of C{import re, shimd.shim.launcher}: median self and
    cumulative ms of the modules in L{IMPORTED}.
    """
    python = interpreterOf(SHIMD_SHIM.binary)
    found: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in IMPORTED
    }
    for _ in range(rounds):
        result = subprocess.run(
            [python, "-X", "importtime", "-c", "import re, shimd.runc.shim"],
            env=environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match and match.group(4) in found:
                own, cumulative = found[match.group(4)]
                own.append(int(match.group(1)) / 1000)
                cumulative.append(int(match.group(2)) / 1000)
    return [
        (name, stats.median(own), stats.median(cumulative))
        for name, (own, cumulative) in found.items()
        if own
    ]


def _steps(
    profiles: Sequence[str], steps: Sequence[tuple[str, str, str]]
) -> list[tuple[str, float]]:
    """
    Cumulative ms per run of each step, from the profiles of several runs.
    """
    combined = pstats.Stats(profiles[0])
    for path in profiles[1:]:
        combined.add(path)
    table = combined.stats  # type: ignore[attr-defined]
    found = []
    for filename, function, label in steps:
        total = 0.0
        for (path, _, name), (_, _, _, cumulative, _) in table.items():
            if name == function and path.endswith(f"shimd/{filename}"):
                total += cumulative
        found.append((label, total * 1000 / len(profiles)))
    return found


def profileActions(rounds: int) -> dict[str, list[tuple[str, float]]]:
    """
    Time the binary's C{start} and C{delete} in C{rounds} direct lifecycles
    of shimd (fork server warm), then cProfile them in as many more.

    @return: C{"whole"}: the median ms of each action, unprofiled; C{"start"}
        and C{"delete"}: the steps of each under cProfile.
    """
    python = interpreterOf(SHIMD_SHIM.binary)
    directory = tempfile.mkdtemp(prefix="shimd-profile-", dir="/tmp")
    bench = Bench()
    profiles: dict[str, list[str]] = {"start": [], "delete": []}
    try:
        bench.start()
        direct = DirectShims(bench)
        for _ in range(2):
            direct.lifecycle(SHIMD_SHIM)
        whole: dict[str, list[float]] = {"start": [], "action": []}
        for _ in range(rounds):
            found = direct.lifecycle(SHIMD_SHIM)
            for key, values in whole.items():
                values.append(float(found[key]) * 1000)

        def wrap(command: list[str]) -> list[str]:
            action = command[-1]
            path = os.path.join(directory, f"{action}-{len(profiles[action])}.prof")
            profiles[action].append(path)
            return [python, "-c", PROFILER, path, *command]

        direct.wrap = wrap
        for _ in range(rounds):
            direct.lifecycle(SHIMD_SHIM)
        return {
            "whole": [
                ("start, unprofiled", stats.median(whole["start"])),
                ("delete, unprofiled", stats.median(whole["action"])),
            ],
            "start": _steps(profiles["start"], START_STEPS),
            "delete": _steps(profiles["delete"], DELETE_STEPS),
        }
    finally:
        bench.close()
        for paths in profiles.values():
            for path in paths:
                if os.path.exists(path):
                    os.unlink(path)
        os.rmdir(directory)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launcherprofile")
    parser.add_argument("--rounds", type=int, default=30)
    options = parser.parse_args(argv)
    lacking = missing()
    if lacking:
        print(f"benchmarks.launcherprofile: this host lacks {', '.join(lacking)}")
        return 2
    print(f"start-up ladder (median ms of {options.rounds} interleaved runs):")
    for label, value in ladder(options.rounds):
        print(f"  {label:44} {value:7.1f}")
    print("\nimports of re and shimd.runc.shim (-X importtime, median ms):")
    print(f"  {'module':24} {'self':>7} {'cumulative':>11}")
    for name, own, cumulative in importTimes(options.rounds):
        print(f"  {name:24} {own:7.2f} {cumulative:11.2f}")
    actions = profileActions(max(options.rounds // 3, 3))
    print("\nthe actions, run as containerd runs them (median ms):")
    for label, value in actions.pop("whole"):
        print(f"  {label:44} {value:7.1f}")
    for action, steps in actions.items():
        print(f"\nthe {action} action under cProfile (ms per run, cumulative):")
        for label, value in steps:
            print(f"  {label:44} {value:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
