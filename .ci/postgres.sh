#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the tests and print its URL.
# Usage: export FBMARKET_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
set -euo pipefail
PORT=${PGPORT_TEST:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
DATA=$(mktemp -d /tmp/fbmarket-pg.XXXXXX)
chown postgres:postgres "$DATA"
run() { runuser -u postgres -- "$@"; }
run "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
run "$BIN/pg_ctl" -D "$DATA" -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA" -l "$DATA/server.log" -w start >/dev/null
run "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres fbmarket_test
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/fbmarket_test"
