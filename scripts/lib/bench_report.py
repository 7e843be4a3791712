"""Renders docs/benchmarks.md from scripts/bench's results (KEY=value lines)."""

import json
import os
import pathlib
import platform
import subprocess
import sys

results = {}
for line in pathlib.Path(sys.argv[1]).read_text().splitlines():
    key, _, value = line.partition("=")
    results[key] = value.strip('"')
out = sys.argv[2]


def version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a missing tool only leaves a blank in the table
        return "?"


def num(key):
    return float(results[key])


def final_counts(name):
    """(orders final, orders placed) of a loadgen run, or None if it did not run."""
    try:
        run = json.loads((pathlib.Path(out) / name).read_text())
    except OSError:
        return None
    return sum(v for k, v in run["by_final_status"].items() if k in ("CONFIRMED", "REJECTED")), run["requests"]


def finished(name):
    """How many of a run's orders reached a final status within the follow-up time."""
    counts = final_counts(name)
    return "?" if counts is None else f"{counts[0]:,} of {counts[1]:,} orders final within 60 s after the run"


cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
accept_ratio_8 = num("accept_rps_c8") / num("pgbench_tps_c8")
accept_ratio_32 = num("accept_rps_c32") / num("pgbench_tps_c32")
def ratio(slow, fast):
    """slow / fast as "N.N×", or "n/a" when either run has no finished order (0 ms)."""
    return f"{num(slow) / num(fast):.1f}×" if num(slow) > 0 and num(fast) > 0 else "n/a (no order final)"


def all_final(name):
    counts = final_counts(name)
    return counts is not None and counts[0] == counts[1]


poll_ratio = (
    ratio("e2e_poll_p50_ms", "e2e_notify_p50_ms")
    if all_final("e2e-notify.json") and all_final("e2e-poll.json")
    else "not comparable: the broker saturated and the percentiles cover only the orders that finished; see 2b/3b"
)
steps = [(int(k.split("_")[1]), v) for k, v in results.items() if k.startswith("step_")]

print(f"""# Benchmarks

Measured by `scripts/bench` (release builds; a fresh tansu broker and fresh databases of the
run's own; every figure below comes from the same run). Raw output: `.local/bench/` of the
machine that ran it. Not part of CI: these are figures, not pass/fail tests.

## Machine and versions
- {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB; {platform.system()} {platform.release()}
- {version(["rustc", "--version"])}; {version(["psql", "--version"])}; broker: tansu 0.6.0 (SQLite storage)
- Everything on one machine: Postgres, the broker, order, inventory, relay and the load generator share the 2 cores.

## Figures

| # | what | result | target |
|---|---|---|---|
| 1 | accept throughput, `POST /orders` with `Prefer: wait=0` (order service alone) vs pgbench running the same transaction | c=8: **{results['accept_rps_c8']}/s** vs {results['pgbench_tps_c8']} tps (**{accept_ratio_8:.2f}×**); c=32: **{results['accept_rps_c32']}/s** vs {results['pgbench_tps_c32']} tps (**{accept_ratio_32:.2f}×**) | ≥ 0.8× |
| 2 | accepted → CONFIRMED at 200 orders/s (relay woken by NOTIFY) | p50 **{results['e2e_notify_p50_ms']} ms**, p95 {results['e2e_notify_p95_ms']} ms, p99 **{results['e2e_notify_p99_ms']} ms** (achieved {results['e2e_notify_rps']}/s; {finished('e2e-notify.json')}; percentiles over those) | p50 ≤ 15 ms, p99 ≤ 60 ms |
| 3 | the same, relay polling every 500 ms without NOTIFY | p50 {results['e2e_poll_p50_ms']} ms, p95 {results['e2e_poll_p95_ms']} ms, p99 {results['e2e_poll_p99_ms']} ms ({finished('e2e-poll.json')}) → NOTIFY vs polling at p50: **{poll_ratio}** | ≥ 10× |
| 2b, 3b | the same pair at 50 orders/s, a rate the local broker sustains | NOTIFY: p50 **{results['e2e50_notify_p50_ms']} ms**, p95 {results['e2e50_notify_p95_ms']} ms, p99 **{results['e2e50_notify_p99_ms']} ms** ({finished('e2e50-notify.json')}); polling: p50 {results['e2e50_poll_p50_ms']} ms, p99 {results['e2e50_poll_p99_ms']} ms ({finished('e2e50-poll.json')}) → **{ratio('e2e50_poll_p50_ms', 'e2e50_notify_p50_ms')}** at p50 | |
| 4 | maximum sustained end-to-end rate (every order final, p99 accepted→final < 1 s, ≥ 90% of the target rate achieved) | **{results['max_sustained_rate']} orders/s** | ≥ 1,000/s |
| 5 | relay drain of pre-loaded outbox rows → broker, vs the broker's own produce ceiling with the same client settings | relay **{results['drain_events_per_s']} events/s**; ceiling {results['broker_ceiling_per_s']} msg/s (10,000 in flight), {results['broker_ceiling_batch500_per_s']} msg/s (500 in flight, the relay's batch) | ≥ 20,000/s |
| 6 | recovery: inventory SIGKILLed under 50 orders/s, from its restart to its first processed event | median **{results['recovery_ms']} ms** (three rounds: {results['recovery_all_ms']} ms) | — |

Invariants after the whole run: **{results['invariants']}**.

Maximum-rate steps:
""")
for rate, verdict in sorted(steps):
    print(f"- {rate}/s: {verdict.split(' ', 1)[1]}{' ✓' if verdict.startswith('ok') else ' ✗'}")
