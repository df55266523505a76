#!/usr/bin/env bash
# The Debian package, installed and removed for real on this machine (root only):
#   tests/package.sh [TRIAD_BINARY]
# Builds the .deb with cargo-deb around the given binary (default: the dev build,
# target/debug/triad; a release package is `cargo deb -p triad`), then:
#   dpkg -i     the user, its directories and groups, the units (systemd-analyze verify), the
#               polkit rule; the example config, filled in as an operator would, passes
#               `triad check-config` run as the triad user;
#   dpkg -r     no file of the package left, no process of the triad user; the user, the
#               config and the state stay (a reinstall is the same node);
#   dpkg --purge  the user, its group, /etc/triad and /var/lib/triad are gone.
# PID 1 here is not systemd, so the maintainer scripts' systemctl/deb-systemd-invoke calls
# are skipped by their own guards (as on any machine without systemd running): the service's
# start and stop by systemd are not exercised here.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/triad}
fail() { echo "package: FAILED: $*" >&2; exit 1; }
say() { echo "package: $*"; }
[ "$(id -u)" = 0 ] || { echo "package: not root: skipped (dpkg -i needs root)"; exit 0; }
command -v cargo-deb >/dev/null || fail "cargo-deb is not installed (tests/install-packages.sh)"
[ -x "$binary" ] || fail "$binary is not built (cargo build -p triad)"
if dpkg-query -W -f='${Status}' triad 2>/dev/null | grep -q "installed"; then
  fail "a triad package is already installed here: this test installs and purges its own"
fi
if getent passwd triad >/dev/null; then
  fail "a triad user exists without the package: this test would delete it on purge"
fi

work=$(mktemp -d)
installed=0
# A failed run purges what it installed, so that the next run starts clean.
trap 'if [ "$installed" = 1 ]; then dpkg --purge triad >/dev/null 2>&1 || true; fi; rm -rf "$work"' EXIT
mkdir -p "$work/target/release"
cp "$binary" "$work/target/release/triad"
CARGO_TARGET_DIR="$work/target" cargo deb -p triad --no-build --no-strip --fast \
  -o "$work/triad.deb" >/dev/null
say "built $(du -h "$work/triad.deb" | cut -f1) package"
files=$(dpkg-deb -c "$work/triad.deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')

installed=1
dpkg -i "$work/triad.deb" >/dev/null
say "installed"
getent passwd triad | grep -q ":/var/lib/triad:/usr/sbin/nologin$" || fail "user triad: $(getent passwd triad)"
[ "$(stat -c '%a %U %G' /var/lib/triad)" = "700 triad triad" ] || fail "/var/lib/triad: $(stat -c '%a %U %G' /var/lib/triad)"
[ "$(stat -c '%a %U %G' /etc/triad)" = "750 root triad" ] || fail "/etc/triad: $(stat -c '%a %U %G' /etc/triad)"
for group in haproxy mysql www-data; do
  if getent group "$group" >/dev/null; then
    id -nG triad | tr ' ' '\n' | grep -qx "$group" || fail "triad is not in group $group"
  fi
done
for f in $files; do [ -e "$f" ] || fail "$f was not installed"; done
for unit in triad.service triad-wsrep-recover.service triad-galera-bootstrap.service 'triad-gluster-heal@shop.service' 'triad-gluster-remount@mnt-shop.service'; do
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $unit warned: $out"
done
[ -f /usr/share/polkit-1/rules.d/50-triad.rules ] || fail "no polkit rule"
# Not enabled until the operator has a config (README "Install on your VMs").
if ls /etc/systemd/system/*.wants/triad.service >/dev/null 2>&1; then
  fail "the install enabled triad.service before there is a config"
fi
say "user, directories, groups, units and polkit rule in place"

# The operator's part of README "Install on your VMs", for node 1.
cp /usr/share/doc/triad/examples/triad.toml /etc/triad/triad.toml
(umask 077
 for secret in token redis-password mariadb-password restic.pass mysql-backup.pass; do
   head -c 24 /dev/urandom | base64 > "/etc/triad/$secret"
 done)
triad cert init --dir /etc/triad/tls --cluster shop-prod >/dev/null
triad cert issue --dir /etc/triad/tls --node 1 >/dev/null
chown -R triad: /etc/triad/token /etc/triad/*-password /etc/triad/*.pass /etc/triad/tls
out=$(setpriv --reuid triad --regid triad --init-groups triad check-config /etc/triad/triad.toml 2>&1) \
  || fail "check-config as triad: $out"
say "check-config accepts the filled-in example as the triad user"
# A secret the triad user cannot read is named, with the fix.
chown root /etc/triad/token
if out=$(setpriv --reuid triad --regid triad --init-groups triad check-config /etc/triad/triad.toml 2>&1); then
  fail "check-config accepted a token file the triad user cannot read"
fi
echo "$out" | grep -q "/etc/triad/token" || fail "the error does not name the token file: $out"
chown triad /etc/triad/token

# The installed agent under the unit's sandbox, emulated (see there).
tests/sandbox.sh

dpkg -r triad >/dev/null
for f in $files; do [ ! -e "$f" ] || fail "$f is left after dpkg -r"; done
if pgrep -u triad >/dev/null; then fail "a process of user triad runs after dpkg -r: $(pgrep -a -u triad)"; fi
getent passwd triad >/dev/null || fail "dpkg -r removed the user (purge does)"
[ -f /etc/triad/triad.toml ] || fail "dpkg -r removed the configuration (purge does)"
say "removed: no file, no process; user, config and state kept"

dpkg --purge triad >/dev/null
installed=0
! getent passwd triad >/dev/null || fail "user triad is left after purge"
! getent group triad >/dev/null || fail "group triad is left after purge"
[ ! -e /var/lib/triad ] || fail "/var/lib/triad is left after purge"
[ ! -e /etc/triad ] || fail "/etc/triad is left after purge"
left=$(find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled \
  /var/lib/systemd/deb-systemd-helper-masked -name '*triad*' 2>/dev/null || true)
[ -z "$left" ] || fail "systemd state is left after purge: $left"
! dpkg-query -W triad >/dev/null 2>&1 || fail "dpkg still knows the package"
say "purged: nothing left"
