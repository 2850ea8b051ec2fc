#!/usr/bin/env bash
# Installs and starts what the tests need (Redis, PostgreSQL, Chromium), then runs the whole
# suite on SQLite and again on PostgreSQL. Called by `make test` after the virtualenv is ready.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" fonts-dejavu-core >/dev/null
fi

run_dir=$(mktemp -d /tmp/mpm-test-XXXXXX)
chmod 755 "$run_dir"
cleanup() {
  [ -f "$run_dir/redis.pid" ] && kill "$(cat "$run_dir/redis.pid")" 2>/dev/null || true
  [ -d "$run_dir/pg" ] && su postgres -c "$PGBIN/pg_ctl -D $run_dir/pg -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$run_dir"
}
trap cleanup EXIT

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A private Redis on loopback for the queue tests.
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$run_dir/redis.pid" --logfile "$run_dir/redis.log"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

# A private PostgreSQL cluster on loopback, owned by the postgres user.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_PORT=$(free_port)
mkdir "$run_dir/pg" "$run_dir/pgsock" && chown postgres "$run_dir/pg" "$run_dir/pgsock"
su postgres -c "$PGBIN/initdb -D $run_dir/pg -A trust -U postgres -E UTF8" >/dev/null
su postgres -c "$PGBIN/pg_ctl -D $run_dir/pg -l $run_dir/pg/server.log -w start \
  -o '-p $PG_PORT -k $run_dir/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off'" >/dev/null
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"

mkdir -p test-output
status=0
echo "== ruff (pyflakes) =="
"$BIN/ruff" check mpm tests bench || status=$?
echo "== tests on SQLite =="
MPM_TEST_OUTPUT=test-output/sqlite "$BIN/python" -m pytest -p no:cacheprovider "$@" || status=$?
echo "== tests on PostgreSQL =="
MPM_TEST_DATABASE_URL="$PG_URL" MPM_TEST_OUTPUT=test-output/postgresql \
  "$BIN/python" -m pytest -p no:cacheprovider "$@" || status=$?
exit $status
