#!/usr/bin/env bash
# Builds the Raspberry Pi Pico firmware and flashes it over USB, as a UF2 file copied to the
# Pico's boot drive: hold BOOTSEL while plugging the Pico in, so it mounts as RPI-RP2.
#
#   scripts/flash.sh                      build, convert, copy to the mounted RPI-RP2 drive
#   EDGE_DEVICE_ID=greenhouse-7 scripts/flash.sh    the device id the gateway will see
#
# Prerequisites: Debian or Ubuntu (scripts/firmware.sh installs Debian's Rust for the
# cross-build), and elf2uf2-rs (installed here with `cargo install` when missing, which needs
# pkg-config and libudev-dev). See docs/firmware.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Pico image only (EDGE_DEVICE_ID must not end up in the other boards' images); the
# toolchain comes from scripts/firmware.sh, which installs it when missing.
./scripts/firmware.sh >/dev/null
(cd firmware/boards/rp-pico &&
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --release --locked)
elf=firmware/boards/rp-pico/target/thumbv6m-none-eabi/release/edge-board-rp-pico
uf2="$elf.uf2"

if ! command -v elf2uf2-rs >/dev/null 2>&1; then
  echo "installing elf2uf2-rs (converts the image to the Pico's UF2 format)" >&2
  cargo install --locked elf2uf2-rs
fi
elf2uf2-rs "$elf" "$uf2"

drive="$(findmnt -rn -o TARGET -S LABEL=RPI-RP2 2>/dev/null | head -n1 || true)"
if [ -z "$drive" ]; then
  for candidate in /media/*/RPI-RP2 /run/media/*/RPI-RP2 /mnt/RPI-RP2; do
    [ -d "$candidate" ] && drive="$candidate" && break
  done
fi
if [ -z "$drive" ]; then
  echo "no RPI-RP2 drive mounted: hold BOOTSEL while plugging the Pico in, then copy" >&2
  echo "  $uf2" >&2
  echo "to the drive (or run this script again)." >&2
  exit 1
fi
cp "$uf2" "$drive/"
sync
echo "flashed $(basename "$uf2") to $drive; the Pico restarts into the firmware"
