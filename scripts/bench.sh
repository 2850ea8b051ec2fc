#!/usr/bin/env bash
# `make bench`: runs every bench/*.py, prints its figures and keeps them in test-output/bench/.
# MPM_BENCH_POSTGRES=1 also starts a private PostgreSQL on loopback (as scripts/test.sh does) and
# runs again, on it, the benchmarks that honour MPM_BENCH_DATABASE_URL.
# Copy the figures, the machine and the date into bench/RESULTS.md when they change.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
out=test-output/bench
mkdir -p "$out"
status=0

run() {  # run NAME SCRIPT [env...]
  local name=$1 script=$2
  shift 2
  echo "== $name ($(date -u '+%Y-%m-%d %H:%M UTC')) =="
  env "$@" "$BIN/python" "$script" 2>&1 | tee "$out/$name.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "!! $name failed"; status=1; }
}

for script in bench/*.py; do
  [ "$(basename "$script")" = loopback.py ] && continue  # shared code of the benchmarks, not one of them
  run "$(basename "$script" .py)" "$script"
done

if [ "${MPM_BENCH_POSTGRES:-0}" = 1 ]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  run_dir=$(mktemp -d /tmp/mpm-bench-XXXXXX)
  chmod 755 "$run_dir"
  trap 'su postgres -c "$PGBIN/pg_ctl -D $run_dir/pg -m fast stop" >/dev/null 2>&1; rm -rf "$run_dir"' EXIT
  port=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir "$run_dir/pg" "$run_dir/pgsock" && chown postgres "$run_dir/pg" "$run_dir/pgsock"
  su postgres -c "$PGBIN/initdb -D $run_dir/pg -A trust -U postgres -E UTF8" >/dev/null
  # Durable settings (fsync on): these figures should hold on a real server.
  su postgres -c "$PGBIN/pg_ctl -D $run_dir/pg -l $run_dir/pg/server.log -w start \
    -o '-p $port -k $run_dir/pgsock -c listen_addresses=127.0.0.1 -c max_connections=200'" >/dev/null
  su postgres -c "psql -h 127.0.0.1 -p $port -c 'CREATE DATABASE mpm_bench'" >/dev/null
  for script in $(grep -l MPM_BENCH_DATABASE_URL bench/*.py); do
    run "$(basename "$script" .py)-postgresql" "$script" \
      MPM_BENCH_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/mpm_bench"
  done
fi
exit $status
