#!/usr/bin/env bash
# The journal's write load on storage at low, steady rates: what an SD card sees.
#
#   devices (edge-bench latency, paced) ──MQTT──▶ edge-gateway (synchronous = "full") ──▶ Mosquitto "cloud"
#
# For each profile and rate, after a warm-up, over RUN_SECONDS: bytes the gateway caused to be
# written to storage per event (its own edge_storage_written_bytes_total, from /proc/self/io:
# WAL, checkpoints and all), syncs per second (fsync and fdatasync calls, counted by strace
# on the process), commits per second, and the latency percentiles and loss from the load
# generator. Profiles:
#   default   the shipped [journal] settings
#   sd-card   commit_interval = "2s" (docs/raspberry-pi.md#sd-cards)
#   interval-DURATION   commit_interval = "DURATION", e.g. interval-1s
#
#   scripts/bench-flash.sh
#   RATES="10" RUN_SECONDS=30 PROFILES="sd-card" scripts/bench-flash.sh
#
# Environment: RATES (events/s, default "1 10 100"), RUN_SECONDS (60), WARMUP_SECONDS (5),
# DEVICES (10), PROFILES ("default sd-card"), BENCH_DIR (where the temp dir goes: a real disk,
# default /var/tmp), KEEP=1 keeps the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

RATES=${RATES:-1 10 100}
RUN_SECONDS=${RUN_SECONDS:-60}
WARMUP_SECONDS=${WARMUP_SECONDS:-5}
DEVICES=${DEVICES:-10}
PROFILES=${PROFILES:-default sd-card}

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v strace >/dev/null || need+=(strace)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "bench-flash.sh: missing ${need[*]} (apt-get install ${need[*]})" >&2
  exit 1
fi

echo "== building (release)" >&2
cargo build --release --locked -p edge-gateway -p edge-sim --bin edge-gateway --bin edge-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
gateway_bin="$target_dir/release/edge-gateway"
bench_bin="$target_dir/release/edge-bench"

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/edge-bench-flash.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    echo "bench-flash.sh: logs and data kept in $work" >&2
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
  echo "bench-flash.sh: $2 did not listen on port $1" >&2
  exit 1
}
# The value of `result name=$2` in file $1.
value() { awk -v name="$2" '$1 == "result" && $2 == "name=" name { sub("value=", "", $3); print $3 }' "$1"; }
metric() { # series $1 on the admin port $2
  curl -fsS "http://127.0.0.1:$2/metrics" | awk -v series="$1" '$1 == series { print $2 }'
}

cloud_port=$(free_port)
mkdir -p "$work/cloud"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$cloud_port" \
  >"$work/cloud/mosquitto.conf"
mosquitto -c "$work/cloud/mosquitto.conf" >"$work/cloud/mosquitto.log" 2>&1 &
pids+=($!)
wait_port "$cloud_port" "the cloud mosquitto"

printf '| profile | events/s | bytes written per event | syncs/s | commits/s | latency p50 (ms) | latency p99 (ms) | lost |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for profile in $PROFILES; do
  case "$profile" in
    default) journal_extra="" ;;
    sd-card) journal_extra='commit_interval = "2s"' ;;
    interval-*) journal_extra="commit_interval = \"${profile#interval-}\"" ;;
    *) echo "bench-flash.sh: unknown profile $profile (default, sd-card, interval-DURATION)" >&2; exit 2 ;;
  esac
  for rate in $RATES; do
    run="$work/$profile-$rate"
    mkdir -p "$run"
    device_port=$(free_port)
    admin_port=$(free_port)
    cat >"$run/gateway.toml" <<EOF
[gateway]
id = "bench-gw"
data_dir = "$run/data"

[devices]
listen = "127.0.0.1:$device_port"

[uplink]
url = "mqtt://127.0.0.1:$cloud_port"
topic_prefix = "edge"

[journal]
synchronous = "full"
$journal_extra

[admin]
listen = "127.0.0.1:$admin_port"
EOF
    EDGE_LOG=warn "$gateway_bin" run --config "$run/gateway.toml" 2>"$run/gateway.log" &
    gateway_pid=$!
    pids+=("$gateway_pid")
    wait_port "$device_port" "the gateway's device broker"
    wait_port "$admin_port" "the gateway's admin server"
    log "$profile at $rate events/s: warm-up $WARMUP_SECONDS s"
    "$bench_bin" latency --device-port "$device_port" --cloud-port "$cloud_port" --filter 'edge/#' \
      --devices "$DEVICES" --rate "$rate" --seconds "$WARMUP_SECONDS" >"$run/warmup.out" || true
    written0=$(metric edge_storage_written_bytes_total "$admin_port")
    appended0=$(metric edge_journal_appended_total "$admin_port")
    commits0=$(metric edge_journal_commits_total "$admin_port")
    strace -f -qq -c -e trace=fsync,fdatasync -p "$gateway_pid" -o "$run/strace" &
    strace_pid=$!
    log "$profile at $rate events/s: measuring $RUN_SECONDS s"
    "$bench_bin" latency --device-port "$device_port" --cloud-port "$cloud_port" --filter 'edge/#' \
      --devices "$DEVICES" --rate "$rate" --seconds "$RUN_SECONDS" >"$run/latency.out" || true
    # The last events' deletes, once delivered, are part of what they cost.
    sleep 2
    written1=$(metric edge_storage_written_bytes_total "$admin_port")
    appended1=$(metric edge_journal_appended_total "$admin_port")
    commits1=$(metric edge_journal_commits_total "$admin_port")
    kill -INT "$strace_pid"
    wait "$strace_pid" 2>/dev/null || true
    syncs=$(awk '$NF == "fsync" || $NF == "fdatasync" { n += $4 } END { print n + 0 }' "$run/strace")
    kill -TERM "$gateway_pid"
    wait "$gateway_pid" 2>/dev/null || true
    awk -v profile="$profile" -v rate="$rate" -v seconds="$RUN_SECONDS" \
      -v written="$written1" -v written0="$written0" -v events="$appended1" -v events0="$appended0" \
      -v commits="$commits1" -v commits0="$commits0" -v syncs="$syncs" \
      -v p50="$(value "$run/latency.out" latency_p50)" -v p99="$(value "$run/latency.out" latency_p99)" \
      -v lost="$(value "$run/latency.out" latency_lost)" \
      'BEGIN { written -= written0; events -= events0; commits -= commits0
               printf "| %s | %s | %.0f | %.1f | %.1f | %s | %s | %s |\n", profile, rate,
               (events > 0 ? written / events : 0), syncs / seconds, commits / seconds, p50, p99, lost }'
  done
done
