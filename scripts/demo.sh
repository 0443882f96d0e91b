#!/usr/bin/env bash
# The main job: installs everything, builds postbox, starts a throwaway
# PostgreSQL cluster of its own, and shows signed webhooks leaving the
# database when application rows change; then the HTTP API and a link to the
# settings portal, which stays up (in a terminal) until Enter is pressed.
#
# --sql-only: the same with postbox-sql, the SQL-only flavour of managed
# services (docs/managed.md), installed by a role that is not a superuser
# (CREATEROLE and CREATE on the database), instead of the compiled extension.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SQL_ONLY=""
case "${1:-}" in
  --sql-only) SQL_ONLY=1 ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--sql-only]" >&2; exit 2 ;;
esac

bash scripts/setup.sh

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="--sudo"
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -z "$SQL_ONLY" ]; then
  step "build and install the extension (release) into PostgreSQL 15"
  (cd extension && cargo pgrx install --release $SUDO --pg-config "$PG_CONFIG" >/dev/null)
else
  step "assemble postbox-sql from sql/ (scripts/sql-flavour.py)"
  SQL_SCRIPT=$(python3 scripts/sql-flavour.py | sed -n 1p)  # the install; upgrades follow
  echo "$SQL_SCRIPT"
fi
step "build the worker and the HTTP API (release)"
# The package set of scripts/release.sh and bench.sh (one build of each binary).
cargo build --release -q -p postbox-worker -p postbox-api -p postbox-bench

DEMO="$ROOT/target/demo"
rm -rf "$DEMO" && mkdir -p "$DEMO"
[ "$(id -u)" = 0 ] && chown postgres "$DEMO"
PORT=$(free_port)
RPORT=$(free_port)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$DEMO/data" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "start a throwaway cluster on 127.0.0.1:$PORT ($DEMO)"
as_pg "$PGBIN/initdb" -D "$DEMO/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DEMO/data" -l "$DEMO/server.log" -w \
  -o "-p $PORT -k $DEMO -c listen_addresses=127.0.0.1" start >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }

step "start a receiver on 127.0.0.1:$RPORT that verifies signatures with the standardwebhooks library"
touch "$DEMO/secret"
"$ROOT/target/pyvenv/bin/python" scripts/demo_receiver.py "$RPORT" "$DEMO/secret" > "$DEMO/receiver.log" 2>&1 &
PIDS+=($!)

if [ -z "$SQL_ONLY" ]; then
  step "create the extension"
  psql -c "CREATE EXTENSION postbox"
  INSECURE="SET postbox.allow_insecure_urls = on"
else
  step "install postbox-sql as demo_admin, a role with only CREATEROLE and CREATE on the database (as a managed service's administrator)"
  psql -c "CREATE ROLE demo_admin LOGIN CREATEROLE" -c "GRANT CREATE ON DATABASE postgres TO demo_admin"
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "postgres://demo_admin@127.0.0.1:$PORT/postgres" -f "$SQL_SCRIPT"
  psql -At -c "SELECT 'installed by ' || pg_get_userbyid(nspowner) || ', superuser: ' || (SELECT rolsuper FROM pg_roles WHERE oid = nspowner)
                 FROM pg_namespace WHERE nspname = 'postbox'"
  # The settings are the owner's rows here, not server settings.
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "postgres://demo_admin@127.0.0.1:$PORT/postgres" \
    -c "UPDATE postbox.settings SET value = 'on' WHERE name = 'allow_insecure_urls'"
  INSECURE="SET client_min_messages = warning"  # (nothing to set: the owner did above)
fi

step "an application table with postbox.attach, and an endpoint"
psql <<SQL
CREATE SCHEMA app;
CREATE TABLE app.recordings (id serial PRIMARY KEY, workspace_id text NOT NULL, title text, duration_s int);
SELECT postbox.attach('app.recordings', 'recording', 'workspace_id');
SQL
# A local receiver is http on loopback: the development switch admits it.
psql -At -c "$INSECURE" \
  -c "SELECT secret FROM postbox.create_endpoint('acme', 'http://127.0.0.1:$RPORT/webhooks', '{recording.*}',
        headers => '{\"Authorization\": \"Bearer demo-token\"}')" > "$DEMO/secret"
echo "endpoint registered; its secret (shown once): $(cut -c1-14 "$DEMO/secret")..."

