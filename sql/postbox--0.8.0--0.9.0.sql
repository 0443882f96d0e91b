-- postbox 0.8.0 -> 0.9.0, in development: batched deliveries, ordered
-- delivery per key, coalescing. The upgrade
-- tests compare its result with a fresh install, for the compiled
-- extension (tests/tests/extension.rs) and for postbox-sql, whose upgrade
-- scripts scripts/sql-flavour.py makes from this one
-- (tests/tests/sql_flavour.rs).

-- When an admin last resumed an endpoint (sql/schema.sql; on Citus, worker
-- nodes clear its health on seeing it, sql/citus.sql).
ALTER TABLE postbox.endpoints ADD COLUMN resumed_at timestamptz;

-- Operator notifications (sql/schema.sql, sql/emit.sql): whether the
-- operator was told an endpoint is failing, postbox's own event types, and
-- the helpers the routing rule and emit paths use to keep them postbox's.
ALTER TABLE postbox.endpoints ADD COLUMN notified_failing boolean NOT NULL DEFAULT false;
GRANT UPDATE (notified_failing) ON postbox.endpoints TO postbox_worker;

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
        ('endpoint.deleted', 'A tenant''s endpoint was deleted.', 'deleted')) AS x(name, description, reason)
-- A type of one of these names made before 0.9.0 becomes postbox's own.
ON CONFLICT (name) DO UPDATE
    SET description = EXCLUDED.description, example = EXCLUDED.example, match_keys = EXCLUDED.match_keys,
        builtin = true, updated_at = now();

-- postbox's own events (operator notifications): their types are the
-- catalog's postbox.* names (sql/schema.sql), which no emitter, attach or
-- create_event_type may use, and they go only to the operator tenant, which
-- gets nothing else (_routes). Only postbox._operator_events writes them.
CREATE FUNCTION postbox.operator_tenant()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT 'postbox:operator';
END;
COMMENT ON FUNCTION postbox.operator_tenant() IS 'The reserved tenant whose endpoints receive postbox''s own events (postbox.endpoint.failing, ...); emit refuses it.';
GRANT EXECUTE ON FUNCTION postbox.operator_tenant() TO postbox_emitter, postbox_admin, postbox_worker;

