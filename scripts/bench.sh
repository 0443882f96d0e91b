#!/usr/bin/env bash
# Runs postbox's benchmarks on this machine and prints a table; the figures
# also go to target/bench/results.json. `--quick` (what CI runs) shrinks every
# figure to check that each is produced, in under 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="--sudo"

(cd extension && cargo pgrx install --release $SUDO --pg-config "$PG_CONFIG" >/dev/null)
# The package set of scripts/release.sh and demo.sh (one build of each binary).
cargo build --release -q -p postbox-worker -p postbox-api -p postbox-bench
exec target/release/postbox-bench "$@"