step "the application writes rows; each write emits an event in the same transaction"
psql <<'SQL'
INSERT INTO app.recordings (workspace_id, title, duration_s) VALUES
  ('acme', 'Weekly sync', 1800), ('acme', 'Customer call', 2400), ('other-tenant', 'Not for acme', 60);
UPDATE app.recordings SET title = 'Weekly sync (edited)' WHERE title = 'Weekly sync';
BEGIN;
INSERT INTO app.recordings (workspace_id, title) VALUES ('acme', 'Rolled back: never sent');
ROLLBACK;
DELETE FROM app.recordings WHERE title = 'Customer call';
SQL
echo "emitted, before any worker runs (one row per statement; the worker makes one event per row):"
psql -c "SELECT event_type, coalesce(tenant, '(per row)') AS tenant,
                CASE WHEN rows IS NULL THEN 1 ELSE json_array_length(rows) END AS events
           FROM postbox.emitted ORDER BY id" \
     -c "SELECT tenant, url, status, pending FROM postbox.endpoint_status"

step "start postbox-worker; signed deliveries arrive"
POSTBOX_DATABASE_URL="$DATABASE_URL" POSTBOX_ALLOW_PRIVATE_TARGETS=true POSTBOX_LOG=warn \
  target/release/postbox-worker > "$DEMO/worker.log" 2>&1 &
WORKER=$!
PIDS+=($WORKER)
for _ in $(seq 1 300); do
  n=$(psql -At -c "SELECT count(*) FROM postbox.deliveries WHERE status = 'succeeded'")
  [ "$n" -ge 4 ] && break
  sleep 0.1
done
cat "$DEMO/receiver.log"
psql -c "SELECT d.id, d.event_type, d.status, d.attempts, d.last_status_code FROM postbox.deliveries d ORDER BY d.id" \
     -c "SELECT url, status, consecutive_failures, pending FROM postbox.endpoint_status"
[ "$n" -ge 4 ] || { echo "expected 4 deliveries, got $n; see $DEMO/worker.log"; exit 1; }

APORT=$(free_port)
step "start postbox-api on 127.0.0.1:$APORT (as a LOGIN role granted postbox_admin) and read the endpoint with an API key"
psql -c "CREATE ROLE postbox_api LOGIN IN ROLE postbox_admin, postbox_emitter"
# Its statement parameters carry new keys and secrets: never in the server log.
psql -c "ALTER ROLE postbox_api SET log_parameter_max_length = 0"
KEY=$(psql -At -c "SELECT key FROM postbox.create_api_key('acme', 'member', 'demo')")
POSTBOX_API_DATABASE_URL="postgres://postbox_api@127.0.0.1:$PORT/postgres" POSTBOX_API_LISTEN="127.0.0.1:$APORT" \
  POSTBOX_API_LOG=warn target/release/postbox-api > "$DEMO/api.log" 2>&1 &
API=$!
PIDS+=($API)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$APORT/healthz" >/dev/null && break
  sleep 0.1
done
echo "curl -H 'Authorization: Bearer ${KEY:0:12}...' http://127.0.0.1:$APORT/v1/endpoints"
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$APORT/v1/endpoints" \
  | "$ROOT/target/pyvenv/bin/python" -c 'import json, sys
for e in json.load(sys.stdin)["data"]:
    print(json.dumps({k: e[k] for k in ("id", "url", "event_types", "status", "secrets")}, indent=2))'

step "the settings portal: the product's backend asks for a link for tenant acme with its operator key"
OPERATOR=$(psql -At -c "SELECT key FROM postbox.create_api_key(NULL, 'operator', 'demo backend')")
LINK=$(curl -sf -X POST "http://127.0.0.1:$APORT/v1/tenants/acme/portal-sessions" \
  -H "Authorization: Bearer $OPERATOR" -H 'Content-Type: application/json' -d '{"role": "admin", "valid_for_seconds": 3600}' \
  | "$ROOT/target/pyvenv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["url"])')
echo "portal link for acme (works once, for an hour): $LINK"
step "done: 4 signed webhooks delivered (the rolled-back insert and the other tenant's row sent nothing), the endpoint read over HTTP, and a portal link"
if [ -t 0 ]; then
  echo "Open the portal link in a browser on this machine; the cluster, worker and API run until you press Enter."
  read -r _
fi
kill -TERM "$API" "$WORKER" 2>/dev/null || true
wait "$API" "$WORKER" 2>/dev/null || true
