#!/usr/bin/env bash
# Builds the device firmware for its boards, with Debian's Rust (-Zbuild-std needs the library
# source of the very compiler that builds it; see docs/firmware.md), installing the Debian
# packages it needs when they are missing. The main workspace keeps its own toolchain.
#
#   scripts/firmware.sh          build every board (release)
#   scripts/firmware.sh test     build, then run the on-target tests in QEMU
#   scripts/firmware.sh size     build, then print each image's flash and RAM use
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 qemu-system-arm binutils-arm-none-eabi)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (the firmware toolchain)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's compiler and cargo, whatever rustup puts first on PATH; nightly features of a stable
# release (-Zbuild-std) need RUSTC_BOOTSTRAP.
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS=
unset RUSTFLAGS CARGO_TARGET_DIR
cargo=/usr/bin/cargo

boards=(firmware/boards/lm3s6965-qemu firmware/boards/rp-pico)
for board in "${boards[@]}"; do
  echo "building $board" >&2
  (cd "$board" && "$cargo" build --release --locked)
done

case "${1:-build}" in
  build) ;;
  test)
    (cd firmware/boards/lm3s6965-qemu && "$cargo" test --release --locked)
    ;;
  size)
    # Flash = what is stored (vector table, code, read-only data, initial data); RAM = what the
    # image reserves (data, bss); the stack takes the rest of RAM.
    report() {
      local name="$1" elf="$2" flash_limit="$3" ram_limit="$4"
      arm-none-eabi-size -A -d "$elf" | awk -v name="$name" -v fl="$flash_limit" -v rl="$ram_limit" '
        $1 ~ /^\.(vector_table|boot2|text|rodata|data)$/ { flash += $2 }
        $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
        END { printf "| %s | %d B (%.1f %% of %d KiB) | %d B (%.1f %% of %d KiB) |\n",
              name, flash, 100 * flash / (fl * 1024), fl, ram, 100 * ram / (rl * 1024), rl }'
    }
    echo "| board | flash | static RAM |"
    echo "|---|---|---|"
    report "LM3S6965 (QEMU)" firmware/boards/lm3s6965-qemu/target/thumbv7m-none-eabi/release/edge-board-lm3s6965 256 64
    report "Raspberry Pi Pico" firmware/boards/rp-pico/target/thumbv6m-none-eabi/release/edge-board-rp-pico 2048 256
    ;;
  *) echo "usage: $0 [build|test|size]" >&2; exit 2 ;;
esac
