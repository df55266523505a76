#!/usr/bin/env bash
# The installed agent under the packaged unit's sandbox, as far as this machine can emulate
# it (called by tests/package.sh while the package is installed; root only).
#
# PID 1 here is not systemd, so `systemd-run -p ...` cannot apply the unit's properties. This
# emulates the ones that decide whether a feature works: User=triad with its groups (from the
# package), NoNewPrivileges, an empty capability bounding set, ProtectSystem=full (/usr, /boot
# and /etc read-only), ProtectHome and PrivateTmp (empty tmpfs), in a private mount
# namespace. Not emulated: the system-call filter, the other Protect*/Restrict* options and
# the device policy (kernel features set up by systemd itself).
#
# Against real loopback services (redis-server, php-fpm and haproxy with its admin socket
# mode 660 group haproxy), a one-node cluster: the Redis and PHP-FPM probes must report
# healthy, the agent must put the Redis server in service in HAProxy and save HAProxy's
# server-state file in its state directory, and its log must show no permission or
# read-only error. Not here: MariaDB and GlusterFS (the lab runs them; the gluster CLI's
# unprivileged form and the heal-info helper unit are covered by their own tests).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "sandbox: FAILED: $*" >&2; exit 1; }
say() { echo "sandbox: $*"; }
[ "$(id -u)" = 0 ] || { echo "sandbox: not root: skipped"; exit 0; }
getent passwd triad >/dev/null || fail "no triad user: run from tests/package.sh"
for p in redis-server php-fpm8.2 haproxy setpriv unshare curl; do
  command -v "$p" >/dev/null || fail "$p is not installed (tests/install-packages.sh)"
done

work=$(mktemp -d /var/tmp/triad-sandbox.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port); fpm_port=$(free_port); api_port=$(free_port); raft_port=$(free_port)
fe_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
cat >"$work/php-fpm.conf" <<EOF
[global]
pid = $work/php-fpm.pid
error_log = $work/php-fpm.log
daemonize = no
[sandbox]
user = www-data
group = www-data
listen = 127.0.0.1:$fpm_port
pm = static
pm.max_children = 1
ping.path = /ping
pm.status_path = /status
EOF
php-fpm8.2 -F -y "$work/php-fpm.conf" >/dev/null 2>&1 &
pids+=($!)
mkdir -p "$work/haproxy"
chgrp haproxy "$work/haproxy"
chmod 750 "$work/haproxy"
cat >"$work/haproxy.cfg" <<EOF
global
    stats socket $work/haproxy/admin.sock mode 660 level admin group haproxy
    server-state-file /var/lib/triad/haproxy-server-state
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    load-server-state-from-file global
frontend fe_redis
    bind 127.0.0.1:$fe_port
    default_backend be_redis
backend be_redis
    server redis1 127.0.0.1:$redis_port disabled
EOF
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)

install -m 640 -g triad /dev/stdin /etc/triad/sandbox.toml <<EOF
cluster_name = "shop-prod"
[node]
id = 1
data_dir = "/var/lib/triad"
[[peers]]
id = 1
raft_addr = "127.0.0.1:$raft_port"
api_addr = "127.0.0.1:$api_port"
redis_addr = "127.0.0.1:$redis_port"
[api]
listen = "127.0.0.1:$api_port"
token_file = "/etc/triad/token"
[tls]
ca_file = "/etc/triad/tls/ca.crt"
cert_file = "/etc/triad/tls/n1.crt"
key_file = "/etc/triad/tls/n1.key"
[redis]
[phpfpm]
address = "127.0.0.1:$fpm_port"
[failover]
[haproxy]
admin_socket = "$work/haproxy/admin.sock"
state_file = "/var/lib/triad/haproxy-server-state"
[[haproxy.backends]]
name = "be_redis"
role = "redis-master"
server_prefix = "redis"
[services]
control = "none"
EOF
rm -f /var/lib/triad/haproxy-server-state

# The emulated sandbox: a private mount namespace with /usr, /boot and /etc read-only and
# empty /tmp, /home and /root, then the triad user with its groups, no new privileges and no
# capabilities.
unshare --mount --propagation private -- sh -c '
  set -e
  for d in /usr /boot /etc; do
    [ -d "$d" ] || continue
    mount --bind "$d" "$d"
    mount -o remount,bind,ro "$d"
  done
  for d in /tmp /home /root; do [ -d "$d" ] && mount -t tmpfs -o mode=755 tmpfs "$d"; done
  exec setpriv --reuid triad --regid triad --init-groups --no-new-privs \
    --bounding-set -all --inh-caps -all \
    /usr/bin/triad run --config /etc/triad/sandbox.toml
' >"$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")
# The agent really is the triad user, without capabilities.
sleep 1
kill -0 "$agent" 2>/dev/null || { cat "$work/agent.log"; fail "the agent exited"; }
child=$(pgrep -P "$agent" -x triad || echo "$agent")
grep -q "^Uid:.*\b$(id -u triad)\b" "/proc/$child/status" || fail "the agent does not run as triad"
grep -q "^CapBnd:.*0000000000000000" "/proc/$child/status" || fail "the agent has capabilities: $(grep Cap "/proc/$child/status")"
grep -q "^NoNewPrivs:.*1" "/proc/$child/status" || fail "NoNewPrivs is not set"

token=$(cat /etc/triad/token)
# This node's own probes, as `service=status` words (from GET /v1/status).
probes() {
  curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$api_port/v1/status" \
    | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(sorted("%s=%s" % (o["service"], o["status"]) for o in s.get("nodes", {}).get("1", []))))' \
    || true
}
deadline=$((SECONDS + 30))
seen=""
while [ $SECONDS -lt $deadline ]; do
  seen=$(probes)
  if echo "$seen" | grep -qw redis=healthy && echo "$seen" | grep -qw phpfpm=healthy \
    && [ -s /var/lib/triad/haproxy-server-state ]; then
    break
  fi
  sleep 0.5
done
echo "$seen" | grep -qw redis=healthy || { tail -20 "$work/agent.log"; fail "the Redis probe is not healthy: $seen"; }
echo "$seen" | grep -qw phpfpm=healthy || { tail -20 "$work/agent.log"; fail "the PHP-FPM probe is not healthy: $seen"; }
[ -s /var/lib/triad/haproxy-server-state ] || { tail -20 "$work/agent.log"; fail "no HAProxy server-state file was saved"; }
grep -q " redis1 " /var/lib/triad/haproxy-server-state || fail "the state file lacks redis1"
[ "$(stat -c %U /var/lib/triad/haproxy-server-state)" = triad ] || fail "the state file is not the agent's"
if grep -Ei "permission denied|read-only file system|operation not permitted" "$work/agent.log"; then
  fail "the agent hit a permission problem in the sandbox"
fi
say "agent as triad (no capabilities, NoNewPrivs, read-only /usr /boot /etc, private /tmp): probes $seen; redis1 put in service and HAProxy's state saved"
rm -f /etc/triad/sandbox.toml /var/lib/triad/haproxy-server-state
