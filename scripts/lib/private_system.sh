# A system of its own for a script (the browser test, the benchmarks): order, inventory and
# relay on given ports, with fresh databases and topics named after $SYS_NAME, against
# PG_URL and the broker at KAFKA_BROKERS. Source after common.sh.
#
#   SYS_NAME=t1234 SYS_ORDER_PORT=... SYS_INVENTORY_PORT=... SYS_RELAY_PORT=... SYS_LOGS=dir
#   sys_create                        # databases and topics
#   sys_start relay [VAR=value...]    # extra settings without the prefix, e.g. RELAY__LISTEN=false
#   sys_start relay@2 HTTP__PORT=N    # a second instance, with a port of its own
#   sys_stop relay                    # SIGTERM and wait
#   sys_kill inventory                # SIGKILL
#   sys_destroy                       # stops everything and drops the databases

declare -A SYS_PIDS=()

sys_create() {
  ensure_auth_keys
  for db in orders inventory; do psql "$PG_URL/postgres" -qc "CREATE DATABASE \"${SYS_NAME}_$db\""; done
  mkdir -p "$SYS_LOGS"
  # The topics, and what each service's principal may do on them and on its group.
  local acls=(--acls --orders-topic "$SYS_NAME.orders.events" --inventory-topic "$SYS_NAME.inventory.events"
    --order-group "$SYS_NAME-order" --inventory-group "$SYS_NAME-inventory" --notifications-group "$SYS_NAME-notifications")
  [ "$KAFKA_CREDENTIALS" != none ] || acls=()
  kafka_admin_env
  "$BIN/kafka-init" --brokers "$KAFKA_BROKERS" --partitions "${SYS_PARTITIONS:-3}" \
    --topic "$SYS_NAME.orders.events" --topic "$SYS_NAME.inventory.events" "${acls[@]}" >/dev/null
}

sys_start() {
  # `relay@2 HTTP__PORT=…` starts another instance of relay, known as relay@2.
  local name=$1; shift
  local service=${name%%@*}
  local prefix port settings=()
  prefix=$(system get "$service" prefix)
  case $service in
    order) port=$SYS_ORDER_PORT
      settings=(DATABASE__URL="$PG_URL/${SYS_NAME}_orders" CONSUMER_GROUP="$SYS_NAME-order"
        AUTH__PUBLIC_KEY_FILE="$LOCAL/auth/public.pem" AUTH__DEV_SIGNING_KEY_FILE="$LOCAL/auth/signing.pem"
        PEERS__INVENTORY="http://127.0.0.1:$SYS_INVENTORY_PORT" PEERS__RELAY="http://127.0.0.1:$SYS_RELAY_PORT") ;;
    inventory) port=$SYS_INVENTORY_PORT
      settings=(DATABASE__URL="$PG_URL/${SYS_NAME}_inventory" CONSUMER_GROUP="$SYS_NAME-inventory") ;;
    relay) port=$SYS_RELAY_PORT
      local outbox
      for outbox in $(system get relay outboxes); do
        settings+=(OUTBOXES__${outbox^^}="$PG_URL/${SYS_NAME}_$(system get "$outbox" database)")
      done ;;
  esac
  local arg
  for arg in "$@"; do case $arg in HTTP__PORT=*) port=${arg#HTTP__PORT=} ;; esac; done
  settings+=(HTTP__PORT="$port" KAFKA__BROKERS="$KAFKA_BROKERS" TOPICS__ORDERS="$SYS_NAME.orders.events"
    TOPICS__INVENTORY="$SYS_NAME.inventory.events" "$@")
  # The local profile, as the local stack and the tests have it.
  local environment=(CONFIG_FILE="$ROOT/config/local.toml")
  for pair in "${settings[@]}"; do environment+=("${prefix}__$pair"); done
  # Each service signs in as its own principal (decision 0028).
  mapfile -t -O "${#environment[@]}" environment < <(kafka_sign_in "$prefix" "$service")
  env "${environment[@]}" "$BIN/$service" >>"$SYS_LOGS/$name.log" 2>&1 &
  SYS_PIDS[$name]=$!
  wait_http "http://127.0.0.1:$port/health" 60 || die "$name did not become ready; see $SYS_LOGS/$name.log"
}

sys_stop() {
  local pid=${SYS_PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "SYS_PIDS[$1]"
}

sys_kill() {
  local pid=${SYS_PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "SYS_PIDS[$1]"
}

sys_destroy() {
  for service in "${!SYS_PIDS[@]}"; do sys_stop "$service"; done
  for db in orders inventory; do
    PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -qc \
      "DROP DATABASE IF EXISTS \"${SYS_NAME}_$db\" WITH (FORCE)" || true
  done
}
