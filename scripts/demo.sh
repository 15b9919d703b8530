#!/usr/bin/env bash
# The whole chain on one machine: simulated devices (MQTT and serial) → edge-gateway with alert
# rules → embedded cloud broker → edge-alerts with its live dashboard. Prints the dashboard URL
# and its login token. Extra arguments go to `edge-gateway demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p edge-gateway -p edge-alerts
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/edge-gateway" demo --alerts-bin "$target_dir/release/edge-alerts" "$@"
