#!/usr/bin/env bash
# The Raspberry Pi path, tested without a Pi: cross-builds with scripts/build-pi.sh, runs the
# gateway's unit tests and its end-to-end suite (the part qemu-user can emulate) for aarch64
# under qemu-user (QEMU_CPU=cortex-a72, a Pi 4), then smoke tests the release binaries:
#   - aarch64: edge-gateway takes MQTT events from a device on loopback, forwards them to a
#     Mosquitto of its own, and answers /readyz; its RSS is reported idle and under load;
#   - armv7: edge-gateway starts and answers /healthz.
#
#   scripts/test-pi.sh [aarch64|armv7|all]      default: all
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"

need=()
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls `condition` (a command) every 0.1 s for at most `seconds`.
wait_for() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: timed out after ${seconds}s waiting for $what" >&2
      return 1
    fi
    sleep 0.1
  done
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

gateway_config() {
  local dir="$1" broker="$2" devices="$3" admin="$4"
  cat > "$dir/gateway.toml" <<CONFIG
[gateway]
id = "pi-smoke"
data_dir = "$dir/data"
[devices]
listen = "127.0.0.1:$devices"
[uplink]
url = "mqtt://127.0.0.1:$broker"
reconnect_min = "50ms"
reconnect_max = "500ms"
[admin]
listen = "127.0.0.1:$admin"
CONFIG
}

if [ "$which" = aarch64 ] || [ "$which" = all ]; then
  ./scripts/build-pi.sh aarch64
  # A Raspberry Pi 4's cores: instructions a Pi does not have fail here too.
  export QEMU_CPU=cortex-a72
  # Tests built for aarch64 and run under qemu-user (without -L: with it, Debian's
  # qemu-aarch64-static hangs in pthread_create). The harness starts the gateway binary through
  # $EDGE_TEST_RUNNER, as no binfmt_misc handler runs aarch64 programs here.
  # librdkafka's configure and make, and openssl-sys, are pointed at the cross toolchain and
  # Debian's arm64 OpenSSL as scripts/build-pi.sh does (which installed them).
  cross_test() {
    RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/pi \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
      CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar \
      LD=aarch64-linux-gnu-ld NM=aarch64-linux-gnu-nm OBJDUMP=aarch64-linux-gnu-objdump \
      RANLIB=aarch64-linux-gnu-ranlib STRIP=aarch64-linux-gnu-strip \
      CC_x86_64_unknown_linux_gnu=gcc AR_x86_64_unknown_linux_gnu=ar HOST_CC=gcc HOST_AR=ar \
      PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
      AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR=/usr/lib/aarch64-linux-gnu \
      AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR=/usr/include \
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static \
      EDGE_TEST_RUNNER=qemu-aarch64-static \
      /usr/bin/cargo test --release --locked --target aarch64-unknown-linux-gnu "$@"
  }
  cross_test -p edge-gateway -p edge-wire -p edge-device --lib
  # The gateway's end-to-end suite, against the host's brokers, all but what qemu-user cannot
  # emulate: it lacks the termios2 ioctls (TCGETS2) that serial ports and ptys are set up with,
  # so the tests that use a serial line (the serial tests, the firmware on its emulated UART,
  # the demo's simulated serial devices) stay with the native run, as do the packaging tests
  # (the install script tries the binary it installs, natively).
  # The Kafka tests run librdkafka's mock cluster inside the test process, which under
  # qemu-user would emulate the broker as well as the gateway, and the EventBridge tests need
  # the moto server scripts/test.sh installs: both stay with the native run.
  e2e=()
  for test in tests/e2e_*.rs; do
    name="$(basename "$test" .rs)"
    case "$name" in
      e2e_serial | e2e_firmware | e2e_packaging | e2e_kafka | e2e_eventbridge) ;;
      *) e2e+=(--test "$name") ;;
    esac
  done
  # The demo's tests and those named edge_alerts_… run edge-alerts, which is not built here.
  cross_test -p edge-gateway "${e2e[@]}" -- --skip the_demo_ --skip edge_alerts_

  echo "smoke test: aarch64 edge-gateway under qemu-aarch64" >&2
  broker="$(free_port)"; devices="$(free_port)"; admin="$(free_port)"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker" > "$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
  wait_for "the broker" 20 python3 -c "import socket; socket.create_connection(('127.0.0.1', $broker))"
  mkdir -p "$work/a64"
  gateway_config "$work/a64" "$broker" "$devices" "$admin"
  mosquitto_sub -p "$broker" -t 'edge/pi-smoke/devices/+/events' -q 1 > "$work/received" & pids+=($!)
  qemu-aarch64-static target/pi/aarch64-unknown-linux-gnu/release/edge-gateway \
    run --config "$work/a64/gateway.toml" 2> "$work/a64/log" &
  gateway=$!; pids+=("$gateway")
  if ! wait_for "/readyz" 60 curl -sf "http://127.0.0.1:$admin/readyz"; then
    cat "$work/a64/log" >&2
    exit 1
  fi
  sleep 2
  idle="$(rss_kib "$gateway")"
  for seq in $(seq 1 100); do
    printf '{"device":"pi-dev","boot":1,"seq":%d,"readings":{"temp_c":21.5}}\n' "$seq"
  done > "$work/events"
  mosquitto_pub -p "$devices" -t devices/pi-dev/events -q 1 -l < "$work/events"
  wait_for "100 events at the broker" 60 sh -c "[ \$(wc -l < '$work/received') -ge 100 ]"
  # Under load: 1 000 events/s for 10 s, from one device connection.
  python3 - "$devices" > "$work/load.log" 2>&1 <<'PY' &
