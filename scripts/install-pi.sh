#!/usr/bin/env bash
# Installs or upgrades Edge Gateway as a systemd service (a Raspberry Pi, or any Debian-like
# system). Safe to run again: an upgrade replaces the binary and the unit, and keeps the
# configuration and the journal.
#
#   sudo ./install-pi.sh [BINARY]       BINARY defaults to ./edge-gateway beside this script
#                                       (as in a release archive)
#   DESTDIR=/tmp/root ./install-pi.sh   install into a scratch root: files only, no user, no
#                                       systemctl
#
# What goes where: /usr/local/bin/edge-gateway, /etc/systemd/system/edge-gateway.service,
# /etc/edge-gateway/gateway.toml (from the example, only if there is none), the journal under
# /var/lib/edge-gateway (created by systemd, StateDirectory=). Logs go to journald.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="${DESTDIR:-}"
binary="${1:-$here/edge-gateway}"

# Beside this script in a release archive; in the source tree, where the repository keeps them.
find_file() {
  for candidate in "$@"; do
    if [ -f "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  echo "error: none of $* found" >&2
  exit 1
}
unit="$(find_file "$here/edge-gateway.service" "$here/../packaging/systemd/edge-gateway.service")"
example="$(find_file "$here/gateway.toml" "$here/../config/gateway.toml")"
[ -f "$binary" ] || { echo "error: no binary at $binary" >&2; exit 1; }

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root (sudo), or set DESTDIR to install into a scratch root" >&2
  exit 1
fi

# The service's user and group; dialout gives it the serial ports.
if [ -z "$root" ]; then
  if ! getent group edge-gateway >/dev/null; then
    groupadd --system edge-gateway
  fi
  if ! getent passwd edge-gateway >/dev/null; then
    useradd --system --gid edge-gateway --groups dialout --no-create-home \
      --home-dir /var/lib/edge-gateway --shell /usr/sbin/nologin edge-gateway
  fi
fi

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -d -m 0750 "$root/etc/edge-gateway"
config="$root/etc/edge-gateway/gateway.toml"
fresh=no
if [ -e "$config" ]; then
  echo "keeping the configuration in $config"
else
  install -m 0640 "$example" "$config"
  fresh=yes
  echo "installed an example configuration in $config: edit it (gateway id, uplink, serial ports)"
fi
if [ -z "$root" ]; then
  chgrp edge-gateway /etc/edge-gateway "$config"
fi

# The new binary goes beside the old one and is tried first: it must run here and accept the
# configuration, or nothing is replaced. (A binary for another architecture, installed into a
# scratch root on a build machine, cannot be tried: only there is that skipped.)
staged="$root/usr/local/bin/.edge-gateway.new"
install -m 0755 "$binary" "$staged"
if "$staged" --version >/dev/null 2>&1; then
  if ! "$staged" check-config --config "$config"; then
    rm -f "$staged"
    echo "error: the configuration above needs fixing; nothing was replaced" >&2
    exit 2
  fi
elif [ -z "$root" ]; then
  rm -f "$staged"
  echo "error: $binary does not run on this machine (architecture, or glibc older than 2.34)" >&2
  exit 1
fi
# Renamed over the old one: a running service keeps its open file until the restart below.
mv -f "$staged" "$root/usr/local/bin/edge-gateway"
install -m 0644 "$unit" "$root/etc/systemd/system/edge-gateway.service"

if [ -n "$root" ]; then
  echo "installed into $root (no user, no service started)"
  exit 0
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$fresh" = yes ]; then
    # The example names files that are not there yet (password files, certificates): start
    # once it is edited.
    systemctl enable edge-gateway
    echo "enabled edge-gateway; edit $config, then: sudo systemctl start edge-gateway"
  elif systemctl is-active --quiet edge-gateway; then
    systemctl restart edge-gateway
    echo "upgraded and restarted edge-gateway"
  else
    systemctl enable --now edge-gateway
    echo "enabled and started edge-gateway"
  fi
  echo "logs: journalctl -u edge-gateway -f    metrics: curl http://127.0.0.1:9100/metrics"
else
  echo "systemd is not running here: start it with /usr/local/bin/edge-gateway run --config $config"
fi
