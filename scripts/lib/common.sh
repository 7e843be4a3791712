# Shared by the scripts: where things live, and how to find or start Postgres and the broker.
# Source it; it defines functions and variables only. One file: every script sources exactly
# this, and the broker's and Postgres's helpers call each other.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Everything the local stack creates at run time lives here (ignored by git).
LOCAL="$ROOT/.local"
# Caches that outlive a clone: Kafka's jars, cargo-nextest, diesel_cli, build output.
CACHE="${ORDER_SYSTEM_CACHE:-$HOME/.cache/order-system}"

# The Postgres server: PG_URL if it answers; otherwise a private cluster on PRIVATE_PG_PORT.
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PRIVATE_PG_PORT="${PRIVATE_PG_PORT:-5433}"
# Connection options every URL of PG_URL's server carries (db_url); the high-availability
# formation's multi-host URL needs target_session_attrs=read-write.
PG_URL_OPTIONS=""
# KAFKA_BROKERS given from outside names an existing cluster: the scripts start no broker.
EXTERNAL_KAFKA=${KAFKA_BROKERS:+yes}
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
# Who may sign in to the brokers the scripts start (decision 0028): lines `principal password`,
# made once, readable by their owner only. An external cluster's file may be named here; `none`
# means a broker without authentication.
KAFKA_CREDENTIALS="${KAFKA_CREDENTIALS:-$LOCAL/kafka-auth/credentials}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-debug}"
BIN="$CARGO_TARGET_DIR/$PROFILE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Answers, and lets the scripts in (pg_isready alone would not notice a password prompt).
pg_answers() { pg_isready -q -d "$1/postgres" -t 2 && psql "$1/postgres" -w -tAc 'SELECT 1' >/dev/null 2>&1; }

# The URL of database $1 on PG_URL's server.
db_url() { echo "$PG_URL/$1${PG_URL_OPTIONS:+?$PG_URL_OPTIONS}"; }

# The local stack's Postgres: the high-availability formation once `scripts/up --ha` has
# made it (scripts/lib/ha.sh), else as ensure_postgres.
ensure_stack_postgres() {
  if ha_enabled; then
    ha_up
    PG_URL=$(ha_url) PG_URL_OPTIONS=target_session_attrs=read-write
  else
    ensure_postgres
  fi
}

# Sets PG_URL to a server that answers, starting a private cluster if needed.
ensure_postgres() {
  if pg_answers "$PG_URL"; then
    log "postgres: using $PG_URL"
    return
  fi
  local data="$LOCAL/postgres" url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT"
  if ! pg_answers "$url"; then
    log "postgres: nothing answers at $PG_URL; starting a private cluster in $data (port $PRIVATE_PG_PORT)"
    start_cluster "$data" "$PRIVATE_PG_PORT"
  fi
  PG_URL="$url"
  log "postgres: using the private cluster at $PG_URL"
}

# start_cluster DATA PORT: a Postgres cluster of this machine in DATA (made there first if it
# is not; initdb's output in DATA-init.log), started on 127.0.0.1:PORT, its log in
# DATA/server.log. initdb refuses to run as root: the cluster belongs to the postgres user
# then. Messages in English: the consumers classify some errors by their text (decision 0011).
start_cluster() {
  local data=$1 port=$2 as=()
  [ -n "$(postgres_bin_dir)" ] || ensure_packages
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    "${as[@]}" "$(postgres_bin_dir)/initdb" -D "$data" -U postgres --auth=trust >"$data-init.log" 2>&1 \
      || die "initdb failed; see $data-init.log"
  fi
  "${as[@]}" "$(postgres_bin_dir)/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c lc_messages=C $(statement_statistics)" start >/dev/null \
    || die "the cluster in $data did not start; see $data/server.log"
}

# Counts of every statement the services send (scripts/profile statements), where the server
# has the pg_stat_statements module (Debian's postgresql package does).
statement_statistics() {
  if [ -f "$("$(postgres_bin_dir)/pg_config" --pkglibdir 2>/dev/null)/pg_stat_statements.so" ]; then
    echo "-c shared_preload_libraries=pg_stat_statements"
  fi
}

