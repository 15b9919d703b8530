#!/usr/bin/env bash
# Benchmarks the gateway's NATS JetStream, RabbitMQ and Kafka uplinks against a bare client of
# each broker with the same guarantee, and the gateway's CPU per event when it fans out to three
# uplinks at once.
#
#   devices (edge-bench) ──MQTT──▶ edge-gateway (synchronous = "full") ──JetStream, PubAck──▶ nats-server ──▶ consumer
#   edge-bench bare-* (one client, window 256)  ──────────────────────────JetStream, PubAck──▶ the same    ──▶ the same
#   devices (edge-bench) ──MQTT──▶ edge-gateway (synchronous = "full") ──AMQP, confirms─────▶ RabbitMQ     ──▶ consumer
#   edge-bench bare-* (one client, window 256)  ──────────────────────────AMQP, confirms─────▶ the same     ──▶ the same
#   devices (edge-bench) ──MQTT──▶ edge-gateway (synchronous = "full") ──Kafka, idempotent───▶ mock cluster ──▶ consumer
#   edge-bench bare-* (one producer, window 256) ─────────────────────────Kafka, idempotent───▶ the same     ──▶ the same
#   devices (edge-bench) ──MQTT──▶ edge-gateway ──PutEvents──▶ moto's server (EventBridge, no rule):
#     entries/s at saturation and PutEvents calls per 1 000 events (moto's access log)
#   fan-out: one load through a gateway with an MQTT uplink, and through one with MQTT + NATS +
#   RabbitMQ uplinks; the gateway's utime + stime (/proc/PID/stat) over each run ÷ events.
#
# Prints each run's figures as it goes, then medians over RUNS runs (gateway and reference in
# turn; a ratio is the median of the per-run ratios): the machine is shared and noisy. Also
# prints how busy the whole machine was during each kind of run (from /proc/stat).
#
# Its own nats-server (JetStream, file store in the temp dir), Mosquitto and librdkafka's mock
# Kafka cluster (three brokers in an edge-bench process, topics of four partitions) on ephemeral
# ports;
# the machine's RabbitMQ at AMQP_URL, with exchanges and a queue named after this run, deleted on
# exit. Every process started here is stopped on exit.
#
#   scripts/bench-uplinks.sh                                          # full size
#   EVENTS=20000 LATENCY_SECONDS=3 RUNS=1 scripts/bench-uplinks.sh    # a quick check of the script
#
# Environment: EVENTS (saturation events, default 100000), DEVICES (50), RATE (events/s of the
# latency runs, 5000), LATENCY_SECONDS (10), FANOUT_RATES (offered rates of the fan-out runs,
# "5000 1000"), RUNS (3), WINDOW (the gateway's max_inflight and the bare clients' window, 256),
# SYNCHRONOUS (full), STAGES ("nats amqp kafka eventbridge fanout"), EVENTBRIDGE_EVENTS (events
# of an EventBridge run, 20000), MOTO_SERVER (moto_server, e.g. scripts/test.sh's
# target/moto-venv/bin/moto_server), AMQP_URL (amqp://127.0.0.1:5672: RabbitMQ's
# guest login), BENCH_DIR (where the temp dir goes, default $TMPDIR or /tmp: a real disk),
# GATEWAY_BIN (a gateway binary to measure instead of building this tree's, e.g. one built from
# a clean checkout of a commit), KEEP=1 keeps the temp dir (logs, outputs, journals).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

