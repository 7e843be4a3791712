"""Judges the poison drill (scripts/crash/poison): reads what the drill recorded in OUT and
prints what happened; exits 1 if a poison is missing from the dead-letter topics, anything
else landed there, an order placed while poison flowed waited longer than the bound, or
inventory's /health did not report the stuck head event (or stayed not ready after it moved).

Usage: poison_report.py OUT LOCK_FROM LOCK_TO LOCKED_SKU
"""

import csv
import json
import pathlib
import sys
import uuid

# The longest an order may take to end while poison flows: an event failing for an unknown
# reason is tried for about 8 s before it is dead-lettered (decision 0011); refused ones go
# at once.
BOUND_MS = 10_000


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accepted_at(order_id):
    """UUIDv7 order ids carry their creation time in their first 48 bits (ms)."""
    return (uuid.UUID(order_id).int >> 80) / 1000.0


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else 0.0


def main():
    out, lock_from, lock_to = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    failures = []

    # 1. The dead-letter topics hold exactly the poisons, each with a reason.
    sent = {(p["topic"], p["partition"], p["offset"]): p["kind"] for p in jsonl(out / "poisons.jsonl")}
    new = []
    for topic in ("orders.events", "inventory.events"):
        before = {(l["dlq_partition"], l["dlq_offset"]) for l in jsonl(out / f"dlq-before-{topic}.jsonl")}
        new += [l for l in jsonl(out / f"dlq-after-{topic}.jsonl") if (l["dlq_partition"], l["dlq_offset"]) not in before]
    print(f"\npoisons published: {len(sent)}; new dead letters: {len(new)}")
    print(f"  {'poison':32} {'tries':>5}  reason")
    found = set()
    for letter in new:
        where = (letter["original_topic"], letter["original_partition"], letter["original_offset"])
        kind = sent.get(where)
        if kind is None:
            failures.append(f"an unexpected dead letter: {where} {letter['error'][:100]}")
            continue
        found.add(where)
        print(f"  {kind:32} {letter.get('attempts') or '':>5}  {letter['error'][:110]}")
        if not letter["error"]:
            failures.append(f"{kind}: dead-lettered without a reason")
    for where, kind in sent.items():
        if where not in found:
            failures.append(f"{kind} ({where}) is not in the dead-letter topic")

    # 2. Orders on the other products never waited past the bound.
    with open(out / "orders.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["order_id"]]
    unfinished = [r for r in rows if r["reply_status"] in ("201", "202") and not r["accepted_to_final_ms"]]
    if unfinished:
        failures.append(f"{len(unfinished)} accepted orders never ended")
    print(f"\norders: {len(rows)} placed")
    # While the row is locked, the consumer's connections wait on it and every order slows:
    # that window is reported, and judged only by the checker.
    windows = (
        ("accepted before the lock (poison flowing)", lambda t: t < lock_from - 10),
        ("accepted around the lock", lambda t: lock_from - 10 <= t <= lock_to + 10),
        ("accepted after the lock", lambda t: t > lock_to + 10),
    )
    for label, inside in windows:
        waits = [float(r["accepted_to_final_ms"]) for r in rows
                 if r["accepted_to_final_ms"] and inside(accepted_at(r["order_id"]))]
        if not waits:
            continue
        print(f"  {label:42} {len(waits):6} ended; accepted -> final p50 {percentile(waits, .5):7.0f} ms"
              f"  p99 {percentile(waits, .99):7.0f} ms  max {max(waits):7.0f} ms")
        if label.startswith("accepted before") and max(waits) > BOUND_MS:
            failures.append(f"an order took {max(waits):.0f} ms to end while poison flowed (bound {BOUND_MS} ms)")

    # 3. /health: not ready while the head event was stuck, ready after.
    samples = []
    for line in (out / "health.log").read_text().splitlines():
        at, _, body = line.partition(" ")
        try:
            samples.append((float(at), json.loads(body)))
        except ValueError:
            continue
    def progress(body):
        return body.get("checks", {}).get("consumer progress", {})

    stuck = [(at, b) for at, b in samples if progress(b).get("status") == "down"]
    if stuck:
        first, last = stuck[0][0], stuck[-1][0]
        message = progress(stuck[0][1]).get("message", "")
        print(f"\ninventory /health not ready ('consumer progress') from {first - lock_from:.1f} s to "
              f"{last - lock_from:.1f} s after the lock was taken (lock held {lock_to - lock_from:.1f} s):")
        print(f"  {message[:200]}")
    else:
        failures.append("inventory's /health never reported the stuck head event")
    after = [b for at, b in samples if at > lock_to + 10]
    if not after or after[-1].get("status") not in ("up", "degraded"):
        failures.append(f"inventory's /health was not ready at the end: {after[-1] if after else 'no sample'}")
    elif stuck:
        print(f"  ready again {min(at for at, b in samples if at > last) - lock_to:.1f} s after the lock was released")

    print()
    for failure in failures:
        print(f"FAIL: {failure}")
    print("poison drill: " + ("FAILED" if failures else "PASSED"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