# Creates a database if it does not exist.
ensure_database() {
  local name=$1
  if [ -z "$(psql "$(db_url postgres)" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    psql "$(db_url postgres)" -qc "CREATE DATABASE \"$name\"" >/dev/null
    log "postgres: created database $name"
  fi
}

# Does a Kafka broker answer a metadata request at $1 (default $KAFKA_BROKERS)?
broker_answers() {
  local brokers=${1:-$KAFKA_BROKERS} first
  first=${brokers%%,*}
  (exec 3<>"/dev/tcp/${first%:*}/${first#*:}") 2>/dev/null || return 1
  kcat -F "$(kafka_client_config)" -b "$brokers" -L -m 3 -t __consumer_offsets 2>/dev/null | grep -q 'broker [0-9]* at'
}

# The local stack's Kafka node N listens on 9090 + 2N (9092, 9094, 9096), its controller on
# the port after.
kafka_node_port() { echo $((9090 + 2 * $1)); }
local_kafka_brokers() {
  local brokers=() n
  for n in $(seq 1 "$1"); do brokers+=("127.0.0.1:$(kafka_node_port "$n")"); done
  (IFS=,; echo "${brokers[*]}")
}

# The principals: the super user (kafka-init, the tests' own clients, kcat), the nodes' name
# on the controller listener, the dead-letter tool, and one per process of system.toml, named
# after it (what it may do: kafka-init/src/acl.rs).
kafka_principals() { echo admin controller dlq $(system names); }

ensure_kafka_credentials() {
  [ "$KAFKA_CREDENTIALS" = none ] || [ -s "$KAFKA_CREDENTIALS" ] && return 0
  mkdir -p "$(dirname "$KAFKA_CREDENTIALS")"
  local name
  (
    umask 077
    for name in $(kafka_principals); do
      echo "$name $(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
    done >"$KAFKA_CREDENTIALS.partial"
  )
  mv "$KAFKA_CREDENTIALS.partial" "$KAFKA_CREDENTIALS"
}

kafka_password() {
  ensure_kafka_credentials
  [ "$KAFKA_CREDENTIALS" = none ] || awk -v name="$1" '$1 == name {print $2}' "$KAFKA_CREDENTIALS"
}

# `--credentials FILE` for scripts/kafka run, or nothing for an open broker.
kafka_credentials_option() {
  ensure_kafka_credentials
  [ "$KAFKA_CREDENTIALS" = none ] || echo "--credentials $KAFKA_CREDENTIALS"
}

# kafka_client_config [PRINCIPAL]: a librdkafka properties file signing in as PRINCIPAL (default
# admin), for `kcat -F`; prints its path.
kafka_client_config() {
  local name=${1:-admin} file
  [ "$KAFKA_CREDENTIALS" != none ] || { echo /dev/null; return; }
  file="$(dirname "$KAFKA_CREDENTIALS")/$name.properties"
  if [ ! -s "$file" ] || [ "$file" -ot "$KAFKA_CREDENTIALS" ]; then
    (umask 077 && printf 'security.protocol=sasl_plaintext\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username=%s\nsasl.password=%s\n' \
      "$name" "$(kafka_password "$name")" >"$file")
  fi
  echo "$file"
}

# Debian's kcat links librdkafka 2.0.2, whose SCRAM proof Kafka 4 refuses (librdkafka #4895,
# fixed in 2.6.1). The scripts run kcat with the librdkafka the services link instead: the copy
# in the rdkafka-sys crate, built once as a shared library into the cache. Prints its folder.
kcat_library() {
  local version dir src build
  version=$(awk '$0 == "name = \"rdkafka-sys\"" {getline; gsub(/"/, "", $3); print $3}' "$ROOT/Cargo.lock")
  dir="$CACHE/librdkafka-$version"
  if [ ! -f "$dir/librdkafka.so.1" ]; then
    find_source() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$version/librdkafka" 2>/dev/null | head -n1; }
    src=$(find_source)
    [ -n "$src" ] || { (cd "$ROOT" && cargo fetch -q) && src=$(find_source); }
    [ -n "$src" ] || die "no source of librdkafka $version (rdkafka-sys) in cargo's registry"
    log "building librdkafka $version as a shared library for kcat (once, into $dir)"
    build="$dir.build"
    rm -rf "$build"; mkdir -p "$(dirname "$dir")"; cp -r "$src" "$build"
    (cd "$build" && ./configure --disable-curl --disable-gssapi --disable-zstd --disable-lz4-ext --disable-syslog \
      && make -j"$(nproc)" -C src librdkafka.so.1) >"$build.log" 2>&1 || die "building librdkafka failed; see $build.log"
    mkdir -p "$dir.partial"; cp "$build/src/librdkafka.so.1" "$dir.partial/"
    rm -rf "$build" "$build.log" "$dir"; mv "$dir.partial" "$dir"
  fi
  echo "$dir"
}

# kcat, signed in as KCAT_PRINCIPAL (default admin); shadows the command in every script.
kcat() {
  LD_LIBRARY_PATH="$(kcat_library)" command kcat -q -F "$(kafka_client_config "${KCAT_PRINCIPAL:-admin}")" "$@"
}

# kafka_admin_env: exports KAFKA_USERNAME and KAFKA_PASSWORD of the super user, which the
# tools (kafka-init, dlq, poison, …) sign in with; services never read these two.
kafka_admin_env() {
  if [ "$KAFKA_CREDENTIALS" = none ]; then return 0; fi
  export KAFKA_USERNAME=admin KAFKA_PASSWORD
  KAFKA_PASSWORD=$(kafka_password admin)
}

# kafka_sign_in PREFIX PRINCIPAL: the settings a service needs to sign in as PRINCIPAL, as
# `PREFIX__KAFKA__USERNAME=…` and `PREFIX__KAFKA__PASSWORD=…` words, one per line.
kafka_sign_in() {
  [ "$KAFKA_CREDENTIALS" != none ] || return 0
  echo "$1__KAFKA__USERNAME=$2"
  echo "$1__KAFKA__PASSWORD=$(kafka_password "$2")"
}

# start_kafka DIR PORT LOG [CONTROLLER_PORT]: a single-node Kafka for a script or a test run, data in DIR (emptied
# first), listening on PORT (and CONTROLLER_PORT, default PORT+1), logging to LOG; waits until it
# answers. Sets BROKER_PID.
start_kafka() {
  local dir=$1 port=$2 log_file=$3 controller_port=${4:-$(($2 + 1))}
  rm -rf "$dir"; mkdir -p "$dir" "$(dirname "$log_file")"
  "$ROOT/scripts/kafka" install >/dev/null
  # shellcheck disable=SC2046
  "$ROOT/scripts/kafka" run --dir "$dir" --port "$port" --controller-port "$controller_port" $(kafka_credentials_option) \
    >>"$log_file" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 240); do
    broker_answers "127.0.0.1:$port" && return 0
    kill -0 "$BROKER_PID" 2>/dev/null || die "Kafka exited at start; see $log_file"
    sleep 0.25
  done
  die "Kafka did not answer at 127.0.0.1:$port within 60 s; see $log_file"
}

