# The local high-availability Postgres of `scripts/up --ha` (decision 0031): pg_auto_failover
# from Debian's packages, a monitor and three data nodes on this machine — a primary and two
# standbys, every commit waiting for either of them (number_sync_standbys 1, as deploy/'s
# CloudNativePG clusters: ANY 1 of 2) — each node a keeper
# (`pg_autoctl run`) that runs its own Postgres. The nodes stand for database hosts: they run
# under a supervisord of their own (.local/ha/), apart from the services', so that a drill can
# take a "host" away (scripts/crash/db-failover) and bring it back when it chooses; systemd
# restarts a keeper on a real host. Sourced by common.sh.

HA="$LOCAL/ha"
HA_MONITOR_PORT=${HA_MONITOR_PORT:-5440}
HA_NODES=3
ha_node_port() { echo $((HA_MONITOR_PORT + $1)); }

# The stack runs on the high-availability Postgres once `scripts/up --ha` has made it; the
# mode is kept with the data, as the Kafka node count is (scripts/reset forgets both).
ha_enabled() { [ -f "$HA/formation" ]; }

# Every data node, in a libpq multi-host URL: a client tries them in order and keeps the one
# that takes writes (target_session_attrs=read-write, in PG_URL_OPTIONS).
ha_url() {
  local hosts=() n
  for n in $(seq 1 "$HA_NODES"); do hosts+=("127.0.0.1:$(ha_node_port "$n")"); done
  echo "postgres://postgres@$(IFS=,; echo "${hosts[*]}")"
}
ha_monitor_url() { echo "postgres://autoctl_node@127.0.0.1:$HA_MONITOR_PORT/pg_auto_failover"; }

# Waits (up to $2 s) until the server at $1 answers.
wait_pg() {
  local started=$SECONDS
  until pg_answers "$1"; do
    [ $((SECONDS - started)) -lt "$2" ] || return 1
    sleep 0.5
  done
}

ha_ctl() { supervisorctl -c "$HA/supervisord.conf" "$@"; }

# pg_autoctl refuses to run as root; everything under .local/ha then belongs to postgres.
ha_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env "$@"; else env "$@"; fi; }
ha_env() {
  echo "PATH=$(postgres_bin_dir):$PATH" "XDG_CONFIG_HOME=$HA/xdg/config" "XDG_DATA_HOME=$HA/xdg/data" \
    "PGCONNECT_TIMEOUT=2"
}
pg_autoctl_() {
  # shellcheck disable=SC2046  # ha_env prints NAME=value words without spaces
  ha_as $(ha_env) pg_autoctl "$@"
}

# What the monitor says of each node: `name port reported-state goal-state`, one line each.
ha_states() {
  psql "postgres://postgres@127.0.0.1:$HA_MONITOR_PORT/pg_auto_failover" -tAF' ' -c \
    "SELECT nodename, nodeport, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid" 2>/dev/null
}

# The port of the node the monitor has as primary (and that reports it), or nothing.
ha_primary_port() {
  ha_states | awk '$3 == $4 && ($3 == "primary" || $3 == "wait_primary" || $3 == "single") { print $2 }' | head -1
}

# Waits (up to $1 s) until one node is primary and every other is its secondary, all as the
# monitor wants them.
ha_wait_pair() {
  local timeout=${1:-120} started=$SECONDS
  until [ -n "$(ha_primary_port)" ] && ha_states | awk -v want=$((HA_NODES - 1)) \
      '$3 == "secondary" && $4 == "secondary" { n++ } END { exit n != want }'; do
    [ $((SECONDS - started)) -lt "$timeout" ] || { ha_states >&2; die "no primary with its secondaries after $timeout s; see $HA/log/"; }
    sleep 0.5
  done
}

ha_write_supervisord_conf() {
  local n user=""
  [ "$(id -u)" = 0 ] && user="user=postgres"
  {
    cat <<CONF
[unix_http_server]
file=$HA/supervisor.sock

[supervisord]
logfile=$HA/log/supervisord.log
pidfile=$HA/supervisord.pid
childlogdir=$HA/log

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$HA/supervisor.sock

[program:monitor]
command=pg_autoctl run --pgdata $HA/monitor
environment=$(ha_env | tr ' ' ','),HOME="$HA"
$user
autorestart=true
startsecs=2
stopwaitsecs=30
stdout_logfile=$HA/log/monitor.log
redirect_stderr=true
CONF
    # A node is not restarted by supervisord: the drill takes a host away and brings it back.
    for n in $(seq 1 "$HA_NODES"); do
      cat <<CONF

[program:node-$n]
command=pg_autoctl run --pgdata $HA/node-$n
environment=$(ha_env | tr ' ' ','),HOME="$HA"
$user
autostart=false
autorestart=false
startsecs=2
stopwaitsecs=30
stdout_logfile=$HA/log/node-$n.log
redirect_stderr=true
CONF
    done
  } >"$HA/supervisord.conf"
}

# The failure detection of a local drill (decision 0031 gives production's): the monitor
# checks every node each second and counts a primary failed 2 s after it stopped answering;
# it then waits 5 s for the old primary to demote itself (a primary cut off from the monitor
# and its standby does after 3 s, ha_create) before it promotes the standby.
ha_tune_monitor() {
  psql "postgres://postgres@127.0.0.1:$HA_MONITOR_PORT/pg_auto_failover" -q <<'SQL' >/dev/null
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 5000;
SELECT pg_reload_conf();
SQL
}

