#!/usr/bin/env bash
# The whole chain on one machine: simulated devices (MQTT and serial) → edge-gateway with alert
# rules → embedded cloud broker → edge-alerts with its live dashboard. Prints the dashboard URL
# and its login token. Extra arguments go to `edge-gateway demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p edge-gateway -p edge-alerts
target_dir="${CARGO_TARGET_DIR:-target}"
# A firmware image in QEMU beside the simulated devices, when QEMU and the image are there
# (scripts/firmware.sh builds it).
firmware=firmware/boards/lm3s6965-qemu/target/thumbv7m-none-eabi/release/edge-board-lm3s6965
extra=()
if command -v qemu-system-arm >/dev/null 2>&1 && [ -f "$firmware" ]; then
  extra+=(--qemu-firmware "$firmware")
fi
exec "$target_dir/release/edge-gateway" demo --alerts-bin "$target_dir/release/edge-alerts" "${extra[@]}" "$@"
