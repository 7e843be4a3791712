# Shared by the scripts: where things live, and how to find or start Postgres and the broker.
# Source it; it defines functions and variables only.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Everything the local stack creates at run time lives here (ignored by git).
LOCAL="$ROOT/.local"
# Caches that outlive a clone (the broker binary takes ~15 minutes to build).
CACHE="${ORDER_SYSTEM_CACHE:-$HOME/.cache/order-system}"
TANSU_VERSION=0.6.0

# The Postgres server: PG_URL if it answers; otherwise a private cluster on PRIVATE_PG_PORT.
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PRIVATE_PG_PORT="${PRIVATE_PG_PORT:-5433}"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-debug}"
BIN="$CARGO_TARGET_DIR/$PROFILE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pg_answers() { pg_isready -q -d "$1/postgres" -t 2; }

# Sets PG_URL to a server that answers, starting a private cluster if needed.
ensure_postgres() {
  if pg_answers "$PG_URL"; then
    log "postgres: using $PG_URL"
    return
  fi
  local data="$LOCAL/postgres" url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT"
  if ! pg_answers "$url"; then
    log "postgres: nothing answers at $PG_URL; starting a private cluster in $data (port $PRIVATE_PG_PORT)"
    command -v initdb >/dev/null || PATH="$(ls -d /usr/lib/postgresql/*/bin | tail -n1):$PATH"
    local as=()
    # initdb refuses to run as root; the private cluster belongs to the postgres user then.
    if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    if [ ! -f "$data/PG_VERSION" ]; then
      "${as[@]}" initdb -D "$data" -U postgres --auth=trust >"$LOCAL/postgres-init.log" 2>&1 \
        || die "initdb failed; see $LOCAL/postgres-init.log"
    fi
    "${as[@]}" pg_ctl -D "$data" -l "$data/server.log" -w \
      -o "-p $PRIVATE_PG_PORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null \
      || die "the private cluster did not start; see $data/server.log"
  fi
  PG_URL="$url"
  log "postgres: using the private cluster at $PG_URL"
}

# Creates a database if it does not exist.
ensure_database() {
  local name=$1
  if [ -z "$(psql "$PG_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    psql "$PG_URL/postgres" -qc "CREATE DATABASE \"$name\"" >/dev/null
    log "postgres: created database $name"
  fi
}

# Prints the path of the pinned tansu broker, installing it into the cache if missing.
tansu_bin() {
  local installed="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
  if [ -n "${TANSU_BIN:-}" ] && [ -x "$TANSU_BIN" ]; then echo "$TANSU_BIN"; return; fi
  if [ -x "$installed" ]; then echo "$installed"; return; fi
  log "installing tansu $TANSU_VERSION (about 15 minutes on 2 cores, once per machine)"
  CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version "$TANSU_VERSION" --locked \
    --no-default-features --features libsql --root "$CACHE/tansu-$TANSU_VERSION" >&2 \
    || die "tansu install failed"
  rm -rf "$CACHE/tansu-build"
  echo "$installed"
}

broker_answers() {
  local host=${KAFKA_BROKERS%%,*}
  (exec 3<>"/dev/tcp/${host%:*}/${host#*:}") 2>/dev/null
}

# Starts a tansu broker at $KAFKA_BROKERS with its data in DIR (emptied first), logging to
# LOG, and waits until it answers. Sets BROKER_PID.
start_broker() {
  local dir=$1 log_file=$2
  rm -rf "$dir"; mkdir -p "$dir" "$(dirname "$log_file")"
  (cd "$dir" && exec "$TANSU" broker --listener-url "tcp://$KAFKA_BROKERS" \
    --advertised-listener-url "tcp://$KAFKA_BROKERS" --storage-engine sqlite://tansu.db) >>"$log_file" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do broker_answers && return 0; sleep 0.2; done
  die "the broker did not start at $KAFKA_BROKERS; see $log_file"
}

# Waits until `curl URL` succeeds, up to $2 seconds.
wait_http() {
  local url=$1 timeout=${2:-60} waited=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    sleep 0.5; waited=$((waited + 1))
    if [ "$waited" -ge $((timeout * 2)) ]; then return 1; fi
  done
}

# The system's apt packages; installed only when one is missing.
ensure_packages() {
  local missing=()
  command -v supervisord >/dev/null || missing+=(supervisor)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v curl >/dev/null || missing+=(curl)
  command -v pg_isready >/dev/null || missing+=(postgresql-client)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Prints the path of diesel_cli (for `print-schema`), installing it into the cache if missing.
DIESEL_VERSION=2.3.4
diesel_bin() {
  local installed="$CACHE/diesel_cli/bin/diesel"
  if [ -x "$installed" ]; then echo "$installed"; return; fi
  log "installing diesel_cli $DIESEL_VERSION (a few minutes, once per machine)"
  CARGO_TARGET_DIR="$CACHE/diesel-build" cargo install diesel_cli --version "$DIESEL_VERSION" --locked \
    --no-default-features --features postgres --root "$CACHE/diesel_cli" >&2 || die "diesel_cli install failed"
  rm -rf "$CACHE/diesel-build"
  echo "$installed"
}

# --- for the fault drills (scripts/crash/*) against the local stack ---

supervisor() { supervisorctl -c "$LOCAL/supervisord.conf" "$@"; }
pid_of() { supervisor pid "$1" 2>/dev/null | grep -E '^[0-9]+$' || true; }
service_port() { case $1 in order) echo 8080 ;; inventory) echo 8081 ;; relay) echo 8082 ;; esac; }

require_stack() {
  [ -S "$LOCAL/supervisor.sock" ] && supervisor pid >/dev/null 2>&1 || die "the stack is not running: scripts/up first"
  ADMIN_TOKEN=$(cat "$LOCAL/admin-token")
  (cd "$ROOT" && cargo build --quiet -p loadgen -p checker)
  ensure_postgres 2>/dev/null
}

# Arms a crash point: arm SERVICE POINT ACTION
arm() {
  curl -fsS -X PUT "http://127.0.0.1:$(service_port "$1")/admin/crash-points/$2" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"action\": \"$3\"}" >/dev/null
}

# Waits until SERVICE runs with a pid other than OLD_PID and answers /health.
wait_restarted() {
  local service=$1 old=$2 waited=0
  until [ -n "$(pid_of "$service")" ] && [ "$(pid_of "$service")" != "$old" ] \
    && curl -fsS -o /dev/null "http://127.0.0.1:$(service_port "$service")/health" 2>/dev/null; do
    sleep 0.2; waited=$((waited + 1))
    [ "$waited" -lt 300 ] || die "$service did not come back within 60 s"
  done
}

# Waits until every order is settled and the outboxes are empty (up to $1 s), then prints the
# checker's report and returns its status.
wait_quiet() {
  local timeout=${1:-120} started=$SECONDS
  export ORDER_DATABASE_URL="$PG_URL/orders" INVENTORY_DATABASE_URL="$PG_URL/inventory"
  while [ $((SECONDS - started)) -lt "$timeout" ]; do
    if "$BIN/check-invariants" --grace-secs 0 --json 2>/dev/null \
      | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if not r["violations"] and all(b["rows"]==0 for b in r["outbox_backlog"].values()) else 1)'; then
      log "quiet after $((SECONDS - started)) s"
      break
    fi
    sleep 1
  done
  "$BIN/check-invariants" --grace-secs 0
}
