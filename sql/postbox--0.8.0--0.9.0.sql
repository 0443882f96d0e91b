-- postbox 0.8.0 -> 0.9.0, in development: batched deliveries. The upgrade
-- tests compare its result with a fresh install, for the compiled
-- extension (tests/tests/extension.rs) and for postbox-sql, whose upgrade
-- scripts scripts/sql-flavour.py makes from this one
-- (tests/tests/sql_flavour.rs).

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
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH eps AS (
        SELECT e.id, e.tenant,
               least(coalesce(r.room, claim.endpoint_room), coalesce(t.room, claim.tenant_room)) AS room,
               coalesce(t.room, claim.tenant_room) AS tenant_room,
               random() AS r
          FROM postbox._due_endpoints d
         CROSS JOIN LATERAL (SELECT e.id, e.tenant FROM postbox.endpoints e
                              WHERE e.id = d.endpoint_id
                                AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('healthy', 'failing')
                             OFFSET 0) e
          LEFT JOIN unnest(claim.endpoint_ids, claim.endpoint_rooms) AS r(endpoint_id, room) ON r.endpoint_id = e.id
          LEFT JOIN unnest(claim.tenants, claim.tenant_rooms) AS t(tenant, room) ON t.tenant = e.tenant
    ), fair AS (
        SELECT d.id, d.ctid, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
          FROM (SELECT * FROM eps WHERE eps.room > 0 ORDER BY eps.r) o
         CROSS JOIN LATERAL (
               SELECT d.id, d.ctid, d.event_id, d.next_attempt_at FROM postbox.outbox d
                WHERE d.endpoint_id = o.id AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
                ORDER BY d.next_attempt_at
                LIMIT o.room
                  FOR UPDATE SKIP LOCKED) d
         LIMIT claim.max_rows
    ), capped AS (
        SELECT f.id, f.ctid, f.event_id, f.r, f.next_attempt_at
          FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant ORDER BY f.r, f.next_attempt_at) AS n
                  FROM fair f) f
         WHERE f.n <= f.tenant_room
    ), tests AS (
        SELECT d.id, d.ctid, d.event_id, 2.0::float8 AS r, d.next_attempt_at FROM postbox.outbox d
         WHERE d.is_test AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
           AND EXISTS (SELECT FROM postbox.endpoints e
                        WHERE e.id = d.endpoint_id
                          AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                      e.consecutive_failures) IN ('paused', 'disabled'))
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
    v_disabled record;
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
     WHERE o.id = y.id AND y.status IS NOT NULL AND o.status = 'pending';

    IF cardinality(acknowledge.h_ids) > 0 THEN
        UPDATE postbox.endpoints e
           SET consecutive_failures = CASE WHEN h.reset THEN h.streak ELSE e.consecutive_failures + h.streak END,
               failing_since = CASE WHEN h.streak = 0 THEN NULL
                                    WHEN h.reset THEN h.first_fail
                                    ELSE coalesce(e.failing_since, h.first_fail) END,
               last_attempt_at = greatest(e.last_attempt_at, h.last_at),
               last_success_at = coalesce(h.last_ok, e.last_success_at),
               last_error = coalesce(h.last_err, e.last_error)
          FROM unnest(acknowledge.h_ids, acknowledge.h_reset, acknowledge.h_streak, acknowledge.h_first_fail,
                      acknowledge.h_last_at, acknowledge.h_last_ok, acknowledge.h_last_err)
               AS h(id, reset, streak, first_fail, last_at, last_ok, last_err)
         WHERE e.id = h.id;

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
            RETURNING e.id, e.disabled_reason
        LOOP
            UPDATE postbox.outbox o
               SET status = 'cancelled', lease_until = NULL, last_error = 'endpoint disabled: ' || v_disabled.disabled_reason
             WHERE o.endpoint_id = v_disabled.id AND o.status = 'pending' AND NOT o.is_test;
            endpoint_id := v_disabled.id;
            reason := v_disabled.disabled_reason;
            RETURN NEXT;
        END LOOP;
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

CREATE OR REPLACE VIEW postbox.endpoint_stats AS
SELECT s.id, s.tenant,
       s.succeeded_1h, s.failed_1h,
       round(s.succeeded_1h::numeric / nullif(s.succeeded_1h + s.failed_1h, 0), 4) AS success_rate_1h,
       s.succeeded_24h, s.failed_24h,
       round(s.succeeded_24h::numeric / nullif(s.succeeded_24h + s.failed_24h, 0), 4) AS success_rate_24h,
       s.succeeded_7d, s.failed_7d,
       round(s.succeeded_7d::numeric / nullif(s.succeeded_7d + s.failed_7d, 0), 4) AS success_rate_7d
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


-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
