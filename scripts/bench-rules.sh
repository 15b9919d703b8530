#!/usr/bin/env bash
# What alert rules cost the gateway, end to end: the gateway's CPU time per event at saturation
# (edge-bench saturate, MQTT in, a Mosquitto "cloud" out), without rules and with 100 rules,
# each measured RUNS times (medians). Then the rule engine on its own (cargo bench --bench rules):
# evaluations per second with 1 000 rules over 10 000 devices, and µs per event with 100 rules.
#
#   scripts/bench-rules.sh
#   EVENTS=30000 RUNS=1 scripts/bench-rules.sh      # a quick check
#
# The 100 rules: every event meets 10 of them (thresholds on the latest value, some with `for`,
# window aggregates, a silence rule), and is matched against all 100 device patterns once per
# device.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

EVENTS=${EVENTS:-200000}
RUNS=${RUNS:-5}
DEVICES=${DEVICES:-50}

command -v mosquitto >/dev/null || { echo "bench-rules.sh: mosquitto is not installed" >&2; exit 1; }
echo "== building (release)" >&2
cargo build --release --locked -p edge-gateway -p edge-sim --bin edge-gateway --bin edge-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
gateway_bin="$target_dir/release/edge-gateway"
bench_bin="$target_dir/release/edge-bench"

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-rules.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then echo "bench-rules.sh: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "bench-rules.sh: nothing listens on $1" >&2; exit 1
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU ticks of the thread named $2 of process $1 (0 if there is none).
thread_ticks() {
  local task
  for task in /proc/"$1"/task/*; do
    if [ "$(cat "$task/comm" 2>/dev/null)" = "$2" ]; then
      awk '{ print $14 + $15 }' "$task/stat"
      return
    fi
  done
  echo 0
}
value() { awk -v name="$2" '$1 == "result" && $2 == "name=" name { sub("value=", "", $3); print $3 }' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cloud_port=$("$bench_bin" free-port)
# No queue or in-flight limits towards the measuring subscriber: the cloud side must not drop
# what it cannot hand over fast enough (Mosquitto's default queue is 1 000 messages).
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n' \
  "$cloud_port" >"$work/cloud.conf"
mosquitto -c "$work/cloud.conf" >"$work/cloud.log" 2>&1 &
pids+=("$!")
wait_port "$cloud_port"

# 10 rules every bench device meets, 90 that watch devices elsewhere.
rules_toml() {
  for n in $(seq 0 9); do
    case $n in
      7) printf '[[rule]]\nname = "bench %s"\ndevices = "bench-*"\nreading = "sent_us"\nabove = 1e18\nwindow = "60s"\naggregate = "avg"\n\n' "$n" ;;
      8) printf '[[rule]]\nname = "bench %s"\ndevices = "bench-*"\nreading = "sent_us"\nabove = 1e18\nwindow = "60s"\naggregate = "rate"\n\n' "$n" ;;
      9) printf '[[rule]]\nname = "bench %s"\ndevices = "bench-*"\nsilent_for = "10m"\n\n' "$n" ;;
      *) printf '[[rule]]\nname = "bench %s"\ndevices = "bench-*"\nreading = "sent_us"\nabove = 1e18\nfor = "30s"\n\n' "$n" ;;
    esac
  done
  for n in $(seq 0 89); do
    printf '[[rule]]\nname = "elsewhere %s"\ndevices = "zone-%s-*"\nreading = "temp_c"\nabove = 35\n\n' "$n" "$n"
  done
}

# One saturation run against a fresh gateway; prints its CPU µs per event, and the share of it
# spent on the rule engine's thread.
run_once() { # label, with_rules (0/1), run number
  local dir="$work/$1-$3"
  mkdir -p "$dir"
  local device_port admin_port
  device_port=$("$bench_bin" free-port)
  admin_port=$("$bench_bin" free-port)
  {
    printf '[gateway]\nid = "bench-gw"\ndata_dir = "%s/data"\n\n' "$dir"
    printf '[devices]\nlisten = "127.0.0.1:%s"\n\n' "$device_port"
    printf '[uplink]\nurl = "mqtt://127.0.0.1:%s"\n\n' "$cloud_port"
    printf '[journal]\nmax_size = "1GiB"\nsynchronous = "full"\n\n'
    printf '[admin]\nlisten = "127.0.0.1:%s"\n\n' "$admin_port"
    [ "$2" = 1 ] && rules_toml
  } >"$dir/gateway.toml"
  EDGE_LOG=warn "$gateway_bin" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" &
  local pid=$!
  pids+=("$pid")
  wait_port "$device_port"
  local before after rules_before rules_after
  before=$(cpu_ticks "$pid")
  rules_before=$(thread_ticks "$pid" rules)
  "$bench_bin" saturate --device-port "$device_port" --cloud-port "$cloud_port" --filter 'edge/#' \
    --devices "$DEVICES" --events "$EVENTS" >"$dir/saturate.out"
  after=$(cpu_ticks "$pid")
  rules_after=$(thread_ticks "$pid" rules)
  awk -v r=$((rules_after - rules_before)) -v t=$((after - before)) 'BEGIN { printf "%.1f\n", r * 100 / t }' >>"$work/$1.share"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local received
  received=$(value "$dir/saturate.out" saturate_received)
  # Clock ticks are 1/100 s.
  awk -v t=$((after - before)) -v n="$received" 'BEGIN { printf "%.2f\n", t * 10000 / n }'
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run: without rules, then with 100 rules ($EVENTS events)" >&2
  run_once plain 0 "$run" >>"$work/plain.us"
  run_once rules 1 "$run" >>"$work/rules.us"
done
plain=$(median <"$work/plain.us")
with_rules=$(median <"$work/rules.us")

echo "== the engine alone (cargo bench --bench rules)" >&2
cargo bench --locked -p edge-gateway --bench rules 2>/dev/null | tee "$work/engine.out"

echo
echo "machine: $(nproc) cores, Linux $(uname -r); $RUNS runs of $EVENTS events from $DEVICES devices, medians"
echo
echo "| figure | value |"
echo "|---|---:|"
echo "| gateway CPU per event, no rules (µs) | $plain (runs: $(paste -sd' ' "$work/plain.us")) |"
echo "| gateway CPU per event, 100 rules (µs) | $with_rules (runs: $(paste -sd' ' "$work/rules.us")) |"
echo "| rule engine thread's share of the gateway's CPU, 100 rules (%) | $(median <"$work/rules.share") (runs: $(paste -sd' ' "$work/rules.share")) (target < 10 %) |"
echo "| difference of the medians, with and without rules | $(awk -v a="$with_rules" -v b="$plain" 'BEGIN { printf "%.1f %%", (a - b) / a * 100 }') of the CPU per event with rules (noisy: see the runs) |"
echo "| engine: events/s, 1 000 rules over 10 000 devices | $(value "$work/engine.out" rules_1000_events_per_s) |"
echo "| engine: rule evaluations/s, 1 000 rules over 10 000 devices | $(value "$work/engine.out" rules_1000_evaluations_per_s) |"
echo "| engine: µs per event with 100 rules (10 met per event) | $(value "$work/engine.out" rules_100_us_per_event) |"
