#!/usr/bin/env bash
# Benchmarks the serial link: one simulated device (the real device core) on a pty, held to the
# line rate of a UART at each baud rate, its outbox kept full, against the real gateway.
#
#   edge-bench serial (edge-device core) ──pty, paced to baud/10 bytes/s──▶ edge-gateway (synchronous = "full")
#
# Prints, per baud rate: events/s acknowledged (each ack follows the journal commit), the mean
# bytes per frame on the line, the line's theoretical frame rate (baud / 10 / bytes per frame),
# and their ratio; then the encoded size of a typical event as a serial frame, as MQTT CBOR and
# as JSON. The uplink points at a closed port: the figures are the serial link's and the
# journal's, not the cloud's.
#
#   scripts/bench-serial.sh
#   SECONDS_PER_RATE=3 scripts/bench-serial.sh      # a quick check
#
# Environment: BAUDS (default "115200 921600"), SECONDS_PER_RATE (about how long each rate
# runs, default 15), KEEP=1 keeps the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

BAUDS=${BAUDS:-"115200 921600"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-15}

echo "== building (release)" >&2
cargo build --release --locked -p edge-gateway -p edge-sim --bin edge-gateway --bin edge-bench >&2
target_dir=${CARGO_TARGET_DIR:-target}
gateway_bin="$target_dir/release/edge-gateway"
bench_bin="$target_dir/release/edge-bench"

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-bench-serial.XXXXXX")
gateway_pid=""
cleanup() {
  local status=$?
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    echo "bench-serial.sh: logs and data kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

value() { awk -v name="$2" '$1 == "result" && $2 == "name=" name { sub("value=", "", $3); print $3 }' "$1"; }

for baud in $BAUDS; do
  dir="$work/$baud"
  mkdir -p "$dir"
  admin_port=$("$bench_bin" free-port)
  cat >"$dir/gateway.toml" <<EOF
[gateway]
id = "bench-serial"
data_dir = "$dir/data"

[devices]
listen = "127.0.0.1:$("$bench_bin" free-port)"

[[serial]]
port = "$dir/tty"
baud = $baud

[uplink]
url = "mqtt://127.0.0.1:$("$bench_bin" free-port)"

[journal]
synchronous = "full"

[admin]
listen = "127.0.0.1:$admin_port"
EOF
  EDGE_LOG=warn "$gateway_bin" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" &
  gateway_pid=$!
  # About SECONDS_PER_RATE seconds of a line carrying ~50-byte frames.
  # Whole events per second first (ten bits a byte, about 50 bytes an event), then the run.
  # shellcheck disable=SC2017
  events=$(( baud / 10 / 50 * SECONDS_PER_RATE ))
  echo "== serial at $baud baud: $events events" >&2
  "$bench_bin" serial --link "$dir/tty" --baud "$baud" --events "$events" | tee "$dir/serial.out"
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
done
"$bench_bin" sizes | tee "$work/sizes.out"

echo
echo "machine: $(nproc) cores, Linux $(uname -r); synchronous = \"full\""
echo
printf '| %-8s | %12s | %16s | %20s | %12s | %14s |\n' "baud" "events/s" "bytes per frame" "line frames/s (max)" "ratio" "retransmitted"
printf '|%s|%s|%s|%s|%s|%s|\n' "----------" "--------------" "------------------" "----------------------" "--------------" "----------------"
for baud in $BAUDS; do
  out="$work/$baud/serial.out"
  printf '| %-8s | %12s | %16s | %20s | %12s | %14s |\n' "$baud" "$(value "$out" serial_rate)" "$(value "$out" serial_frame_bytes)" \
    "$(value "$out" serial_line_frames)" "$(value "$out" serial_line_ratio)" "$(value "$out" serial_retransmitted)"
done
echo
echo "typical event (3 readings, no device clock): serial frame $(value "$work/sizes.out" size_serial_frame) bytes (target <= 48), MQTT CBOR $(value "$work/sizes.out" size_mqtt_cbor) bytes, JSON $(value "$work/sizes.out" size_json) bytes"
