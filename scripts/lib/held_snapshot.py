"""Figure 10 of scripts/bench: a snapshot held in each service database under 200 orders/s.

Reads the run's orders (placed at, accepted → final in ms) and the samples taken every 10 s,
cuts the run into windows around the hold, and prints KEY=value lines for results.env:

    held_<label>_windows=[{"window": "before", "orders": …, "p50_ms": …, "p99_ms": …,
                           "read_ms": …, "outbox_mib": …, "outbox_dead": …, …}, …]
    held_<label>_worst_p50_ratio, held_<label>_worst_p99_ratio   (hold windows vs before)
    held_<label>_space={"at_start_mib": …, "peak_mib": …, "at_end_mib": …, "after_5_min_mib": …}

usage: held_snapshot.py LABEL ORDERS_CSV SAMPLES_CSV T0 HOLD_START HOLD_END WINDOW_SECS
"""

import csv
import json
import sys

label, orders_csv, samples_csv = sys.argv[1:4]
t0, hold_start, hold_end, window = (float(x) for x in sys.argv[4:8])

orders = [(float(placed), float(ms)) for placed, ms in csv.reader(open(orders_csv))]
samples = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(samples_csv))]
for sample in samples:
    sample["at"] = t0 + sample["t"]
    sample["outbox_bytes"] = sample["order_outbox_bytes"] + sample["inventory_outbox_bytes"]
    sample["outbox_dead"] = sample["order_outbox_dead"] + sample["inventory_outbox_dead"]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else None


def windows():
    """(name, start, end) around the hold: one before, each of the hold, each after."""
    yield "before", hold_start - window, hold_start
    at, n = hold_start, 1
    while at < hold_end - 1:
        yield f"hold {n}", at, min(at + window, hold_end)
        at, n = at + window, n + 1
    last = max((placed for placed, _ in orders), default=hold_end)
    at, n = hold_end, 1
    while at + window / 2 < last:
        yield f"after {n}", at, at + window
        at, n = at + window, n + 1


def sample_at(moment):
    """The last sample taken at or before `moment` (the first one if none was)."""
    earlier = [s for s in samples if s["at"] <= moment]
    return earlier[-1] if earlier else samples[0]


rows = []
for name, start, end in windows():
    times = [ms for placed, ms in orders if start <= placed < end]
    first, last = sample_at(start), sample_at(end)
    reads = last["read_count"] - first["read_count"]
    rows.append({
        "window": name,
        "orders": len(times),
        "p50_ms": round(percentile(times, 0.5), 1) if times else None,
        "p99_ms": round(percentile(times, 0.99), 1) if times else None,
        "read_ms": round(1000 * (last["read_sum"] - first["read_sum"]) / reads, 2) if reads > 0 else None,
        "reclaimed": int(last["reclaimed"] - first["reclaimed"]),
        "reclaim_busy": int(last["reclaim_busy"] - first["reclaim_busy"]),
        "outbox_mib": round(last["outbox_bytes"] / 2**20, 1),
        "outbox_dead": int(last["outbox_dead"]),
        "inbox_mib": round(last["inbox_bytes"] / 2**20, 1),
        "products_dead": int(last["products_dead"]),
        "orders_dead": int(last["orders_dead"]),
        "lanes_dead": int(last["lanes_dead"]),
        "waiting": int(last["order_waiting"] + last["inventory_waiting"]),
    })

before = rows[0]
held = [r for r in rows if r["window"].startswith("hold") and r["p50_ms"] is not None]


def worst(key):
    if not held or not before[key]:
        return None
    return round(max(r[key] for r in held) / before[key], 2)


during = [s for s in samples if hold_start <= s["at"] <= hold_end]
space = {
    "at_start_mib": round(sample_at(hold_start)["outbox_bytes"] / 2**20, 1),
    "peak_mib": round(max((s["outbox_bytes"] for s in during), default=0) / 2**20, 1),
    "at_end_mib": round(sample_at(hold_end)["outbox_bytes"] / 2**20, 1),
    "after_5_min_mib": round(sample_at(hold_end + 300)["outbox_bytes"] / 2**20, 1),
    "last_mib": round(samples[-1]["outbox_bytes"] / 2**20, 1),
}
print(f"held_{label}_windows={json.dumps(rows, separators=(',', ':'))}")
print(f"held_{label}_worst_p50_ratio={worst('p50_ms')}")
print(f"held_{label}_worst_p99_ratio={worst('p99_ms')}")
print(f"held_{label}_space={json.dumps(space, separators=(',', ':'))}")
