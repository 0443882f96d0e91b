-- postbox: the worker's queue, every statement the worker runs on the
-- outbox, as functions it calls: the claim and what it needs, giving claims
-- back, when the next one is due, the acknowledgement of a batch of
-- attempts, the gauges and the wake-up flag. Here so that they can be read,
-- run and EXPLAINed as written, and so that a change of the tables and of
-- the statements ships in one upgrade script.
--
-- SECURITY INVOKER: they run with the worker's own grants (schema.sql), and
-- only postbox_worker may call them. PL/pgSQL, so that each statement's
-- plan is kept between calls; generic plans (SET plan_cache_mode), shaped
-- to reach rows through indexes whatever the arguments: the endpoints with
-- work come from the due index, never from a scan of all endpoints.

-- Claimable at some time: pending, and not leased (or its lease ran out: a
-- crashed worker's claim). The one definition; next_due uses it.
CREATE FUNCTION postbox._claimable(p_status text, p_lease_until timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p_status = 'pending' AND (p_lease_until IS NULL OR p_lease_until < now());
END;
COMMENT ON FUNCTION postbox._claimable(text, timestamptz) IS 'Internal: whether an outbox row can be claimed at some time: pending and not leased, or its lease ran out (inlined).';
GRANT EXECUTE ON FUNCTION postbox._claimable(text, timestamptz) TO postbox_worker;

-- Due: claimable, and its time has come. The one definition the claim and
-- the gauges use.
CREATE FUNCTION postbox._due(p_status text, p_next_attempt_at timestamptz, p_lease_until timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT postbox._claimable(p_status, p_lease_until) AND p_next_attempt_at <= now();
END;
COMMENT ON FUNCTION postbox._due(text, timestamptz, timestamptz) IS 'Internal: whether an outbox row is due: claimable and its time has come (inlined).';
GRANT EXECUTE ON FUNCTION postbox._due(text, timestamptz, timestamptz) TO postbox_worker;

-- Endpoints with pending rows, one probe of outbox_due each (a loose index
-- scan): the cost follows the endpoints that have work, not every endpoint
-- there is (200,000 idle endpoints made a scan of them all cost 0.5 s). The
-- last row is NULL; joins on it find nothing. A view, so that each query
-- that reads it plans it as its own CTE.
CREATE VIEW postbox._due_endpoints AS
WITH RECURSIVE due(endpoint_id) AS (
    (SELECT o.endpoint_id FROM postbox.outbox o WHERE o.status = 'pending'
      ORDER BY o.endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.endpoint_id FROM postbox.outbox o
             WHERE o.status = 'pending' AND o.endpoint_id > d.endpoint_id
             ORDER BY o.endpoint_id LIMIT 1)
      FROM due d WHERE d.endpoint_id IS NOT NULL
)
SELECT endpoint_id FROM due;
COMMENT ON VIEW postbox._due_endpoints IS 'Internal: the endpoints with pending deliveries, by a loose scan of outbox_due; the last row is NULL.';
GRANT SELECT ON postbox._due_endpoints TO postbox_worker;

-- The heads of an ordered endpoint's keys: for each key with pending
-- deliveries, its oldest pending one, which alone may be sent. A walk over
-- outbox_key_heads, one index probe per key however many deliveries wait
-- behind a head (a scan of the endpoint's due rows would step over all of
-- them), starting at a random key and wrapping around, so that no key
-- waits on the ones that sort before it. A head counts when it is not
-- leased (in flight), with p_due_only when its time has come, and under
-- p_holds when no given-up delivery of its key is older. At most p_limit
-- (NULL: all). The claim takes them; next_due reads the earliest.
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

-- Fair claim: each sending endpoint with due rows, in random order, offers
-- at most its room (computed by the worker: its in-flight limit minus what
-- the worker holds, within its rate limit; endpoint_room for endpoints the
-- worker has no figure for), and all of a tenant's endpoints together at
-- most the tenant's room (tenant_room unless listed). A running sum over
-- the events' sizes stops the claim at max_bytes (the first row goes
-- whatever its size, so a large payload still goes out). Only then are rows
-- leased, so rows cut by a cap are never leased. Events keep their data as
-- text (json, 0.9.0): rendering jsonb for every claimed row was most of a
-- large claim's time (docs/measurements.md); fetching each event once per
-- claim instead of once per row cost more than it saved (measured: 1.8
-- against 1.0 ms for a claim of 120 rows over 10 endpoints). A second branch takes up
-- to 16 test sends to endpoints that are paused or disabled: they are rare
-- and attempted once, and the cap keeps a flood of them from filling a
-- claim meant for sending endpoints (a literal: the generic plan then knows
-- the limit is small).
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

-- Endpoint settings and valid secrets, newest first, once per endpoint of a
-- claim batch.
CREATE FUNCTION postbox.claimed_endpoints(ids uuid[])
RETURNS TABLE (id uuid, url text, headers text, signature_style text, signature_header text, options text,
               secrets text[], envelope text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT e.id, e.url, e.headers::text, e.signature_style, e.signature_header, e.options::text,
           ARRAY(SELECT s.secret FROM postbox.endpoint_secrets s
                  WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())
                  ORDER BY s.created_at DESC),
           e.envelope
      FROM postbox.endpoints e
     WHERE e.id = ANY (claimed_endpoints.ids);
END
$fn$;
COMMENT ON FUNCTION postbox.claimed_endpoints(uuid[]) IS 'Worker: the delivery settings and valid secrets (newest first) of the endpoints of a claim.';
GRANT EXECUTE ON FUNCTION postbox.claimed_endpoints(uuid[]) TO postbox_worker;

-- Gives claims back (a worker shutting down): the next claim anywhere takes
-- them at once. Returns how many.
CREATE FUNCTION postbox.release_claims(ids bigint[], worker_id text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_n bigint;
BEGIN
    UPDATE postbox.outbox o SET lease_until = NULL, leased_by = NULL
     WHERE o.id = ANY (release_claims.ids) AND o.leased_by = release_claims.worker_id AND o.status = 'pending';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$fn$;
COMMENT ON FUNCTION postbox.release_claims(bigint[], text) IS 'Worker: gives back the claims of worker_id among ids (shutdown), so that any worker takes them at once.';
GRANT EXECUTE ON FUNCTION postbox.release_claims(bigint[], text) TO postbox_worker;

-- Gives back what worker_id leased after `after` (the lease of the last
-- batch it received; NULL: none): rows of a claim whose answer was lost
-- with its connection, or whose endpoints could not be read. For a failed
-- claim cycle only: it reads the outbox by leased_by, which has no index
-- (claims stay HOT updates).
CREATE FUNCTION postbox.release_lost(worker_id text, after timestamptz)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_n bigint;
BEGIN
    UPDATE postbox.outbox o SET lease_until = NULL, leased_by = NULL
     WHERE o.leased_by = release_lost.worker_id AND o.status = 'pending'
       AND o.lease_until > coalesce(release_lost.after, '-infinity'::timestamptz);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$fn$;
COMMENT ON FUNCTION postbox.release_lost(text, timestamptz) IS 'Worker: gives back what worker_id leased after its last received batch (a claim whose answer was lost).';
GRANT EXECUTE ON FUNCTION postbox.release_lost(text, timestamptz) TO postbox_worker;

-- The earliest attempt time of a claimable row of a sending endpoint,
-- except those of blocked_endpoints and blocked_tenants (at their in-flight
-- limit, out of rate tokens: their due rows would wake the worker again
-- and again with nothing it may claim). NULL: nothing is scheduled.
CREATE FUNCTION postbox.next_due(blocked_endpoints uuid[], blocked_tenants text[])
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

-- One batch of attempts, acknowledged in one call (one transaction). An
-- attempt is one request: of one delivery, or of a batching endpoint's
-- batch of deliveries. Per attempt (ids .. batch_ids, ids and event_ids
-- being its first delivery's) and per delivery (d_*, d_attempts naming its
-- attempt by position):
-- 1. the attempt log gets a row per attempt; a batch's row lists its
--    deliveries and their events in the body's order;
-- 2. succeeded deliveries (d_statuses NULL) leave the outbox, their record
--    is the log; the rest are scheduled again (pending, at d_next_at) or
--    finished (failed); one cancelled meanwhile stays cancelled. A split
--    batch's deliveries (d_split) keep their attempt count, and go in
--    batches half as large from now on;
-- 3. endpoint health: the failure streak, when it began, the last attempt,
--    success and error, as the worker computed them per endpoint (h_*);
-- 4. endpoints are disabled at once on 410 Gone (gone), or when the streak
--    is long enough in both count and age; their pending deliveries are
--    cancelled (test sends stay), one endpoint at a time: disabling is rare,
--    and one statement per endpoint keeps even a generic plan on its index
--    range (a single statement with the cancellation in a CTE scanned the
--    whole outbox on every batch).
-- 5. the operator hears of it (postbox._operator_events): endpoints that
--    started failing, recovered (a success while the operator was told they
--    were failing: a disable and resume keeps that), were disabled, and
--    deliveries that failed for good (not test sends).
-- Returns the endpoints it disabled, with the reason.
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

-- The gauges: due deliveries plus emitted rows not yet expanded, each
-- counted up to cap rows, and the age in seconds of the oldest of either.
-- Both stay cheap with a large backlog: the count stops at cap, the oldest
-- due row is found per endpoint with pending rows at the head of its index
-- range, and the oldest emitted row is the first by id (UUIDv7, time
-- ordered), so a stuck expansion's backlog is not read whole every few
-- seconds.
CREATE FUNCTION postbox.queue_gauges(cap bigint, OUT due bigint, OUT oldest_age_seconds double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    SELECT (SELECT count(*) FROM (SELECT FROM postbox.outbox o
                                   WHERE postbox._due(o.status, o.next_attempt_at, o.lease_until)
                                   LIMIT queue_gauges.cap) d)
         + (SELECT count(*) FROM (SELECT FROM postbox.emitted LIMIT queue_gauges.cap) m),
           extract(epoch FROM now() - least(
             (SELECT min(x.n) FROM postbox._due_endpoints e CROSS JOIN LATERAL (
                 SELECT o.next_attempt_at AS n FROM postbox.outbox o
                  WHERE o.endpoint_id = e.endpoint_id
                    AND postbox._due(o.status, o.next_attempt_at, o.lease_until)
                  ORDER BY o.next_attempt_at LIMIT 1) x),
             (SELECT m.created_at FROM postbox.emitted m ORDER BY m.id LIMIT 1)))::float8
      INTO due, oldest_age_seconds;
END
$fn$;
COMMENT ON FUNCTION postbox.queue_gauges(bigint) IS 'Worker: due deliveries plus unexpanded emitted rows (each counted up to cap) and the age of the oldest, for its metrics.';
GRANT EXECUTE ON FUNCTION postbox.queue_gauges(bigint) TO postbox_worker;

-- Sets the wake-up flag that tells emitters to NOTIFY (see the wakeup table
-- in schema.sql); writes only when it changes. Never raised where Citus is
-- installed: Citus commits a write to several nodes with PREPARE
-- TRANSACTION, which PostgreSQL refuses to a transaction that has sent a
-- NOTIFY, so an emit that woke the worker would fail the application's
-- write (found by tests/tests/citus.rs). Workers there find new events by
-- their poll (POSTBOX_POLL_INTERVAL) and, while busy, every claim.
CREATE FUNCTION postbox.set_waiting(waiting boolean)
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
GRANT EXECUTE ON FUNCTION postbox.set_waiting(boolean) TO postbox_worker;
