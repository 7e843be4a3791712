"""Samples the CPU and memory of named processes (each with its children) once a second until
stdin closes or a line arrives on it, then prints one JSON object per process.

    footprint.py order=1234 postgres=5678 ... < control

CPU is utime + stime from /proc/PID/stat, summed over the process tree, in millicores (1000 =
one core busy). Memory is the proportional set size (Pss, /proc/PID/smaps_rollup), summed over
the tree: shared pages (Postgres's shared buffers, the JVM's mapped jars) are counted once
across the processes sharing them, as a container's memory accounting would roughly do.
Used by scripts/footprint."""

import json
import os
import select
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def family(root: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(roots: dict[str, int]) -> dict[str, tuple[int, int]]:
    tree = children()
    out = {}
    for name, root in roots.items():
        pids = family(root, tree)
        out[name] = (sum(cpu_ticks(p) for p in pids), sum(pss_kib(p) for p in pids))
    return out


def main() -> None:
    roots = {name: int(pid) for name, pid in (arg.split("=", 1) for arg in sys.argv[1:])}
    cpu = {name: [] for name in roots}
    memory = {name: [] for name in roots}
    previous, previous_at = sample(roots), time.monotonic()
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        now, now_at = sample(roots), time.monotonic()
        for name in roots:
            cpu[name].append((now[name][0] - previous[name][0]) / TICKS / (now_at - previous_at) * 1000)
            memory[name].append(now[name][1] / 1024)
        previous, previous_at = now, now_at
        if ready:
            break
    for name in roots:
        samples = sorted(cpu[name])
        print(json.dumps({
            "process": name,
            "seconds": len(samples),
            "cpu_mean_m": round(sum(samples) / max(len(samples), 1)),
            "cpu_p95_m": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))]) if samples else 0,
            "memory_peak_mib": round(max(memory[name], default=0)),
        }))


if __name__ == "__main__":
    main()