import json, socket, sys, time
port = int(sys.argv[1])
def packet(kind, body):
    length, out = len(body), bytearray([kind])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body
def string(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data
s = socket.create_connection(("127.0.0.1", port))
s.sendall(packet(0x10, string("MQTT") + bytes([4, 2, 0, 30]) + string("pi-load")))
s.recv(4)
start = time.time()
for seq in range(10_000):
    payload = json.dumps({"device": "pi-load", "boot": 1, "seq": seq, "readings": {"temp_c": 21.5}}).encode()
    s.sendall(packet(0x30, string("devices/pi-load/events") + payload))  # QoS 0
    delay = start + (seq + 1) / 1000 - time.time()
    if delay > 0:
        time.sleep(delay)
PY
  load=$!; pids+=("$load")
  peak=0
  while kill -0 "$load" 2>/dev/null; do
    now="$(rss_kib "$gateway")"
    [ "$now" -gt "$peak" ] && peak="$now"
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null
  echo "aarch64 under qemu: /readyz ok, 100 events forwarded; RSS idle $((idle / 1024)) MiB, under 1 000 events/s $((peak / 1024)) MiB (qemu-user's own memory included)"
  kill "$gateway"
fi

if [ "$which" = armv7 ] || [ "$which" = all ]; then
  ./scripts/build-pi.sh armv7
  echo "smoke test: armv7 edge-gateway under qemu-arm" >&2
  # 32-bit Raspberry Pi OS runs ARMv7 code (a Pi 2's Cortex-A7 is the baseline); qemu-arm has
  # no Cortex-A72 model.
  export QEMU_CPU=cortex-a7
  broker="$(free_port)"; devices="$(free_port)"; admin="$(free_port)"
  mkdir -p "$work/armv7"
  gateway_config "$work/armv7" "$broker" "$devices" "$admin"
  # The loader and the libc must come from the same armhf glibc: libssl-dev:armhf brings
  # Debian's own (in /lib/arm-linux-gnueabihf, found by the loader for libssl and libc), so
  # its loader is used too. With `-L /usr/arm-linux-gnueabihf` the cross toolchain's loader
  # (another build of glibc) would run Debian's libc, and the binary dies at its first thread.
  qemu-arm-static target/pi/armv7-unknown-linux-gnueabihf/release/edge-gateway \
    run --config "$work/armv7/gateway.toml" 2> "$work/armv7/log" &
  pids+=($!)
  if ! wait_for "/healthz" 60 curl -sf "http://127.0.0.1:$admin/healthz"; then
    cat "$work/armv7/log" >&2
    echo "FAILED: armv7 edge-gateway did not answer /healthz under qemu-arm" >&2
    exit 1
  else
    echo "armv7 under qemu: /healthz ok"
  fi
fi