CREATE FUNCTION postbox._reserved_type(p_name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT starts_with(p_name, 'postbox.');
END;
COMMENT ON FUNCTION postbox._reserved_type(text) IS 'Internal: whether an event type is one of postbox''s own (postbox.*), which only postbox emits (inlined).';
-- Inlined into _routes, which endpoint_status inlines with the caller's rights.
GRANT EXECUTE ON FUNCTION postbox._reserved_type(text) TO postbox_admin;

-- The one shape of an operator event's data: whose endpoint, which, and why.
CREATE FUNCTION postbox._notice(p_tenant text, p_endpoint uuid, p_url text, p_reason text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT jsonb_build_object('tenant', p_tenant, 'endpoint_id', p_endpoint, 'url', p_url, 'reason', p_reason);
END;
COMMENT ON FUNCTION postbox._notice(text, uuid, text, text) IS 'Internal: an operator event''s data: the tenant, the endpoint, its URL and the reason.';
-- acknowledge, which runs as the worker's role, builds its notices with it.
GRANT EXECUTE ON FUNCTION postbox._notice(text, uuid, text, text) TO postbox_worker;

-- Writes operator events of one type, one per element of p_data (built by
-- _notice), into postbox.emitted for the operator tenant; they are expanded
-- and delivered like any event. Events about the operator tenant's own
-- endpoints are dropped: its endpoints failing would otherwise feed
-- themselves. Each event's ordering key is its endpoint, so an ordered
-- operator endpoint hears of one endpoint's changes in order.
-- SECURITY DEFINER because acknowledge runs as postbox_worker, which may
-- not write emitted: this writes only postbox.* events to the operator
-- tenant, so a caller can at worst send the operator a false notice, never
-- a tenant anything.
CREATE FUNCTION postbox._operator_events(p_type text, p_data jsonb[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT postbox._reserved_type(p_type)
       OR NOT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = p_type AND t.builtin) THEN
        PERFORM postbox._raise('event_type_unknown', 'event_type',
            format('postbox: not one of postbox''s own event types: %s', postbox._shown(p_type)), p_type);
    END IF;
    INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data, ordering_key)
    SELECT postbox._uuid7(), postbox.operator_tenant(), p_type, clock_timestamp(), d, d ->> 'endpoint_id'
      FROM unnest(p_data) AS d
     WHERE d ->> 'tenant' IS DISTINCT FROM postbox.operator_tenant();
    IF FOUND THEN
        PERFORM postbox._wake();
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._operator_events(text, jsonb[]) IS 'Internal: writes postbox''s own events (postbox.*) for the operator tenant, none about its own endpoints.';
GRANT EXECUTE ON FUNCTION postbox._operator_events(text, jsonb[]) TO postbox_worker;

CREATE FUNCTION postbox._reserved_type_error(p_name text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('event_type_reserved', 'event_type', format(
        'postbox: event types postbox.* are postbox''s own; only postbox sends them: %s', postbox._shown(p_name)), p_name);
END
$fn$;
COMMENT ON FUNCTION postbox._reserved_type_error(text) IS 'Internal: raises event_type_reserved.';

-- Batched deliveries: how often a batch carrying a delivery was split, and
-- the attempt log's batch rows (sql/schema.sql says what each holds).
ALTER TABLE postbox.outbox ADD COLUMN batch_split smallint NOT NULL DEFAULT 0;
ALTER TABLE postbox.attempt_log
    ADD COLUMN batch_id uuid,
    ADD COLUMN delivery_ids bigint[],
    ADD COLUMN event_ids uuid[],
    DROP CONSTRAINT attempt_log_outcome_check,
    ADD CONSTRAINT attempt_log_outcome_check
        CHECK (outcome IN ('succeeded', 'retrying', 'failed', 'cancelled', 'split'));
ALTER TABLE postbox.attempt_log SET (toast_tuple_target = 8160);
DO $lz4$
BEGIN
    ALTER TABLE postbox.attempt_log ALTER COLUMN delivery_ids SET COMPRESSION lz4,
                                    ALTER COLUMN event_ids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: pglz, the default
END
$lz4$;
COMMENT ON TABLE postbox.attempt_log IS 'Append-only log of delivery attempts: one row per request, a batch''s with every delivery it carried.';
CREATE INDEX attempt_log_batch_deliveries ON postbox.attempt_log USING gin (delivery_ids)
    WHERE delivery_ids IS NOT NULL;

-- The claim returns batch_split and reads events as json; the
-- acknowledgement takes batches.
DROP FUNCTION postbox.claim(text, bigint, uuid[], integer[], integer, text[], integer[], integer, double precision, bigint);
CREATE FUNCTION postbox.claim(worker_id text, max_rows bigint, endpoint_ids uuid[], endpoint_rooms integer[],
                              endpoint_room integer, tenants text[], tenant_rooms integer[], tenant_room integer,
                              lease_seconds double precision, max_bytes bigint)
RETURNS TABLE (id bigint, tenant text, endpoint_id uuid, event_id uuid, attempts integer, is_test boolean,
               queued_at timestamptz, event_type text, event_time timestamptz, data text, lease_until timestamptz,
               batch_split smallint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
-- Every table here is read through an index or by ctid. A generic plan made
-- while the outbox looked empty (a worker started on an idle database)
-- chose a scan of the whole outbox for the lease update by ctid, which it
-- kept until the next ANALYZE (measured: 17 of 23 ms for a claim of 160
-- rows from 20,000).
SET enable_seqscan = off
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH eps AS (
        SELECT e.id, e.tenant,
               least(coalesce(r.room, claim.endpoint_room), coalesce(t.room, claim.tenant_room)) AS room,
               coalesce(t.room, claim.tenant_room) AS tenant_room,
               random() AS r, e.ordered, e.holds
          FROM postbox._due_endpoints d
         CROSS JOIN LATERAL (SELECT e.id, e.tenant, postbox._ordered(e.options) AS ordered,
                                    postbox._holds(e.options) AS holds
                               FROM postbox.endpoints e
                              WHERE e.id = d.endpoint_id
                                AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('healthy', 'failing')
                             OFFSET 0) e
          LEFT JOIN unnest(claim.endpoint_ids, claim.endpoint_rooms) AS r(endpoint_id, room) ON r.endpoint_id = e.id
          LEFT JOIN unnest(claim.tenants, claim.tenant_rooms) AS t(tenant, room) ON t.tenant = e.tenant
    ), fair AS (
        SELECT d.id, d.ctid, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
          FROM (SELECT * FROM eps WHERE eps.room > 0 AND NOT eps.ordered ORDER BY eps.r) o
         CROSS JOIN LATERAL (
               SELECT d.id, d.ctid, d.event_id, d.next_attempt_at FROM postbox.outbox d
                WHERE d.endpoint_id = o.id AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
                ORDER BY d.next_attempt_at
                LIMIT o.room
                  FOR UPDATE SKIP LOCKED) d
         LIMIT claim.max_rows
    ), heads AS (
        -- Ordered endpoints: only the heads of their keys (_key_heads),
        -- locked as above; a head another claim took meanwhile is no longer
        -- due when its lock is granted, and drops out.
        SELECT d.id, d.ctid, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
          FROM (SELECT * FROM eps WHERE eps.room > 0 AND eps.ordered ORDER BY eps.r) o
         CROSS JOIN LATERAL postbox._key_heads(o.id, o.holds, true, o.room) k
         CROSS JOIN LATERAL (
               -- Each head by its ctid (a TID scan: one ctid per lookup, so
               -- no plan, however small it thinks the outbox, prefers an
               -- index). A head changed since the walk read it (leased,
               -- acknowledged) is read again at its newest version once
               -- locked, and drops out unless still due.
               SELECT d.id, d.ctid, d.event_id, d.next_attempt_at FROM postbox.outbox d
                WHERE d.ctid = k.row_ctid
                  AND d.endpoint_id = o.id AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
                  FOR UPDATE SKIP LOCKED) d
         LIMIT claim.max_rows
    ), capped AS (
        SELECT f.id, f.ctid, f.event_id, f.r, f.next_attempt_at
          FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant ORDER BY f.r, f.next_attempt_at) AS n
                  FROM (SELECT * FROM fair UNION ALL SELECT * FROM heads) f) f
         WHERE f.n <= f.tenant_room
         ORDER BY f.r, f.next_attempt_at
         LIMIT claim.max_rows
    ), tests AS (
        -- Test sends to paused or disabled endpoints, and to ordered ones
        -- (a test send has no key: it is never a key's head).
        SELECT d.id, d.ctid, d.event_id, 2.0::float8 AS r, d.next_attempt_at FROM postbox.outbox d
         WHERE d.is_test AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
           AND EXISTS (SELECT FROM postbox.endpoints e
                        WHERE e.id = d.endpoint_id
                          AND (postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                       e.consecutive_failures) IN ('paused', 'disabled')
                               OR (postbox._ordered(e.options)
                                   AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                               e.consecutive_failures) IN ('healthy', 'failing'))))
         ORDER BY d.next_attempt_at
         LIMIT 16
           FOR UPDATE SKIP LOCKED
    ), taken AS (
        SELECT * FROM capped UNION ALL SELECT * FROM tests
    ), picked AS (
        SELECT s.id, s.ctid, s.event_type, s.created_at, s.data
          FROM (SELECT p.id, p.ctid, v.event_type, v.created_at, v.data,
                       octet_length(v.data) AS size,
                       sum(octet_length(v.data)) OVER (ORDER BY p.r, p.next_attempt_at, p.id
                                                       ROWS UNBOUNDED PRECEDING) AS upto
                  FROM taken p
                 -- Events fetched per row, by primary key (the generic plan
                 -- cannot scan the table); their data is stored as text
                 -- (json) and returned as it is.
                 CROSS JOIN LATERAL (SELECT v.event_type, v.created_at, v.data::text AS data
                                       FROM postbox.events v WHERE v.id = p.event_id OFFSET 0) v) s
         WHERE s.upto <= claim.max_bytes OR s.upto = s.size
    ), claimed AS (
        -- By ctid (a TID scan: no index probe per row); the rows are locked
        -- (FOR UPDATE above), so their ctids hold for this statement.
        UPDATE postbox.outbox o
           SET lease_until = now() + make_interval(secs => claim.lease_seconds), leased_by = claim.worker_id
         WHERE o.ctid = ANY (ARRAY(SELECT p.ctid FROM picked p))
        RETURNING o.id, o.tenant, o.endpoint_id, o.event_id, o.attempts, o.is_test, o.created_at,
                  o.lease_until, o.batch_split
    )
    SELECT c.id, c.tenant, c.endpoint_id, c.event_id, c.attempts, c.is_test, c.created_at,
           p.event_type, p.created_at, p.data, c.lease_until, c.batch_split
      FROM claimed c JOIN picked p ON p.id = c.id;
END
$fn$;
COMMENT ON FUNCTION postbox.claim(text, bigint, uuid[], integer[], integer, text[], integer[], integer, double precision, bigint) IS 'Worker: leases up to max_rows due deliveries fairly (per endpoint and tenant room, max_bytes of payload) to worker_id for lease_seconds, with their events and how often a batch of theirs was split.';
GRANT EXECUTE ON FUNCTION postbox.claim(text, bigint, uuid[], integer[], integer, text[], integer[], integer, double precision, bigint) TO postbox_worker;

DROP FUNCTION postbox.acknowledge(bigint[], text[], uuid[], uuid[], integer[], timestamptz[], integer[], integer[], text[], text[], text[], boolean[], timestamptz[], text[], text[], timestamptz[], uuid[], boolean[], integer[], timestamptz[], timestamptz[], timestamptz[], text[], uuid[], integer, double precision);
CREATE FUNCTION postbox.acknowledge(
    ids bigint[], tenants text[], endpoint_ids uuid[], event_ids uuid[], attempts integer[],
    started_at timestamptz[], durations_ms integer[], status_codes integer[], excerpts text[], errors text[],
    outcomes text[], is_tests boolean[], queued_at timestamptz[], request_headers text[], batch_ids uuid[],
    d_attempts integer[], d_ids bigint[], d_event_ids uuid[], d_statuses text[], d_next_at timestamptz[],
    d_split boolean[],
    h_ids uuid[], h_reset boolean[], h_streak integer[], h_first_fail timestamptz[], h_last_at timestamptz[],
    h_last_ok timestamptz[], h_last_err text[],
    gone uuid[], disable_after_failures integer, disable_after_seconds double precision)
RETURNS TABLE (endpoint_id uuid, reason text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    v_disabled  record;
    v_notices   jsonb[] := '{}';
    v_failing   jsonb[];
    v_recovered jsonb[];
    v_exhausted jsonb[];
BEGIN
    INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at,
                                     duration_ms, status_code, response_excerpt, error, outcome, is_test,
                                     queued_at, request_headers, batch_id, delivery_ids, event_ids)
    SELECT u.d, u.t, u.e, u.v, u.a, u.s, u.du, u.c, u.x, u.er, u.o, u.it, u.q, u.h::jsonb, u.b, m.ids, m.evs
      FROM unnest(acknowledge.ids, acknowledge.tenants, acknowledge.endpoint_ids, acknowledge.event_ids,
                  acknowledge.attempts, acknowledge.started_at, acknowledge.durations_ms,
                  acknowledge.status_codes, acknowledge.excerpts, acknowledge.errors, acknowledge.outcomes,
                  acknowledge.is_tests, acknowledge.queued_at, acknowledge.request_headers,
                  acknowledge.batch_ids) WITH ORDINALITY
           AS u(d, t, e, v, a, s, du, c, x, er, o, it, q, h, b, n)
      LEFT JOIN (SELECT y.a, array_agg(y.id ORDER BY y.k) AS ids, array_agg(y.ev ORDER BY y.k) AS evs
                   FROM unnest(acknowledge.d_attempts, acknowledge.d_ids, acknowledge.d_event_ids)
                        WITH ORDINALITY AS y(a, id, ev, k)
                  -- Batches' deliveries only: a single delivery's row lists none.
                  WHERE acknowledge.batch_ids[y.a] IS NOT NULL
                  GROUP BY y.a) m ON u.b IS NOT NULL AND m.a = u.n;

    DELETE FROM postbox.outbox o
     WHERE o.id = ANY (ARRAY(SELECT y.id FROM unnest(acknowledge.d_ids, acknowledge.d_statuses) AS y(id, st)
                              WHERE y.st IS NULL));

    WITH rescheduled AS (
        UPDATE postbox.outbox o
           SET attempts = CASE WHEN y.split THEN o.attempts ELSE u.attempt END, status = y.status,
               next_attempt_at = coalesce(y.next_at, o.next_attempt_at),
               lease_until = NULL, leased_by = NULL, last_attempt_at = u.at,
               last_status_code = u.code, last_error = u.err,
               batch_split = o.batch_split + y.split::integer
          FROM unnest(acknowledge.d_ids, acknowledge.d_attempts, acknowledge.d_statuses, acknowledge.d_next_at,
                      acknowledge.d_split) AS y(id, a, status, next_at, split)
          JOIN unnest(acknowledge.attempts, acknowledge.started_at, acknowledge.status_codes, acknowledge.errors)
               WITH ORDINALITY AS u(attempt, at, code, err, n) ON u.n = y.a
         WHERE o.id = y.id AND y.status IS NOT NULL AND o.status = 'pending'
        RETURNING o.*
    )
    SELECT array_agg(postbox._notice(r.tenant, r.endpoint_id,
                                     (SELECT e.url FROM postbox.endpoints e WHERE e.id = r.endpoint_id), r.last_error)
                     || jsonb_build_object('delivery_id', r.id, 'event_id', r.event_id, 'attempts', r.attempts,
                                           'event_type', (SELECT v.event_type FROM postbox.events v WHERE v.id = r.event_id))
                     ORDER BY r.id)
           FILTER (WHERE r.status = 'failed' AND NOT r.is_test)
      INTO v_exhausted
      FROM rescheduled r;

    IF cardinality(acknowledge.h_ids) > 0 THEN
        -- Each endpoint's health as it is now, locked (a concurrent
        -- acknowledge waits), so that what the operator was told is read
        -- and changed by one acknowledge at a time.
        WITH was AS (
            SELECT e.id, e.notified_failing FROM postbox.endpoints e
             WHERE e.id = ANY (acknowledge.h_ids)
               FOR NO KEY UPDATE
        ), updated AS (
            UPDATE postbox.endpoints e
               SET consecutive_failures = CASE WHEN h.reset THEN h.streak ELSE e.consecutive_failures + h.streak END,
                   failing_since = CASE WHEN h.streak = 0 THEN NULL
                                        WHEN h.reset THEN h.first_fail
                                        ELSE coalesce(e.failing_since, h.first_fail) END,
                   last_attempt_at = greatest(e.last_attempt_at, h.last_at),
                   last_success_at = coalesce(h.last_ok, e.last_success_at),
                   last_error = coalesce(h.last_err, e.last_error),
                   notified_failing = CASE WHEN h.streak > 0 THEN true WHEN h.reset THEN false
                                           ELSE e.notified_failing END
              FROM unnest(acknowledge.h_ids, acknowledge.h_reset, acknowledge.h_streak, acknowledge.h_first_fail,
                          acknowledge.h_last_at, acknowledge.h_last_ok, acknowledge.h_last_err)
                   AS h(id, reset, streak, first_fail, last_at, last_ok, last_err)
              JOIN was ON was.id = h.id
             WHERE e.id = h.id
            RETURNING e.id, e.tenant, e.url, e.last_error, was.notified_failing AS was_failing, h.reset, h.streak
        )
        -- A success after the operator heard of failures: recovered; failures
        -- the operator has not heard of (or after such a success): failing.
        SELECT array_agg(postbox._notice(u.tenant, u.id, u.url, 'a delivery succeeded') ORDER BY u.id)
                   FILTER (WHERE u.reset AND u.was_failing),
               array_agg(postbox._notice(u.tenant, u.id, u.url, u.last_error) ORDER BY u.id)
                   FILTER (WHERE u.streak > 0 AND (u.reset OR NOT u.was_failing))
          INTO v_recovered, v_failing
          FROM updated u;
        IF v_recovered IS NOT NULL THEN
            PERFORM postbox._operator_events('postbox.endpoint.recovered', v_recovered);
        END IF;
        IF v_failing IS NOT NULL THEN
            PERFORM postbox._operator_events('postbox.endpoint.failing', v_failing);
        END IF;

        FOR v_disabled IN
            UPDATE postbox.endpoints e
               SET disabled_at = now(), updated_at = now(),
                   disabled_reason = CASE WHEN e.id = ANY (acknowledge.gone)
                       THEN 'the endpoint answered 410 Gone'
                       ELSE format('%s consecutive failed attempts since %s', e.consecutive_failures,
                                   to_char(e.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC')) END
             WHERE e.id = ANY (acknowledge.h_ids) AND e.disabled_at IS NULL
               AND (e.id = ANY (acknowledge.gone)
                    OR (e.consecutive_failures >= acknowledge.disable_after_failures
                        AND e.failing_since <= now() - make_interval(secs => acknowledge.disable_after_seconds)))
            RETURNING e.id, e.tenant, e.url, e.disabled_reason
        LOOP
            UPDATE postbox.outbox o
               SET status = 'cancelled', lease_until = NULL, last_error = 'endpoint disabled: ' || v_disabled.disabled_reason
             WHERE o.endpoint_id = v_disabled.id AND o.status = 'pending' AND NOT o.is_test;
            v_notices := v_notices || postbox._notice(v_disabled.tenant, v_disabled.id, v_disabled.url,
                                                      v_disabled.disabled_reason);
            endpoint_id := v_disabled.id;
            reason := v_disabled.disabled_reason;
            RETURN NEXT;
        END LOOP;
        IF cardinality(v_notices) > 0 THEN
            PERFORM postbox._operator_events('postbox.endpoint.disabled', v_notices);
        END IF;
    END IF;
    IF v_exhausted IS NOT NULL THEN
        PERFORM postbox._operator_events('postbox.delivery.exhausted', v_exhausted);
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox.acknowledge(bigint[], text[], uuid[], uuid[], integer[], timestamptz[], integer[], integer[], text[], text[], text[], boolean[], timestamptz[], text[], uuid[], integer[], bigint[], uuid[], text[], timestamptz[], boolean[], uuid[], boolean[], integer[], timestamptz[], timestamptz[], timestamptz[], text[], uuid[], integer, double precision) IS 'Worker: records a batch of attempts (each of one delivery or of a batch of them) in one transaction: the attempt log, the outbox (deleted, rescheduled or failed), endpoint health, and endpoints disabled with their pending deliveries cancelled (returned).';
GRANT EXECUTE ON FUNCTION postbox.acknowledge(bigint[], text[], uuid[], uuid[], integer[], timestamptz[], integer[], integer[], text[], text[], text[], boolean[], timestamptz[], text[], uuid[], integer[], bigint[], uuid[], text[], timestamptz[], boolean[], uuid[], boolean[], integer[], timestamptz[], timestamptz[], timestamptz[], text[], uuid[], integer, double precision) TO postbox_worker;

-- A retry or a replay starts a batching endpoint's delivery in full batches again.
CREATE OR REPLACE FUNCTION postbox.retry_delivery(tenant text, id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_status text;
BEGIN
    PERFORM postbox._require_tenant(retry_delivery.tenant);
    SELECT status INTO v_status FROM postbox.outbox
     WHERE id = retry_delivery.id AND tenant = retry_delivery.tenant FOR UPDATE;
    IF v_status IS NULL THEN
        PERFORM postbox._no_delivery(retry_delivery.id);  -- also for another tenant's: ids cannot be probed
    END IF;
    IF v_status = 'pending' THEN
        PERFORM postbox._raise('delivery_not_retryable', 'id',
            format('postbox: only a failed or cancelled delivery can be retried; this one is still pending: %s', retry_delivery.id));
    END IF;
    IF NOT EXISTS (SELECT FROM postbox.outbox d JOIN postbox.endpoints e ON e.id = d.endpoint_id
                    WHERE d.id = retry_delivery.id) THEN
        PERFORM postbox._raise('delivery_endpoint_deleted', 'id',
            format('postbox: the endpoint of this delivery was deleted: %s', retry_delivery.id));
    END IF;
    -- A fresh schedule: the attempt count restarts, and a batching endpoint
    -- takes it in full batches again; earlier attempts stay in the log.
    UPDATE postbox.outbox
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, leased_by = NULL,
           batch_split = 0
     WHERE id = retry_delivery.id;
    PERFORM postbox._wake();
END
$fn$;
COMMENT ON FUNCTION postbox.retry_delivery(text, bigint) IS 'Queues one of the tenant''s failed or cancelled deliveries again with a fresh schedule; earlier attempts stay logged.';
GRANT EXECUTE ON FUNCTION postbox.retry_delivery(text, bigint) TO postbox_admin;

CREATE OR REPLACE FUNCTION postbox.replay(tenant text, endpoint_id uuid, since timestamptz, until timestamptz DEFAULT 'infinity',
                               max_rows integer DEFAULT 1000)
RETURNS TABLE (queued integer, more boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_ids bigint[];
BEGIN
    PERFORM postbox._endpoint(tenant, endpoint_id);
    IF since IS NULL OR until IS NULL OR since > until THEN
        PERFORM postbox._raise('replay_range_invalid', 'since',
            format('postbox: replay needs since <= until: %s to %s',
                             coalesce(since::text, 'NULL'), coalesce(until::text, 'NULL')));
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        PERFORM postbox._raise('out_of_range', 'max_rows',
            format('postbox: replay max_rows must be between 1 and 10000: %s', coalesce(max_rows::text, 'NULL')));
    END IF;
    -- One more than the batch: whether more remain, without counting them.
    v_ids := ARRAY(SELECT d.id FROM postbox.outbox d
                    WHERE d.tenant = replay.tenant AND d.endpoint_id = replay.endpoint_id AND d.status <> 'pending'
                      AND d.created_at >= since AND d.created_at < until
                    ORDER BY d.created_at, d.id
                    LIMIT max_rows + 1 FOR UPDATE);
    more := cardinality(v_ids) > max_rows;
    UPDATE postbox.outbox d
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, leased_by = NULL,
           batch_split = 0
     WHERE d.id = ANY (v_ids[1:max_rows]);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM postbox._wake();
    END IF;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer) IS 'Queues again, each with a fresh schedule, up to max_rows failed and cancelled deliveries of one of the tenant''s endpoints queued in [since, until), oldest first; returns how many, and whether more remain (repeat the call until more is false).';
GRANT EXECUTE ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer) TO postbox_admin;

-- The views show a batch's deliveries and attempts; stats count 'split'.
CREATE OR REPLACE VIEW postbox.deliveries AS
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type,
       CASE WHEN d.lease_until > now() THEN 'in_flight'
            WHEN NOT d.is_test AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('suspended', 'paused')
                 THEN 'held'
            ELSE 'pending' END AS status,
       d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at,
       ARRAY[d.id] AS batch_deliveries
  FROM postbox.endpoints e
  JOIN postbox.outbox d ON d.endpoint_id = e.id AND d.tenant = e.tenant AND d.status = 'pending'
  LEFT JOIN postbox.events v ON v.id = d.event_id
UNION ALL
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type, d.status, d.attempts, NULL,
       d.last_status_code, d.last_error, d.created_at, ARRAY[d.id]
  FROM postbox.outbox d
  LEFT JOIN postbox.events v ON v.id = d.event_id
 WHERE d.status <> 'pending'
UNION ALL
SELECT a.delivery_id, a.tenant, a.endpoint_id, a.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at, ARRAY[a.delivery_id]
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.outcome = 'succeeded' AND a.delivery_ids IS NULL
UNION ALL
-- A batch's deliveries; created_at is the batch's first delivery's.
SELECT b.delivery_id, a.tenant, a.endpoint_id, b.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at, a.delivery_ids
  FROM postbox.attempt_log a
 CROSS JOIN LATERAL unnest(a.delivery_ids, a.event_ids) AS b(delivery_id, event_id)
  LEFT JOIN postbox.events v ON v.id = b.event_id
 WHERE a.outcome = 'succeeded' AND a.delivery_ids IS NOT NULL;
COMMENT ON VIEW postbox.deliveries IS 'Every delivery with its status: pending, in_flight, held, succeeded, failed or cancelled; batch_deliveries: the deliveries of the request that delivered it.';
GRANT SELECT ON postbox.deliveries TO postbox_admin;

-- Events keep their data as the text the worker sends (sql/schema.sql says
-- why): the table is rewritten once, here; the attempts view, which reads
-- the column, is made again around it.
DROP VIEW postbox.attempts;
ALTER TABLE postbox.events ALTER COLUMN data TYPE json USING data::json;
CREATE VIEW postbox.attempts AS
SELECT a.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, a.event_id, a.outcome,
       v.event_type, v.data::jsonb AS data,
       -- {} when nothing was sent (the attempt failed before its request).
       coalesce(a.request_headers, '{}') AS request_headers,
       a.is_test, a.batch_id, ARRAY[a.delivery_id] AS batch_deliveries
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.delivery_ids IS NULL
UNION ALL
SELECT b.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, b.event_id, a.outcome,
       v.event_type, v.data::jsonb, coalesce(a.request_headers, '{}'), a.is_test, a.batch_id, a.delivery_ids
  FROM postbox.attempt_log a
 CROSS JOIN LATERAL unnest(a.delivery_ids, a.event_ids) AS b(delivery_id, event_id)
  LEFT JOIN postbox.events v ON v.id = b.event_id
 WHERE a.delivery_ids IS NOT NULL;
COMMENT ON VIEW postbox.attempts IS 'The delivery log: every attempt of each delivery with its event (type, id, data), the headers it sent but the signature, the status code, the first 4 KiB of the response, the error and the duration; a batch''s attempt once per delivery, with batch_id (its webhook-id) and batch_deliveries.';
GRANT SELECT ON postbox.attempts TO postbox_admin;

-- An endpoint's success rate over a window: succeeded over all attempts,
-- to 4 places; NULL without attempts. endpoint_stats uses it, and
-- postbox-api on Citus, for counts summed over the nodes.
CREATE FUNCTION postbox._success_rate(p_succeeded bigint, p_failed bigint)
RETURNS numeric
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT round(p_succeeded::numeric / nullif(p_succeeded + p_failed, 0), 4);
END;
COMMENT ON FUNCTION postbox._success_rate(bigint, bigint) IS 'Internal: succeeded over all attempts, to 4 places (NULL without attempts).';
GRANT EXECUTE ON FUNCTION postbox._success_rate(bigint, bigint) TO postbox_admin;

CREATE OR REPLACE VIEW postbox.endpoint_stats AS
SELECT s.id, s.tenant,
       s.succeeded_1h, s.failed_1h,
       postbox._success_rate(s.succeeded_1h, s.failed_1h) AS success_rate_1h,
       s.succeeded_24h, s.failed_24h,
       postbox._success_rate(s.succeeded_24h, s.failed_24h) AS success_rate_24h,
       s.succeeded_7d, s.failed_7d,
       postbox._success_rate(s.succeeded_7d, s.failed_7d) AS success_rate_7d
  FROM (SELECT e.id, e.tenant, w.*
          FROM postbox.endpoints e
         CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '1 hour') AS succeeded_1h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split') AND a.started_at > now() - interval '1 hour') AS failed_1h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '24 hours') AS succeeded_24h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split') AND a.started_at > now() - interval '24 hours') AS failed_24h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded_7d,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split')) AS failed_7d
                 FROM postbox.attempt_log a
                WHERE a.tenant = e.tenant AND a.endpoint_id = e.id
                  AND a.started_at > now() - interval '7 days' AND NOT a.is_test) w) s;