# Makes the formation once: the monitor, then node 1 (which becomes the primary), then nodes
# 2 and 3 (base backups of it, its standbys; with the second, the monitor sets
# number_sync_standbys to 1).
ha_create() {
  local n
  # Debian packages pg_auto_failover for each server version.
  [ -n "$(postgres_bin_dir)" ] || ensure_packages
  command -v pg_autoctl >/dev/null && [ -n "$(ls "$(dirname "$(postgres_bin_dir)")"/lib/pgautofailover.so 2>/dev/null)" ] \
    || apt_install "postgresql-$(basename "$(dirname "$(postgres_bin_dir)")")-auto-failover"
  mkdir -p "$HA/log" "$HA/xdg"
  [ "$(id -u)" = 0 ] && chown -R postgres "$HA"
  if [ ! -f "$HA/monitor/PG_VERSION" ]; then
    log "postgres (ha): creating the pg_auto_failover monitor (port $HA_MONITOR_PORT)"
    pg_autoctl_ create monitor --pgdata "$HA/monitor" --pgport "$HA_MONITOR_PORT" --hostname 127.0.0.1 \
      --auth trust --no-ssl >"$HA/log/create-monitor.log" 2>&1 || die "see $HA/log/create-monitor.log"
  fi
  ha_start_supervisor
  ha_ctl start monitor >/dev/null || true
  wait_pg "postgres://postgres@127.0.0.1:$HA_MONITOR_PORT" 60 || die "the monitor does not answer; see $HA/log/monitor.log"
  ha_tune_monitor
  for n in $(seq 1 "$HA_NODES"); do
    if [ ! -f "$HA/node-$n/PG_VERSION" ]; then
      log "postgres (ha): creating node $n (port $(ha_node_port "$n"))"
      pg_autoctl_ create postgres --pgdata "$HA/node-$n" --pgport "$(ha_node_port "$n")" --hostname 127.0.0.1 \
        --name "node-$n" --auth trust --no-ssl --pg-hba-lan --monitor "$(ha_monitor_url)" \
        >"$HA/log/create-node-$n.log" 2>&1 || die "see $HA/log/create-node-$n.log"
      # A primary cut off from the monitor and its standby demotes itself after 3 s (20 s by
      # default), before the monitor may promote the standby (5 s, ha_tune_monitor).
      pg_autoctl_ config set --pgdata "$HA/node-$n" timeout.network_partition_timeout 3 >/dev/null
      # The services' statement log and English messages, as on the single cluster.
      printf "lc_messages = 'C'\n%s\n" "$(statement_statistics | sed 's/^-c //')" \
        | ha_as tee -a "$HA/node-$n/postgresql-auto-failover.conf" >/dev/null
    fi
    ha_ctl start "node-$n" >/dev/null || true
    # A standby's base backup needs the first node as primary.
    [ "$n" -gt 1 ] || until [ -n "$(ha_primary_port)" ]; do sleep 0.5; done
  done
  touch "$HA/formation"
}

ha_start_supervisor() {
  ha_write_supervisord_conf
  if [ -S "$HA/supervisor.sock" ] && ha_ctl pid >/dev/null 2>&1; then
    ha_ctl reread >/dev/null && ha_ctl update >/dev/null
  else
    supervisord -c "$HA/supervisord.conf"
  fi
}

# Starts every process of the formation that is not running, and waits for a primary with
# its standby.
ha_up() {
  local n
  ha_create
  ha_ctl start monitor >/dev/null 2>&1 || true
  for n in $(seq 1 "$HA_NODES"); do ha_ctl start "node-$n" >/dev/null 2>&1 || true; done
  ha_wait_pair 180
  log "postgres (ha): primary on port $(ha_primary_port); $(ha_states | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $3}')"
}

ha_down() {
  [ -S "$HA/supervisor.sock" ] && ha_ctl pid >/dev/null 2>&1 || return 0
  # shellcheck disable=SC2046  # node names
  ha_ctl stop $(for n in $(seq 1 "$HA_NODES"); do echo "node-$n"; done) >/dev/null 2>&1 || true
  ha_ctl stop monitor >/dev/null 2>&1 || true
  ha_ctl shutdown >/dev/null
  log "postgres (ha) stopped"
}

# Takes node N's host away: SIGKILL to its keeper and to every process of its Postgres at
# once, so that nothing shuts down cleanly and nothing restarts it.
ha_kill_node() {
  local n=$1 pids keeper postmaster
  keeper=$(ha_ctl pid "node-$n" 2>/dev/null || true)
  postmaster=$(head -1 "$HA/node-$n/postmaster.pid" 2>/dev/null || true)
  pids="$keeper $postmaster"
  [ -z "$keeper" ] || pids+=" $(pgrep -g "$(ps -o pgid= -p "$keeper" | tr -d ' ')" | tr '\n' ' ')"
  [ -z "$postmaster" ] || pids+=" $(pgrep -P "$postmaster" | tr '\n' ' ')"
  # shellcheck disable=SC2086  # a list of pids
  kill -9 $pids 2>/dev/null || true
}
