-- postbox schema: roles and tables, each with its comment and grants.
-- Loaded first (bootstrap); the functions and views follow in the other
-- sql/ files (extension/src/lib.rs lists them in order).
--
-- Shape of the outbox, and why (figures in docs/measurements.md):
--   * emit writes ONE lean row into postbox.emitted and looks nothing up
--     (no routing, no index beyond its key): every row and lookup on the emit
--     path costs the application's TPS directly. A statement trigger writes
--     one row for the whole statement, its rows as a JSON array.
--   * the worker turns emitted rows into postbox.events and routes them into
--     postbox.outbox rows in batches right after commit (postbox.expand_events).
--     Routing then uses the endpoints as they were at emit: created before it,
--     not paused at that moment (postbox.endpoint_pauses), not disabled.
--   * the worker claims outbox rows with FOR UPDATE SKIP LOCKED and a lease.
--   * a succeeded delivery is deleted from postbox.outbox; its record lives in
--     the append-only postbox.attempt_log. Failed and cancelled deliveries stay
--     in the outbox so they can be inspected and retried.
--   * every events, outbox and attempt_log row carries `tenant`, so the tables
--     can later be distributed by tenant.

DO $roles$
BEGIN
    -- Roles are cluster-wide: create them only if an earlier install did not.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'postbox_emitter') THEN
        CREATE ROLE postbox_emitter NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'postbox_admin') THEN
        CREATE ROLE postbox_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'postbox_worker') THEN
        CREATE ROLE postbox_worker NOLOGIN;
    END IF;
END
$roles$;
-- Each role reaches only the objects granted to it below and beside the
-- functions; PUBLIC gets nothing (sql/native.sql takes back what CREATE
-- FUNCTION gives it).
GRANT USAGE ON SCHEMA postbox TO postbox_emitter, postbox_admin, postbox_worker;

