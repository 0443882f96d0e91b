#!/usr/bin/env bash
# Builds the release archive: the extension's files as `cargo pgrx package`
# lays them out (usr/lib/postgresql/15/lib, usr/share/postgresql/15/extension),
# the worker and API binaries, their systemd units and environment files, the example
# configuration, postbox-sql's scripts, the README and docs, and install.sh.
# Prints the archive's path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/setup.sh >&2
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
VERSION=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
NAME="postbox-$VERSION-pg$PG_MAJOR-$(uname -m)-linux"
OUT="$ROOT/target/release-archive"
STAGE="$OUT/$NAME"

(cd extension && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$OUT/pgrx" >&2)
# The same packages as scripts/bench.sh and scripts/demo.sh build: cargo
# unifies dependencies' features over the packages of one build, and a
# different set (the bench's hyper client) rebuilds both binaries (measured:
# 4 min more of CI's release builds).
cargo build --release -q -p postbox-worker -p postbox-api -p postbox-bench >&2

rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/deploy" "$STAGE/docs"
cp -a "$OUT/pgrx/." "$STAGE/pg/"
# Older versions' install scripts, so upgrades from them work (pgrx packages
# only the current one and the upgrade scripts).
cp sql/released/*.sql "$STAGE/pg/usr/share/postgresql/$PG_MAJOR/extension/"
cp target/release/postbox-worker target/release/postbox-api "$STAGE/bin/"
cp deploy/postbox-worker.service deploy/postbox-worker.env deploy/postbox-api.service deploy/postbox-api.env \
   worker/postbox-worker.example.toml "$STAGE/deploy/"
# postbox-sql (docs/managed.md): this version's install and upgrade
# scripts, and the frozen ones of earlier versions.
mkdir -p "$STAGE/postbox-sql"
python3 scripts/sql-flavour.py "$STAGE/postbox-sql" >&2
cp sql/released/flavour/*.sql "$STAGE/postbox-sql/"
cp README.md "$STAGE/"
cp -a docs/. "$STAGE/docs/"
cat > "$STAGE/install.sh" <<'INSTALL'
#!/bin/sh
# Installs postbox into a PostgreSQL installation, and the worker and API binaries.
#   ./install.sh [ROOT]   ROOT defaults to / (the extension goes where
#                          PostgreSQL's Debian/Ubuntu packages keep theirs,
#                          under ROOT/usr); the binaries go to ROOT/usr/local/bin.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${1:-/}
cp -R "$HERE/pg/usr" "$ROOT/"
mkdir -p "$ROOT/usr/local/bin"
install -m 755 "$HERE/bin/postbox-worker" "$ROOT/usr/local/bin/postbox-worker"
install -m 755 "$HERE/bin/postbox-api" "$ROOT/usr/local/bin/postbox-api"
echo "installed postbox into $ROOT; next: CREATE EXTENSION postbox (or ALTER EXTENSION postbox UPDATE), then start the workers"
INSTALL
chmod 755 "$STAGE/install.sh"
tar -czf "$OUT/$NAME.tar.gz" -C "$OUT" "$NAME"
echo "$OUT/$NAME.tar.gz"
