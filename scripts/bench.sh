#!/usr/bin/env bash
# Benchmarks the gateway end to end, and a Mosquitto bridge on the same load for comparison.
#
#   devices (edge-bench) ──MQTT──▶ edge-gateway (synchronous = "full") ──MQTT QoS 1──▶ Mosquitto "cloud" ──▶ edge-bench subscriber
#   devices (edge-bench) ──MQTT──▶ Mosquitto bridge (topic devices/# out 1)  ──MQTT QoS 1──▶ the same "cloud"
#
# Prints: events/s at saturation (measured at the cloud, first to last receive), latency
# percentiles at a fixed rate, the forwarder's peak RSS, and for both the drain rate of a backlog
# built while the cloud broker was down (with the RSS while the backlog sits and while it drains).
#
# Everything runs on 127.0.0.1 with ephemeral ports and a temp dir; every process started here is
# stopped on exit. Sizes can be scaled down for a quick check:
#
#   scripts/bench.sh                                   # full size
#   EVENTS=20000 BACKLOG=50000 LATENCY_SECONDS=5 SIT_SECONDS=2 scripts/bench.sh
#
# Environment: BATCH (events per uplink message: sets the uplink's `batch = { max_events }`;
# default empty, one event per message), WORKER_THREADS (the gateway's `worker_threads`; default
# empty: the gateway's default), EVENTS (saturation events, default 200000), DEVICES (50), RATE (5000 events/s),
# LATENCY_SECONDS (20), BACKLOG (1000000), FILL_RATE (events/s while the backlog is built,
# default 20000; empty: as fast as the device broker acks), SIT_SECONDS (10), DRAIN_TIMEOUT (600:
# seconds a drain may take at most), SETTLE_SECONDS (pause
# between the saturation and the latency run, for the gateway and the bridge alike, 10: fsyncs
# are slower for a few seconds after a burst, see docs/benchmarks.md), SYNCHRONOUS (full),
# BENCH_DIR (where the temp dir goes, default $TMPDIR or /tmp: it must be a real disk for
# synchronous = "full" to mean anything), GATEWAY_BIN (a gateway binary to measure instead of
# this tree's), KEEP=1 keeps the temp dir (logs, journal).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