COMMENT ON VIEW postbox.endpoint_stats IS 'Per endpoint: succeeded and failed attempts and the success rate over the last 1 hour, 24 hours and 7 days (test sends left out).';
GRANT SELECT ON postbox.endpoint_stats TO postbox_admin;

CREATE VIEW postbox.endpoint_hourly_stats AS
SELECT a.tenant, a.endpoint_id AS id,
       floor(extract(epoch FROM now() - a.started_at) / 3600)::integer AS hours_ago,
       count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed', 'split')) AS failed
  FROM postbox.attempt_log a
 WHERE a.started_at > now() - interval '7 days' AND NOT a.is_test
 GROUP BY a.tenant, a.endpoint_id, 3;
COMMENT ON VIEW postbox.endpoint_hourly_stats IS 'Per endpoint and hour of the last 7 days (hours_ago 0: the last hour): succeeded and failed attempts, test sends left out; a batch''s request counts once, as in endpoint_stats.';
GRANT SELECT ON postbox.endpoint_hourly_stats TO postbox_admin;

-- Ordered delivery per key (sql/schema.sql says what each column holds).
ALTER TABLE postbox.emitted ADD COLUMN ordering_key text;
ALTER TABLE postbox.emitted_rejects ADD COLUMN ordering_key text;
ALTER TABLE postbox.events ADD COLUMN ordering_key text;
ALTER TABLE postbox.outbox ADD COLUMN ordering_key bigint,
    DROP CONSTRAINT outbox_status_check,
    ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'failed', 'cancelled', 'coalesced'));
