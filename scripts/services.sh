#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start (or install) them if not.
set -euo pipefail
SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_up; then
    echo "starting PostgreSQL"
    for v in $(ls /etc/postgresql); do $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main start || true; done
fi
if ! command -v redis-server >/dev/null; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if ! redis_up; then
    echo "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 60); do pg_up && redis_up && break; sleep 0.5; done
pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
redis_up || { echo "Redis did not start" >&2; exit 1; }
# Tests connect as postgres over TCP with trust auth (Debian's test machines); make sure it works.
psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1" >/dev/null || {
    echo "cannot connect to PostgreSQL as postgres on 127.0.0.1; set IPAD_MDM_TEST_PG" >&2; exit 1; }
