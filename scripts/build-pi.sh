#!/usr/bin/env bash
# Cross-builds edge-gateway and edge-alerts for the Raspberry Pi and packs release archives
# (binaries, example configuration, systemd unit, install script, licences) with checksums:
#
#   scripts/build-pi.sh [aarch64|armv7|all]      default: all
#
# aarch64 (Pi 3/4/5, 64-bit Raspberry Pi OS) links against Debian's prebuilt arm64 std; armv7
# (32-bit Raspberry Pi OS) builds std from source (-Zbuild-std). Both use Debian's Rust (the
# std must match the compiler), installed with the cross toolchains when missing. Native builds
# are untouched: the settings live in this script and the results in target/pi.
# The binaries need glibc 2.34 or newer on the Pi (Raspberry Pi OS bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"

# librdkafka (the Kafka uplink) is built from source with the cross compiler and links the
# Pi's OpenSSL (libssl3, on every Raspberry Pi OS): its headers and libraries come from
# Debian's packages of that architecture.
packages=(rustc-web cargo-web make)
case "$which" in
  aarch64) packages+=(libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
    libc6-dev-arm64-cross libssl-dev:arm64) ;;
  armv7) packages+=(rust-web-src gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
    libc6-dev-armhf-cross libssl-dev:armhf) ;;
  all) packages+=(libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
    libc6-dev-arm64-cross libssl-dev:arm64 rust-web-src gcc-arm-linux-gnueabihf
    g++-arm-linux-gnueabihf libc6-dev-armhf-cross libssl-dev:armhf) ;;
  *) echo "usage: $0 [aarch64|armv7|all]" >&2; exit 2 ;;
esac
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (the cross toolchains)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
  "${apt[@]}" update -qq
  # Never let a toolchain install remove what is there.
  simulated="$("${apt[@]}" -s install --no-install-recommends "${missing[@]}")"
  if grep -q '^Remv' <<<"$simulated"; then
    echo "error: installing ${missing[*]} would remove packages; install them by hand" >&2
    exit 1
  fi
  "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/pi
unset RUSTFLAGS
cargo=/usr/bin/cargo
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
mkdir -p dist

build() {
  local target="$1" gcc_prefix="$2"
  shift 2
  local upper="${target//-/_}"
  upper="${upper^^}"
  export "CARGO_TARGET_${upper}_LINKER=${gcc_prefix}-gcc"
  export "CC_${target//-/_}=${gcc_prefix}-gcc" "AR_${target//-/_}=${gcc_prefix}-ar"
  # librdkafka's own configure and make read CC, CXX, AR and the binutils, and ask pkg-config
  # for OpenSSL; what is built for this machine (build scripts) keeps its compiler.
  export CC="${gcc_prefix}-gcc" CXX="${gcc_prefix}-g++" AR="${gcc_prefix}-ar"
  export LD="${gcc_prefix}-ld" NM="${gcc_prefix}-nm" OBJDUMP="${gcc_prefix}-objdump"
  export RANLIB="${gcc_prefix}-ranlib" STRIP="${gcc_prefix}-strip"
  export PKG_CONFIG_LIBDIR="/usr/lib/${gcc_prefix}/pkgconfig:/usr/share/pkgconfig"
  export CC_x86_64_unknown_linux_gnu=gcc AR_x86_64_unknown_linux_gnu=ar HOST_CC=gcc HOST_AR=ar
  export "${upper}_OPENSSL_LIB_DIR=/usr/lib/${gcc_prefix}" "${upper}_OPENSSL_INCLUDE_DIR=/usr/include"
  echo "building for $target" >&2
  "$cargo" build --release --locked --target "$target" -p edge-gateway -p edge-alerts "$@"

  local name="edge-gateway-$version-$target"
  local stage="$CARGO_TARGET_DIR/$name"
  rm -rf "$stage"
  mkdir -p "$stage"
  for binary in edge-gateway edge-alerts; do
    "${gcc_prefix}-strip" -o "$stage/$binary" "$CARGO_TARGET_DIR/$target/release/$binary"
  done
  cp config/gateway.toml packaging/systemd/edge-gateway.service scripts/install-pi.sh "$stage/"
  cp LICENSE-MIT LICENSE-APACHE "$stage/"
  tar -C "$CARGO_TARGET_DIR" -czf "dist/$name.tar.gz" "$name"
  (cd dist && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
  stat -c '%s bytes %n' "$stage/edge-gateway" "$stage/edge-alerts" >&2
  echo "dist/$name.tar.gz" >&2
}

if [ "$which" = aarch64 ] || [ "$which" = all ]; then
  build aarch64-unknown-linux-gnu aarch64-linux-gnu
fi
if [ "$which" = armv7 ] || [ "$which" = all ]; then
  RUSTC_BOOTSTRAP=1 build armv7-unknown-linux-gnueabihf arm-linux-gnueabihf -Zbuild-std=std,panic_unwind
fi