EVENTS=${EVENTS:-200000}
DEVICES=${DEVICES:-50}
RATE=${RATE:-5000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
BACKLOG=${BACKLOG:-1000000}
FILL_RATE=${FILL_RATE-20000}
SIT_SECONDS=${SIT_SECONDS:-10}
SETTLE_SECONDS=${SETTLE_SECONDS:-10}
SYNCHRONOUS=${SYNCHRONOUS:-full}
BATCH=${BATCH:-}
WORKER_THREADS=${WORKER_THREADS:-}

command -v mosquitto >/dev/null || { echo "bench.sh: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }

echo "== building (release)" >&2
cargo build --release --locked -p edge-gateway -p edge-sim --bin edge-gateway --bin edge-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
gateway_bin=${GATEWAY_BIN:-"$target_dir/release/edge-gateway"}
bench_bin="$target_dir/release/edge-bench"

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/edge-bench.XXXXXX")
pids=()
sampler_pid=""

cleanup() {
  local status=$?
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    echo "bench.sh: logs and data kept in $work" >&2
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
  echo "bench.sh: $2 did not listen on port $1" >&2
  exit 1
}

# The value of `result name=$2` in file $1.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of process $1
clock_ticks=$(getconf CLK_TCK)
# CPU µs per event: ticks $1 -> $2 over $3 events.
cpu_us() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$clock_ticks" 'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }'; }
value() { awk -v name="$2" '$1 == "result" && $2 == "name=" name { sub("value=", "", $3); print $3 }' "$1"; }

# RSS sampling: every 100 ms, "phase kB" lines for the process $1 into $2; the phase is the
# content of $work/phase.
start_sampler() {
  local pid=$1 out=$2
  (
    while [ -r "/proc/$pid/status" ]; do
      rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
      [ -n "$rss" ] && echo "$(cat "$work/phase") $rss"
      sleep 0.1
    done
  ) >"$out" &
  sampler_pid=$!
}
stop_sampler() { kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""; }
phase() { echo "$1" >"$work/phase"; }
# Peak sampled RSS in MB: of phase $2 (or all phases if empty) in file $1.
peak_mb() { awk -v phase="$2" 'phase == "" || $1 == phase { if ($2 > max) max = $2 } END { printf "%.1f", max / 1024 }' "$1"; }
# First and last sampled RSS in MB of phase $2.
first_mb() { awk -v phase="$2" '$1 == phase { printf "%.1f", $2 / 1024; exit }' "$1"; }
last_mb() { awk -v phase="$2" '$1 == phase { last = $2 } END { printf "%.1f", last / 1024 }' "$1"; }
hwm_mb() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Subscribes a drain subscriber for the backlog of boot $3 (filter $2, output in $work/$1)
# while the cloud is up, so that its session outlives the cloud's restart, then stops the cloud.
# Sets cut_drain_pid.
cut_drain_pid=""
cut_off() {
  "$bench_bin" drain --cloud-port "$cloud_port" --filter "$2" --events "$BACKLOG" --boot "$3" \
    --session "edge-bench-drain-$3" >"$work/$1/drain.out" 2>"$work/$1/drain.err" &
  cut_drain_pid=$!
  pids+=("$cut_drain_pid")
  for _ in $(seq 1 200); do grep -q '^ready' "$work/$1/drain.out" && break; sleep 0.05; done
  grep -q '^ready' "$work/$1/drain.out" || { echo "bench.sh: the $1's drain subscriber did not subscribe" >&2; exit 1; }
  stop_cloud
  log "$1: cloud down; fill $BACKLOG events at ${FILL_RATE:-an unlimited rate} events/s"
}

# Waits for the drain subscriber $1 to finish, at most DRAIN_TIMEOUT seconds (default 600): a
# subscriber that never hears from the cloud again must not hang the benchmark.
wait_drain() {
  local deadline=$(($(date +%s) + ${DRAIN_TIMEOUT:-600}))
  while kill -0 "$1" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$1" 2>/dev/null; then
    echo "bench.sh: the drain took longer than ${DRAIN_TIMEOUT:-600} s; stopped its subscriber" >&2
    kill "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}

metric() { # the value of series $1 on the gateway's /metrics
  curl -fsS "http://127.0.0.1:$admin_port/metrics" | awk -v series="$1" '$1 == series { print $2 }'
}

# ---------------------------------------------------------------- the "cloud" broker
cloud_port=$(free_port)
mkdir -p "$work/cloud"
# Persistence keeps the drain subscriber's session across the outage; no limits on queues or
# the in-flight window towards subscribers, so the cloud side is not what is measured.
cat >"$work/cloud/mosquitto.conf" <<EOF
listener $cloud_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/cloud/
autosave_interval 3600
max_queued_messages 0
max_inflight_messages 0
EOF
cloud_pid=""
start_cloud() {
  mosquitto -c "$work/cloud/mosquitto.conf" >>"$work/cloud/mosquitto.log" 2>&1 &
  cloud_pid=$!
  pids+=("$cloud_pid")
  wait_port "$cloud_port" "the cloud mosquitto"
}
stop_cloud() {
  kill -TERM "$cloud_pid"
  wait "$cloud_pid" 2>/dev/null || true
}
start_cloud

# ---------------------------------------------------------------- the gateway
device_port=$(free_port)
admin_port=$(free_port)
mkdir -p "$work/gateway"
batch_line=""
if [ -n "$BATCH" ]; then batch_line="batch = { max_events = $BATCH }"; fi
workers_line=""
if [ -n "$WORKER_THREADS" ]; then workers_line="worker_threads = $WORKER_THREADS"; fi
cat >"$work/gateway/gateway.toml" <<EOF
[gateway]
id = "bench-gw"
data_dir = "$work/gateway/data"
$workers_line

[devices]
listen = "127.0.0.1:$device_port"

[uplink]
url = "mqtt://127.0.0.1:$cloud_port"
topic_prefix = "edge"
reconnect_min = "100ms"
reconnect_max = "1s"
$batch_line

[journal]
max_size = "1GiB"
synchronous = "$SYNCHRONOUS"

[admin]
listen = "127.0.0.1:$admin_port"
EOF
log "gateway: devices on $device_port, cloud on $cloud_port, data in $work/gateway/data"
phase start
EDGE_LOG=warn "$gateway_bin" run --config "$work/gateway/gateway.toml" 2>"$work/gateway/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_port "$device_port" "the gateway's device broker"
wait_port "$admin_port" "the gateway's admin server"
start_sampler "$gateway_pid" "$work/gateway/rss"

phase saturate
log "gateway: saturate ($EVENTS events, $DEVICES devices)"
"$bench_bin" saturate --device-port "$device_port" --cloud-port "$cloud_port" --filter 'edge/#' \
  --devices "$DEVICES" --events "$EVENTS" | tee "$work/gateway/saturate.out" || true

sleep "$SETTLE_SECONDS"
phase latency
log "gateway: latency ($RATE events/s for $LATENCY_SECONDS s)"
g_ticks_before=$(cpu_ticks "$gateway_pid")
"$bench_bin" latency --device-port "$device_port" --cloud-port "$cloud_port" --filter 'edge/#' \
  --devices "$DEVICES" --rate "$RATE" --seconds "$LATENCY_SECONDS" | tee "$work/gateway/latency.out" || true
g_ticks_after=$(cpu_ticks "$gateway_pid")

# The backlog: the drain subscriber's session is made while the cloud is up, then the cloud
# goes down, the devices fill the journal, the backlog sits, the cloud comes back.
boot=$(( $(date +%s) % 1000000000 ))
cut_off gateway 'edge/#' "$boot"
drain_pid=$cut_drain_pid
phase fill
fill_started=$(date +%s.%N)
"$bench_bin" fill --device-port "$device_port" --devices "$DEVICES" --events "$BACKLOG" --boot "$boot" \
  ${FILL_RATE:+--rate "$FILL_RATE"} | tee "$work/gateway/fill.out" || true
# Wait until the journal holds the whole backlog, or its row count stops growing for 5 s.
previous=-1
stable=0
while [ "$stable" -lt 50 ]; do
  rows=$(metric edge_journal_rows || true)
  rows=${rows:-0}
  [ "$rows" -ge "$BACKLOG" ] && break
  if [ "$rows" = "$previous" ]; then stable=$((stable + 1)); else stable=0; fi
  previous=$rows
  sleep 0.1
done
fill_seconds=$(awk -v a="$(date +%s.%N)" -v b="$fill_started" 'BEGIN { printf "%.1f", a - b }')
rows=$(metric edge_journal_rows)
log "gateway: $rows rows in the journal after ${fill_seconds} s"
phase sit
sleep "$SIT_SECONDS"
journal_mb=$(du -sm "$work/gateway/data" | cut -f1)
phase drain
log "gateway: cloud up; drain"
start_cloud
wait_drain "$drain_pid"
grep '^result' "$work/gateway/drain.out" || true
sleep 0.5
rows_after=$(metric edge_journal_rows)
phase end
gateway_hwm=$(hwm_mb "$gateway_pid")
stop_sampler
kill -TERM "$gateway_pid"
wait "$gateway_pid" 2>/dev/null || true

# ---------------------------------------------------------------- the Mosquitto bridge
bridge_port=$(free_port)
mkdir -p "$work/bridge"
# A broker for the devices that forwards devices/# to the cloud at QoS 1, with the same in-flight
# window as the gateway's uplink (max_inflight = 256) and no queue limit (so nothing is dropped).
# It keeps messages in memory only: nothing is synced to disk, unlike the gateway's journal. Its
# sessions are kept (cleansession false), so that it queues what devices send while the cloud is
# down, as the gateway does: without that a bridge drops it.
cat >"$work/bridge/mosquitto.conf" <<EOF
listener $bridge_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 256

connection cloud
address 127.0.0.1:$cloud_port
topic devices/# out 1
cleansession false
bridge_protocol_version mqttv311
EOF
mosquitto -c "$work/bridge/mosquitto.conf" >"$work/bridge/mosquitto.log" 2>&1 &
bridge_pid=$!
pids+=("$bridge_pid")
wait_port "$bridge_port" "the bridge mosquitto"
sleep 1 # the bridge connects to the cloud
start_sampler "$bridge_pid" "$work/bridge/rss"

phase saturate
log "bridge: saturate ($EVENTS events, $DEVICES devices)"
"$bench_bin" saturate --device-port "$bridge_port" --cloud-port "$cloud_port" --filter 'devices/#' \
  --devices "$DEVICES" --events "$EVENTS" | tee "$work/bridge/saturate.out" || true
sleep "$SETTLE_SECONDS"
phase latency
log "bridge: latency ($RATE events/s for $LATENCY_SECONDS s)"
b_ticks_before=$(cpu_ticks "$bridge_pid")
"$bench_bin" latency --device-port "$bridge_port" --cloud-port "$cloud_port" --filter 'devices/#' \
  --devices "$DEVICES" --rate "$RATE" --seconds "$LATENCY_SECONDS" | tee "$work/bridge/latency.out" || true
b_ticks_after=$(cpu_ticks "$bridge_pid")

# The same backlog through the bridge: it holds it in memory.
b_boot=$((boot + 1))
cut_off bridge 'devices/#' "$b_boot"
b_drain_pid=$cut_drain_pid
phase fill
"$bench_bin" fill --device-port "$bridge_port" --devices "$DEVICES" --events "$BACKLOG" --boot "$b_boot" \
  ${FILL_RATE:+--rate "$FILL_RATE"} | tee "$work/bridge/fill.out" || true
phase sit
sleep "$SIT_SECONDS"
phase drain
log "bridge: cloud up; drain"
start_cloud
wait_drain "$b_drain_pid"
grep '^result' "$work/bridge/drain.out" || true
phase end
bridge_hwm=$(hwm_mb "$bridge_pid")
stop_sampler

# ---------------------------------------------------------------- the reference
# One broker, publisher -> subscriber: what a single hop costs on this machine.
mkdir -p "$work/reference"
log "reference: saturate one mosquitto ($EVENTS events, $DEVICES devices)"
"$bench_bin" saturate --device-port "$cloud_port" --cloud-port "$cloud_port" --filter 'devices/#' \
  --devices "$DEVICES" --events "$EVENTS" | tee "$work/reference/saturate.out" || true

# ---------------------------------------------------------------- summary
g_sat=$(value "$work/gateway/saturate.out" saturate_rate)
b_sat=$(value "$work/bridge/saturate.out" saturate_rate)
r_sat=$(value "$work/reference/saturate.out" saturate_rate)
g_p50=$(value "$work/gateway/latency.out" latency_p50)
b_p50=$(value "$work/bridge/latency.out" latency_p50)
g_p99=$(value "$work/gateway/latency.out" latency_p99)
b_p99=$(value "$work/bridge/latency.out" latency_p99)
g_max=$(value "$work/gateway/latency.out" latency_max)
latency_events=$((RATE * LATENCY_SECONDS))
g_cpu=$(cpu_us "$g_ticks_before" "$g_ticks_after" "$latency_events")
b_cpu=$(cpu_us "$b_ticks_before" "$b_ticks_after" "$latency_events")
b_max=$(value "$work/bridge/latency.out" latency_max)
g_rss=$(peak_mb "$work/gateway/rss" "")
b_rss=$(peak_mb "$work/bridge/rss" "")
drain_rate=$(value "$work/gateway/drain.out" drain_rate)
b_drain_rate=$(value "$work/bridge/drain.out" drain_rate)
b_drain_received=$(value "$work/bridge/drain.out" drain_received)
b_drain_rss=$(peak_mb "$work/bridge/rss" drain)
b_sit_rss=$(last_mb "$work/bridge/rss" sit)
drain_received=$(value "$work/gateway/drain.out" drain_received)
fill_rss=$(peak_mb "$work/gateway/rss" fill)
sit_first=$(first_mb "$work/gateway/rss" sit)
sit_last=$(last_mb "$work/gateway/rss" sit)
drain_rss=$(peak_mb "$work/gateway/rss" drain)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
check() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "met" : "MISSED" }'; }

echo
echo "machine: $(nproc) cores, Linux $(uname -r); synchronous = \"$SYNCHRONOUS\"; $DEVICES devices; uplink batch: ${BATCH:-off}; worker_threads: ${WORKER_THREADS:-default}"
echo "sizes: EVENTS=$EVENTS RATE=$RATE LATENCY_SECONDS=$LATENCY_SECONDS SETTLE_SECONDS=$SETTLE_SECONDS BACKLOG=$BACKLOG FILL_RATE=$FILL_RATE SIT_SECONDS=$SIT_SECONDS"
echo
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "figure" "gateway" "mq bridge" "gateway / bridge" "target (gateway)"
printf '|%s|%s|%s|%s|%s|\n' "--------------------------------------------" "--------------" "--------------" "------------------" "------------------------"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "forwarded at saturation (events/s)" "$g_sat" "$b_sat" "$(ratio "$g_sat" "$b_sat")" ">= 50000: $(check "$g_sat" ">=" 50000)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "reference: one broker, pub -> sub (events/s)" "-" "-" "$(ratio "$g_sat" "$r_sat") of $r_sat" ""
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "saturation: events lost (of $EVENTS acked)" "$(value "$work/gateway/saturate.out" saturate_lost)" "$(value "$work/bridge/saturate.out" saturate_lost)" "" "0"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "latency p50 at $RATE events/s (ms)" "$g_p50" "$b_p50" "$(ratio "$g_p50" "$b_p50")" ""
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "latency p99 at $RATE events/s (ms)" "$g_p99" "$b_p99" "$(ratio "$g_p99" "$b_p99")" "<= 10: $(check "$g_p99" "<=" 10)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "latency max at $RATE events/s (ms)" "$g_max" "$b_max" "$(ratio "$g_max" "$b_max")" ""
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "CPU per event at $RATE events/s (µs)" "$g_cpu" "$b_cpu" "$(ratio "$g_cpu" "$b_cpu")" ""
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "latency run: events lost" "$(value "$work/gateway/latency.out" latency_lost)" "$(value "$work/bridge/latency.out" latency_lost)" "" "0"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "peak RSS, sampled every 100 ms (MB)" "$g_rss" "$b_rss" "$(ratio "$g_rss" "$b_rss")" "<= 30: $(check "$g_rss" "<=" 30)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "peak RSS, VmHWM (MB)" "$gateway_hwm" "$bridge_hwm" "$(ratio "$gateway_hwm" "$bridge_hwm")" "<= 30: $(check "$gateway_hwm" "<=" 30)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "backlog drain (events/s)" "$drain_rate" "$b_drain_rate" "$(ratio "$drain_rate" "$b_drain_rate")" ">= 2x bridge: $(check "$(ratio "$drain_rate" "$b_drain_rate")" ">=" 2)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "backlog: distinct events that arrived" "$drain_received" "$b_drain_received" "" "$BACKLOG"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "RSS while the backlog sits (MB)" "$sit_last" "$b_sit_rss" "$(ratio "$sit_last" "$b_sit_rss")" "<= 30: $(check "$sit_last" "<=" 30)"
printf '| %-42s | %12s | %12s | %16s | %-22s |\n' "peak RSS while draining (MB)" "$drain_rss" "$b_drain_rss" "$(ratio "$drain_rss" "$b_drain_rss")" "<= 30: $(check "$drain_rss" "<=" 30)"
echo
echo "backlog: $(value "$work/gateway/fill.out" fill_acked) events acked to devices; the journal reached $rows rows in ${fill_seconds} s ($(value "$work/gateway/fill.out" fill_publish_rate) events/s acked to devices), journal $journal_mb MB on disk, $rows_after rows left after the drain"
echo "gateway RSS (MB): peak during fill $fill_rss; while the backlog sat ${SIT_SECONDS} s: $sit_first -> $sit_last; peak during drain $drain_rss"
echo "logs: $work (kept with KEEP=1)"