CREATE INDEX outbox_key_heads ON postbox.outbox (endpoint_id, ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX outbox_key_held ON postbox.outbox (endpoint_id, ordering_key, id)
    WHERE status = 'failed' AND ordering_key IS NOT NULL;
-- Routing reads whether an endpoint is ordered.
GRANT SELECT (options) ON postbox.endpoints TO postbox_admin;
-- emit takes an ordering key.
DROP FUNCTION postbox.emit(text, text, jsonb, text);
CREATE FUNCTION postbox.emit(tenant text, event_type text, data jsonb, idempotency_key text DEFAULT NULL,
                             ordering_key text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id     uuid;
    v_known  boolean;
    v_wake   boolean;
BEGIN
    IF tenant IS NULL THEN
        PERFORM postbox._raise('required', 'tenant', 'postbox: tenant must not be NULL: NULL');
    END IF;
    IF tenant = '' THEN  -- as every tenant-scoped form (_require_tenant): no endpoint could have it
        PERFORM postbox._raise('length_out_of_range', 'tenant', 'postbox: tenant must be a non-empty string: ''''');
    END IF;
    IF octet_length(tenant) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('tenant', tenant);
    END IF;
    IF tenant = postbox.operator_tenant() THEN
        PERFORM postbox._raise('tenant_reserved', 'tenant', format(
            'postbox: the operator tenant (%s) receives only postbox''s own events', tenant));
    END IF;
    IF octet_length(idempotency_key) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('idempotency_key', idempotency_key);
    END IF;
    IF octet_length(ordering_key) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('ordering_key', ordering_key);
    END IF;
    PERFORM postbox._check_data(data);

    SELECT true, (SELECT w.waiting FROM postbox.wakeup w)
      INTO v_known, v_wake
      FROM postbox.event_types t
     WHERE t.name = emit.event_type AND NOT postbox._reserved_type(t.name);
    IF v_known IS NULL THEN
        PERFORM postbox._unknown_event_type(event_type);
    END IF;

    v_id := postbox._uuid7();
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO postbox.idempotency_keys AS k (tenant, key, event_id)
        VALUES (emit.tenant, emit.idempotency_key, v_id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            -- The first emit with this key won (or committed meanwhile).
            RETURN (SELECT k.event_id FROM postbox.idempotency_keys k
                     WHERE k.tenant = emit.tenant AND k.key = emit.idempotency_key);
        END IF;
    END IF;

    INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data, ordering_key)
    VALUES (v_id, tenant, event_type, clock_timestamp(), data, ordering_key);

    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
    RETURN v_id;
END
$fn$;
COMMENT ON FUNCTION postbox.emit(text, text, jsonb, text, text) IS 'Records an event in the caller''s transaction; its webhooks go out if and only if the transaction commits. Ordered endpoints receive the events of one ordering_key one at a time, in emit order.';
GRANT EXECUTE ON FUNCTION postbox.emit(text, text, jsonb, text, text) TO postbox_emitter;

CREATE FUNCTION postbox._ordering_hash(p_key text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.hashtextextended(coalesce(p_key, ''), 0);
END;
COMMENT ON FUNCTION postbox._ordering_hash(text) IS 'Internal: an ordering key as the outbox keeps it, hashed (NULL: the empty key).';

CREATE FUNCTION postbox._trigger_columns(p_args text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT p_args[3:coalesce(pg_catalog.array_position(p_args, ''), cardinality(p_args) + 1) - 1];
END;
COMMENT ON FUNCTION postbox._trigger_columns(text[]) IS 'Internal: the payload columns among an emit trigger''s arguments.';
GRANT EXECUTE ON FUNCTION postbox._trigger_columns(text[]) TO postbox_admin;

CREATE FUNCTION postbox._row_key(p_row jsonb, p_args text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT p_args[1] || ':' || CASE WHEN cardinality(k.cols) = 1 THEN p_row ->> k.cols[1]
                                    ELSE (SELECT pg_catalog.jsonb_agg(p_row -> c ORDER BY n)
                                            FROM unnest(k.cols) WITH ORDINALITY AS u(c, n))::text END
      FROM (SELECT p_args[pg_catalog.array_position(p_args, '') + 1:] AS cols) k
     WHERE cardinality(k.cols) > 0;
END;
COMMENT ON FUNCTION postbox._row_key(jsonb, text[]) IS 'Internal: an attached row''s ordering key, its resource and primary key (NULL: attached without key columns).';
GRANT EXECUTE ON FUNCTION postbox._row_key(jsonb, text[]) TO postbox_admin;

CREATE OR REPLACE FUNCTION postbox._emit_row(p_relid oid, p_op text, p_new json, p_old json, p_args text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
-- Custom plans would be re-planned on every call; the generic ones are as good here.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_type    text := p_args[1] || CASE p_op WHEN 'INSERT' THEN '.created'
                                            WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END;
    v_row     jsonb := coalesce(p_new, p_old)::jsonb;
    v_tenant  text := v_row ->> p_args[2];
    v_columns text[] := postbox._trigger_columns(p_args);
    v_new     jsonb;
    v_old     jsonb;
    v_changed text[];
    v_data    jsonb;
    v_known   boolean;
    v_wake    boolean;
BEGIN
    IF v_tenant IS NULL THEN
        RETURN;  -- a row without a tenant belongs to no one: nothing to send
    END IF;
    IF octet_length(v_tenant) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('tenant', v_tenant);  -- the statement is undone
    END IF;
    v_new := postbox._row_payload(v_row, v_columns);
    IF p_op = 'UPDATE' THEN
        v_old := postbox._row_payload(p_old::jsonb, v_columns);
        SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_changed
          FROM pg_attribute a
         WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped
           AND v_new ? a.attname
           AND (v_new -> a.attname) IS DISTINCT FROM (v_old -> a.attname);
        IF v_changed IS NULL THEN
            RETURN;  -- nothing changed: nothing to say
        END IF;
        v_data := jsonb_build_object(p_args[1], v_new, 'changed', to_jsonb(v_changed));
    ELSE
        v_data := jsonb_build_object(p_args[1], v_new);
    END IF;
    WITH ins AS (
        INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data, ordering_key)
        VALUES (postbox._uuid7(), v_tenant, v_type, clock_timestamp(), v_data, postbox._row_key(v_row, p_args))
        RETURNING 1)
    SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = v_type AND NOT postbox._reserved_type(t.name)),
           (SELECT w.waiting FROM postbox.wakeup w) AND EXISTS (SELECT FROM ins)
      INTO v_known, v_wake;
    IF NOT v_known THEN
        PERFORM postbox._unknown_event_type(v_type);  -- raises: the statement is undone
    END IF;
    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._emit_row(oid, text, json, json, text[]) IS 'Internal: the row trigger''s write, run as the owner over already-encoded rows; granted to no one.';

CREATE OR REPLACE FUNCTION postbox.attach(tbl regclass, resource text, tenant_column text, columns text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET client_min_messages = warning
AS $fn$
DECLARE
    v_kind  "char";
    v_args  text;
    v_col   text;
BEGIN
    SELECT relkind INTO v_kind FROM pg_class WHERE oid = tbl;
    IF v_kind IS NULL OR v_kind NOT IN ('r', 'p') THEN
        PERFORM postbox._raise('attach_invalid', 'tbl',
            format('postbox: attach needs a table (tbl): %s', coalesce(tbl::text, 'NULL')));
    END IF;
    PERFORM postbox._register_resource(resource);  -- validates the name first
    FOREACH v_col IN ARRAY ARRAY[tenant_column] || coalesce(columns, '{}') LOOP
        IF v_col IS NULL OR NOT EXISTS (SELECT FROM pg_attribute
                       WHERE attrelid = tbl AND attname = v_col AND attnum > 0 AND NOT attisdropped) THEN
            PERFORM postbox._raise('attach_invalid', CASE WHEN v_col IS NOT DISTINCT FROM tenant_column THEN 'tenant_column' ELSE 'columns' END,
                format('postbox: %s must name a column of %s: %s',
                                 CASE WHEN v_col IS NOT DISTINCT FROM tenant_column THEN 'tenant_column' ELSE 'columns' END,
                                 tbl, coalesce(postbox._shown(v_col), 'NULL')), v_col);
        END IF;
    END LOOP;
    -- A column listed twice would be passed to the triggers twice, for every
    -- row written (ten thousand times, if so listed).
    SELECT c INTO v_col FROM unnest(columns) c GROUP BY c HAVING count(*) > 1 ORDER BY c LIMIT 1;
    IF v_col IS NOT NULL THEN
        PERFORM postbox._raise('attach_invalid', 'columns',
            format('postbox: columns must name each column once: %s', v_col), v_col);
    END IF;

    -- After an empty string, the primary key's columns (none: no key), for
    -- each row's ordering key (_row_key).
    SELECT string_agg(quote_literal(a), ', ' ORDER BY n) INTO v_args
      FROM unnest(ARRAY[resource, tenant_column] || coalesce(columns, '{}') || ''::text
                  || ARRAY(SELECT a.attname::text
                             FROM pg_index i
                             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)
                             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                            WHERE i.indrelid = tbl AND i.indisprimary
                            ORDER BY k.pos)) WITH ORDINALITY AS u(a, n);

    -- Statement-level with transition tables for INSERT and DELETE, in Rust
    -- (postbox.emit_statement): one emitted row per statement. UPDATE needs
    -- OLD/NEW pairs, so it stays a row trigger.
    EXECUTE format('DROP TRIGGER IF EXISTS postbox_insert ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS postbox_update ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS postbox_delete ON %s', tbl);
    EXECUTE format('CREATE TRIGGER postbox_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS postbox_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement(%s)', tbl, v_args);
    EXECUTE format('CREATE TRIGGER postbox_update AFTER UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION postbox.emit_row_change(%s)', tbl, v_args);
    EXECUTE format('CREATE TRIGGER postbox_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS postbox_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement(%s)', tbl, v_args);
END
$fn$;
COMMENT ON FUNCTION postbox.attach(regclass, text, text, text[]) IS 'Creates the emit triggers on a table and registers its three event types. Idempotent.';
GRANT EXECUTE ON FUNCTION postbox.attach(regclass, text, text, text[]) TO postbox_emitter;

CREATE FUNCTION postbox._expansion_lock()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT 8098157642854723684::bigint;
END;
COMMENT ON FUNCTION postbox._expansion_lock() IS 'Internal: the advisory lock key that serializes expansions (and turning ordering on).';

CREATE OR REPLACE FUNCTION postbox.expand_events(max_events integer DEFAULT 1000)
RETURNS integer
-- PL/pgSQL rather than SQL: the worker calls it in every cycle, and PL/pgSQL
-- keeps the plan between calls; a generic one, or it would be re-planned
-- on every call (measured: 8% of PostgreSQL's CPU under load).
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_rows     tid[];
    v_row      tid;
    v_expanded integer := 0;
    v_reason   text;
    v_fenced   boolean;
    v_safe     pg_snapshot;
BEGIN
    IF max_events IS NULL OR max_events < 1 OR max_events > 1000000 THEN
        PERFORM postbox._raise('out_of_range', 'max_events', format(
            'postbox: max_events must be between 1 and 1000000: %s', coalesce(max_events::text, 'NULL')));
    END IF;
    -- One expansion at a time: outbox ids then commit in the order they
    -- are drawn, so the claim never sees a key's later delivery before an
    -- earlier one (ordered endpoints). Another worker's expansion takes
    -- milliseconds; this one waits for it, then takes the rows after its.
    -- The lock also keeps an endpoint's change to ordered (update_endpoint)
    -- from crossing an expansion.
    PERFORM pg_advisory_xact_lock(postbox._expansion_lock());
    -- On a Citus worker node, only rows its copy of the configuration is
    -- current for (sql/citus.sql, config_fence); elsewhere v_safe is NULL.
    SELECT f.fenced, f.safe INTO v_fenced, v_safe FROM postbox._config_fence() f;
    IF v_fenced AND v_safe IS NULL THEN
        RETURN 0;
    END IF;
    v_rows := ARRAY(SELECT e.ctid FROM postbox.emitted e
                     WHERE v_safe IS NULL OR postbox._committed_in(e.xmin, v_safe)
                     ORDER BY e.id LIMIT max_events FOR UPDATE SKIP LOCKED);
    IF cardinality(v_rows) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        RETURN postbox._expand(v_rows);
    EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
        NULL;  -- some row is bad: take them one at a time, below
    END;
    -- The rows stay locked by this transaction, so their ctids hold.
    FOREACH v_row IN ARRAY v_rows LOOP
        BEGIN
            v_expanded := v_expanded + postbox._expand(ARRAY[v_row]);
        EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
            GET STACKED DIAGNOSTICS v_reason = MESSAGE_TEXT;
            WITH gone AS (
                DELETE FROM postbox.emitted m WHERE m.ctid = v_row RETURNING m.*
            )
            INSERT INTO postbox.emitted_rejects (id, tenant, event_type, created_at, data, rows,
                                                 trigger_args, ordering_key, reason)
            SELECT g.id, g.tenant, g.event_type, g.created_at, g.data, g.rows, g.trigger_args, g.ordering_key,
                   v_reason
              FROM gone g;
        END;
    END LOOP;
    RETURN v_expanded;
END
$fn$;
COMMENT ON FUNCTION postbox.expand_events(integer) IS 'Worker: turns committed emitted rows into events and routed outbox rows, oldest first; sets aside rows it cannot expand; returns how many events.';
-- The worker expands in every cycle.
GRANT EXECUTE ON FUNCTION postbox.expand_events(integer) TO postbox_worker;

-- Routing says which endpoints are ordered, and a statement's rows have
-- keys: both change shape, and endpoint_status, which inlines them, is
-- made again around them.
DROP VIEW postbox.endpoint_status;
DROP FUNCTION postbox._routes(text, text, timestamptz);
DROP FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[]);
CREATE FUNCTION postbox._ordered(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(p_options ->> 'ordering' = 'key', false);
END;
COMMENT ON FUNCTION postbox._ordered(jsonb) IS 'Internal: whether endpoint options ask for ordered delivery per key (inlined).';
GRANT EXECUTE ON FUNCTION postbox._ordered(jsonb) TO postbox_admin, postbox_worker;

CREATE FUNCTION postbox._holds(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(p_options ->> 'ordering_given_up' = 'hold', false);
END;
COMMENT ON FUNCTION postbox._holds(jsonb) IS 'Internal: whether an ordered endpoint''s given-up delivery keeps its key waiting (inlined).';
GRANT EXECUTE ON FUNCTION postbox._holds(jsonb) TO postbox_worker;

CREATE FUNCTION postbox._coalesces(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce((p_options -> 'coalesce')::text = 'true', false);
END;
COMMENT ON FUNCTION postbox._coalesces(jsonb) IS 'Internal: whether an endpoint sends only the newest of its waiting events per ordering key and type (inlined).';
GRANT EXECUTE ON FUNCTION postbox._coalesces(jsonb) TO postbox_admin;

CREATE FUNCTION postbox._routes(p_tenant text, p_event_type text, p_at timestamptz)
RETURNS TABLE (endpoint_id uuid, ordered boolean, coalesces boolean)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT e.id, postbox._ordered(e.options), postbox._coalesces(e.options)
      FROM postbox.event_types t
      JOIN postbox.endpoints e ON e.tenant = p_tenant AND e.event_types && t.match_keys
     WHERE t.name = p_event_type
       -- The operator tenant gets postbox's own events, and only those.
       AND (p_tenant = postbox.operator_tenant()) = postbox._reserved_type(p_event_type)
       -- Not the state: routing ignores pauses now (the pause history
       -- decides, as of p_at); only a disabled endpoint, whose deliveries
       -- are cancelled, gets none.
       AND e.disabled_at IS NULL AND e.created_at <= p_at
       AND NOT EXISTS (SELECT FROM postbox.endpoint_pauses p
                        WHERE p.endpoint_id = e.id AND p.paused_at <= p_at
                          AND (p.resumed_at IS NULL OR p.resumed_at > p_at));
END;
COMMENT ON FUNCTION postbox._routes(text, text, timestamptz) IS 'Internal: the routing rule, the endpoints an event emitted at a time goes to, and whether each is ordered and coalesces (inlined).';
-- endpoint_status.pending inlines the routing rule, and an inlined
-- function runs with the caller's rights (columns granted in schema.sql).
GRANT EXECUTE ON FUNCTION postbox._routes(text, text, timestamptz) TO postbox_admin;

CREATE FUNCTION postbox._emitted_events(p_tenant text, p_data jsonb, p_rows jsonb, p_args text[], p_key text)
RETURNS TABLE (tenant text, data jsonb, n bigint, ordering_key text)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT p_tenant, p_data, 0::bigint, p_key WHERE p_rows IS NULL
    UNION ALL
    SELECT r.value ->> p_args[2],
           jsonb_build_object(p_args[1], postbox._row_payload(r.value, postbox._trigger_columns(p_args))),
           r.n,
           postbox._row_key(r.value, p_args)
      FROM jsonb_array_elements(p_rows) WITH ORDINALITY r(value, n)
     WHERE r.value ->> p_args[2] IS NOT NULL;
END;
COMMENT ON FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[], text) IS 'Internal: the events an emitted row holds, with tenant, data and ordering key (inlined).';
-- Inlined by endpoint_status.pending, as _routes.
GRANT EXECUTE ON FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[], text) TO postbox_admin;

CREATE FUNCTION postbox._coalesced_by(p_event_type text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT 'coalesced: a newer ' || p_event_type || ' event of its ordering key was queued';
END;
COMMENT ON FUNCTION postbox._coalesced_by(text) IS 'Internal: the last_error of a coalesced delivery.';

CREATE OR REPLACE FUNCTION postbox._expand(p_rows tid[])
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_expanded integer;
BEGIN
    WITH batch AS (
        -- By ctid, so that even the generic plan deletes exactly the rows
        -- expand_events locked (a join on id may be planned as a scan of the
        -- whole table).
        DELETE FROM postbox.emitted m
         WHERE m.ctid = ANY (p_rows)
        RETURNING m.*
    ), ev AS (
        -- emit's event keeps its id; a statement's rows get the statement's
        -- id with their position in it, so ids sort in emit order.
        -- A statement's row whose tenant is too long raises 22023 here, and
        -- expand_events sets its emitted row aside.
        SELECT CASE WHEN b.rows IS NULL THEN b.id ELSE postbox._event_id(b.id, x.n) END AS id,
               CASE WHEN octet_length(x.tenant) <= postbox._max_key_bytes() THEN x.tenant
                    ELSE postbox._too_long('tenant', x.tenant) END AS tenant,
               -- emit checked its key's length; a row's key is its primary
               -- key, which the table's index bounds.
               b.event_type, b.created_at, x.data, x.ordering_key
          FROM batch b
         CROSS JOIN LATERAL postbox._emitted_events(b.tenant, b.data, b.rows::jsonb, b.trigger_args,
                                                    b.ordering_key) x
    ), stored AS (
        INSERT INTO postbox.events (id, tenant, event_type, created_at, data, ordering_key)
        SELECT id, tenant, event_type, created_at, data, ordering_key FROM ev
        RETURNING id, tenant, event_type, created_at, ordering_key
    ), routed AS (
        -- An ordered or coalescing endpoint's deliveries carry their key
        -- (hashed): the claim sends the oldest of each key first, and of a
        -- coalescing endpoint's events of one key and type only the newest
        -- of this expansion waits to be sent (newest: n = 1).
        SELECT s.tenant, r.endpoint_id, s.id, s.created_at, s.event_type, r.coalesces,
               CASE WHEN r.ordered OR r.coalesces THEN postbox._ordering_hash(s.ordering_key) END AS ordering_key,
               CASE WHEN r.coalesces
                    THEN row_number() OVER (PARTITION BY r.endpoint_id, s.ordering_key, s.event_type
                                            ORDER BY s.id DESC) END AS n
          FROM stored s
         CROSS JOIN LATERAL postbox._routes(s.tenant, s.event_type, s.created_at) r
    ), queued AS (
        INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, created_at, ordering_key,
                                    status, last_error)
        SELECT r.tenant, r.endpoint_id, r.id, r.created_at, r.created_at, r.ordering_key,
               CASE WHEN r.n > 1 THEN 'coalesced' ELSE 'pending' END,
               CASE WHEN r.n > 1 THEN postbox._coalesced_by(r.event_type) END
          FROM routed r
         -- Each endpoint's rows on pages of their own: pages of a healthy
         -- endpoint empty out whole, and those of a stuck one stay all-visible,
         -- so vacuum skips them instead of rescanning them every cycle.
         ORDER BY r.endpoint_id, r.id
        RETURNING 1
    ), superseded AS (
        -- A coalescing endpoint's deliveries queued before, of the same key
        -- and type, that are still waiting (pending, not in flight: a claim
        -- that holds one makes this wait, then finds it leased) are
        -- coalesced too. Rows queued by this statement are not visible here.
        -- Found per new delivery through outbox_key_heads (LATERAL, so the
        -- generic plan, made when the outbox may be empty, cannot turn it
        -- into a scan of the outbox per row), updated by ctid; the state is
        -- checked again on the row as locked.
        UPDATE postbox.outbox o
           SET status = 'coalesced', last_error = postbox._coalesced_by(x.event_type)
          FROM (SELECT r.event_type, c.ctid
                  FROM routed r
                 CROSS JOIN LATERAL (
                       SELECT c.ctid FROM postbox.outbox c
                        WHERE c.endpoint_id = r.endpoint_id AND c.ordering_key = r.ordering_key
                          AND c.status = 'pending' AND NOT c.is_test
                          AND EXISTS (SELECT FROM postbox.events v
                                       WHERE v.id = c.event_id AND v.event_type = r.event_type)) c
                 WHERE r.n = 1) x
         WHERE o.ctid = x.ctid
           AND o.status = 'pending' AND postbox._claimable(o.status, o.lease_until)
        RETURNING 1
    )
    SELECT count(*)::integer INTO v_expanded FROM stored;
    -- The data-modifying CTEs run whether or not they are read.
    RETURN v_expanded;
END
$fn$;
COMMENT ON FUNCTION postbox._expand(tid[]) IS 'Internal: expand_events'' work for the emitted rows it locked.';

CREATE VIEW postbox.endpoint_status AS
SELECT e.id, e.tenant, e.url, e.event_types, e.enabled,
       postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) AS status,
       e.disabled_reason, e.consecutive_failures, e.last_attempt_at, e.last_success_at, e.last_error,
       (SELECT count(*) FROM postbox.outbox d
         WHERE d.endpoint_id = e.id AND d.status = 'pending')
     + (SELECT count(*)  -- emitted, not yet expanded, and routed to e
          FROM postbox.emitted m
         CROSS JOIN LATERAL postbox._emitted_events(m.tenant, m.data, m.rows::jsonb, m.trigger_args, m.ordering_key) x
         WHERE x.tenant = e.tenant
           AND e.id IN (SELECT r.endpoint_id FROM postbox._routes(x.tenant, m.event_type, m.created_at) r))
       AS pending,
       e.suspended
  FROM postbox.endpoints e;
COMMENT ON VIEW postbox.endpoint_status IS 'One row per endpoint: healthy, failing, disabled (automatic) or paused (enabled = false), and its pending deliveries.';
GRANT SELECT ON postbox.endpoint_status TO postbox_admin;

-- The claim walks an ordered endpoint's keys (the claim above), and so
-- does next_due; turning ordering on keys what is already queued.
CREATE FUNCTION postbox._key_heads(p_endpoint uuid, p_holds boolean, p_due_only boolean, p_limit integer)
RETURNS TABLE (id bigint, next_attempt_at timestamptz, row_ctid tid)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    -- A random 64-bit start; keys are hashes, spread evenly.
    v_start bigint := ((random() - 0.5) * 18446744073709551615.0)::numeric::bigint;
BEGIN
    RETURN QUERY
    WITH RECURSIVE upper_keys AS (
        (SELECT h.ordering_key, h.id, h.next_attempt_at, h.lease_until, h.ctid
           FROM postbox.outbox h
          WHERE h.endpoint_id = p_endpoint AND h.status = 'pending' AND h.ordering_key IS NOT NULL
            AND h.ordering_key >= v_start
          ORDER BY h.ordering_key, h.id LIMIT 1)
        UNION ALL
        SELECT n.* FROM upper_keys w CROSS JOIN LATERAL (
            SELECT h.ordering_key, h.id, h.next_attempt_at, h.lease_until, h.ctid
              FROM postbox.outbox h
             WHERE h.endpoint_id = p_endpoint AND h.status = 'pending' AND h.ordering_key IS NOT NULL
               AND h.ordering_key > w.ordering_key
             ORDER BY h.ordering_key, h.id LIMIT 1) n
    ), lower_keys AS (
        (SELECT h.ordering_key, h.id, h.next_attempt_at, h.lease_until, h.ctid
           FROM postbox.outbox h
          WHERE h.endpoint_id = p_endpoint AND h.status = 'pending' AND h.ordering_key IS NOT NULL
            AND h.ordering_key < v_start
          ORDER BY h.ordering_key, h.id LIMIT 1)
        UNION ALL
        SELECT n.* FROM lower_keys w CROSS JOIN LATERAL (
            SELECT h.ordering_key, h.id, h.next_attempt_at, h.lease_until, h.ctid
              FROM postbox.outbox h
             WHERE h.endpoint_id = p_endpoint AND h.status = 'pending' AND h.ordering_key IS NOT NULL
               AND h.ordering_key > w.ordering_key AND h.ordering_key < v_start
             ORDER BY h.ordering_key, h.id LIMIT 1) n
    )
    SELECT w.id, w.next_attempt_at, w.ctid
      FROM (SELECT * FROM upper_keys UNION ALL SELECT * FROM lower_keys) w
     WHERE postbox._claimable('pending', w.lease_until)
       AND (NOT p_due_only OR w.next_attempt_at <= now())
       AND NOT (p_holds AND EXISTS (SELECT FROM postbox.outbox f
                                     WHERE f.endpoint_id = p_endpoint AND f.status = 'failed'
                                       AND f.ordering_key = w.ordering_key AND f.id < w.id))
     LIMIT p_limit;
END
$fn$;
COMMENT ON FUNCTION postbox._key_heads(uuid, boolean, boolean, integer) IS 'Internal: the sendable heads of an ordered endpoint''s keys (oldest pending delivery of each, not in flight, not held), from a random key on, with their ctids.';
GRANT EXECUTE ON FUNCTION postbox._key_heads(uuid, boolean, boolean, integer) TO postbox_worker;

CREATE OR REPLACE FUNCTION postbox.next_due(blocked_endpoints uuid[], blocked_tenants text[])
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN (
        SELECT min(x.n) FROM postbox._due_endpoints d
         CROSS JOIN LATERAL (SELECT postbox._ordered(e.options) AS ordered, postbox._holds(e.options) AS holds
                               FROM postbox.endpoints e
                              WHERE e.id = d.endpoint_id
                                AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('healthy', 'failing')
                                AND e.id <> ALL (next_due.blocked_endpoints)
                                AND e.tenant <> ALL (next_due.blocked_tenants)
                             OFFSET 0) e
         -- An ordered endpoint's rows behind a head wait for it, whatever
         -- their time: only heads count (all of them: the walk has no end).
         CROSS JOIN LATERAL ((SELECT o.next_attempt_at AS n FROM postbox.outbox o
                               WHERE NOT e.ordered AND o.endpoint_id = d.endpoint_id
                                 AND postbox._claimable(o.status, o.lease_until)
                               ORDER BY o.next_attempt_at LIMIT 1)
                             UNION ALL
                             (SELECT min(k.next_attempt_at) FROM postbox._key_heads(d.endpoint_id, e.holds, false, NULL) k
                               WHERE e.ordered)) x);
END
$fn$;
COMMENT ON FUNCTION postbox.next_due(uuid[], text[]) IS 'Worker: the earliest attempt time of a claimable delivery of a sending endpoint outside the blocked ones (NULL: none).';
GRANT EXECUTE ON FUNCTION postbox.next_due(uuid[], text[]) TO postbox_worker;

CREATE OR REPLACE FUNCTION postbox.update_endpoint(
    tenant text,
    id uuid,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    headers json DEFAULT NULL,
    description text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    options jsonb DEFAULT NULL,
    envelope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e postbox.endpoints;
    v_was postbox.endpoints;
    v_was_keyed boolean;
    v_changes text[];
    v_from text;
    v_to text;
    v_reason text;
BEGIN
    e := postbox._endpoint(update_endpoint.tenant, update_endpoint.id);
    v_was := e;
    v_was_keyed := postbox._ordered(e.options) OR postbox._coalesces(e.options);
    IF update_endpoint.url IS NOT NULL THEN
        e.url := postbox.validate_url(update_endpoint.url);
    END IF;
    IF update_endpoint.event_types IS NOT NULL THEN
        e.event_types := postbox._validate_filters(update_endpoint.event_types, postbox._catalog_names());
    END IF;
    IF update_endpoint.headers IS NOT NULL THEN
        e.headers := postbox._headers(update_endpoint.headers, e.signature_header);
    END IF;
    IF update_endpoint.description IS NOT NULL THEN
        e.description := update_endpoint.description;
    END IF;
    IF update_endpoint.options IS NOT NULL THEN
        e.options := postbox._validate_options(postbox._check_depth('options', update_endpoint.options));
    END IF;
    IF update_endpoint.envelope IS NOT NULL THEN
        e.envelope := postbox._check_envelope(update_endpoint.envelope);
    END IF;
    IF update_endpoint.enabled IS NOT NULL THEN
        IF e.enabled <> update_endpoint.enabled THEN
            PERFORM postbox._pause(e.id, e.tenant, 'admin', NOT update_endpoint.enabled);
        END IF;
        e.enabled := update_endpoint.enabled;
        IF update_endpoint.enabled THEN
            -- Resuming clears the failure streak and any automatic disable.
            e.disabled_at := NULL;
            e.disabled_reason := NULL;
            e.consecutive_failures := 0;
            e.failing_since := NULL;
            e.resumed_at := now();
        END IF;
    END IF;
    -- Turning ordering or coalescing on: the deliveries already queued for
    -- the endpoint take their events' keys now. The expansion lock waits
    -- for an expansion that read the old options, and keeps the next one
    -- until this commits, so no delivery is queued without its key.
    IF (postbox._ordered(e.options) OR postbox._coalesces(e.options)) AND NOT v_was_keyed THEN
        PERFORM pg_advisory_xact_lock(postbox._expansion_lock());
        UPDATE postbox.outbox d
           SET ordering_key = postbox._ordering_hash(v.ordering_key)
          FROM postbox.events v
         WHERE d.endpoint_id = e.id AND d.ordering_key IS NULL AND NOT d.is_test AND v.id = d.event_id;
    END IF;
    UPDATE postbox.endpoints
       SET url = e.url, event_types = e.event_types, headers = e.headers, description = e.description,
           options = e.options, envelope = e.envelope, enabled = e.enabled, disabled_at = e.disabled_at,
           disabled_reason = e.disabled_reason, consecutive_failures = e.consecutive_failures,
           failing_since = e.failing_since, resumed_at = e.resumed_at, updated_at = now()
     WHERE id = e.id;
    -- The operator hears what changed, by name (never a header's value),
    -- and how the endpoint's state changed (postbox._endpoint_state).
    v_changes := ARRAY(SELECT c.name FROM (VALUES
            ('url', v_was.url IS DISTINCT FROM e.url), ('event_types', v_was.event_types IS DISTINCT FROM e.event_types),
            ('headers', v_was.headers IS DISTINCT FROM e.headers),
            ('description', v_was.description IS DISTINCT FROM e.description),
            ('options', v_was.options IS DISTINCT FROM e.options),
            ('envelope', v_was.envelope IS DISTINCT FROM e.envelope)) AS c(name, changed)
        WHERE c.changed);
    v_from := postbox._endpoint_state(v_was.enabled, v_was.suspended, v_was.disabled_at, v_was.consecutive_failures);
    v_to := postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures);
    v_reason := concat_ws('; ', CASE WHEN v_to = v_from THEN NULL
                                     WHEN v_to = 'paused' THEN 'paused'
                                     WHEN v_from = 'disabled' THEN 'resumed after being disabled'
                                     ELSE 'resumed' END,  -- from paused, or failing (the streak cleared)
                          'changed: ' || nullif(array_to_string(v_changes, ', '), ''));
    IF v_reason <> '' THEN
        PERFORM postbox._operator_events('postbox.endpoint.updated',
            ARRAY[postbox._notice(e.tenant, e.id, e.url, v_reason)]);
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text) IS 'Changes one of the tenant''s endpoints; NULL leaves a field as it is. enabled => false pauses it, true resumes it.';
GRANT EXECUTE ON FUNCTION postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text) TO postbox_admin;

-- Retention removes coalesced deliveries with cancelled ones.
CREATE OR REPLACE FUNCTION postbox.purge(max_rows integer DEFAULT 10000)
RETURNS TABLE (kind text, deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    r     postbox.retention;
    v_now timestamptz := now();
    v_n   bigint;
BEGIN
    IF purge.max_rows IS NULL OR purge.max_rows < 1 OR purge.max_rows > 1000000 THEN
        PERFORM postbox._raise('out_of_range', 'max_rows',
            format('postbox: max_rows must be between 1 and 1000000: %s', coalesce(purge.max_rows::text, 'NULL')));
    END IF;
    r := postbox._retention();

    -- The attempt log, by age and outcome (BRIN on started_at).
    DELETE FROM postbox.attempt_log a
     WHERE a.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.attempt_log x
            WHERE x.started_at < v_now - least(r.succeeded_attempts, r.failed_attempts)
              AND x.started_at < v_now - CASE WHEN x.outcome = 'succeeded' THEN r.succeeded_attempts
                                              ELSE r.failed_attempts END
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'attempts'; deleted := v_n; RETURN NEXT;

    -- Cancelled and coalesced deliveries, and failed ones whose endpoint is
    -- gone (they can never be retried), through outbox_settled, which holds
    -- only those.
    DELETE FROM postbox.outbox d
     WHERE d.id = ANY (ARRAY(
           SELECT x.id FROM postbox.outbox x
            WHERE x.status <> 'pending' AND x.created_at < v_now - r.cancelled_deliveries
              AND (x.status IN ('cancelled', 'coalesced')
                   OR NOT EXISTS (SELECT FROM postbox.endpoints e WHERE e.id = x.endpoint_id))
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'deliveries'; deleted := v_n; RETURN NEXT;

    -- Events no delivery refers to. Their ids are version 7 UUIDs, so "older
    -- than the window" is a range of the primary key. The outbox is read
    -- only when some event has expired (it holds what is queued, failed or
    -- cancelled: small unless there is a backlog).
    IF EXISTS (SELECT FROM postbox.events v WHERE v.id < postbox._uuid7_floor(v_now - r.events)) THEN
        DELETE FROM postbox.events v
         WHERE v.id = ANY (ARRAY(
               SELECT x.id FROM postbox.events x
                WHERE x.id < postbox._uuid7_floor(v_now - r.events)
                  AND NOT EXISTS (SELECT FROM postbox.outbox d WHERE d.event_id = x.id)
                ORDER BY x.id
                LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS v_n = ROW_COUNT;
    ELSE
        v_n := 0;
    END IF;
    kind := 'events'; deleted := v_n; RETURN NEXT;

    -- Idempotency keys (BRIN on created_at).
    DELETE FROM postbox.idempotency_keys k
     WHERE k.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.idempotency_keys x
            WHERE x.created_at < v_now - r.idempotency_keys
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'idempotency_keys'; deleted := v_n; RETURN NEXT;

    -- The HTTP API's stored responses, on the same window (BRIN on created_at).
    DELETE FROM postbox.api_idempotency k
     WHERE k.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.api_idempotency x
            WHERE x.created_at < v_now - r.idempotency_keys
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'api_requests'; deleted := v_n; RETURN NEXT;

    -- Portal links and sessions a day past their end (BRIN on created_at;
    -- neither outlives a day and a day).
    DELETE FROM postbox.portal_sessions p
     WHERE p.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.portal_sessions x
            WHERE x.created_at < v_now - interval '2 days'
              AND greatest(x.link_expires_at, coalesce(x.expires_at, x.link_expires_at)) < v_now - interval '1 day'
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'portal_sessions'; deleted := v_n; RETURN NEXT;

    -- Revoked HTTP API keys past their window (api_keys_revoked).
    DELETE FROM postbox.api_keys k
     WHERE k.id = ANY (ARRAY(
           SELECT x.id FROM postbox.api_keys x
            WHERE x.revoked_at < v_now - r.revoked_api_keys
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'api_keys'; deleted := v_n; RETURN NEXT;

    -- Ended pauses, once no emitted row from before their end waits for
    -- routing (which reads them) and the events window has passed.
    DELETE FROM postbox.endpoint_pauses p
     WHERE p.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.endpoint_pauses x
            WHERE x.resumed_at < v_now - r.events
              AND x.resumed_at < coalesce((SELECT m.created_at FROM postbox.emitted m ORDER BY m.id LIMIT 1), 'infinity')
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'pauses'; deleted := v_n; RETURN NEXT;

    -- Emitted rows set aside as unsendable.
    DELETE FROM postbox.emitted_rejects j
     WHERE j.ctid = ANY (ARRAY(
           SELECT x.ctid FROM postbox.emitted_rejects x
            WHERE x.rejected_at < v_now - r.failed_attempts
            LIMIT purge.max_rows FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    kind := 'rejects'; deleted := v_n; RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION postbox.purge(integer) IS 'Deletes what outlived its retention window, at most max_rows of each kind, skipping rows other purges hold; never pending or failed deliveries or the events they need. The worker runs it on a schedule.';
GRANT EXECUTE ON FUNCTION postbox.purge(integer) TO postbox_admin;

-- Sets the wake-up flag that tells emitters to NOTIFY (see the wakeup table
-- in schema.sql); writes only when it changes. Never raised where Citus is
-- installed: Citus commits a write to several nodes with PREPARE
-- TRANSACTION, which PostgreSQL refuses to a transaction that has sent a
-- NOTIFY, so an emit that woke the worker would fail the application's
-- write (found by tests/tests/citus.rs). Workers there find new events by
-- their poll (POSTBOX_POLL_INTERVAL) and, while busy, every claim.
CREATE OR REPLACE FUNCTION postbox.set_waiting(waiting boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_waiting boolean := set_waiting.waiting
                         AND NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus');
BEGIN
    INSERT INTO postbox.wakeup AS w (singleton, waiting) VALUES (true, v_waiting)
    ON CONFLICT (singleton) DO UPDATE SET waiting = EXCLUDED.waiting
     WHERE w.waiting IS DISTINCT FROM EXCLUDED.waiting;
END
$fn$;
COMMENT ON FUNCTION postbox.set_waiting(boolean) IS 'Worker: raises (a worker waits) or clears the wake-up flag that makes emitters NOTIFY; never raised where Citus is installed (a NOTIFY cannot be part of its two-phase commit).';

-- Keys follow the plan: a tenant whose endpoint limit is 0 has its API keys
-- refused (tenant_suspended; postbox-api answers 403) and may not make or
-- rotate keys until the limit is raised. One error for every refusal.

CREATE FUNCTION postbox._suspended(p_tenant text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM postbox._raise('tenant_suspended', NULL,
        format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', p_tenant));
END
$fn$;
COMMENT ON FUNCTION postbox._suspended(text) IS 'Internal: raises tenant_suspended for a tenant whose plan has no webhooks.';

CREATE FUNCTION postbox._refuse_suspended(p_tenant text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT FROM postbox.tenant_limits l WHERE l.tenant = p_tenant AND l.max_endpoints = 0) THEN
        PERFORM postbox._suspended(p_tenant);
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._refuse_suspended(text) IS 'Internal: raises tenant_suspended if the tenant''s endpoint limit is 0 (its plan has no webhooks); nothing for NULL.';

CREATE OR REPLACE FUNCTION postbox._check_tenant_limit(p_tenant text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_max   integer;
    v_count bigint;
BEGIN
    PERFORM postbox._require_tenant(p_tenant);
    SELECT max_endpoints INTO v_max FROM postbox.tenant_limits WHERE tenant = p_tenant FOR UPDATE;
    IF v_max IS NULL THEN
        RETURN;
    END IF;
    IF v_max = 0 THEN
        PERFORM postbox._suspended(p_tenant);
    END IF;
    SELECT count(*) INTO v_count FROM postbox.endpoints WHERE tenant = p_tenant;
    IF v_count >= v_max THEN
        PERFORM postbox._raise('tenant_endpoint_limit', NULL,
            format('postbox: tenant may have at most %s endpoints: %s', v_max, p_tenant));
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._check_tenant_limit(text) IS 'Internal: raises unless the tenant may have one more endpoint.';

CREATE OR REPLACE FUNCTION postbox.send_test(tenant text, id uuid, event_type text DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e       postbox.endpoints;
    v_event uuid := postbox._uuid7();
    v_data  jsonb;
    v_now   timestamptz := clock_timestamp();
BEGIN
    e := postbox._endpoint(send_test.tenant, send_test.id);
    -- NULL is the default (postbox.defaults; its catalog row is in
    -- schema.sql): what the HTTP API and the page pass.
    send_test.event_type := coalesce(send_test.event_type, (postbox.defaults()).test_event_type);
    IF postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) = 'suspended' THEN
        PERFORM postbox._suspended(e.tenant);
    END IF;
    SELECT coalesce(send_test.data, t.example) INTO v_data FROM postbox.event_types t WHERE t.name = send_test.event_type;
    IF NOT FOUND THEN
        PERFORM postbox._unknown_event_type(send_test.event_type);
    END IF;
    v_data := coalesce(v_data, jsonb_build_object(
        'message', 'This is a test event from postbox.', 'endpoint_id', e.id));
    PERFORM postbox._check_data(v_data);

    INSERT INTO postbox.events (id, tenant, event_type, created_at, data)
    VALUES (v_event, e.tenant, send_test.event_type, v_now, v_data);
    INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, is_test, next_attempt_at, created_at)
    VALUES (e.tenant, e.id, v_event, true, v_now, v_now);
    PERFORM postbox._wake();
    RETURN v_event;
END
$fn$;
COMMENT ON FUNCTION postbox.send_test(text, uuid, text, jsonb) IS 'Queues one test delivery to one of the tenant''s endpoints, even while paused, whatever its filter; without data, the event type''s example.';

CREATE OR REPLACE FUNCTION postbox.create_api_key(tenant text, role text, label text, session uuid DEFAULT NULL)
RETURNS TABLE (id uuid, key text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id  uuid := postbox._uuid7();
    v_key text := postbox._generate_api_key();
    s     postbox.portal_sessions;
BEGIN
    IF role IS NULL OR role NOT IN ('admin', 'member', 'operator') THEN
        PERFORM postbox._raise('role_unknown', 'role', format(
            'postbox: role must be admin, member or operator: %s', coalesce(postbox._shown(role), 'NULL')));
    END IF;
    IF role = 'operator' AND (tenant IS NOT NULL OR session IS NOT NULL) THEN
        PERFORM postbox._raise('operator_key_scoped', 'tenant', format(
            'postbox: operator keys act for every tenant and take no tenant or session (pass NULL): %s',
            coalesce(postbox._shown(tenant), session::text)));
    END IF;
    IF role <> 'operator' THEN
        PERFORM postbox._require_tenant(tenant);
        PERFORM postbox._refuse_suspended(tenant);
    END IF;
    IF label IS NULL OR length(label) NOT BETWEEN 1 AND 200 THEN
        PERFORM postbox._raise('length_out_of_range', 'label', format(
            'postbox: api key label must be 1 to 200 characters: %s', coalesce(postbox._shown(label), 'NULL')));
    END IF;
    s := postbox._key_session(tenant, session);
    -- Serialised per tenant, so concurrent creations cannot pass the limits.
    PERFORM pg_advisory_xact_lock(hashtextextended('postbox.create_api_key ' || coalesce(tenant, ''), 0));
    IF (SELECT count(*) FROM postbox.api_keys k
         WHERE k.tenant IS NOT DISTINCT FROM create_api_key.tenant AND k.revoked_at IS NULL)
       >= postbox._max_api_keys() THEN
        PERFORM postbox._raise('api_key_limit', NULL, format(
            'postbox: a tenant has at most %s active api keys (revoke one first): %s',
            postbox._max_api_keys(), coalesce(postbox._shown(tenant), 'operator keys')));
    END IF;
    IF (SELECT count(*) FROM postbox.api_keys k WHERE k.tenant IS NOT DISTINCT FROM create_api_key.tenant)
       >= postbox._max_api_keys_kept() THEN
        PERFORM postbox._raise('api_keys_kept_limit', NULL, format(
            'postbox: a tenant has at most %s api keys, revoked ones included until the revoked_api_keys window (%s) ends: %s',
            postbox._max_api_keys_kept(), (postbox._retention()).revoked_api_keys,
            coalesce(postbox._shown(tenant), 'operator keys')));
    END IF;
    INSERT INTO postbox.api_keys (id, tenant, role, label, key_hash, key_prefix, made_by_session, for_user)
    VALUES (v_id, tenant, role, label, sha256(convert_to(v_key, 'UTF8')), postbox._api_key_prefix(v_key), s.id, s.user_id);
    id := v_id;
    key := v_key;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION postbox.create_api_key(text, text, text, uuid) IS 'Makes an HTTP API key (admin or member of a tenant, or operator with tenant NULL) and returns it, the only time it is shown; with session, for that portal session (allowed to manage keys), which it records with its user.';

CREATE OR REPLACE FUNCTION postbox.rotate_api_key(tenant text, id uuid, session uuid DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    k     postbox.api_keys := postbox._api_key(tenant, id, session);
    v_key text := postbox._generate_api_key();
BEGIN
    IF k.revoked_at IS NOT NULL THEN
        PERFORM postbox._raise('api_key_revoked', 'id',
            format('postbox: a revoked api key cannot be rotated: %s', id));
    END IF;
    PERFORM postbox._refuse_suspended(k.tenant);
    UPDATE postbox.api_keys x
       SET key_hash = sha256(convert_to(v_key, 'UTF8')), key_prefix = postbox._api_key_prefix(v_key), rotated_at = now()
     WHERE x.id = k.id;
    RETURN v_key;
END
$fn$;
COMMENT ON FUNCTION postbox.rotate_api_key(text, uuid, uuid) IS 'Gives an HTTP API key (tenant NULL: an operator key) a new value, returned once; the old one stops working at commit. With session, only a key that portal session may manage.';

CREATE OR REPLACE FUNCTION postbox.authenticate_api_key(key_hash bytea)
RETURNS TABLE (id uuid, tenant text, role text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k postbox.api_keys;
BEGIN
    SELECT * INTO k FROM postbox.api_keys x
     WHERE x.key_hash = authenticate_api_key.key_hash AND x.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Keys follow the plan: a live key of a tenant without webhooks is
    -- refused with its reason (the API answers 403), not taken for unknown.
    PERFORM postbox._refuse_suspended(k.tenant);
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        -- Concurrent callers wait here for one another, re-check, and skip.
        UPDATE postbox.api_keys x SET last_used_at = now()
         WHERE x.id = k.id AND (x.last_used_at IS NULL OR x.last_used_at < now() - interval '1 minute');
    END IF;
    id := k.id;
    tenant := k.tenant;
    role := k.role;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION postbox.authenticate_api_key(bytea) IS 'postbox-api: the id, tenant and role of the live key with this SHA-256, if any; records its use at most once a minute. A key of a tenant whose endpoint limit is 0 raises tenant_suspended.';

COMMENT ON FUNCTION postbox.set_tenant_limit(text, integer) IS 'Sets how many endpoints a tenant may have (NULL: no limit). 0 means no webhooks: its endpoints are suspended and its API keys refused until the limit is raised.';

CREATE OR REPLACE FUNCTION postbox.create_event_type(name text, description text DEFAULT NULL, schema jsonb DEFAULT NULL,
                                          example jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    IF create_event_type.name IS NULL THEN
        PERFORM postbox._raise('required', 'name', 'postbox: event type name must not be NULL: NULL');
    END IF;
    IF postbox._reserved_type(create_event_type.name) THEN
        PERFORM postbox._reserved_type_error(create_event_type.name);
    END IF;
    IF create_event_type.schema IS NOT NULL
       AND jsonb_typeof(create_event_type.schema) NOT IN ('object', 'boolean') THEN
        PERFORM postbox._raise('event_type_schema_invalid', 'schema',
            format('postbox: event type schema must be a JSON Schema (an object or a boolean): %s',
                             left(create_event_type.schema::text, 100)));
    END IF;
    IF create_event_type.example IS NOT NULL THEN
        PERFORM postbox._check_data(create_event_type.example);  -- what send_test will send
    END IF;
    INSERT INTO postbox.event_types AS t (name, description, schema, example, match_keys)
    VALUES (create_event_type.name, create_event_type.description, create_event_type.schema,
            create_event_type.example, postbox._event_match_keys(create_event_type.name))
    ON CONFLICT (name) DO UPDATE
        SET description = EXCLUDED.description, schema = EXCLUDED.schema, example = EXCLUDED.example,
            updated_at = now();
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._unknown_event_type(p_name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_close text[];
BEGIN
    BEGIN
        PERFORM postbox._event_match_keys(p_name);  -- raises if the name is malformed
    END;
    IF postbox._reserved_type(p_name) THEN
        PERFORM postbox._reserved_type_error(p_name);
    END IF;
    v_close := postbox._close_names(p_name, postbox._catalog_names());
    PERFORM postbox._raise('event_type_unknown', 'event_type', format('postbox: unknown event type (%s): %s',
        CASE WHEN cardinality(v_close) > 0 THEN 'did you mean ' || array_to_string(v_close, ', ') || '?'
             ELSE 'create it with postbox.create_event_type first' END,
        coalesce(p_name, 'NULL')), p_name);
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._register_resource(p_resource text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_suffix text;
BEGIN
    IF p_resource IS NULL OR p_resource ~ '[.](created|updated|deleted)$' THEN
        PERFORM postbox._raise('resource_invalid', 'resource',
            format('postbox: resource must be a name such as recording: %s',
                             coalesce(postbox._shown(p_resource), 'NULL')));
    END IF;
    PERFORM postbox._event_match_keys(p_resource || '.created');  -- raises on a bad resource name
    IF postbox._reserved_type(p_resource || '.created') THEN
        PERFORM postbox._reserved_type_error(p_resource || '.created');
    END IF;
    FOREACH v_suffix IN ARRAY ARRAY['created', 'updated', 'deleted'] LOOP
        INSERT INTO postbox.event_types (name, description, match_keys)
        VALUES (p_resource || '.' || v_suffix,
                format('A %s row was %s (emitted by postbox.attach).', p_resource, v_suffix),
                postbox._event_match_keys(p_resource || '.' || v_suffix))
        ON CONFLICT (name) DO NOTHING;
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._create_endpoint(
    p_tenant text, p_url text, p_event_types text[], p_headers json, p_description text,
    p_signature_style text, p_signature_header text, p_own_secret text, p_options jsonb,
    p_enabled boolean, p_envelope text)
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id      uuid := postbox._uuid7();
    v_url     text;
    v_style   text := coalesce(p_signature_style, (postbox.defaults()).signature_style);
    v_sig     text;
    v_headers jsonb;
    v_filters text[];
    v_secret  text;
    v_now     timestamptz := clock_timestamp();
BEGIN
    PERFORM postbox._check_tenant_limit(p_tenant);
    v_url := postbox.validate_url(p_url);
    v_sig := postbox._validate_signature(v_style, p_signature_header);
    v_headers := postbox._headers(coalesce(p_headers, '{}'), v_sig);
    v_filters := postbox._validate_filters(coalesce(p_event_types, '{*}'), postbox._catalog_names());
    PERFORM postbox._validate_options(postbox._check_depth('options', coalesce(p_options, '{}')));
    PERFORM postbox._check_envelope(coalesce(p_envelope, 'postbox'));
    IF p_own_secret IS NULL THEN
        v_secret := postbox._generate_secret();
    ELSE
        PERFORM postbox._validate_secret(p_own_secret, v_style);
        v_secret := p_own_secret;
    END IF;

    -- created_at from the clock, as emit's: routing sends an endpoint only
    -- events emitted after it was created, even within one transaction.
    INSERT INTO postbox.endpoints (id, tenant, url, event_types, headers, description,
                                   signature_style, signature_header, options, envelope,
                                   enabled, created_at)
    VALUES (v_id, p_tenant, v_url, v_filters, v_headers, p_description, v_style, v_sig,
            coalesce(p_options, '{}'), coalesce(p_envelope, 'postbox'), coalesce(p_enabled, true), v_now);
    IF NOT coalesce(p_enabled, true) THEN
        -- Created switched off: paused from its first moment, as if paused at once.
        INSERT INTO postbox.endpoint_pauses (endpoint_id, tenant, paused_at) VALUES (v_id, p_tenant, v_now);
    END IF;
    INSERT INTO postbox.endpoint_secrets (endpoint_id, secret) VALUES (v_id, v_secret);
    PERFORM postbox._operator_events('postbox.endpoint.created', ARRAY[postbox._notice(p_tenant, v_id, v_url, 'created')]);
    id := v_id;
    secret := v_secret;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.register_endpoint(
    tenant text,
    url text,
    event_types text[] DEFAULT '{*}',
    headers json DEFAULT '{}',
    description text DEFAULT NULL,
    signature_style text DEFAULT NULL,
    signature_header text DEFAULT NULL,
    own_secret text DEFAULT NULL,
    options jsonb DEFAULT '{}',
    enabled boolean DEFAULT true,
    envelope text DEFAULT 'postbox')
RETURNS TABLE (id uuid, secret text, created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_url     text;
    v_id      uuid;
    v_filters text[];
BEGIN
    PERFORM postbox._require_tenant(tenant);
    v_url := postbox.validate_url(url);
    PERFORM pg_advisory_xact_lock(hashtextextended('postbox.register_endpoint ' || tenant || ' ' || v_url, 0));
    SELECT e.id INTO v_id FROM postbox.endpoints e
     WHERE e.tenant = register_endpoint.tenant AND e.url = v_url
     ORDER BY e.created_at, e.id LIMIT 1 FOR UPDATE;
    IF v_id IS NULL THEN
        RETURN QUERY SELECT c.id, c.secret, true FROM postbox._create_endpoint(
            tenant, url, event_types, headers, description, signature_style, signature_header,
            own_secret, options, enabled, envelope) c;
        RETURN;
    END IF;
    IF event_types IS NOT NULL THEN  -- NULL keeps them
        v_filters := postbox._validate_filters(event_types, postbox._catalog_names());
        UPDATE postbox.endpoints e
           SET event_types = v_filters, updated_at = now()
         WHERE e.id = v_id AND e.event_types IS DISTINCT FROM v_filters;
        IF FOUND THEN
            PERFORM postbox._operator_events('postbox.endpoint.updated',
                ARRAY[postbox._notice(tenant, v_id, v_url, 'changed: event_types')]);
        END IF;
    END IF;
    RETURN QUERY SELECT v_id, NULL::text, false;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._delete_endpoint(p_tenant text, p_id uuid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e postbox.endpoints;
BEGIN
    e := postbox._endpoint(p_tenant, p_id);
    DELETE FROM postbox.endpoints WHERE id = p_id;  -- secrets and pauses go with it (cascade)
    PERFORM postbox._operator_events('postbox.endpoint.deleted', ARRAY[postbox._notice(p_tenant, p_id, e.url, 'deleted')]);
    UPDATE postbox.outbox
       SET status = 'cancelled', last_error = 'endpoint deleted', lease_until = NULL
     WHERE endpoint_id = p_id AND status = 'pending';
    -- Events not yet expanded are routed to existing endpoints only.
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.rotate_secret(tenant text, id uuid, grace interval DEFAULT NULL, own_secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e        postbox.endpoints;
    v_secret text;
BEGIN
    e := postbox._endpoint(rotate_secret.tenant, rotate_secret.id);
    -- NULL is the default (postbox.defaults): what the HTTP API and the page pass.
    rotate_secret.grace := coalesce(rotate_secret.grace, (postbox.defaults()).rotation_grace);
    IF rotate_secret.grace IS NULL OR rotate_secret.grace < interval '0' OR rotate_secret.grace > interval '30 days' THEN
        PERFORM postbox._raise('out_of_range', 'grace',
            format('postbox: grace must be between 0 and 30 days: %s', coalesce(rotate_secret.grace::text, 'NULL')));
    END IF;
    IF rotate_secret.own_secret IS NULL THEN
        v_secret := postbox._generate_secret();
    ELSE
        PERFORM postbox._validate_secret(rotate_secret.own_secret, e.signature_style);
        v_secret := rotate_secret.own_secret;
    END IF;
    -- Older secrets stay valid until the grace period ends (never longer
    -- than they already were).
    UPDATE postbox.endpoint_secrets
       SET expires_at = least(coalesce(expires_at, 'infinity'), clock_timestamp() + rotate_secret.grace)
     WHERE endpoint_id = e.id;
    DELETE FROM postbox.endpoint_secrets WHERE endpoint_id = e.id AND expires_at <= clock_timestamp();
    INSERT INTO postbox.endpoint_secrets (endpoint_id, secret) VALUES (e.id, v_secret);
    PERFORM postbox._operator_events('postbox.endpoint.updated',
        ARRAY[postbox._notice(e.tenant, e.id, e.url, 'secret rotated')]);
    RETURN v_secret;
END
$fn$;

CREATE VIEW postbox.operator_events AS
SELECT v.id, v.event_type, v.created_at, v.data ->> 'tenant' AS tenant,
       (v.data ->> 'endpoint_id')::uuid AS endpoint_id, v.data ->> 'reason' AS reason, v.data::jsonb AS data
  FROM postbox.events v
 WHERE v.tenant = postbox.operator_tenant() AND postbox._reserved_type(v.event_type);

COMMENT ON FUNCTION postbox._unknown_event_type(text) IS 'Internal: raises the unknown-event-type error with the closest names (or event_type_reserved for postbox.*).';
COMMENT ON VIEW postbox.operator_events IS 'postbox''s own events (postbox.endpoint.failing, disabled, recovered, created, updated, deleted; postbox.delivery.exhausted), expanded, with the tenant, endpoint and reason each is about.';
GRANT SELECT ON postbox.operator_events TO postbox_admin;

-- ===== postbox on Citus (sql/citus.sql, new in 0.9.0) =====
-- postbox on Citus (docs/design.md, "Past one database: Citus"). Every node
-- runs its own postbox: the triggers on a distributed table fire on the
-- shards, on the worker node that holds them, and write the node's own
-- emitted table in the writing transaction (Citus commits both with its
-- two-phase commit); a postbox-worker per node expands, claims and
-- delivers there. What every node must share is the configuration, which
-- is managed on the coordinator: the catalog, endpoints, their secrets and
-- pauses, and retention. It reaches the worker nodes by PostgreSQL's
-- logical replication (a publication on the coordinator, a subscription on
-- each worker node), applied in the coordinator's commit order.
--
-- Not Citus reference tables: every statement over one is planned by Citus,
-- which cannot plan the generic plans postbox's functions keep (measured:
-- the row trigger's insert failed with "could not create distributed plan"
-- on a worker node), and the health a worker writes would become a
-- two-phase commit over every node.

-- The replicated tables and columns, the one list. An endpoint's health
-- (consecutive failures, failing since, last attempt, success and error,
-- and an automatic disable) is left out: the node that delivers an
-- endpoint's events writes it, and a configuration change must not
-- overwrite it.
CREATE FUNCTION postbox._citus_publication_tables()
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 'postbox.event_types, postbox.endpoints (id, tenant, url, event_types, headers, description, '
           'signature_style, signature_header, envelope, options, enabled, suspended, created_at, updated_at, resumed_at), '
           'postbox.endpoint_secrets, postbox.endpoint_pauses, postbox.retention';
END;
COMMENT ON FUNCTION postbox._citus_publication_tables() IS 'Internal: the tables and columns the coordinator replicates to Citus worker nodes (postbox.citus_replicate_config).';

-- Resuming an endpoint (update_endpoint enabled => true) on the coordinator
-- clears its health there, but the health that counts is the worker node's,
-- which replication leaves alone: this trigger clears it on the node when
-- the resume arrives (resumed_at changes). It fires only in replication's
-- apply (ENABLE REPLICA), so never on the coordinator or on one node.
-- SECURITY INVOKER: it runs as the subscription's owner and only sets NEW.
CREATE FUNCTION postbox._resumed_on_node()
RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NEW.resumed_at IS DISTINCT FROM OLD.resumed_at THEN
        NEW.disabled_at := NULL;
        NEW.disabled_reason := NULL;
        NEW.consecutive_failures := 0;
        NEW.failing_since := NULL;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION postbox._resumed_on_node() IS 'Internal: on a Citus worker node, clears an endpoint''s health when a resume replicated from the coordinator arrives.';
CREATE TRIGGER resumed_on_node BEFORE UPDATE ON postbox.endpoints
    FOR EACH ROW EXECUTE FUNCTION postbox._resumed_on_node();
ALTER TABLE postbox.endpoints ENABLE REPLICA TRIGGER resumed_on_node;
COMMENT ON TRIGGER resumed_on_node ON postbox.endpoints IS 'Citus worker nodes: a replicated resume clears the health this node keeps (fires in replication''s apply only).';

-- Delivery ids on Citus: a worker node draws its deliveries' ids from its
-- own range, starting at its group id shifted left by this many bits (the
-- coordinator, group 0, keeps the ids from 1), so an id names the node
-- that holds the delivery, and postbox-api sends a request about it there.
-- 48 bits: 2^48 deliveries per node, 2^15 nodes, within bigint.
CREATE FUNCTION postbox._delivery_node_bits()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 48;
END;
COMMENT ON FUNCTION postbox._delivery_node_bits() IS 'Internal: on Citus, a delivery id shifted right by this many bits is the group id of the node that holds it.';
GRANT EXECUTE ON FUNCTION postbox._delivery_node_bits() TO postbox_admin;

-- Run on the coordinator by a superuser (CREATE SUBSCRIPTION needs one on
-- PostgreSQL 14 and 15), outside a transaction block: a subscription's
-- replication slot on the coordinator cannot be made while this
-- transaction holds writes, so the publication is committed first.
-- Idempotent: a worker node that already subscribes is left alone, so it
-- is run again after citus_add_node. A node whose replicated tables hold
-- anything but what CREATE EXTENSION wrote (the catalog's builtin types) is
-- refused: its rows would clash with the coordinator's copy.
-- conninfo: what a worker node adds to reach the coordinator (sslmode,
-- sslrootcert, ...), beside the coordinator's host and port from Citus's
-- metadata, this database and the calling role; never a password (a
-- .pgpass file on each worker node holds it).
-- No SET search_path: a procedure with a SET clause cannot COMMIT. It runs
-- with its caller's rights only, and names what it uses in pg_catalog.
CREATE PROCEDURE postbox.citus_replicate_config(conninfo text DEFAULT '')
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_node   record;
    v_coord  record;
    v_result text;
    v_ok     boolean;
    v_conn   text;
    v_deadline timestamptz;
    v_sub    text;  -- the node's subscription, also its slot here
    v_label  text;  -- host:port, as errors name the node
BEGIN
    IF conninfo OPERATOR(pg_catalog.~*) '(^|[[:space:]])password[[:space:]]*=' THEN
        PERFORM postbox._raise('citus_conninfo_has_password', 'conninfo',
            'postbox: conninfo holds a password, which a failed CREATE SUBSCRIPTION would write to a worker node''s log; give each worker node a .pgpass file instead');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        PERFORM postbox._raise('citus_not_coordinator', 'citus',
            'postbox: citus_replicate_config needs Citus (CREATE EXTENSION citus)');
    END IF;
    -- Worker nodes have Citus's metadata too, the coordinator's row included.
    SELECT nodename, nodeport INTO v_coord FROM pg_catalog.pg_dist_node WHERE groupid = 0 AND noderole = 'primary';
    IF NOT FOUND OR NOT pg_catalog.citus_is_coordinator() THEN
        PERFORM postbox._raise('citus_not_coordinator', 'citus',
            'postbox: citus_replicate_config runs on the coordinator, once it is registered (citus_set_coordinator_host)');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'postbox_config') THEN
        -- Citus would create the publication on every node as well.
        SET LOCAL citus.enable_ddl_propagation = off;
        EXECUTE 'CREATE PUBLICATION postbox_config FOR TABLE ' || postbox._citus_publication_tables();
    END IF;
    COMMIT;
    v_conn := pg_catalog.format('host=%s port=%s dbname=%s user=%s %s', v_coord.nodename, v_coord.nodeport,
                     pg_catalog.current_database(), current_user, conninfo);
    FOR v_node IN SELECT nodename, nodeport, groupid FROM pg_catalog.pg_dist_node
                   WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY groupid LOOP
        v_sub := 'postbox_config_' || v_node.groupid;
        v_label := v_node.nodename || ':' || v_node.nodeport;
        SELECT success, result INTO v_ok, v_result
          FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                                    ARRAY[pg_catalog.format('SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = %L',
                                                 v_sub)], false);
        IF NOT v_ok THEN
            PERFORM postbox._raise('citus_node_failed', 'node',
                pg_catalog.format('postbox: worker node %s could not be asked: %s', v_label, v_result), v_label);
        END IF;
        CONTINUE WHEN v_result <> '0';
        SELECT success, result INTO v_ok, v_result
          FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                                    ARRAY['SELECT (SELECT count(*) FROM postbox.event_types WHERE NOT builtin)'
                                          ' + (SELECT count(*) FROM postbox.endpoints)'
                                          ' + (SELECT count(*) FROM postbox.retention)'], false);
        IF NOT v_ok OR v_result <> '0' THEN
            PERFORM postbox._raise('citus_node_has_configuration', 'node',
                pg_catalog.format('postbox: worker node %s already holds postbox configuration of its own; it cannot subscribe to the coordinator''s',
                                  v_label),
                v_label);
        END IF;
        FOR v_result IN
            SELECT 'DELETE FROM postbox.event_types'
            UNION ALL
            -- The node's deliveries take ids from its own range.
            SELECT pg_catalog.format('SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(''postbox.outbox'', ''id''), %s, false)',
                                     (v_node.groupid::bigint OPERATOR(pg_catalog.<<) postbox._delivery_node_bits()) OPERATOR(pg_catalog.+) 1)
            UNION ALL
            SELECT pg_catalog.format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION postbox_config', v_sub, v_conn)
        LOOP
            SELECT success, result INTO v_ok, v_result
              FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport], ARRAY[v_result], false);
            -- Not the node's answer: it may quote the connection string.
            IF NOT v_ok THEN
                PERFORM postbox._raise('citus_node_failed', 'node',
                    pg_catalog.format('postbox: worker node %s could not subscribe to the configuration (its server log says why)',
                                      v_label),
                    v_label);
            END IF;
        END LOOP;
        -- Until the node has copied every table: before that, a change to a
        -- table still being copied reaches the node later than changes to
        -- the others, and citus_config_replicated could not tell.
        v_deadline := pg_catalog.clock_timestamp() + interval '60 seconds';
        LOOP
            SELECT success, result INTO v_ok, v_result
              FROM pg_catalog.master_run_on_worker(ARRAY[v_node.nodename], ARRAY[v_node.nodeport],
                       ARRAY[pg_catalog.format('SELECT count(*) FROM pg_catalog.pg_subscription_rel r'
                                               ' JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid'
                                               ' WHERE s.subname = %L AND r.srsubstate <> ''r''',
                                               v_sub)], false);
            EXIT WHEN v_ok AND v_result = '0';
            IF pg_catalog.clock_timestamp() > v_deadline THEN
                PERFORM postbox._raise('citus_node_failed', 'node',
                    pg_catalog.format('postbox: worker node %s has not copied the configuration within 60 seconds (its server log says why)',
                                      v_label),
                    v_label);
            END IF;
            PERFORM pg_catalog.pg_sleep(0.05);
        END LOOP;
    END LOOP;