EVENTS=${EVENTS:-100000}
DEVICES=${DEVICES:-50}
RATE=${RATE:-5000}
LATENCY_SECONDS=${LATENCY_SECONDS:-10}
FANOUT_RATES=${FANOUT_RATES:-5000 1000}
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-256}
SYNCHRONOUS=${SYNCHRONOUS:-full}
STAGES=${STAGES:-nats amqp kafka eventbridge fanout}
EVENTBRIDGE_EVENTS=${EVENTBRIDGE_EVENTS:-20000}
MOTO_SERVER=${MOTO_SERVER:-target/moto-venv/bin/moto_server}
AMQP_URL=${AMQP_URL:-amqp://127.0.0.1:5672}

for tool in nats-server mosquitto curl; do
  command -v "$tool" >/dev/null || { echo "bench-uplinks.sh: $tool is not installed" >&2; exit 1; }
done
amqp_hostport=${AMQP_URL#*://}
amqp_hostport=${amqp_hostport#*@}
amqp_hostport=${amqp_hostport%%/*}
(exec 3<>"/dev/tcp/${amqp_hostport%:*}/${amqp_hostport##*:}") 2>/dev/null ||
  { echo "bench-uplinks.sh: RabbitMQ does not listen at $AMQP_URL" >&2; exit 1; }

echo "== building (release)" >&2
# Two builds: the gateway exactly as scripts/bench.sh builds it, and edge-bench with its NATS and
# AMQP clients (features of edge-sim, which the gateway also links: one build would rebuild it).
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --locked -p edge-gateway --bin edge-gateway >&2
fi
cargo build --release --locked -p edge-sim --features nats,amqp,kafka --bin edge-bench >&2
gateway_bin=${GATEWAY_BIN:-$target_dir/release/edge-gateway}
bench_bin="$target_dir/release/edge-bench"

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/edge-bench-uplinks.XXXXXX")
run_id="edge-bench-${work##*.}"
exchange_gateway="$run_id-gateway"
exchange_bare="$run_id-bare"
exchange_fanout="$run_id-fanout"
queue="$run_id-queue"
pids=()

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  for exchange in "$exchange_gateway" "$exchange_bare" "$exchange_fanout"; do
    "$bench_bin" amqp-delete --amqp-url "$AMQP_URL" --exchange "$exchange" --queue "$queue" \
      >>"$work/amqp-delete.log" 2>&1 || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    echo "bench-uplinks.sh: logs and data kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

free_port() { "$bench_bin" free-port; }

wait_port() { # port, what
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench-uplinks.sh: $2 did not listen on port $1" >&2
  exit 1
}

# The value of `result name=$2` in file $1; with $3, of the consumer `via=$3`.
value() {
  awk -v name="$2" -v via="${3:-}" '
    $1 == "result" && $2 == "name=" name && (via == "" || $5 == "via=" via) {
      sub("value=", "", $3); print $3; exit
    }' "$1"
}

# A boot number per command: no two runs share message ids (JetStream de-duplicates them).
boot=$(($(date +%s) % 1000000000))

# utime + stime of process $1, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
clock_ticks=$(getconf CLK_TCK)
# "busy total" jiffies of the whole machine (every process, this script's or not).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
busy_percent() { # before, after (machine_ticks)
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
    if (y[2] > x[2]) printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]); else print "-" }'
}

median() {
  tr ' ' '\n' | awk 'NF && $1 != "-"' | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && a != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }
# The ratios of the pairs of lists $1 and $2 (space-separated, in run order).
ratios() {
  local -a a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  for i in "${!a[@]}"; do
    printf '%s ' "$(ratio "${a[$i]}" "${b[$i]:-}")"
  done
}
verdict() { # value, operator, target
  awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
    if (v == "-" || v == "") { print "-"; exit }
    ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "met" : "MISSED" }'
}

# results[key]: a space-separated list of the runs' figures.
declare -A results
add() { results[$1]="${results[$1]:-}${results[$1]:+ }${2:--}"; }
last() { local list=${results[$1]:-}; echo "${list##* }"; }

# ---------------------------------------------------------------- brokers
nats_port=$(free_port)
mkdir -p "$work/nats"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats/nats-server.log" 2>&1 &
pids+=("$!")
wait_port "$nats_port" "nats-server"
nats_url="nats://127.0.0.1:$nats_port"

cloud_port=$(free_port)
mkdir -p "$work/mosquitto"
# No limits on queues or the in-flight window towards the consumer, as in scripts/bench.sh.
cat >"$work/mosquitto/mosquitto.conf" <<EOF
listener $cloud_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
EOF
mosquitto -c "$work/mosquitto/mosquitto.conf" >"$work/mosquitto/mosquitto.log" 2>&1 &
pids+=("$!")
wait_port "$cloud_port" "mosquitto"

kafka_bootstrap=""
case " $STAGES " in
  *" kafka "*)
    "$bench_bin" kafka-cluster --brokers 3 --partitions 4 \
      --topics gw.events,gw.alerts,gw.status,bare.events >"$work/kafka.out" 2>"$work/kafka.err" &
    pids+=("$!")
    for _ in $(seq 1 200); do
      kafka_bootstrap=$(sed -n 's/^bootstrap=//p' "$work/kafka.out")
      [ -n "$kafka_bootstrap" ] && break
      sleep 0.05
    done
    [ -n "$kafka_bootstrap" ] || { echo "bench-uplinks.sh: the mock Kafka cluster did not start" >&2; exit 1; }
    ;;
esac

# ---------------------------------------------------------------- gateways
uplink() { # type, then the table's other lines
  local kind=$1
  shift
  printf '[[uplink]]\nname = "%s"\ntype = "%s"\n' "$kind" "$kind"
  printf '%s\n' "$@" "max_inflight = $WINDOW" 'reconnect_min = "100ms"' 'reconnect_max = "1s"' ''
}
nats_uplink() { uplink nats "url = \"$nats_url\"" "stream = \"$1\"" "subject_prefix = \"$2\""; }
amqp_uplink() { uplink amqp "url = \"$AMQP_URL\"" "exchange = \"$1\""; }
kafka_uplink() {
  local brokers="\"${kafka_bootstrap//,/\", \"}\""
  uplink kafka "brokers = [$brokers]" "topic = \"$1.events\"" "alerts_topic = \"$1.alerts\"" \
    "status_topic = \"$1.status\""
}
mqtt_uplink() {
  uplink mqtt "url = \"mqtt://127.0.0.1:$cloud_port\"" "topic_prefix = \"$1\"" \
    "client_id = \"edge-gateway-$1\""
}

declare -A gateway_pid gateway_device_port gateway_admin_port
# Starts gateway $1 with the uplink tables on stdin; returns once every uplink is connected.
# (Called with `< <(…)`, not in a pipe: a pipe would run it in a subshell.)
start_gateway() {
  local name=$1 dir="$work/gateway-$1" device_port admin_port uplinks
  device_port=$(free_port)
  admin_port=$(free_port)
  mkdir -p "$dir"
  {
    cat <<EOF
[gateway]
id = "bench-gw"
data_dir = "$dir/data"

[devices]
listen = "127.0.0.1:$device_port"

[journal]
max_size = "1GiB"
synchronous = "$SYNCHRONOUS"

[admin]
listen = "127.0.0.1:$admin_port"

EOF
    cat
  } >"$dir/gateway.toml"
  uplinks=$(grep -c '^\[\[uplink\]\]' "$dir/gateway.toml")
  EDGE_LOG=warn "$gateway_bin" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" &
  gateway_pid[$name]=$!
  pids+=("$!")
  gateway_device_port[$name]=$device_port
  gateway_admin_port[$name]=$admin_port
  wait_port "$device_port" "gateway $name (devices)"
  wait_port "$admin_port" "gateway $name (admin)"
  for _ in $(seq 1 200); do
    [ "$(metric_sum "$name" edge_uplink_connected)" = "$uplinks" ] && return 0
    sleep 0.05
  done
  echo "bench-uplinks.sh: gateway $name: not every uplink connected; see $dir/gateway.log" >&2
  exit 1
}
stop_gateway() {
  kill -TERM "${gateway_pid[$1]}" 2>/dev/null || true
  wait "${gateway_pid[$1]}" 2>/dev/null || true
}
# The sum of every series of metric $2 on gateway $1's /metrics.
metric_sum() {
  curl -fsS "http://127.0.0.1:${gateway_admin_port[$1]}/metrics" |
    awk -v metric="$2" '$1 == metric || index($1, metric "{") == 1 { sum += $2 } END { print sum + 0 }'
}

# ---------------------------------------------------------------- runs
# Runs `edge-bench $2 …` with a new boot into file $1 (stdout; stderr beside it) and adds the
# machine's busy share to series `$series-busy`; never fails the script.
bench() {
  local file=$1 before after
  shift
  boot=$((boot + 1))
  out="$work/$file-$boot.out"
  before=$(machine_ticks)
  "$bench_bin" "$@" --boot "$boot" >"$out" 2>"$out.err" ||
    echo "bench-uplinks.sh: edge-bench $1 failed; see $out.err" >&2
  after=$(machine_ticks)
  add "$series-busy" "$(busy_percent "$before" "$after")"
}

# A gateway run of kind $1 (saturate, or latency at `rate` events/s) through gateway $2 into
# series `series`, with the consumers $3…; adds the gateway's CPU per event to `$series-cpu`.
gateway_run() {
  local kind=$1 name=$2 before after events
  shift 2
  before=$(cpu_ticks "${gateway_pid[$name]}")
  if [ "$kind" = saturate ]; then
    events=$EVENTS
    bench "$series" saturate --device-port "${gateway_device_port[$name]}" --devices "$DEVICES" \
      --events "$events" "$@"
  else
    events=$((rate * LATENCY_SECONDS))
    bench "$series" latency --device-port "${gateway_device_port[$name]}" --devices "$DEVICES" \
      --rate "$rate" --seconds "$LATENCY_SECONDS" "$@"
  fi
  after=$(cpu_ticks "${gateway_pid[$name]}")
  add "$series-cpu" "$(awk -v t=$((after - before)) -v hz="$clock_ticks" -v n="$events" \
    'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
}

# Records a saturation run's figures (consumer $1) under `series`, and says them.
saturation_figures() {
  add "$series" "$(value "$out" saturate_rate "$1")"
  add "$series-lost" "$(value "$out" saturate_lost "$1")"
  log "$series run $run: $(last "$series") events/s at the consumer, lost $(last "$series-lost"); machine $(last "$series-busy") % busy"
}
# Records a latency run's figures (consumer $1) under `series`, and says them.
latency_figures() {
  local q
  for q in p50 p99 max lost; do
    add "$series-$q" "$(value "$out" "latency_$q" "$1")"
  done
  log "$series run $run: at $rate/s p50 $(last "$series-p50") p99 $(last "$series-p99") max $(last "$series-max") ms, lost $(last "$series-lost"); machine $(last "$series-busy") % busy"
}

# ---------------------------------------------------------------- per destination
# Stage $1 (nats, amqp or kafka): the gateway with that uplink only, against the bare client.
destination_stage() {
  local dest=$1 gateway_args bare_args
  case $dest in
    nats)
      start_gateway nats < <(nats_uplink GATEWAY gw)
      gateway_args=(--nats-url "$nats_url" --stream GATEWAY --subject-prefix gw)
      bare_args=(--nats-url "$nats_url" --stream BARE --subject-prefix bare)
      ;;
    amqp)
      start_gateway amqp < <(amqp_uplink "$exchange_gateway")
      gateway_args=(--amqp-url "$AMQP_URL" --exchange "$exchange_gateway" --queue "$queue")
      bare_args=(--amqp-url "$AMQP_URL" --exchange "$exchange_bare" --queue "$queue")
      ;;
    kafka)
      start_gateway kafka < <(kafka_uplink gw)
      gateway_args=(--kafka-brokers "$kafka_bootstrap" --kafka-topic gw.events)
      bare_args=(--kafka-brokers "$kafka_bootstrap" --kafka-topic bare.events)
      ;;
  esac
  rate=$RATE
  for run in $(seq 1 "$RUNS"); do
    series=$dest-gateway-saturate
    gateway_run saturate "$dest" "${gateway_args[@]}"
    saturation_figures "$dest"
    series=$dest-bare-saturate
    bench "$series" bare-saturate --devices "$DEVICES" --events "$EVENTS" --window "$WINDOW" \
      "${bare_args[@]}"
    saturation_figures "$dest"
  done
  for run in $(seq 1 "$RUNS"); do
    series=$dest-gateway-latency
    gateway_run latency "$dest" "${gateway_args[@]}"
    latency_figures "$dest"
    series=$dest-bare-latency
    bench "$series" bare-latency --devices "$DEVICES" --rate "$rate" \
      --seconds "$LATENCY_SECONDS" --window "$WINDOW" "${bare_args[@]}"
    latency_figures "$dest"
  done
  results[$dest-rejected]=$(metric_sum "$dest" edge_uplink_rejected_total)
  results[$dest-stalls]=$(metric_sum "$dest" edge_uplink_stalls_total)
  stop_gateway "$dest"
}

# ---------------------------------------------------------------- EventBridge
# Stage eventbridge: the gateway saturating moto's PutEvents (a bus with no rule, so that moto
# spends least); entries/s from the first device publish to the last entry confirmed, and the
# PutEvents calls that took (moto's access log: one line per call).
eventbridge_stage() {
  local moto_port calls_before calls_after acked_before started finished
  [ -x "$MOTO_SERVER" ] || command -v "$MOTO_SERVER" >/dev/null ||
    { echo "bench-uplinks.sh: $MOTO_SERVER not found: set MOTO_SERVER" >&2; exit 1; }
  moto_port=$(free_port)
  "$MOTO_SERVER" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  pids+=("$!")
  wait_port "$moto_port" "moto"
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$moto_port/" \
    -H 'X-Amz-Target: AWSEvents.CreateEventBus' -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{"Name":"bench"}'
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    start_gateway eventbridge < <(uplink eventbridge 'event_bus = "bench"' 'region = "us-east-1"' \
      "endpoint = \"http://127.0.0.1:$moto_port\"")
  for run in $(seq 1 "$RUNS"); do
    series=eventbridge-saturate
    calls_before=$(grep -c 'POST / ' "$work/moto.log" || true)
    acked_before=$(metric_sum eventbridge edge_uplink_acked_total)
    started=$(date +%s.%N)
    bench "$series" fill --device-port "${gateway_device_port[eventbridge]}" --devices "$DEVICES" \
      --events "$EVENTBRIDGE_EVENTS"
    while [ "$(metric_sum eventbridge edge_uplink_acked_total)" -lt $((acked_before + EVENTBRIDGE_EVENTS)) ]; do
      sleep 0.05
    done
    finished=$(date +%s.%N)
    calls_after=$(grep -c 'POST / ' "$work/moto.log" || true)
    add "$series" "$(awk -v n="$EVENTBRIDGE_EVENTS" -v a="$started" -v b="$finished" 'BEGIN { printf "%.0f", n / (b - a) }')"
    add "$series-calls" "$(awk -v n="$EVENTBRIDGE_EVENTS" -v c=$((calls_after - calls_before)) 'BEGIN { printf "%.1f", c * 1000 / n }')"
    log "$series run $run: $(last "$series") entries/s, $(last "$series-calls") PutEvents calls per 1 000 events; machine $(last "$series-busy") % busy"
  done
  results[eventbridge-rejected]=$(metric_sum eventbridge edge_uplink_rejected_total)
  stop_gateway eventbridge
}

# ---------------------------------------------------------------- fan-out
fanout_stage() {
  local via
  start_gateway one < <(mqtt_uplink edge)
  start_gateway three < <(
    mqtt_uplink fan
    nats_uplink FANOUT fan
    amqp_uplink "$exchange_fanout"
  )
  for rate in $FANOUT_RATES; do
    for run in $(seq 1 "$RUNS"); do
      series=fanout-one-$rate
      gateway_run latency one --cloud-port "$cloud_port" --filter 'edge/#'
      latency_figures mqtt
      log "$series run $run: gateway CPU $(last "$series-cpu") µs/event"
      series=fanout-three-$rate
      gateway_run latency three --cloud-port "$cloud_port" --filter 'fan/#' \
        --nats-url "$nats_url" --stream FANOUT --subject-prefix fan \
        --amqp-url "$AMQP_URL" --exchange "$exchange_fanout" --queue "$queue"
      for via in mqtt nats amqp; do
        add "$series-p99-$via" "$(value "$out" latency_p99 "$via")"
        add "$series-lost-$via" "$(value "$out" latency_lost "$via")"
      done
      log "$series run $run: gateway CPU $(last "$series-cpu") µs/event; p99 mqtt $(last "$series-p99-mqtt"), nats $(last "$series-p99-nats"), amqp $(last "$series-p99-amqp") ms; lost $(last "$series-lost-mqtt")/$(last "$series-lost-nats")/$(last "$series-lost-amqp"); machine $(last "$series-busy") % busy"
    done
  done
  results[fanout-rejected]=$(metric_sum three edge_uplink_rejected_total)
  stop_gateway one
  stop_gateway three
}

for stage in $STAGES; do
  case $stage in
    nats | amqp | kafka)
      log "stage $stage: gateway against the bare client, $RUNS runs"
      destination_stage "$stage"
      ;;
    eventbridge)
      log "stage eventbridge: the gateway saturating moto's PutEvents, $RUNS runs"
      eventbridge_stage
      ;;
    fanout)
      log "stage fanout: one uplink against three, $RUNS runs at each of $FANOUT_RATES events/s"
      fanout_stage
      ;;
    *) echo "bench-uplinks.sh: unknown stage $stage" >&2; exit 1 ;;
  esac
done

# ---------------------------------------------------------------- summary
row() { printf '| %-44s | %9s | %9s | %9s | %-15s | %s |\n' "$@"; }
# A row of series $2 (gateway) against $3 (reference) under title $1, with a target on the
# ratio ($4 operator, $5 value; none if empty).
compare() {
  local gateway=${results[$2]:-} reference=${results[$3]:-} r target=""
  r=$(ratios "$gateway" "$reference" | median)
  [ -n "${5:-}" ] && target="$4 $5: $(verdict "$r" "$4" "$5")"
  row "$1" "$(median <<<"$gateway")" "$(median <<<"$reference")" "$r" "$target" "$gateway; $reference"
}
echo
echo "machine: $(nproc) cores, Linux $(uname -r); nats-server $(nats-server --version | awk '{ print $2 }'); synchronous = \"$SYNCHRONOUS\"; $DEVICES devices; window $WINDOW"
echo "sizes: EVENTS=$EVENTS RATE=$RATE LATENCY_SECONDS=$LATENCY_SECONDS FANOUT_RATES=\"$FANOUT_RATES\" RUNS=$RUNS (medians of the runs; a ratio is the median of the per-run ratios)"
for dest in nats amqp kafka; do
  case " $STAGES " in *" $dest "*) ;; *) continue ;; esac
  echo
  row "$dest" "gateway" "bare" "ratio" "target" "runs (gateway; bare)"
  row "---" "---:" "---:" "---:" "---" "---"
  compare "saturation (events/s at the consumer)" "$dest-gateway-saturate" "$dest-bare-saturate" ">=" 0.8
  compare "latency p50 at $RATE events/s (ms)" "$dest-gateway-latency-p50" "$dest-bare-latency-p50"
  compare "latency p99 at $RATE events/s (ms)" "$dest-gateway-latency-p99" "$dest-bare-latency-p99" "<=" 1.25
  compare "latency max at $RATE events/s (ms)" "$dest-gateway-latency-max" "$dest-bare-latency-max"
  compare "events lost: saturation" "$dest-gateway-saturate-lost" "$dest-bare-saturate-lost"
  compare "events lost: latency" "$dest-gateway-latency-lost" "$dest-bare-latency-lost"
  compare "machine busy: saturation (%)" "$dest-gateway-saturate-busy" "$dest-bare-saturate-busy"
  compare "machine busy: latency (%)" "$dest-gateway-latency-busy" "$dest-bare-latency-busy"
  row "gateway CPU per event at $RATE/s (µs)" "$(median <<<"${results[$dest-gateway-latency-cpu]:-}")" "" "" "" "${results[$dest-gateway-latency-cpu]:-}"
  echo "$dest: the gateway's uplink counted ${results[$dest-rejected]:-0} rejections and ${results[$dest-stalls]:-0} stalls"
done
case " $STAGES " in
  *" eventbridge "*)
    echo
    row "eventbridge (moto, $EVENTBRIDGE_EVENTS events)" "gateway" "" "" "target" "runs"
    row "---" "---:" "---:" "---:" "---" "---"
    calls=$(median <<<"${results[eventbridge-saturate-calls]:-}")
    row "saturation (entries/s confirmed)" "$(median <<<"${results[eventbridge-saturate]:-}")" "" "" "" "${results[eventbridge-saturate]:-}"
    row "PutEvents calls per 1 000 events" "$calls" "" "" "<= 110: $(verdict "$calls" "<=" 110)" "${results[eventbridge-saturate-calls]:-}"
    row "machine busy (%)" "$(median <<<"${results[eventbridge-saturate-busy]:-}")" "" "" "" ""
    echo "eventbridge: the gateway's uplink counted ${results[eventbridge-rejected]:-0} rejections"
    ;;
esac
case " $STAGES " in
  *" fanout "*)
    echo
    row "fan-out" "one" "three" "ratio" "target" "runs (three; one)"
    row "---" "---:" "---:" "---:" "---" "---"
    for rate in $FANOUT_RATES; do
      one=${results[fanout-one-$rate-cpu]:-}
      three=${results[fanout-three-$rate-cpu]:-}
      r=$(ratios "$three" "$one" | median)
      row "gateway CPU per event at $rate/s (µs)" "$(median <<<"$one")" "$(median <<<"$three")" "$r" \
        "<= 1.5: $(verdict "$r" "<=" 1.5)" "$three; $one"
      row "latency p99 at $rate/s (ms): mqtt|nats|amqp" "$(median <<<"${results[fanout-one-$rate-p99]:-}")" \
        "$(median <<<"${results[fanout-three-$rate-p99-mqtt]:-}")|$(median <<<"${results[fanout-three-$rate-p99-nats]:-}")|$(median <<<"${results[fanout-three-$rate-p99-amqp]:-}")" \
        "" "" ""
      row "machine busy at $rate/s (%)" "$(median <<<"${results[fanout-one-$rate-busy]:-}")" \
        "$(median <<<"${results[fanout-three-$rate-busy]:-}")" "" "" ""
    done
    echo "fan-out: the three-uplink gateway counted ${results[fanout-rejected]:-0} rejections"
    ;;
esac
echo "logs: $work (kept with KEEP=1)"
