"""
What the benchmark ran on, recorded with its results: numbers from two
machines, or from one machine with different software, do not compare.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from benchmarks.harness import GO_SHIM, SHIMD_SHIM


def _firstLine(command: list[str], environ: dict[str, str]) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environ,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def _versionLine(command: list[str], environ: dict[str, str]) -> str:
    """
    The C{Version:} line of a shim's C{-v}.
    """
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=environ, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    for line in result.stdout.splitlines():
        if line.strip().startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpuModel() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memoryTotal() -> int:
    """
    The machine's memory in bytes.
    """
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def loadAverage() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def describe(environ: dict[str, str]) -> dict[str, object]:
    """
    The machine and the software under test.
    """
    return {
        "cpu": cpuModel(),
        "cores": os.cpu_count(),
        "memory": memoryTotal(),
        "kernel": platform.release(),
        "os": _osRelease(),
        "python": sys.version.split()[0],
        "containerd": _firstLine(["containerd", "--version"], environ),
        "runc": _firstLine(["runc", "--version"], environ),
        "goShim": f"{GO_SHIM.binary} {_versionLine([GO_SHIM.binary, '-v'], environ)}",
        "shimd": (
            f"{SHIMD_SHIM.binary} {_versionLine([SHIMD_SHIM.binary, '-v'], environ)}"
        ),
        "cgroups": (
            "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
        ),
    }


def _osRelease() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"