END
$fn$;
COMMENT ON PROCEDURE postbox.citus_replicate_config(text) IS 'Citus coordinator, superuser: replicates postbox''s configuration to every worker node that does not have it yet (a publication here, a subscription there). Run again after adding a node.';

-- Whether every worker node's subscription has applied the coordinator's
-- WAL up to since: a change committed before since is then on every node.
CREATE FUNCTION postbox.citus_config_replicated(since pg_lsn DEFAULT pg_current_wal_lsn())
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT count(*) = (SELECT count(*) FROM pg_replication_slots s WHERE s.slot_name LIKE 'postbox\_config\_%')
           AND count(*) > 0
      FROM pg_stat_replication r
      JOIN pg_replication_slots s ON s.active_pid = r.pid AND s.slot_name LIKE 'postbox\_config\_%'
     WHERE r.replay_lsn >= since;
END;
COMMENT ON FUNCTION postbox.citus_config_replicated(pg_lsn) IS 'Citus coordinator: whether every worker node has applied the configuration committed here before since (default: now).';
-- The configuration fence of a Citus worker node. The node routes events
-- by its copy of the configuration, which trails the coordinator's by
-- replication's lag (milliseconds, or without bound if replication
-- stops): an endpoint made on the coordinator just before a write would
-- miss the write's event. So a node expands only the emitted rows that
-- committed before a moment at which its copy was known current: it takes
-- a snapshot, then asks the coordinator for its flushed WAL position (every
-- configuration change committed before the snapshot is below it), and the
-- snapshot becomes safe once the node's subscription has applied up to
-- that position. One question at a time, at most every
-- _config_fence_interval(), pipelined: while one waits for replication,
-- the rows of the previous safe snapshot are expanded.
CREATE TABLE postbox.config_fence (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    safe        pg_snapshot,   -- rows committed in it may be expanded
    pending     pg_snapshot,   -- taken just before asking the coordinator
    pending_lsn pg_lsn,        -- the coordinator's flushed WAL then
    asked_at    timestamptz
);
COMMENT ON TABLE postbox.config_fence IS 'Citus worker nodes: the snapshot whose emitted rows may be expanded (the configuration was current for them) and the question pending to the coordinator; one row.';

