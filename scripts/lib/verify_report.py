"""Writes report.md for scripts/verify and decides its exit status.

Reads orders.csv and summary.json (loadgen) and invariants.json (check-invariants) from the
report directory. Predicts which orders the gremlin delayed with the same rule inventory
uses (inventory/src/gremlin.rs: FNV-1a 64 of the order id, slow when divisible by one_in)
and compares with what happened.
"""

import argparse
import csv
import json
import pathlib
import sys

BUDGET_MS = 2000.0  # the order service's default reply budget


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


assert fnv1a64(b"foobar") == 0x85944171F73967E8  # the published test vector


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    for name in ("sku", "profile"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("one-in", "delay-ms", "rate", "count", "gremlin-delays", "loadgen-status", "invariant-status"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()

    orders = list(csv.DictReader((args.out / "orders.csv").open()))
    summary = json.loads((args.out / "summary.json").read_text())
    invariants = json.loads((args.out / "invariants.json").read_text())

    def affected(order):
        return order["reply_status"] == "202" or float(order["reply_ms"] or 0) > BUDGET_MS

    def predicted(order):
        return bool(order["order_id"]) and fnv1a64(order["order_id"].encode()) % args.one_in == 0

    final = {"CONFIRMED", "REJECTED", "CANCELLED", "SHIPPED"}
    failed = [o for o in orders if not o["order_id"] or o["final_status"] not in final]
    slow_predicted = [o for o in orders if predicted(o)]
    hit = [o for o in slow_predicted if affected(o)]
    missed = [o for o in slow_predicted if not affected(o)]
    unexpected = [o for o in orders if affected(o) and not predicted(o)]
    all_affected = [o for o in orders if affected(o)]
    slow_reached_final = [o for o in slow_predicted if o["final_status"] in final]
    too_fast = [o for o in slow_predicted if o["accepted_to_final_ms"]
                and float(o["accepted_to_final_ms"]) < args.delay_ms]

    problems = []
    if invariants["violations"]:
        problems.append(f"{len(invariants['violations'])} invariant violation(s)")
    if args.invariant_status != 0 and not invariants["violations"]:
        problems.append(f"the invariant checker exited {args.invariant_status}")
    if failed:
        problems.append(f"{len(failed)} order(s) without an answer or a final status")
    if missed:
        problems.append(f"{len(missed)} order(s) the gremlin rule predicts slow were not delayed")
    if too_fast:
        problems.append(f"{len(too_fast)} predicted-slow order(s) were final sooner than the delay")
    if args.gremlin_delays != len(slow_predicted):
        problems.append(f"the gremlin counted {args.gremlin_delays} delays, the rule predicts {len(slow_predicted)}")
    if args.loadgen_status != 0:
        problems.append(f"loadgen exited {args.loadgen_status}")

    reply, e2e = summary["reply"], summary["accepted_to_final"]
    # The orders the gremlin did not touch: what every other customer saw meanwhile.
    untouched = sorted(float(o["reply_ms"]) for o in orders if o["order_id"] and not predicted(o))

    def percentile(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    def ms(value):
        return f"{value:.1f} ms" if isinstance(value, (int, float)) else "-"

    lines = [
        f"# Verification run ({args.profile} profile)",
        "",
        f"**Result: {'PASS' if not problems else 'FAIL'}**" + ("" if not problems else " — " + "; ".join(problems)),
        "",
        "## Load",
        f"- {summary['requests']} orders for `{args.sku}` at a target of {args.rate}/s: "
        f"{summary['rps']:.1f} orders/s over {summary['seconds']:.1f} s; "
        f"{summary['retried']} retried with the same key; {summary['transport_errors']} transport errors left.",
        f"- Replies by status: {', '.join(f'{k}: {v}' for k, v in summary['by_reply_status'].items())}.",
        f"- Final status: {', '.join(f'{k}: {v}' for k, v in summary['by_final_status'].items())}.",
        f"- Reply time: p50 {ms(reply.get('p50_ms'))}, p95 {ms(reply.get('p95_ms'))}, "
        f"p99 {ms(reply.get('p99_ms'))}, max {ms(reply.get('max_ms'))}.",
        f"- Accepted → final: p50 {ms(e2e.get('p50_ms'))}, p95 {ms(e2e.get('p95_ms'))}, "
        f"p99 {ms(e2e.get('p99_ms'))}, max {ms(e2e.get('max_ms'))}.",
        f"- Unaffected orders (not slowed by the gremlin, {len(untouched)}): reply p50 "
        f"{ms(percentile(untouched, 0.5))}, p99 {ms(percentile(untouched, 0.99))}.",
        "",
        "## Gremlin",
        f"- Pattern: `{{\"enabled\": true, \"one_in\": {args.one_in}, \"delay_ms\": {args.delay_ms}}}` — an order "
        f"is slow when FNV-1a-64(order id) is divisible by {args.one_in}; it then waits {args.delay_ms} ms in inventory, "
        f"longer than the {BUDGET_MS:.0f} ms reply budget.",
        f"- Predicted slow by the rule: **{len(slow_predicted)}**; of those affected (202 or over budget): "
        f"**{len(hit)}**; predicted but not affected: **{len(missed)}**; reached a final status: "
        f"{len(slow_reached_final)}.",
        f"- Delays counted by inventory's gremlin during the run: {args.gremlin_delays}.",
        f"- Affected but not predicted (load, not the gremlin): {len(unexpected)}.",
        "",
        "## Invariants",
        f"- Orders by status: {', '.join(f'{k}: {v}' for k, v in invariants['orders_by_status'].items())}.",
        "- Violations: " + ("none" if not invariants["violations"] else ""),
    ]
    lines += [f"  - {v}" for v in invariants["violations"]]
    lines += [
        "",
        f"## Affected orders ({len(all_affected)})",
        "",
        "Every order answered 202 or after more than the budget. They did not stop or fail the run.",
        "",
        "| order id | sku | reply | reply time | final status | accepted → final | predicted slow |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in sorted(all_affected, key=lambda o: float(o["reply_ms"] or 0), reverse=True):
        to_final = f"{float(o['accepted_to_final_ms']):.0f} ms" if o["accepted_to_final_ms"] else "-"
        lines.append(f"| `{o['order_id']}` | {o['sku']} | {o['reply_status']} | {float(o['reply_ms']):.0f} ms | "
                     f"{o['final_status']} | {to_final} | {'yes' if predicted(o) else 'no'} |")
    if missed:
        lines += ["", "## Predicted slow but not affected", ""]
        lines += [f"- `{o['order_id']}`: reply {o['reply_status']} in {float(o['reply_ms']):.0f} ms" for o in missed]
    lines += ["", "All orders: `orders.csv`. Raw figures: `summary.json`, `invariants.json`, `loadgen.txt`.", ""]
    (args.out / "report.md").write_text("\n".join(lines))

    print(f"report: {args.out / 'report.md'}")
    print(f"predicted slow {len(slow_predicted)}, affected {len(all_affected)} "
          f"({len(hit)} predicted, {len(unexpected)} not), invariant violations {len(invariants['violations'])}")
    if problems:
        print("FAIL: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
