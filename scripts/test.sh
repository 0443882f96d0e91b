#!/usr/bin/env bash
# Runs every test: the shared rules' unit tests, the extension's pg_tests, and
# the end-to-end tests against real PostgreSQL clusters (and, for the worker
# and the HTTP API, real HTTP on loopback; schemathesis fuzzes the API).
# Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/setup.sh

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="--sudo"
# Each step says how long the run has taken so far (bash's SECONDS), so a
# CI log shows where its time goes.
step() { printf '\n\033[1;34m==> [%dm%02ds] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# Every test command's output also goes to $LOG, for the total at the end.
t() { "$@" 2>&1 | tee -a "$LOG"; }

step "unit tests: postbox-rules"
t cargo test -p postbox-rules

step "unit tests: postbox-runtime (settings, connection strings, TLS, shared by the worker and the API)"
t cargo test -p postbox-runtime

step "pg_tests: the extension inside PostgreSQL 15"
PGRX_TEST_DIR=${PGRX_TEST_DIR:-/tmp/postbox-pgrx-test}
mkdir -p "$PGRX_TEST_DIR"
[ "$(id -u)" = 0 ] && chown postgres "$PGRX_TEST_DIR"
(cd extension && t cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_TEST_DIR/data")

step "install the extension (without the test schema) for the end-to-end tests"
(cd extension && cargo pgrx install $SUDO --pg-config "$PG_CONFIG")
# Released install scripts, frozen, for the upgrade test (pgrx installs only
# the current version's script and the upgrade scripts).
${SUDO:+sudo} install -m 644 sql/released/*.sql "$("$PG_CONFIG" --sharedir)/extension/"

step "the release archive, for its install test"
POSTBOX_RELEASE_ARCHIVE=$(bash scripts/release.sh | tail -1)
export POSTBOX_RELEASE_ARCHIVE

step "end-to-end tests against real clusters"
export POSTBOX_PYTHON="$ROOT/target/pyvenv/bin/python"
t cargo test -p postbox-tests

step "worker: unit tests and integration tests (real cluster, real HTTP receivers)"
t cargo test -p postbox-worker

step "HTTP API: unit tests, integration tests (real cluster, real HTTP), schemathesis"
t cargo test -p postbox-api

step "postbox-sql, the SQL-only flavour, on PostgreSQL 14 to 18 (target/pg), installed by a role that is not a superuser"
# The same end-to-end tests against the SQL flavour: emit, triggers and
# their privilege cases, delivery with the real worker, and the SQL
# flavour's own tests (the differential test of the rules, the catalog).
for major in 14 15 16 17 18; do
  printf '\n\033[1m-- PostgreSQL %s\033[0m\n' "$(cat "$ROOT/target/pg/$major/version")"
  export POSTBOX_FLAVOUR=sql POSTBOX_PG_BINDIR="$ROOT/target/pg/$major/native/bin"
  t cargo test -p postbox-tests --test sql_flavour --test extension
  t cargo test -p postbox-worker --test delivery --test ordering
  unset POSTBOX_FLAVOUR POSTBOX_PG_BINDIR
done

step "summary (setup included)"
mkdir -p target
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG" | tee target/test-total.txt