-- How often a node may ask the coordinator (a new connection each time,
-- Citus's run_command_on_coordinator): 100 ms bounds it to 10 a second
-- per node while adding at most that to an event's way out.
CREATE FUNCTION postbox._config_fence_interval()
RETURNS interval
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT interval '100 milliseconds';
END;
COMMENT ON FUNCTION postbox._config_fence_interval() IS 'Internal: the least time between two questions of a Citus worker node to the coordinator for the configuration fence.';

-- Whether a row whose xmin is p_xmin committed in p_snap. xmin is 32 bits
-- and a snapshot's ids 64: the row's epoch is its snapshot's, or the one
-- before when the 32 bits are above the snapshot's. A row older than 2^30
-- transactions is taken as committed (emitted rows live seconds).
CREATE FUNCTION postbox._committed_in(p_xmin xid, p_snap pg_snapshot)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT CASE WHEN pg_catalog.age(p_xmin) > 1073741824 THEN true
                ELSE pg_catalog.pg_visible_in_snapshot(
                       (((x.xmax8 OPERATOR(pg_catalog.>>) 32)
                         OPERATOR(pg_catalog.-) (p_xmin::text::bigint OPERATOR(pg_catalog.>) (x.xmax8 OPERATOR(pg_catalog.&) 4294967295))::integer)
                        OPERATOR(pg_catalog.<<) 32
                        OPERATOR(pg_catalog.|) p_xmin::text::bigint)::text::xid8,
                       p_snap) END
      FROM (SELECT pg_catalog.pg_snapshot_xmax(p_snap)::text::bigint AS xmax8) x;
END;
COMMENT ON FUNCTION postbox._committed_in(xid, pg_snapshot) IS 'Internal: whether the transaction with 32-bit id p_xmin (a row''s xmin) had committed in snapshot p_snap.';

-- How far this node has applied the coordinator's configuration: the
-- position in the last message of the coordinator's walsender, which pings
-- with its position once it has sent everything (and the apply worker
-- applies what came before a ping before reading it). NULL while the
-- subscription is not running.
CREATE FUNCTION postbox._config_applied()
RETURNS pg_lsn
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT min(s.latest_end_lsn)
      FROM pg_stat_subscription s
     WHERE s.subname LIKE 'postbox\_config\_%' AND s.relid IS NULL AND s.pid IS NOT NULL;
END;
COMMENT ON FUNCTION postbox._config_applied() IS 'Internal: on a Citus worker node, the coordinator''s WAL position up to which the configuration''s subscription has applied (NULL: not running).';

-- Called by expand_events under the expansion lock. fenced: this node
-- subscribes to the coordinator's configuration (elsewhere: false, and
-- nothing else is done); safe: the snapshot whose rows may be expanded
-- (NULL: none yet). SECURITY INVOKER: it runs as expand_events' owner,
-- asks the coordinator one fixed statement, and writes config_fence.
CREATE FUNCTION postbox._config_fence(OUT fenced boolean, OUT safe pg_snapshot)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    f         postbox.config_fence;
    v_applied pg_lsn;
    v_snap    pg_snapshot;
    v_ok      boolean;
    v_result  text;
