# Shared by the broker drills (scripts/crash/broker-*): load, a sampler of both outboxes, the
# cluster's view of itself, and the report. Source after common.sh, then:
#
#   drill_begin NAME RATE SECONDS [NODES]   # checks the stack runs NODES (default 3) Kafka
#                                   # nodes, warms it up (DRILL_WARMUP_SECS, default 60),
#                                   # starts the load (DRILL_SHIP_SHARE of it shipped, 0 unless set)
#   drill_mark "what happened"      # a timestamped line in the drill's event log
#   drill_end                       # waits for the load, settles, judges, prints the report
#
# The report (scripts/lib/drill_report.py) says, from the load generator's records, the
# outboxes sampled every 250 ms and the invariant checker: orders lost, doubled or stuck; POSTs
# over their 2 s budget plus a 250 ms margin; the longest time an event waited in an outbox
# and when produce resumed after each fault; the slowest accepted → final.

# The node (1..3) that leads the most partitions of the system's topics.
busiest_node() {
  kcat -b "$KAFKA_BROKERS" -L -J -t orders.events 2>/dev/null >"$DRILL_OUT/meta-orders.json"
  kcat -b "$KAFKA_BROKERS" -L -J -t inventory.events 2>/dev/null >"$DRILL_OUT/meta-inventory.json"
  python3 - "$DRILL_OUT"/meta-*.json <<'PY'
import collections, json, sys
leaders = collections.Counter()
for path in sys.argv[1:]:
    for topic in json.load(open(path))["topics"]:
        leaders.update(p["leader"] for p in topic["partitions"] if p["leader"] >= 0)
print(leaders.most_common(1)[0][0])
PY
}

# Waits until every partition of the system's topics has all three replicas in sync (up to
# $1 s, default 120).
wait_in_sync() {
  local timeout=${1:-120} started=$SECONDS
  until kcat -b "$KAFKA_BROKERS" -L -J 2>/dev/null | python3 -c '
import json, sys
topics = [t for t in json.load(sys.stdin)["topics"] if not t["topic"].startswith("__")]
ok = topics and all(len(p["isrs"]) == len(p["replicas"]) == 3 and p["leader"] >= 0 for t in topics for p in t["partitions"])
sys.exit(0 if ok else 1)'; do
    [ $((SECONDS - started)) -lt "$timeout" ] || die "partitions not back in sync after $timeout s"
    sleep 1
  done
}

drill_mark() {
  printf '%s %s\n' "$(date +%s.%N)" "$*" >>"$DRILL_OUT/events.txt"
  log "$(date +%T) $*"
}

drill_begin() {
  DRILL_NAME=$1 DRILL_RATE=$2 DRILL_SECS=$3
  local nodes=${4:-3}
  require_stack
  if [ "$nodes" -ge 3 ]; then
    [ "$(wc -w <<<"$KAFKA_PROGRAMS")" -ge 3 ] \
      || die "this drill needs the three-node cluster: scripts/reset && scripts/up --kafka-nodes 3"
  fi
  DRILL_OUT=$(mktemp -d "/tmp/$DRILL_NAME.XXXX")
  : >"$DRILL_OUT/events.txt"
  [ "$nodes" -lt 3 ] || wait_in_sync 60
  # Three orders in four for a product of the drill's own with plenty of stock (confirmed),
  # one for MUG-01 (rejected once earlier load sold it out): both paths under the fault.
  local sku
  sku=$(drill_product BROKER-DRILL 1000000)
  DRILL_SKUS="$sku,$sku,$sku,MUG-01"
  # Brokers that just started run interpreted Java until the JIT has compiled their hot
  # paths: a minute of the same load first, so the drill measures faults, not warm-up.
  local warmup=${DRILL_WARMUP_SECS:-60}
  if [ "$warmup" -gt 0 ]; then
    log "$DRILL_NAME: warming up for $warmup s at $DRILL_RATE orders/s"
    "$BIN/loadgen" --rate "$DRILL_RATE" --duration "$warmup" --follow-secs 60 --skus "$DRILL_SKUS" \
      >"$DRILL_OUT/warmup.txt" 2>&1 || die "the warm-up load failed; see $DRILL_OUT/warmup.txt"
  fi
  log "$DRILL_NAME: $DRILL_RATE orders/s for $DRILL_SECS s (details in $DRILL_OUT)"
  "$BIN/loadgen" --rate "$DRILL_RATE" --duration "$DRILL_SECS" --progress 10 --follow-secs 180 --skus "$DRILL_SKUS" --ship-share "${DRILL_SHIP_SHARE:-0}" \
    --csv "$DRILL_OUT/orders.csv" --summary-json "$DRILL_OUT/summary.json" \
    >"$DRILL_OUT/loadgen.txt" 2>"$DRILL_OUT/progress.txt" &
  DRILL_LOAD=$!
  sample_outboxes &
  DRILL_SAMPLER=$!
  trap 'kill $DRILL_LOAD $DRILL_SAMPLER 2>/dev/null || true' EXIT
  drill_mark "load started"
}

# Every 250 ms: time, rows and oldest age (s) of each outbox, read from the databases themselves
# (the relay's own gauges stop moving while it waits for the broker).
sample_outboxes() {
  local query="SELECT count(*), COALESCE(extract(epoch FROM clock_timestamp() - min(created_at)), 0) FROM outbox_pending"
  while true; do
    local now order inventory
    now=$(date +%s.%N)
    order=$(psql "$(db_url orders)" -tAF, -c "$query" 2>/dev/null || echo ,)
    inventory=$(psql "$(db_url inventory)" -tAF, -c "$query" 2>/dev/null || echo ,)
    echo "$now,$order,$inventory" >>"$DRILL_OUT/outboxes.csv"
    sleep 0.25
  done
}

drill_end() {
  wait "$DRILL_LOAD" || true
  drill_mark "load finished"
  cat "$DRILL_OUT/loadgen.txt"
  local verdict=0
  wait_quiet 300 >"$DRILL_OUT/checker.txt" || verdict=1
  kill "$DRILL_SAMPLER" 2>/dev/null || true
  trap - EXIT
  "$BIN/check-invariants" --grace-secs 0 --json >"$DRILL_OUT/checker.json" 2>/dev/null || verdict=1
  python3 "$ROOT/scripts/lib/drill_report.py" "$DRILL_OUT" "$DRILL_NAME" || verdict=1
  return $verdict
}
