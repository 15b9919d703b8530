#!/usr/bin/env bash
# Runs the whole test suite: unit, property and end-to-end tests (real gateway binary, real
# Mosquitto and rumqttd brokers on 127.0.0.1, the machine's PostgreSQL, headless Chromium for
# the dashboard, the device firmware in QEMU, ephemeral ports, temp dirs).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing mosquitto (the end-to-end tests start their own instances)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "installing openssl (the security tests make their certificates with it)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium and chromium-driver (the dashboard is tested in a real browser)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if ! command -v shellcheck >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "installing shellcheck and systemd (the packaging tests lint the scripts and verify the unit)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck systemd >/dev/null
fi
export PATH="$PATH:/usr/sbin"
# moto's server plays AWS EventBridge (and CloudWatch Logs) for the EventBridge tests: installed
# from PyPI into a virtual environment of its own, once.
moto_env="target/moto-venv"
if [ ! -x "$moto_env/bin/moto_server" ]; then
  echo "installing moto's server into $moto_env (the EventBridge tests talk to it)" >&2
  python3 -m venv "$moto_env"
  "$moto_env/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.6'
fi
export EDGE_MOTO_SERVER="$PWD/$moto_env/bin/moto_server"

# The device firmware: built for its boards (installing Debian's firmware toolchain if missing),
# its on-target tests run in QEMU; the end-to-end tests then run the image it built.
./scripts/firmware.sh test

cargo test --workspace --locked "$@"
