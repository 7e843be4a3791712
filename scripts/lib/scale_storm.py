"""The scale-storm drill's helpers (scripts/crash/scale-storm).

    python3 scale_storm.py env SUPERVISORD_CONF PROGRAM
        prints the environment supervisord gives PROGRAM, one NAME=value per line, so that a
        second instance starts exactly as the first (plus a port and an id of its own);

    python3 scale_storm.py report DIR STOP_SIGNAL SETUP
        reads the drill's folder and prints what scaling cost: replies past the 2 s wait (202),
        accepted -> final p50/p99/max, how long each partition of the group had no owner,
        from the services' own "consumer group rebalanced" log lines, and how long owners held
        partitions taken from them to finish the events they had in hand (their log lines
        about the events in hand; decision 0027). Fails (exit 1) on a 202,
        or, when the instances left by SIGTERM, on a partition without an owner for over 1 s.

DIR holds: orders.csv (the load generator's records), owned-at-start.json (the first
instance's partitions from /health when the storm began, with the time), logs.txt (one line per
instance: its log file and, for an extra instance, the time it was stopped) and events.txt.
"""

import configparser
import csv
import json
import re
import sys
from datetime import datetime
from pathlib import Path

UNOWNED_LIMIT_S = 1.0
P99_TARGET_MS = 250.0


def program_env(conf, program):
    parser = configparser.RawConfigParser(strict=False)
    parser.read(conf)
    line = parser.get(f"program:{program}", "environment")
    for name, value in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line):
        print(f"{name}={value}")


def rebalances(log, since):
    """(time, change, partition) for every partition a log says moved, at or after `since`."""
    out = []
    for line in Path(log).read_text(errors="replace").splitlines():
        if '"consumer group rebalanced"' not in line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        if at < since:
            continue
        for partition in filter(None, entry.get("moved", "").split(",")):
            out.append((at, entry["change"], partition))
    return out


def revocation_waits(folder):
    """How long each revocation that found events in hand waited for them, in ms, and how many
    let partitions go with events still in hand (after the owner's bound)."""
    waits, given_up = [], 0
    for line in (folder / "logs.txt").read_text().splitlines():
        log = line.partition(" ")[0]
        for text in Path(log).read_text(errors="replace").splitlines():
            if "events in hand" not in text and "still in hand" not in text:
                continue
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                continue
            waits.append(entry.get("waited_ms", 0))
            given_up += 1 if entry.get("left") else 0
    return waits, given_up


def unowned_periods(folder):
    """Every period in which a partition of the group had no owner: (partition, start, end)."""
    start = json.loads((folder / "owned-at-start.json").read_text())
    owners = {p: {"first"} for p in start["partitions"]}
    changes = []
    for number, line in enumerate((folder / "logs.txt").read_text().splitlines()):
        log, _, stopped = line.partition(" ")
        instance = "first" if number == 0 else log
        changes += [(at, instance, change, p) for at, change, p in rebalances(log, start["at"])]
        if stopped:
            # A killed instance says nothing: whatever it still held, it held until it died.
            changes.append((float(stopped), instance, "died", None))
    periods, empty_since = [], {}
    for at, instance, change, partition in sorted(changes, key=lambda c: c[0]):
        touched = [partition] if partition else [p for p, o in owners.items() if instance in o]
        for p in touched:
            held = owners.setdefault(p, set())
            if change == "assigned":
                held.add(instance)
                if p in empty_since:
                    periods.append((p, empty_since.pop(p), at))
            else:
                held.discard(instance)
                if not held:
                    empty_since.setdefault(p, at)
    ended = max((c[0] for c in changes), default=start["at"])
    periods += [(p, since, None) for p, since in empty_since.items()]
    return periods, ended


def longest_by_cause(folder, periods, ended):
    """The longest period without an owner that followed a join, and one that followed a leave
    (the drill's last mark before the period began says which)."""
    marks = []
    for line in (folder / "events.txt").read_text().splitlines():
        at, _, text = line.partition(" ")
        if " joined" in text or " left " in text:
            marks.append((float(at), "joined" if " joined" in text else "left"))
    longest = {}
    for _, begin, end in periods:
        # A period can begin a little before its mark: the drill marks a join once the new
        # instance answers /health, and a leave once it has exited.
        cause = min(marks, key=lambda m: abs(m[0] - begin), default=(0, "unknown"))[1]
        longest[cause] = max(longest.get(cause, 0.0), ((end or ended) - begin) * 1000)
    return longest


def percentile(values, q):
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def report(folder, signal, setup):
    orders = list(csv.DictReader((folder / "orders.csv").open()))
    waited = [o for o in orders if o["reply_status"] == "202"]
    finals = sorted(float(o["accepted_to_final_ms"]) for o in orders if o["accepted_to_final_ms"])
    periods, ended = unowned_periods(folder)
    longest = max(((end or ended) - begin for _, begin, end in periods), default=0.0)
    over = [(p, (end or ended) - begin) for p, begin, end in periods if (end or ended) - begin > UNOWNED_LIMIT_S]
    never = [p for p, _, end in periods if end is None]

    print("\n## what scaling cost")
    print(f"{setup}; instances stopped by SIG{signal}; orders {len(orders)}")
    print(f"replies 202 (not final within the 2 s wait): {len(waited)} of {len(orders)}")
    print(f"accepted -> final: p50 {percentile(finals, 0.5):.0f} ms, p99 {percentile(finals, 0.99):.0f} ms, "
          f"max {finals[-1] if finals else float('nan'):.0f} ms "
          f"(target p99 <= {P99_TARGET_MS:.0f} ms: {'met' if percentile(finals, 0.99) <= P99_TARGET_MS else 'MISSED'})")
    print(f"partitions handed over: {len(periods)} times; longest without an owner {longest * 1000:.0f} ms; "
          f"over {UNOWNED_LIMIT_S:.0f} s: {len(over)}")
    for kind, longest_ms in longest_by_cause(folder, periods, ended).items():
        print(f"  longest after an instance {kind}: {longest_ms:.0f} ms")
    for partition, seconds in sorted(over, key=lambda o: -o[1])[:10]:
        print(f"  - {partition}: {seconds:.2f} s")
    for partition in never:
        print(f"  - {partition}: no owner when the drill ended")
    waits, given_up = revocation_waits(folder)
    print(f"revocations that found events in hand: {len(waits)}; longest wait to finish them "
          f"{max(waits, default=0)} ms (the partition's new owner waited that too); let go with "
          f"events still in hand: {given_up}")
    ok = not waited and not never and (signal != "TERM" or not over)
    print("scaling verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main():
    if sys.argv[1] == "env":
        program_env(sys.argv[2], sys.argv[3])
        return 0
    return report(Path(sys.argv[2]), sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    sys.exit(main())
