"""The report of a broker drill (scripts/lib/broker_drill.sh): reads the drill's folder and
prints what the operator needs, failing (exit 1) on any lost, doubled or stuck order or any
POST over its budget plus margin.

    python3 drill_report.py DIR NAME
"""

import csv
import json
import sys
from pathlib import Path

BUDGET_MS = 2000
MARGIN_MS = 250
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED", "SHIPPED"}
# An outbox row older than this means produce has stalled for its partition.
STALLED_AGE_S = 1.0


def events(folder):
    """(time, text) of every marked event."""
    out = []
    for line in (folder / "events.txt").read_text().splitlines():
        at, _, text = line.partition(" ")
        out.append((float(at), text))
    return out


def outbox_ages(folder):
    """(time, oldest age in seconds over both outboxes) per sample."""
    samples = []
    for row in csv.reader((folder / "outboxes.csv").open()):
        if len(row) != 5:
            continue
        try:
            at = float(row[0])
            ages = [float(x) for x in (row[2], row[4]) if x]
        except ValueError:
            continue  # a sample taken while a database did not answer
        samples.append((at, max(ages, default=0.0)))
    return samples


def stalls(samples):
    """Periods (start, end, worst age) in which some outbox row was older than STALLED_AGE_S."""
    periods, start, worst = [], None, 0.0
    for at, age in samples:
        if age > STALLED_AGE_S:
            if start is None:
                # The row has been waiting since `age` seconds ago: that is when produce stopped.
                start, worst = at - age, age
            worst = max(worst, age)
        elif start is not None:
            periods.append((start, at, worst))
            start = None
    if start is not None:
        periods.append((start, samples[-1][0], worst))
    return periods


def main():
    folder, name = Path(sys.argv[1]), sys.argv[2]
    orders = list(csv.DictReader((folder / "orders.csv").open()))
    checker = json.loads((folder / "checker.json").read_text())
    marks = events(folder)
    faults = [(at, text) for at, text in marks if not text.startswith("load")]

    accepted = [o for o in orders if o["reply_status"] in ("201", "202") and o["order_id"]]
    lost = [o for o in accepted if o["final_status"] not in FINAL]
    refused = [o for o in orders if o["reply_status"] not in ("201", "202")]
    over = [o for o in orders if float(o["reply_ms"]) > BUDGET_MS + MARGIN_MS]
    finals = sorted(float(o["accepted_to_final_ms"]) for o in accepted if o["accepted_to_final_ms"])
    doubled = [v for v in checker["violations"] if " is still " not in v]

    print(f"\n## {name}")
    print(f"orders placed {len(orders)}, accepted {len(accepted)}, refused or failed {len(refused)}")
    print(f"lost (accepted, never final): {len(lost)}")
    print(f"stuck (checker): {len(checker['stuck'])}")
    print(f"doubled or unbalanced (checker violations): {len(doubled)}")
    for violation in checker["violations"]:
        print(f"  - {violation}")
    print(f"POSTs over {BUDGET_MS} ms + {MARGIN_MS} ms: {len(over)}"
          + (f" (slowest {max(float(o['reply_ms']) for o in over):.0f} ms)" if over else ""))
    if finals:
        print(f"accepted -> final: p50 {finals[len(finals) // 2]:.0f} ms, max {finals[-1]:.0f} ms")

    samples = outbox_ages(folder)
    periods = stalls(samples)
    worst = max((age for _, age in samples), default=0.0)
    print(f"longest an event waited in an outbox: {worst:.1f} s")
    for at, text in faults:
        after = [p for p in periods if p[1] >= at]
        if after and after[0][0] <= at + 30:
            start, end, age = after[0]
            print(f"{text}: produce stalled {max(start - at, 0):.1f} s after it, resumed "
                  f"{end - at:.1f} s after it (oldest event {age:.1f} s)")
        else:
            print(f"{text}: produce never stalled (no event waited over {STALLED_AGE_S:.0f} s)")

    ok = not lost and not checker["stuck"] and not checker["violations"] and not over and not refused
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