print("""
## How each figure is measured
1. `loadgen --concurrency C --duration 15 --wait 0` against the order service with no relay or
   inventory running, so both sides do the same work (accept an order into the outbox);
   counted: 202 replies per second. Then `pgbench -n -c C -j 2 -T 15 -f accept.sql` on a scratch
   database migrated with the same migrations (same tables, indexes and triggers), running
   the transaction the service runs: insert the order, its line, its history row and the
   outbox row (with a real envelope). The service additionally parses and validates JSON,
   computes the request fingerprint, and answers HTTP.
2. `loadgen --rate 200 --duration 60`, all three services up; accepted → final is taken
   from the order's own history (PENDING at → CONFIRMED at), so client-side queueing does
   not count.
3. As 2 after restarting the relay with `RELAY__RELAY__LISTEN=false RELAY__RELAY__POLL_INTERVAL_MS=500`.
4. `loadgen --rate R --duration 20` for R = 100, 200, 300, 500, 700, 1000, each on a fresh
   broker, stopping at the first step that fails.
5. 100,000 rows inserted into the order outbox (topic of their own, real envelope size)
   before the relay starts; timed from starting the relay until the outbox is empty. The
   ceiling: `produce-bench` (`relay/src/bin/produce-bench.rs`) sends as many messages of the
   same size with `platform::kafka::producer` and the relay's settings (acks=all, linger 2
   ms, no idempotence, one request in flight per connection).
6. `kill -KILL` inventory, wait 2 s while orders queue up, start it again; the time from
   the start to the first `event handled` log line of the new process. Three rounds; the
   median is reported.

## Reading the numbers
""")
print(f"""- **End to end, the broker is the ceiling.** tansu 0.6.0 saturates a core near 200
  orders/s and then stops answering in time (docs/broker-notes.md, "It saturates near 200
  orders/s"), so figures 2–4 measure tansu; at 50 and 100 orders/s, where it keeps up, the
  pipeline is fast (2b, and the 100/s step of figure 4).
- **The relay's drain is the relay's own limit.** It drains {results['drain_events_per_s']}
  events/s, while the broker takes {results['broker_ceiling_batch500_per_s']} msg/s from the
  same client with the same 500 messages in flight ({results['broker_ceiling_per_s']} msg/s
  with 10,000). The relay handles one batch at a time: read 500 rows, publish, wait for
  every acknowledgement, delete; with one request in flight per connection (no idempotence,
  because of tansu) the round trips add up. Overlapping the next batch's read with the
  current batch's acknowledgements is the next step; not done.
- **Accept path vs pgbench** ({accept_ratio_8:.2f}× at c=8): the service does more than the
  SQL (JSON parsing and field validation, the idempotency fingerprint, the HTTP exchange), and
  its load generator shares the two cores with it and with Postgres, while pgbench's client
  is light. The transaction itself is the same four inserts.
- **Polling vs NOTIFY**: at 200/s both are dominated by the
  saturated broker's queueing; at 50/s (figures 2b/3b) the comparison is the relay's own: a
  500 ms poll adds 250 ms on average per outbox hop, and an order makes two hops.
- **Recovery** is quick because each consumer assigns itself every partition and resumes
  from the committed offsets (no group rebalance to wait for; broker notes), and a service is
  ready as soon as its database answers.
""")