BEGIN
    fenced := EXISTS (SELECT FROM pg_subscription s
                       WHERE s.subname LIKE 'postbox\_config\_%'
                         AND s.subdbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()));
    IF NOT fenced THEN
        RETURN;
    END IF;
    SELECT * INTO f FROM postbox.config_fence;
    v_applied := postbox._config_applied();
    IF f.pending_lsn IS NOT NULL AND v_applied >= f.pending_lsn THEN
        f.safe := f.pending;
        f.pending := NULL;
        f.pending_lsn := NULL;
    END IF;
    IF f.pending_lsn IS NULL AND EXISTS (SELECT FROM postbox.emitted)
       AND (f.asked_at IS NULL OR f.asked_at < clock_timestamp() - postbox._config_fence_interval()) THEN
        v_snap := pg_current_snapshot();
        SELECT c.success, c.result INTO v_ok, v_result
          FROM run_command_on_coordinator('SELECT pg_current_wal_flush_lsn()') c;
        f.asked_at := clock_timestamp();
        IF v_ok THEN
            f.pending := v_snap;
            f.pending_lsn := v_result::pg_lsn;
            -- A replication that keeps up answers within milliseconds: wait
            -- that long for it here (a manual expand_events then works in
            -- one call), and no longer (the caller holds the expansion lock).
            LOOP
                IF postbox._config_applied() >= f.pending_lsn THEN
                    f.safe := f.pending;
                    f.pending := NULL;
                    f.pending_lsn := NULL;
                    EXIT;
                END IF;
                EXIT WHEN clock_timestamp() > f.asked_at + interval '50 milliseconds';
                PERFORM pg_sleep(0.002);
            END LOOP;
        END IF;
    END IF;
    INSERT INTO postbox.config_fence AS c (singleton, safe, pending, pending_lsn, asked_at)
    VALUES (true, f.safe, f.pending, f.pending_lsn, f.asked_at)
    ON CONFLICT (singleton) DO UPDATE
       SET safe = EXCLUDED.safe, pending = EXCLUDED.pending, pending_lsn = EXCLUDED.pending_lsn,
           asked_at = EXCLUDED.asked_at;
    safe := f.safe;
END
$fn$;
COMMENT ON FUNCTION postbox._config_fence() IS 'Internal: on a Citus worker node, the snapshot whose emitted rows were written under configuration the node has applied (see config_fence).';

-- ALL FUNCTIONS in sql/native.sql does not cover procedures.
REVOKE ALL ON PROCEDURE postbox.citus_replicate_config(text) FROM PUBLIC;

-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
