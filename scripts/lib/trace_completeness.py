"""Judges every accepted order's trace after scripts/trace-completeness.

Usage: trace_completeness.py QUERY_URL OUT_DIR SYSTEM_NAME STARTED_EPOCH ENDED_EPOCH

Reads OUT_DIR/orders.csv (the load generator's rows) and Jaeger's query API, and prints the
share of accepted orders whose trace is complete, as e2e/tests/processes/traces.rs defines it:
exactly one trace holds the order's `order.accept`, and it has every hop there and back (two
`relay.publish`), one root (`POST /orders`) and no span whose parent is missing.
"""

import csv
import json
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

WINDOW_SECS = 5


def hops(system):
    return [
        ("order", "POST /orders"),
        ("order", "order.accept"),
        ("order", "order.wait"),
        ("relay", "outbox.wait"),
        ("relay", "relay.publish"),
        ("inventory", "kafka"),
        ("inventory", f"consume {system}.orders.events"),
        ("inventory", "inbox.dedup"),
        ("inventory", "handle OrderPlaced"),
        ("order", "kafka"),
        ("order", f"consume {system}.inventory.events"),
        ("order", "handle InventoryReserved"),
    ]


def traces_between(query, start, end):
    """Every trace holding an `order.accept` that started in [start, end) (epoch seconds); Jaeger
    refuses a limit as large as its store, which the script makes far larger than this."""
    params = urllib.parse.urlencode(
        {"service": "order", "operation": "order.accept", "start": start * 1_000_000,
         "end": end * 1_000_000, "limit": 50_000})
    with urllib.request.urlopen(f"{query}/api/traces?{params}", timeout=300) as reply:
        return json.load(reply)["data"] or []


def judge(trace, wanted):
    """(order ids of the trace's accepts, what is wrong with it: a list of reasons)."""
    services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = []
    for s in trace["spans"]:
        parent = next((r["spanID"] for r in s.get("references", []) if r["refType"] == "CHILD_OF"), None)
        tags = {t["key"]: t["value"] for t in s.get("tags", [])}
        spans.append((s["spanID"], parent, services.get(s["processID"], "?"), s["operationName"], tags))
    orders = [tags["order_id"] for (_, _, _, name, tags) in spans if name == "order.accept" and "order_id" in tags]
    have = {(service, name) for (_, _, service, name, _) in spans}
    wrong = [f"no {service}:{name}" for (service, name) in wanted if (service, name) not in have]
    if sum(1 for s in spans if s[3] == "relay.publish") < 2:
        wrong.append("fewer than two relay.publish")
    ids = {s[0] for s in spans}
    roots = [s for s in spans if s[1] is None]
    if len(roots) != 1 or (roots[0][2], roots[0][3]) != ("order", "POST /orders"):
        wrong.append("roots: " + ",".join(sorted(f"{s[2]}:{s[3]}" for s in roots)))
    orphans = sorted({f"{s[2]}:{s[3]}" for s in spans if s[1] is not None and s[1] not in ids})
    if orphans:
        wrong.append("parent missing: " + ",".join(orphans))
    return orders, wrong


def main():
    query, out, system, started, ended = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    with open(out / "orders.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    accepted = {r["order_id"] for r in rows if r["reply_status"] in ("201", "202") and r["order_id"]}
    wanted = hops(system)
    found = {}  # order id -> list of reason lists, one per trace holding its accept
    for start in range(started - 10, ended + WINDOW_SECS, WINDOW_SECS):
        for trace in traces_between(query, start, start + WINDOW_SECS):
            orders, wrong = judge(trace, wanted)
            for order in orders:
                found.setdefault(order, {})[trace["traceID"]] = wrong
    complete, reasons = 0, Counter()
    for order in accepted:
        traces = found.get(order, {})
        if not traces:
            reasons["no trace holds its order.accept"] += 1
        elif len(traces) > 1:
            reasons["more than one trace"] += 1
        else:
            wrong = next(iter(traces.values()))
            if wrong:
                reasons["; ".join(wrong)] += 1
            else:
                complete += 1
    statuses = Counter(r["reply_status"] for r in rows)
    print(f"orders sent {len(rows)} (replies {dict(statuses)}), accepted {len(accepted)}")
    share = complete / len(accepted) if accepted else 0.0
    print(f"complete traces: {complete} of {len(accepted)} ({share:.4%})")
    for reason, n in reasons.most_common(15):
        print(f"  {n:>7}  {reason}")
    dropped = out / "dropped.txt"
    if dropped.exists():
        totals = Counter()
        for line in dropped.read_text().splitlines():
            who, what, n = line.split()
            totals[f"{who} {what}"] += float(n)
        for what, n in sorted(totals.items()):
            print(f"  counted as dropped: {what} {n:.0f}")
    collector = out / "jaeger-dropped.txt"
    if collector.exists():
        for line in collector.read_text().splitlines():
            name, value = line.rsplit(" ", 1)
            if float(value) > 0:
                print(f"  the collector counted: {name} {float(value):.0f}")
    drill = out / "drill.txt"
    if drill.exists():
        print("drill:\n" + drill.read_text().rstrip())


if __name__ == "__main__":
    main()
