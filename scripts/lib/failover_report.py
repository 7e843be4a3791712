"""The report of scripts/crash/db-failover: judges the books after the database host was lost,
from outside the services (the load generator's records, the promoted databases, the topics
read from their start), and fails (exit 1) on an acknowledged order the databases lack, a
ghost event, an accepted order that never became final, or any violation of the checker.

    python3 failover_report.py DIR STARTED

DIR holds orders.csv (the load generator), events.txt (the drill's marks), checker.json,
db-orders.csv (id, created_at as epoch), db-history.csv (order_id, status),
db-reservations.csv (order_id, status), and orders.events.jsonl / inventory.events.jsonl
(every event on the two topics, one JSON envelope a line).
"""

import collections
import csv
import json
import sys
from pathlib import Path

FINAL = {"REJECTED", "CANCELLED", "SHIPPED"}
# What the promoted databases must hold for an event to be real: for an order's own events, a
# status it passed through; for inventory's, the reservation in one of these states.
ORDER_EVENTS = {"OrderCancelled": "CANCELLING", "OrderReadyToShip": "SHIPPING"}
RESERVATION_EVENTS = {
    "InventoryReserved": {"RESERVED", "RELEASED", "SHIPPED"},
    "InventoryRejected": {"REJECTED"},
    "InventoryReleased": {"RELEASED", "CANCELLED"},
    "InventoryShipped": {"SHIPPED"},
}


def marks(folder):
    out = []
    for line in (folder / "events.txt").read_text().splitlines():
        at, _, text = line.partition(" ")
        out.append((float(at), text))
    return out


def is_final(order):
    status = order["final_status"]
    # Confirmed is final unless a ship request was accepted: then only SHIPPED is.
    return status in FINAL or (status == "CONFIRMED" and not order["ship_status"].startswith("2"))


def ghosts(folder, orders, history, reservations):
    """Events on the topics that the promoted databases do not account for, and a count of
    the events checked, by type."""
    found, checked = [], collections.Counter()
    for topic in ("orders.events", "inventory.events"):
        for line in (folder / f"{topic}.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            kind, order = event["event_type"], event["aggregate_id"]
            checked[kind] += 1
            if kind == "OrderPlaced":
                real = order in orders
            elif kind in ORDER_EVENTS:
                real = (order, ORDER_EVENTS[kind]) in history
            elif kind in RESERVATION_EVENTS:
                real = reservations.get(order) in RESERVATION_EVENTS[kind]
            else:
                continue  # a refusal (InventoryRefused) changes nothing to look for
            if not real:
                found.append(f"{topic} {kind} {event['event_id']} for order {order}")
    return found, checked


def gap_after(created, at, horizon=90.0):
    """Seconds from `at` until the first order created after it, and the longest pause
    between two orders created within `horizon` s after it."""
    after = [t for t in created if at <= t <= at + horizon]
    if not after:
        return None, None
    before = [t for t in created if t < at]
    times = ([before[-1]] if before else []) + after
    longest = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    return after[0] - at, longest


def main():
    folder, started = Path(sys.argv[1]), float(sys.argv[2])
    load = list(csv.DictReader((folder / "orders.csv").open()))
    checker = json.loads((folder / "checker.json").read_text())
    created = {row[0]: float(row[1]) for row in csv.reader((folder / "db-orders.csv").open())}
    history = {(row[0], row[1]) for row in csv.reader((folder / "db-history.csv").open())}
    reservations = {row[0]: row[1] for row in csv.reader((folder / "db-reservations.csv").open())}

    accepted = [o for o in load if o["reply_status"] in ("201", "202") and o["order_id"]]
    missing = [o for o in accepted if o["order_id"] not in created]
    never_final = [o for o in accepted if not is_final(o)]
    replies = collections.Counter(o["reply_status"] for o in load)
    retried = sum(1 for o in load if int(o["attempts"]) > 1)
    found, checked = ghosts(folder, set(created), history, reservations)

    print("\n## db-failover")
    print(f"orders placed {len(load)}; replies {dict(sorted(replies.items()))}; "
          f"placed after a retry {retried}")
    print(f"acknowledged (201/202) {len(accepted)}; missing from the promoted database: {len(missing)}")
    for order in missing[:10]:
        print(f"  - {order['order_id']} ({order['reply_status']} at {order['sent_at']})")
    print(f"accepted and never final: {len(never_final)}")
    print(f"events on the topics checked against the promoted databases: {sum(checked.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(checked.items()))}); ghosts: {len(found)}")
    for ghost in found[:10]:
        print(f"  - {ghost}")
    print(f"checker: {len(checker['violations'])} violations, {len(checker['stuck'])} stuck")
    for violation in checker["violations"][:10]:
        print(f"  - {violation}")

    times = sorted(created.values())
    # When each acknowledged order's answer came (after its retries).
    acked = sorted(float(o["sent_at"]) + float(o["reply_ms"]) / 1000 for o in accepted if o["sent_at"])
    print("\nfault (seconds into the load): no write recorded for / no order acknowledged for (longest"
          " pause within 90 s); replies to POSTs sent until the first acknowledgement")
    for at, text in marks(folder):
        if not text.startswith("(") or not any(w in text for w in ("killed", "stopped", "paused")):
            continue
        first, longest = gap_after(times, at)
        ack_first, ack_longest = gap_after(acked, at)
        if first is None or ack_first is None:
            print(f"  {at - started:6.1f} s  {text}: no order recorded or acknowledged after it")
            continue
        during = collections.Counter(
            o["reply_status"] for o in load if o["sent_at"] and at <= float(o["sent_at"]) <= at + ack_first)
        print(f"  {at - started:6.1f} s  {text}: {first:.1f} s ({longest:.1f} s) / {ack_first:.1f} s "
              f"({ack_longest:.1f} s); replies {dict(sorted(during.items())) or '-'}")
    finals = sorted(float(o["accepted_to_final_ms"]) for o in accepted if o["accepted_to_final_ms"])
    if finals:
        print(f"accepted -> final: p50 {finals[len(finals) // 2]:.0f} ms, "
              f"p99 {finals[int(len(finals) * 0.99)]:.0f} ms, max {finals[-1]:.0f} ms")

    ok = not missing and not never_final and not found and not checker["violations"] and not checker["stuck"]
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
