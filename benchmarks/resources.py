"""
What idle shims cost the host: memory per container (RSS and PSS) with one
container, with many containers of one shim each, and with many containers
grouped in one shim; and CPU time with many idle containers.

Shims are found by their working directory (L{procfs.shimsByBundle}). A
shimd daemon forked by the fork server shares the server's pages until they
change: PSS charges each shared page to its sharers in equal parts. shimd's
figures count the fork server in, all of it charged to the measured
containers although it serves every shimd shim on the host: its PSS is
added to the daemons' PSS, and its private pages (USS; its shared pages are
in the daemons' RSS already) to their RSS; its CPU time to theirs. Both
shims' containers run at the same time and are measured in the same instant
or window of time, which is as interleaved as can be.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from benchmarks import procfs, stats
from benchmarks.harness import SHIMS, Bench, BenchError, Shim

GROUP_ANNOTATION = "io.containerd.runc.v2.group"


def _shimPids(bench: Bench, ids: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """
    The shim processes of each shim's containers.

    @param ids: C{{shim name: container ids}}.
    """
    owners = procfs.shimsByBundle(bench.bundles)
    found: dict[str, list[int]] = {}
    for name, containerIDs in ids.items():
        wanted = set(containerIDs)
        found[name] = sorted(pid for pid, owner in owners.items() if owner in wanted)
    return found


def _memory(pids: Sequence[int]) -> dict[str, int]:
    total = {"rss": 0, "pss": 0, "uss": 0}
    for pid in pids:
        for key, value in procfs.memory(pid).items():
            total[key] += value
    return total


def _forkServers(pids: Sequence[int]) -> list[int]:
    return sorted(
        {
            parent
            for parent in (procfs.parentOf(pid) for pid in pids)
            if parent and procfs.isForkServer(parent)
        }
    )


def _start(bench: Bench, count: int, tag: str, group: bool) -> dict[str, list[str]]:
    """
    Start C{count} sleeping containers per shim, interleaved, in a group per
    shim when C{group}.
    """
    ids: dict[str, list[str]] = {shim.name: [] for shim in SHIMS}
    try:
        for index in range(count):
            order: Sequence[Shim] = SHIMS if index % 2 == 0 else SHIMS[::-1]
            for shim in order:
                options: list[str] = []
                if group:
                    options = [
                        "--annotation",
                        f"{GROUP_ANNOTATION}={bench.namespace.name}-{shim.name}-{tag}",
                    ]
                containerID, _ = bench.runDetached(shim, tag, options)
                ids[shim.name].append(containerID)
    except BaseException:
        bench.removeQuietly([i for group_ in ids.values() for i in group_])
        raise
    return ids


def sampleMemory(
    bench: Bench, ids: dict[str, list[str]], samples: int, expectedShims: int
) -> dict[str, dict[str, object]]:
    """
    Memory of each shim's processes, per container, as the median of a few
    samples half a second apart.

    @param expectedShims: how many shim processes each shim should have.
    @return: C{{shim name: {"rss": bytes per container, "pss": ..., "shims":
        process count, "containers": count, "forkServer": {...},
        "daemons": {"rss": ..., "pss": ...}}}}: C{rss} and C{pss} count the
        fork server in, C{daemons} the shim processes alone.
    """
    taken: dict[str, dict[str, list[float]]] = {
        shim.name: {"rss": [], "pss": [], "daemonRss": [], "daemonPss": []}
        for shim in SHIMS
    }
    result: dict[str, dict[str, object]] = {}
    for sample in range(samples):
        if sample:
            time.sleep(0.5)
        pids = _shimPids(bench, ids)
        for shim in SHIMS:
            if len(pids[shim.name]) != expectedShims:
                raise BenchError(
                    f"{shim.label}: found {len(pids[shim.name])} shim processes "
                    f"for {len(ids[shim.name])} containers, expected {expectedShims}"
                )
            containers = len(ids[shim.name])
            daemons = _memory(pids[shim.name])
            info: dict[str, object] = {
                "shims": len(pids[shim.name]),
                "containers": containers,
            }
            servers = _forkServers(pids[shim.name])
            server = _memory(servers)
            if servers:
                info["forkServer"] = {
                    "pids": servers,
                    **server,
                    "forkedShims": sum(
                        1 for pid in pids[shim.name] if procfs.parentOf(pid) in servers
                    ),
                }
            measured = taken[shim.name]
            measured["daemonRss"].append(daemons["rss"] / containers)
            measured["daemonPss"].append(daemons["pss"] / containers)
            measured["rss"].append((daemons["rss"] + server["uss"]) / containers)
            measured["pss"].append((daemons["pss"] + server["pss"]) / containers)
            result[shim.name] = info
    for shim in SHIMS:
        measured = taken[shim.name]
        result[shim.name]["rss"] = stats.median(measured["rss"])
        result[shim.name]["pss"] = stats.median(measured["pss"])
        result[shim.name]["daemons"] = {
            "rss": stats.median(measured["daemonRss"]),
            "pss": stats.median(measured["daemonPss"]),
        }
    return result


def densityCurve(found: Mapping[str, object]) -> dict[str, list[list[float]]]:
    """
    Total PSS (fork server counted in) against the number of containers, a
    shim each: C{{shim name: [[containers, bytes], ...]}}.
    """
    curve: dict[str, list[list[float]]] = {shim.name: [] for shim in SHIMS}
    for case in ("single", "many", "most"):
        sampled = found[case]
        assert isinstance(sampled, dict)
        for name, points in curve.items():
            info = sampled[name]
            points.append([info["containers"], info["pss"] * info["containers"]])
    return curve


def idleCPU(
    bench: Bench, ids: dict[str, list[str]], windows: int, seconds: float
) -> dict[str, object]:
    """
    CPU time the shims of idle containers use, in C{windows} windows of
    C{seconds} seconds, both shims in the same windows.

    @return: C{{"samples": {shim name: [CPU ms per 10 s of each window]},
        "ticks": {shim name: [utime + stime ticks of each window]},
        "forkServer": [CPU ms of the fork server per window]}}; CPU ms come
        from the threads' C{schedstat}, finer than the ticks of C{stat}.
        shimd's samples and ticks count its fork server in.
    """
    samples: dict[str, list[float]] = {shim.name: [] for shim in SHIMS}
    ticks: dict[str, list[int]] = {shim.name: [] for shim in SHIMS}
    server: list[float] = []
    pids = _shimPids(bench, ids)
    servers = _forkServers(pids["shimd"])
    measured = {
        name: [*group, *(servers if name == "shimd" else [])]
        for name, group in pids.items()
    }
    for _ in range(windows):
        before = {
            name: (
                sum(procfs.cpuNanoseconds(pid) for pid in measured[name]),
                sum(procfs.cpuTicks(pid) for pid in measured[name]),
            )
            for name in pids
        }
        serverBefore = sum(procfs.cpuNanoseconds(pid) for pid in servers)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = {
            name: (
                sum(procfs.cpuNanoseconds(pid) for pid in measured[name]),
                sum(procfs.cpuTicks(pid) for pid in measured[name]),
            )
            for name in pids
        }
        serverAfter = sum(procfs.cpuNanoseconds(pid) for pid in servers)
        for name in samples:
            nanoseconds = after[name][0] - before[name][0]
            samples[name].append(nanoseconds / 1e6 * 10 / elapsed)
            ticks[name].append(after[name][1] - before[name][1])
        server.append((serverAfter - serverBefore) / 1e6 * 10 / elapsed)
    return {"samples": samples, "ticks": ticks, "forkServer": server}


def resources(
    bench: Bench,
    many: int,
    most: int,
    memorySamples: int,
    windows: int,
    seconds: float,
) -> dict[str, object]:
    """
    Memory with 1, C{many} and C{most} containers of a shim each, and with
    C{many} containers grouped in one shim; idle CPU with C{many}
    containers; and the curve of total PSS against containers.
    """
    found: dict[str, object] = {}
    single = _start(bench, 1, "mem", group=False)
    try:
        time.sleep(1.0)
        found["single"] = sampleMemory(bench, single, memorySamples, 1)
        for case, count in (("many", many), ("most", most)):
            more = _start(bench, count - len(single["shimd"]), "mem", group=False)
            for name in single:
                single[name] += more[name]
            time.sleep(1.0)
            found[case] = sampleMemory(bench, single, memorySamples, count)
            if case == "many":
                found["cpu"] = idleCPU(bench, single, windows, seconds)
        found["curve"] = densityCurve(found)
    finally:
        bench.removeQuietly([i for group in single.values() for i in group])
    grouped = _start(bench, many, "grp", group=True)
    try:
        time.sleep(1.0)
        found["grouped"] = sampleMemory(bench, grouped, memorySamples, 1)
    finally:
        bench.removeQuietly([i for group in grouped.values() for i in group])
    return found
