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


def version(command, stderr=False):
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return (run.stderr if stderr else run.stdout).strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a missing tool only leaves a blank in the table
        return "?"


def kafka_version():
    """The Kafka version kafka-local/pom.xml pins."""
    pom = (pathlib.Path(__file__).resolve().parents[2] / "kafka-local" / "pom.xml").read_text()
    return pom.split("<kafka.version>", 1)[1].split("<", 1)[0] if "<kafka.version>" in pom else "?"


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
    else "not comparable: the machine saturated and the percentiles cover only the orders that finished; see 2b/3b"
)
steps = [(int(k.split("_")[1]), v) for k, v in results.items() if k.startswith("step_")]

print(f"""# Benchmarks

Measured by `scripts/bench` (release builds; one private Apache Kafka node for the run, and a
fresh namespace — databases, topics, consumer groups — for every figure; every figure below
comes from the same run). Raw output: `.local/bench/` of the
machine that ran it. Not part of CI: these are figures, not pass/fail tests.

## Machine and versions
- {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB; {platform.system()} {platform.release()}
- {version(["rustc", "--version"])}; {version(["psql", "--version"])}; broker: Apache Kafka {kafka_version()} (KRaft, one node, `scripts/kafka`); {version(["java", "-version"], stderr=True)}
- Everything on one machine: Postgres, the broker, order, inventory, relay and the load generator share the 2 cores.

## Figures

| # | what | result | target |
|---|---|---|---|
| 1 | accept throughput, `POST /orders` with `Prefer: wait=0` (order service alone) vs pgbench running the same transaction | c=8: **{results['accept_rps_c8']}/s** vs {results['pgbench_tps_c8']} tps (**{accept_ratio_8:.2f}×**); c=32: **{results['accept_rps_c32']}/s** vs {results['pgbench_tps_c32']} tps (**{accept_ratio_32:.2f}×**) | ≥ 0.8× |
| 2 | accepted → CONFIRMED at 200 orders/s (relay woken by NOTIFY) | p50 **{results['e2e_notify_p50_ms']} ms**, p95 {results['e2e_notify_p95_ms']} ms, p99 **{results['e2e_notify_p99_ms']} ms** (achieved {results['e2e_notify_rps']}/s; {finished('e2e-notify.json')}; percentiles over those) | p50 ≤ 15 ms, p99 ≤ 60 ms |
| 3 | the same, relay polling every 500 ms without NOTIFY | p50 {results['e2e_poll_p50_ms']} ms, p95 {results['e2e_poll_p95_ms']} ms, p99 {results['e2e_poll_p99_ms']} ms ({finished('e2e-poll.json')}) → NOTIFY vs polling at p50: **{poll_ratio}** | ≥ 10× |
| 2b, 3b | the same pair at 50 orders/s, well inside what the machine sustains | NOTIFY: p50 **{results['e2e50_notify_p50_ms']} ms**, p95 {results['e2e50_notify_p95_ms']} ms, p99 **{results['e2e50_notify_p99_ms']} ms** ({finished('e2e50-notify.json')}); polling: p50 {results['e2e50_poll_p50_ms']} ms, p99 {results['e2e50_poll_p99_ms']} ms ({finished('e2e50-poll.json')}) → **{ratio('e2e50_poll_p50_ms', 'e2e50_notify_p50_ms')}** at p50 | |
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
4. `loadgen --rate R --duration 20` for R = 100, 200, 300, 500, 700, 1000, each in a fresh
   namespace, stopping at the first step that fails.
5. 100,000 rows inserted into the order outbox (topic of their own, real envelope size)
   before the relay starts; timed from starting the relay until the outbox is empty. The
   ceiling: `produce-bench` (`tools/src/bin/produce-bench.rs`) sends as many messages of the
   same size with `platform::kafka::producer` and the relay's settings (idempotent, acks=all,
   linger 2 ms, up to 5 requests in flight per connection).
6. `kill -KILL` inventory, wait 2 s while orders queue up, start it again; the time from
   the start to the first processed event counted in the new process's
   `consumer_events_total` (read every 20 ms). Three rounds; the median is reported.

## Reading the numbers
""")
drain_ratio = num("drain_events_per_s") / num("broker_ceiling_batch500_per_s")
print(f"""- **End to end, the machine is the ceiling.** Kafka is no longer the bottleneck (it takes
  {results['broker_ceiling_batch500_per_s']} msg/s from one client), but Postgres, Kafka, the
  three services and the load generator share two cores: at 200 orders/s the stack achieves
  {results['e2e_notify_rps']}/s and falls behind, so figure 2 measures queueing. At 50/s (2b)
  the pipeline's own latency shows: p50 {results['e2e50_notify_p50_ms']} ms and p99
  {results['e2e50_notify_p99_ms']} ms for two outbox → Kafka → inbox hops, each hop one Postgres
  commit, one NOTIFY, one produce with acks=all and one fetch answered as soon as the record
  arrives (fetch.wait.max.ms only bounds idle polling on Kafka).
- **The relay's drain is the relay's own limit**: {results['drain_events_per_s']} events/s, which
  is {drain_ratio:.2f}× of what the same client pushes with the same 500 messages in flight. The
  relay handles one batch at a time: read 500 rows, publish, wait for every acknowledgement,
  delete. Overlapping batches is the next step (the performance issue).
- **Accept path vs pgbench** ({accept_ratio_8:.2f}× at c=8): the service does more than the
  SQL (JSON parsing and field validation, the idempotency fingerprint, the HTTP exchange, a
  NOTIFY), and its load generator shares the two cores with it and with Postgres, while
  pgbench's client is light. The transaction itself is the same four inserts.
- **Polling vs NOTIFY**: at 200/s both are dominated by queueing; at 50/s (2b/3b) a 500 ms poll
  adds 250 ms on average per outbox hop, and an order makes two hops.
- **Recovery** ({results['recovery_ms']} ms) is a consumer group's: the restarted inventory
  joins as a new member and gets partitions once the group has rebalanced without the dead
  member. The benchmark's services use dynamic membership; the local stack gives each
  consumer a stable `group.instance.id`, with which a restarted process takes its partitions
  back as soon as it rejoins (docs/kafka-local.md).
""")