# Prints N free TCP ports, each reserved as e2e/src/ports.rs does: below the kernel's ephemeral
# range (where outgoing connections' source ports could take them before our process binds)
# and marked by a file under the tests' shared folder so that a parallel test does not pick it.
free_ports() {
  python3 -c '
import os, random, socket, sys, tempfile, time
folder = os.path.join(tempfile.gettempdir(), "order-system-tests", "ports")
os.makedirs(folder, exist_ok=True)
ports = []
while len(ports) < int(sys.argv[1]):
    port = random.randrange(20000, 32000)
    path = os.path.join(folder, str(port))
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        if time.time() - os.path.getmtime(path) < 7200:
            continue
        os.utime(path)
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
print(*ports)' "$1"
}

# Waits until `curl URL` succeeds, up to $2 seconds.
wait_http() {
  local url=$1 timeout=${2:-60} waited=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    sleep 0.5; waited=$((waited + 1))
    if [ "$waited" -ge $((timeout * 2)) ]; then return 1; fi
  done
}

# Installs Debian packages (as root, or through sudo).
apt_install() {
  log "installing ${*} (Debian packages)"
  local sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  # The server package would create and start a cluster of its own on port 5432; the scripts
  # start a private one instead (ensure_postgres).
  if [[ " $* " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${sudo[@]}" mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "$@" >/dev/null || die "apt-get could not install $*"
}

# The Postgres server binaries (initdb, pg_ctl), wherever Debian put them.
postgres_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

# The system's Debian packages; installed only when one is missing.
ensure_packages() {
  local missing=()
  command -v supervisord >/dev/null || missing+=(supervisor)
  # `type -P`: common.sh defines a kcat function, which `command -v` would find.
  type -P kcat >/dev/null || missing+=(kcat)
  command -v cmake >/dev/null || missing+=(cmake)
  # rdkafka-sys builds librdkafka with OpenSSL (SASL/SCRAM, TLS: decision 0028).
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v curl >/dev/null || missing+=(curl)
  command -v jq >/dev/null || missing+=(jq)
  command -v psql >/dev/null || missing+=(postgresql-client)
  # scripts/sequence-race pauses Postgres backends with it.
  command -v gdb >/dev/null || missing+=(gdb)
  [ -n "$(postgres_bin_dir)" ] || missing+=(postgresql)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  # The SMTP server of the local stack and the tests (Debian's Python, not a pyenv one).
  /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# Prints the path of <binary> of crate <crate> <version>, installing it with `cargo install`
# into $CACHE/<dir> if missing (minutes, once per machine); more arguments go to
# `cargo install`. Fails (prints nothing) if it cannot be installed.
cached_install() { # <crate> <version> <binary> <dir> [cargo install arguments…]
  local crate=$1 version=$2 binary=$3 dir=$4
  shift 4
  local installed="$CACHE/$dir/bin/$binary"
  if [ -x "$installed" ]; then echo "$installed"; return; fi
  log "installing $crate $version into $CACHE/$dir (minutes, once per machine)"
  # A plain optimised build: the LTO some tools' release profiles ask for costs more build
  # time than it saves.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_TARGET_DIR="$CACHE/$dir-build" \
    cargo install "$crate" --version "$version" --locked --root "$CACHE/$dir" "$@" >&2 || return 1
  rm -rf "$CACHE/$dir-build"
  echo "$installed"
}

# cargo-nextest; ORDER_SYSTEM_NEXTEST=off does without it.
NEXTEST_VERSION=0.9.151
nextest_bin() {
  [ "${ORDER_SYSTEM_NEXTEST:-}" != off ] || return 1
  cached_install cargo-nextest "$NEXTEST_VERSION" cargo-nextest "nextest-$NEXTEST_VERSION" ||
    { log "cargo-nextest could not be installed"; return 1; }
}

# cargo-deny, for scripts/check-deps.
DENY_VERSION=0.20.2
deny_bin() { cached_install cargo-deny "$DENY_VERSION" cargo-deny "cargo-deny-$DENY_VERSION"; }

# cargo-fuzz, for scripts/fuzz.
FUZZ_VERSION=0.13.2
fuzz_bin() { cached_install cargo-fuzz "$FUZZ_VERSION" cargo-fuzz "cargo-fuzz-$FUZZ_VERSION"; }

# diesel_cli, for `print-schema` (scripts/check-schema).
DIESEL_VERSION=2.3.4
diesel_bin() {
  cached_install diesel_cli "$DIESEL_VERSION" diesel diesel_cli --no-default-features --features postgres ||
    die "diesel_cli install failed"
}

# One line per table of database $2 on server $1: its row count and an MD5 of its rows in a
# stable order (scripts/restore and the backup drill compare a restored cluster with its source).
table_checksums() {
  psql "$1/$2" -qAt -c "
    SELECT format('%s.%s %s rows, md5 %s', '$2', relname, n, md5)
    FROM (SELECT c.relname,
                 (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I', c.relname), false, true, '')))[1]::text::bigint AS n,
                 (xpath('/row/m/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS m FROM %I t', c.relname), false, true, '')))[1]::text AS md5
          FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
          WHERE s.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname) x"
}

# --- for the fault drills (scripts/crash/*) against the local stack ---

supervisor() { supervisorctl -c "$LOCAL/supervisord.conf" "$@"; }
pid_of() { supervisor pid "$1" 2>/dev/null | grep -E '^[0-9]+$' || true; }
# The system's one description (system.toml): `system names`, `system get NAME FIELD`, `system rows`.
system() { python3 "$ROOT/scripts/lib/system.py" "$@"; }
service_port() { system get "$1" port; }
service_url() { echo "http://127.0.0.1:$(service_port "$1")"; }

# Builds every binary of the workspace for $PROFILE, the one command the stack and the drills
# share: selecting packages (-p) would unify features differently and rebuild the dependencies.
build_bins() {
  local flags=(--bins --quiet)
  [ "$PROFILE" = release ] && flags+=(--release)
  (cd "$ROOT" && cargo build "${flags[@]}")
}

# The local key pair for customers' tokens (decision 0013), made once: .local/auth/public.pem
# is what the order service trusts, .local/auth/signing.pem signs (scripts/token, the load
# generator through ORDER_SYSTEM_SIGNING_KEY, the development token endpoint). Needs $BIN built.
ensure_auth_keys() {
  "$BIN/token" keygen "$LOCAL/auth" 2>/dev/null || die "could not make the key pair in $LOCAL/auth"
  export ORDER_SYSTEM_SIGNING_KEY="$LOCAL/auth/signing.pem"
}

# A token for customer $1 of the local stack (more arguments go to `token mint`).
customer_token() { "$BIN/token" mint "$@" --key "$LOCAL/auth/signing.pem"; }

require_stack() {
  [ -S "$LOCAL/supervisor.sock" ] && supervisor pid >/dev/null 2>&1 || die "the stack is not running: scripts/up first"
  ADMIN_TOKEN=$(cat "$LOCAL/admin-token")
  # KAFKA_BROKERS, KAFKA_PROGRAMS (the supervised broker nodes), and the build (PROFILE,
  # CARGO_TARGET_DIR) of the running stack: the load generator and the checker come from
  # the same build as the services, a release stack gets release tools.
  source "$LOCAL/stack.env"
  export CARGO_TARGET_DIR
  BIN="$CARGO_TARGET_DIR/$PROFILE"
  build_bins
  ensure_auth_keys
  ensure_stack_postgres 2>/dev/null
  # The drills' own tools (poison, dlq) sign in as the super user.
  kafka_admin_env
}

# Arms a crash point: arm SERVICE POINT ACTION
arm() {
  curl -fsS -X PUT "http://127.0.0.1:$(service_port "$1")/admin/crash-points/$2" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"action\": \"$3\"}" >/dev/null
}

# Adds a product of the drill's own, `NAME-<time>` with STOCK units, through inventory's admin
# API, and prints its SKU: earlier load may have sold the catalogue out, and a drill whose
# orders are all rejected would not exercise reservations.
drill_product() {
  local sku
  sku="$1-$(date +%y%m%d%H%M%S)"
  curl -fsS -X PUT "http://127.0.0.1:$(service_port inventory)/admin/products/$sku" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"name\": \"$1 drill\", \"stock\": $2}" >/dev/null \
    || die "cannot add the drill's product (is the inventory admin endpoint on?)"
  echo "$sku"
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
wait_quiet() { settle "$(db_url orders)" "$(db_url inventory)" "${1:-120}"; }

# settle ORDER_URL INVENTORY_URL [TIMEOUT]: wait_quiet for any system's two databases.
settle() {
  local timeout=${3:-120} started=$SECONDS
  export ORDER_DATABASE_URL=$1 INVENTORY_DATABASE_URL=$2
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

# The high-availability Postgres of `scripts/up --ha`.
source "$ROOT/scripts/lib/ha.sh"
