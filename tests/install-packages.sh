#!/usr/bin/env bash
# Installs the Debian packages that Triad's tests and lab use, when missing, and the
# schema-driven API client (schemathesis, from PyPI). Needs root.
# Safe to run repeatedly: does nothing when everything is installed.
set -euo pipefail
SCHEMATHESIS=4.32.5
install_schemathesis() {
  if schemathesis --version 2>/dev/null | grep -q "version $SCHEMATHESIS"; then
    return
  fi
  echo "install-packages: installing schemathesis $SCHEMATHESIS (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS"
}
CARGO_DEB=3.8.0
install_cargo_deb() {
  if cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB"; then
    return
  fi
  echo "install-packages: installing cargo-deb $CARGO_DEB (cargo install, ~1 min)"
  cargo install --quiet --locked --version "$CARGO_DEB" cargo-deb
}
# polkitd: the package depends on it (its rule); nodejs: evaluates that rule in a test.
PACKAGES=(
  mariadb-server galera-4 mariadb-backup restic rsync socat lsof
  redis-server redis-sentinel haproxy php-fpm php8.2-mysql
  glusterfs-server glusterfs-client
  iproute2 nftables libfcgi-bin procps psmisc prometheus curl
  polkitd
)
command -v node >/dev/null || PACKAGES+=(nodejs)
if [ "$(id -u)" != 0 ]; then
  echo "install-packages: not root; cannot install ${PACKAGES[*]}" >&2
  exit 1
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-packages: all ${#PACKAGES[@]} packages present"
  install_schemathesis
  install_cargo_deb
  exit 0
fi
echo "install-packages: installing ${missing[*]}"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's policy-rc.d on these machines keeps apt from starting the daemons; the lab and the
# tests start what they need themselves.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-packages: done in $(( $(date +%s) - start ))s"
install_schemathesis
install_cargo_deb