CREATE TABLE postbox.event_types (
    name        text PRIMARY KEY,
    description text,
    schema      jsonb,
    -- A sample payload (an object): what send_test sends when given no data.
    example     jsonb,
    -- Every filter string that matches this name ('*', 'a.*', ..., the name),
    -- so emit can match endpoints with a plain array overlap.
    match_keys  text[] NOT NULL,
    builtin     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('postbox.event_types', 'WHERE NOT builtin');
COMMENT ON TABLE postbox.event_types IS 'The event catalog: names endpoints can subscribe to and emit can send.';
GRANT SELECT ON postbox.event_types TO postbox_emitter;
GRANT SELECT ON postbox.event_types TO postbox_admin;

INSERT INTO postbox.event_types (name, description, match_keys, builtin)
VALUES ('webhook.test', 'A test event sent by postbox.send_test.',
        ARRAY['*', 'webhook.*', 'webhook.test'], true);

-- postbox's own events, for the product that runs it (0.9.0): they go only
-- to the operator tenant's endpoints (postbox.operator_tenant()), and only
-- postbox writes them (postbox._operator_events). Their data: the tenant,
-- the endpoint, its URL and the reason (a delivery's ids too, for
-- exhausted). Each name's match keys as _event_match_keys makes them.
INSERT INTO postbox.event_types (name, description, example, match_keys, builtin)
SELECT 'postbox.' || x.name, x.description,
       jsonb_build_object('tenant', 'acme', 'endpoint_id', '01900000-0000-7000-8000-000000000000',
                          'url', 'https://example.com/webhooks', 'reason', x.reason),
       ARRAY['*', 'postbox.*', 'postbox.' || split_part(x.name, '.', 1) || '.*', 'postbox.' || x.name], true
  FROM (VALUES
        ('endpoint.failing', 'An endpoint''s attempts started failing (its first failure after a success, or ever).',
         'HTTP 500'),
        ('endpoint.disabled', 'An endpoint was disabled automatically; its pending deliveries were cancelled.',
         '5 consecutive failed attempts since 2026-01-01 00:00:00 UTC'),
        ('endpoint.recovered', 'An endpoint that was failing, or disabled and resumed, delivered again.',
         'a delivery succeeded'),
        ('delivery.exhausted', 'A delivery failed for good: its retries ran out, or the endpoint refused it.',
         'HTTP 500'),
        ('endpoint.created', 'A tenant''s endpoint was created.', 'created'),
        ('endpoint.updated', 'A tenant''s endpoint was changed, paused or resumed.', 'changed: url'),
        ('endpoint.deleted', 'A tenant''s endpoint was deleted.', 'deleted')) AS x(name, description, reason);

CREATE TABLE postbox.tenant_limits (
    tenant        text PRIMARY KEY,
    max_endpoints integer NOT NULL CHECK (max_endpoints >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('postbox.tenant_limits', '');
COMMENT ON TABLE postbox.tenant_limits IS 'Per-tenant endpoint limits; a tenant without a row has no limit, 0 means no webhooks.';
GRANT SELECT ON postbox.tenant_limits TO postbox_admin;

CREATE TABLE postbox.endpoints (
    id                   uuid PRIMARY KEY,
    tenant               text NOT NULL,
    url                  text NOT NULL,
    event_types          text[] NOT NULL,
    headers              jsonb NOT NULL DEFAULT '{}',
    description          text,
    signature_style      text NOT NULL CHECK (signature_style IN ('standard', 'sha256-hex', 'hex')),
    signature_header     text,
    -- The body's shape around the event's data (worker/src/claim.rs builds it).
    envelope             text NOT NULL DEFAULT 'postbox' CHECK (envelope IN ('postbox', 'standard', 'flat')),
    options              jsonb NOT NULL DEFAULT '{}',
    enabled              boolean NOT NULL DEFAULT true,
    -- The tenant's plan has no webhooks (its endpoint limit is 0): behaves as
    -- paused, apart from enabled, which stays the admin's own switch.
    suspended            boolean NOT NULL DEFAULT false,
    disabled_at          timestamptz,
    disabled_reason      text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    last_attempt_at      timestamptz,
    last_success_at      timestamptz,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- When an admin last resumed it (update_endpoint enabled => true, 0.9.0):
    -- on Citus, the worker node that keeps its health clears it on seeing
    -- this change (sql/citus.sql).
    resumed_at           timestamptz,
    -- The operator was told it is failing (postbox.endpoint.failing) and
    -- not yet that it recovered (0.9.0): so each is told once.
    notified_failing     boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70);  -- the worker updates health columns often: room for HOT updates
SELECT pg_catalog.pg_extension_config_dump('postbox.endpoints', '');
COMMENT ON TABLE postbox.endpoints IS 'Webhook endpoints: configuration and health. Secrets live in endpoint_secrets.';
-- The worker's claim reads each endpoint's configuration.
GRANT SELECT ON postbox.endpoints TO postbox_worker;
-- Admins read the columns routing reads (endpoint_status.pending inlines
-- the routing rule, and an inlined function's tables are read with the
-- caller's rights); none of them is secret.
GRANT SELECT (id, tenant, event_types, created_at, disabled_at, options) ON postbox.endpoints TO postbox_admin;
-- The worker records each endpoint's health after its attempts.
GRANT UPDATE (disabled_at, disabled_reason, consecutive_failures, failing_since,
              last_attempt_at, last_success_at, last_error, updated_at, notified_failing)
   ON postbox.endpoints TO postbox_worker;

-- Expansion routes by tenant; management and the views filter by it.
CREATE INDEX endpoints_tenant ON postbox.endpoints (tenant);

-- Kept apart from endpoints so that only the worker's role can read them.
CREATE TABLE postbox.endpoint_secrets (
    endpoint_id uuid NOT NULL REFERENCES postbox.endpoints (id) ON DELETE CASCADE,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL for the current secret; set by a rotation's grace period.
    expires_at  timestamptz,
    PRIMARY KEY (endpoint_id, created_at)
);
SELECT pg_catalog.pg_extension_config_dump('postbox.endpoint_secrets', '');
COMMENT ON TABLE postbox.endpoint_secrets IS 'Signing secrets; only postbox_worker can read them. Rotated ones keep expires_at until their grace ends.';
-- The worker signs with them (the claim reads them).
GRANT SELECT ON postbox.endpoint_secrets TO postbox_worker;

-- Pause history: routing at expansion skips endpoints that were paused when
-- an event was emitted, even if they have been resumed since. An admin's
-- pause (enabled => false) and a plan's (tenant limit 0) are kept apart, so
-- that lifting one does not lift the other.
CREATE TABLE postbox.endpoint_pauses (
    endpoint_id uuid NOT NULL REFERENCES postbox.endpoints (id) ON DELETE CASCADE,
    tenant      text NOT NULL,
    paused_at   timestamptz NOT NULL,
    resumed_at  timestamptz,  -- NULL while paused
    reason      text NOT NULL DEFAULT 'admin' CHECK (reason IN ('admin', 'plan')),
    PRIMARY KEY (endpoint_id, paused_at)
);
SELECT pg_catalog.pg_extension_config_dump('postbox.endpoint_pauses', '');
COMMENT ON TABLE postbox.endpoint_pauses IS 'When each endpoint was paused and resumed: events emitted meanwhile never go to it.';
GRANT SELECT ON postbox.endpoint_pauses TO postbox_admin;

-- The emit buffer: what emit and the triggers write in the application's
-- transaction. The worker moves each row into events and outbox and deletes it.
CREATE TABLE postbox.emitted (
    id           uuid PRIMARY KEY,  -- version 7; for emit() the event's id
    -- NULL for a statement's rows: each row's tenant column says.
    tenant       text,
    event_type   text NOT NULL,
    created_at   timestamptz NOT NULL,
    data         jsonb,  -- one event (emit, row triggers)
    rows         json,   -- or a statement's rows, one event each
    -- With rows: resource, tenant column, payload columns, and after an
    -- empty string the key columns (the triggers' arguments, sql/emit.sql).
    -- No CHECK that exactly one of data and rows is set: only postbox's own
    -- functions write here, and a CHECK is re-read from the catalog text on
    -- every insert (measured: ~12% of the statement trigger's insert).
    trigger_args text[],
    -- With data: the event's ordering key (0.9.0), emit's or the row's.
    ordering_key text
) WITH (
    -- A queue: every row is deleted soon after it is written. Vacuum early.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE postbox.emitted IS 'The emit buffer: what emit and the triggers wrote, not yet turned into events and outbox rows.';
-- The worker's metrics count the backlog.
GRANT SELECT ON postbox.emitted TO postbox_worker;

-- A statement's rows are one large JSON value. pglz compressing it cost a
-- 10,000-row INSERT more than writing the rows; lz4 (where this build has it)
-- is several times faster.
DO $lz4$
BEGIN
    ALTER TABLE postbox.emitted ALTER COLUMN rows SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: pglz, the default
END
$lz4$;

-- Emitted rows that expansion could not turn into events (data PostgreSQL
-- refuses), set aside with the reason so the rest goes on. Admins read it.
CREATE TABLE postbox.emitted_rejects (
    id           uuid PRIMARY KEY,
    tenant       text,
    event_type   text NOT NULL,
    created_at   timestamptz NOT NULL,
    data         jsonb,
    rows         json,
    trigger_args text[],
    reason       text NOT NULL,
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    ordering_key text  -- 0.9.0
);
COMMENT ON TABLE postbox.emitted_rejects IS 'Emitted rows expansion could not turn into events, with the reason; nothing of them was sent.';
GRANT SELECT ON postbox.emitted_rejects TO postbox_admin;

CREATE TABLE postbox.events (
    id         uuid PRIMARY KEY,  -- version 7: time-ordered
    tenant     text NOT NULL,
    event_type text NOT NULL,
    created_at timestamptz NOT NULL,
    -- json, not jsonb (0.9.0): the text jsonb renders, made once at
    -- expansion, which the claim hands to the worker as it is. Rendering
    -- jsonb to text on every claim was most of the claim's time (measured:
    -- 13 of 20 ms for 1,600 600-byte events), and an event is claimed once
    -- per endpoint. Views cast it back to jsonb.
    data       json NOT NULL,
    -- The key whose events an ordered endpoint receives one at a time
    -- (0.9.0): emit's ordering_key, or an attached table's row; NULL: none.
    ordering_key text
);
COMMENT ON TABLE postbox.events IS 'Events, written by the worker when it expands postbox.emitted; deliveries point here.';
-- The worker's claim reads the event of each delivery.
GRANT SELECT ON postbox.events TO postbox_worker;

CREATE TABLE postbox.idempotency_keys (
    tenant     text NOT NULL,
    key        text NOT NULL,
    event_id   uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);
COMMENT ON TABLE postbox.idempotency_keys IS 'Idempotency keys of emit, per tenant: a repeated key returns the first event''s id.';
-- Purging by age (postbox.purge). BRIN: keys arrive in time order, and a
-- range summary costs emit next to nothing.
CREATE INDEX idempotency_keys_created ON postbox.idempotency_keys USING brin (created_at);

CREATE TABLE postbox.outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text NOT NULL,
    endpoint_id     uuid NOT NULL,
    event_id        uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    -- coalesced (0.9.0): a newer event of its key and type
                    -- was queued before it was sent (option coalesce).
                    CHECK (status IN ('pending', 'failed', 'cancelled', 'coalesced')),
    is_test         boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A claim sets the lease; neither column is indexed, so claims are HOT updates.
    lease_until     timestamptz,
    leased_by       text,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A batching endpoint's delivery (0.9.0): how many times a batch that
    -- carried it was split in halves; it goes in batches of at most
    -- batch_max_events / 2^batch_split events (worker/src/batch.rs).
    batch_split     smallint NOT NULL DEFAULT 0,
    -- An ordered endpoint's delivery (0.9.0): its event's ordering key,
    -- hashed (postbox._ordering_hash; an event without a key has the empty
    -- key, so the endpoint is one key). The claim sends only the oldest
    -- pending delivery of a key. NULL: the endpoint was not ordered when
    -- the delivery was queued.
    ordering_key    bigint
) WITH (
    fillfactor = 50,  -- measured: half-full pages make ~93% of claim updates HOT
    -- Every delivery leaves dead tuples at the front of the claim index, which
    -- each claim must step over until vacuum runs: vacuum early and at full speed.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE postbox.outbox IS 'Deliveries not yet succeeded: pending (claimed with a lease), failed or cancelled. Succeeded ones move to attempt_log.';
-- The worker claims (FOR UPDATE SKIP LOCKED), reschedules and deletes
-- deliveries itself: the hot path, without a function call per row.
GRANT SELECT, UPDATE, DELETE ON postbox.outbox TO postbox_worker;

-- Due work per endpoint, in order: fair claiming and the pending counts.
CREATE INDEX outbox_due ON postbox.outbox (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- Test sends to paused or disabled endpoints, which the fair claim skips. Tiny:
-- only test rows enter it.
-- The head of each ordering key: the claim's walk over an ordered
-- endpoint's keys, one step per key however many deliveries wait behind
-- its head.
CREATE INDEX outbox_key_heads ON postbox.outbox (endpoint_id, ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
-- Given-up deliveries of ordered endpoints: under ordering_given_up "hold"
-- they keep the later deliveries of their key waiting.
CREATE INDEX outbox_key_held ON postbox.outbox (endpoint_id, ordering_key, id)
    WHERE status = 'failed' AND ordering_key IS NOT NULL;
CREATE INDEX outbox_tests_due ON postbox.outbox (next_attempt_at)
    WHERE is_test AND status = 'pending';
-- Failed and cancelled deliveries by tenant and endpoint: the deliveries view
-- filtered by tenant, and replay. Pending rows never enter it, so the hot
-- path (expansion, claims) does not maintain it.
CREATE INDEX outbox_settled ON postbox.outbox (tenant, endpoint_id, created_at)
    WHERE status <> 'pending';

CREATE TABLE postbox.attempt_log (
    delivery_id      bigint NOT NULL,
    tenant           text NOT NULL,
    endpoint_id      uuid NOT NULL,
    event_id         uuid NOT NULL,
    attempt          integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    status_code      integer,
    response_excerpt text,
    error            text,
    -- What the attempt did to its delivery.
    -- split (0.9.0): a batch split in halves, each retried at once.
    outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'retrying', 'failed', 'cancelled', 'split')),
    is_test          boolean NOT NULL DEFAULT false,
    queued_at        timestamptz NOT NULL,
    -- The headers the attempt sent, as the worker sent them, but the
    -- signature, custom values masked (worker/src/request.rs); NULL: nothing
    -- was sent. Rows written before 0.7.0 hold the custom headers only.
    request_headers  jsonb,
    -- A batch's attempt (0.9.0): one row for the request, which carried
    -- every delivery in delivery_ids (their events in event_ids, in the
    -- body's order); delivery_id and event_id are the first's. batch_id is
    -- the request's webhook-id. NULL for a request of one delivery.
    batch_id         uuid,
    delivery_ids     bigint[],
    event_ids        uuid[]
) WITH (
    -- A 100-event batch's row is about 2.7 kB: kept whole on its page
    -- rather than compressed with pglz (measured: pglz_compress was 2% of
    -- PostgreSQL's CPU in bench figure 11) or moved out of line.
    toast_tuple_target = 8160
);
COMMENT ON TABLE postbox.attempt_log IS 'Append-only log of delivery attempts: one row per request, a batch''s with every delivery it carried.';
-- The worker logs every attempt.
GRANT INSERT ON postbox.attempt_log TO postbox_worker;

CREATE INDEX attempt_log_delivery ON postbox.attempt_log (delivery_id);
-- A tenant's log, an endpoint's log in time order, and endpoint_stats'
-- windows: index range scans (with the outcome, index-only), never the whole log.
CREATE INDEX attempt_log_endpoint ON postbox.attempt_log (tenant, endpoint_id, started_at)
    INCLUDE (outcome);
-- A batch larger than a page is still compressed: with lz4 where this build
-- has it, several times cheaper than pglz (as for emitted.rows).
DO $lz4$
BEGIN
    ALTER TABLE postbox.attempt_log ALTER COLUMN delivery_ids SET COMPRESSION lz4,
                                    ALTER COLUMN event_ids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: pglz, the default
END
$lz4$;
-- A delivery's attempts in batches (the deliveries and attempts views by
-- delivery id). Only batch rows enter it, and a GIN index's pending list
-- makes an insert of a 100-event batch cheap.
CREATE INDEX attempt_log_batch_deliveries ON postbox.attempt_log USING gin (delivery_ids)
    WHERE delivery_ids IS NOT NULL;
-- Purging by age (postbox.purge): the log is appended in time order.
CREATE INDEX attempt_log_started ON postbox.attempt_log USING brin (started_at);

-- How long postbox keeps what it no longer needs; postbox.purge deletes what
-- is older. At most one row: set_retention or the first purge writes it
-- with the defaults below. (No row at install, so that pg_dump's copy of a
-- changed row restores into a fresh CREATE EXTENSION without a conflict.)
CREATE TABLE postbox.retention (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Succeeded attempts (and so the success rates of endpoint_stats, whose
    -- longest window is 7 days).
    succeeded_attempts interval NOT NULL DEFAULT '7 days',
    -- Attempts that failed or were retried, and rejected emitted rows.
    failed_attempts    interval NOT NULL DEFAULT '30 days',
    -- Events no delivery refers to any more, and the pause history.
    events             interval NOT NULL DEFAULT '7 days',
    -- Cancelled deliveries. Failed ones stay until retried or their endpoint is deleted.
    cancelled_deliveries interval NOT NULL DEFAULT '30 days',
    -- At least a day: a retried emit must still find its key.
    idempotency_keys   interval NOT NULL DEFAULT '24 hours',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Revoked HTTP API keys (0.6.0): kept this long to show in lists, then gone.
    revoked_api_keys   interval NOT NULL DEFAULT '30 days'
);
SELECT pg_catalog.pg_extension_config_dump('postbox.retention', '');
COMMENT ON TABLE postbox.retention IS 'How long postbox keeps attempts, events, cancelled deliveries, idempotency keys, pause history and revoked API keys it no longer needs; postbox.purge deletes what is older. Empty until set_retention or the first purge writes the defaults.';
GRANT SELECT ON postbox.retention TO postbox_admin;

-- The wake-up flag. NOTIFY takes a database-wide lock at commit, so emit
-- notifies only while a worker has said it is waiting; a worker clears the
-- flag as soon as it wakes. Unlogged: after a crash the row is gone, emit
-- then sees no waiter, and the worker's poll covers it.
CREATE UNLOGGED TABLE postbox.wakeup (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    waiting   boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE postbox.wakeup IS 'One-row wake-up flag: emit NOTIFYs only while a worker says it is waiting.';
-- The worker raises the flag before it waits and clears it when woken.
GRANT SELECT, INSERT, UPDATE ON postbox.wakeup TO postbox_worker;
INSERT INTO postbox.wakeup DEFAULT VALUES;

-- Workers alive. Each worker refreshes its row every second
-- (postbox.worker_heartbeat); a row left unrefreshed marks a dead worker,
-- whose claims the others release at once instead of waiting for their
-- leases. Logged, so that a dead worker's row outlives a crash of the
-- database and its claims are still found.
CREATE TABLE postbox.workers (
    worker_id   text PRIMARY KEY,
    -- A random id per process: the same worker_id with another instance is
    -- the worker restarted, and its old claims are nobody's.
    instance    uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    -- Since when it has been seen without a gap: only a worker seen this
    -- long judges others, so after an outage every worker has time to return.
    alive_since timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE postbox.workers IS 'Workers alive: each refreshes its row every second; one not seen for a few seconds is dead, and its claims are released.';
GRANT SELECT ON postbox.workers TO postbox_admin;
-- The workers' registry: liveness reads and releases the dead ones' rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON postbox.workers TO postbox_worker;

-- Keys of the HTTP API (postbox-api). Only a key's SHA-256 is kept: the key
-- is shown once, when made or rotated. Operator keys (the application's own
-- backend) act for every tenant and so have none; every other key belongs to
-- one tenant. Nothing is granted on this table: the functions that read and
-- write it are the only way in.
CREATE TABLE postbox.api_keys (
    id           uuid PRIMARY KEY,  -- version 7: time-ordered
    tenant       text,
    role         text NOT NULL CHECK (role IN ('admin', 'member', 'operator')),
    label        text NOT NULL,
    -- sha256 of the whole key; this unique index is the lookup.
    key_hash     bytea NOT NULL UNIQUE,
    -- The key's first characters, to tell keys apart in lists.
    key_prefix   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz,
    -- Written at most once a minute per key, so reads stay reads.
    last_used_at timestamptz,
    revoked_at   timestamptz,
    -- The portal session that made the key (NULL: made with a key or in
    -- SQL), and the product's user that session was for (0.6.0). A session
    -- may manage only the keys it made or its user's.
    made_by_session uuid,
    for_user     text,
    CHECK ((role = 'operator') = (tenant IS NULL))
);
SELECT pg_catalog.pg_extension_config_dump('postbox.api_keys', '');
COMMENT ON TABLE postbox.api_keys IS 'HTTP API keys (postbox-api): each key''s SHA-256, tenant (none for operator keys), role, label and use; granted to no one.';
CREATE INDEX api_keys_tenant ON postbox.api_keys (tenant, created_at);
-- Purging revoked keys by age (postbox.purge); live keys never enter it.
CREATE INDEX api_keys_revoked ON postbox.api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

-- The HTTP API's first response to each POST with an Idempotency-Key, per
-- tenant, for the idempotency_keys retention window. A response may hold a
-- secret (a new endpoint's, a rotated key): nothing is granted on it.
CREATE TABLE postbox.api_idempotency (
    tenant          text NOT NULL,
    idempotency_key text NOT NULL,
    -- sha256 of the request (method, path, query, body): a repeat with the
    -- same key must be the same request.
    request_hash    bytea NOT NULL,
    status          smallint NOT NULL DEFAULT 0,  -- 0 until the response is stored
    body            text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The key or portal session that sent the request (0.6.0): a stored
    -- answer (which may hold a new secret) goes back only to its sender.
    credential      uuid NOT NULL,
    PRIMARY KEY (tenant, credential, idempotency_key)
);
COMMENT ON TABLE postbox.api_idempotency IS 'The HTTP API''s first response to each POST with an Idempotency-Key, per tenant, for the idempotency_keys window; holds secrets, granted to no one.';
CREATE INDEX api_idempotency_created ON postbox.api_idempotency USING brin (created_at);

-- Sessions of the settings portal that postbox-api serves. The product's
-- backend asks for a link for one tenant; the link's token works once, for
-- a short while, and opens a session whose cookie the browser keeps. Only
-- SHA-256 of the token and of the cookie are kept. Nothing is granted on it.
CREATE TABLE postbox.portal_sessions (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    -- admin changes the tenant's endpoints; member only sees them.
    role            text NOT NULL CHECK (role IN ('admin', 'member')),
    link_hash       bytea NOT NULL UNIQUE,
    link_expires_at timestamptz NOT NULL,
    -- Set when the link is used, once.
    session_hash    bytea UNIQUE,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Whether the session may make and manage API keys (0.6.0), and the
    -- product's user it is for (optional): such a session manages only the
    -- keys it made or that user's.
    manage_keys     boolean NOT NULL DEFAULT false,
    user_id         text,
    CONSTRAINT portal_sessions_manage_keys_admin CHECK (NOT manage_keys OR role = 'admin')
);
COMMENT ON TABLE postbox.portal_sessions IS 'Settings portal links and sessions (postbox-api): SHA-256 of the one-time link token and of the session cookie, tenant, role, ends; granted to no one.';
CREATE INDEX portal_sessions_created ON postbox.portal_sessions USING brin (created_at);
