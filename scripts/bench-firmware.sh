#!/usr/bin/env bash
# How many events a second the emulated LM3S6965 device delivers through its UART to the real
# gateway: the firmware built to sample every millisecond (feature `fast`), in QEMU, its UART on
# a pty read by a release edge-gateway forwarding to a Mosquitto of its own. Prints the rate the
# gateway received over SECONDS (default 10) after a warm-up, and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"

./scripts/firmware.sh >/dev/null
(cd firmware/boards/lm3s6965-qemu &&
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --release --locked --features fast \
    --target-dir target/fast >/dev/null 2>&1)
cargo build --release --locked -p edge-gateway >/dev/null 2>&1
target_dir="${CARGO_TARGET_DIR:-target}"
gateway_bin="$target_dir/release/edge-gateway"
elf=firmware/boards/lm3s6965-qemu/target/fast/thumbv7m-none-eabi/release/edge-board-lm3s6965

work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker_port="$(free_port)"; device_port="$(free_port)"; admin_port="$(free_port)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" > "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)

qemu-system-arm -M lm3s6965evb -cpu cortex-m3 -display none -monitor none \
  -semihosting-config enable=on,target=native -serial pty \
  -device tmp105,bus=i2c,address=0x48,id=tmp0 -kernel "$elf" > "$work/qemu.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q 'redirected to' "$work/qemu.out" && break; sleep 0.05; done
pty="$(sed -n 's/.*redirected to \([^ ]*\).*/\1/p' "$work/qemu.out")"

cat > "$work/gateway.toml" <<CONFIG
[gateway]
id = "bench-gw"
data_dir = "$work/data"
[devices]
listen = "127.0.0.1:$device_port"
[uplink]
url = "mqtt://127.0.0.1:$broker_port"
[admin]
listen = "127.0.0.1:$admin_port"
[[serial]]
port = "$pty"
baud = 115200
CONFIG
EDGE_LOG=warn "$gateway_bin" run --config "$work/gateway.toml" 2>"$work/gateway.log" & pids+=($!)

received() {
  curl -sf "http://127.0.0.1:$admin_port/metrics" |
    awk '/^edge_events_received_total\{source="serial"\}/ { print $2 }'
}
for _ in $(seq 100); do [ -n "$(received 2>/dev/null || true)" ] && break; sleep 0.1; done
sleep 3 # warm-up: the device's first Hello and the backlog of its start
start="$(received)"; started="$(date +%s.%N)"
sleep "$seconds"
end="$(received)"; ended="$(date +%s.%N)"
echo "emulated LM3S6965 (QEMU), TMP105 sampled every 1 ms, UART 115 200 baud (not paced by QEMU):"
awk -v a="$start" -v b="$end" -v t0="$started" -v t1="$ended" \
  'BEGIN { printf "  %.0f events/s received by the gateway over %.1f s\n", (b - a) / (t1 - t0), t1 - t0 }'
./scripts/firmware.sh size
