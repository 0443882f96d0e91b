-- postbox: retention, what postbox keeps and for how long, and purging.

-- The retention windows: the one row, written with the table's defaults the
-- first time it is needed.
CREATE FUNCTION postbox._retention()
RETURNS postbox.retention
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r postbox.retention;
BEGIN
    SELECT * INTO r FROM postbox.retention;
    IF NOT FOUND THEN
        INSERT INTO postbox.retention DEFAULT VALUES ON CONFLICT DO NOTHING;
        SELECT * INTO r FROM postbox.retention;
    END IF;
    RETURN r;
END
$fn$;
COMMENT ON FUNCTION postbox._retention() IS 'Internal: the retention windows, the table''s defaults written the first time.';

-- Sets how long postbox keeps what it no longer needs; NULL leaves a window
-- as it is.
CREATE FUNCTION postbox.set_retention(
    succeeded_attempts interval DEFAULT NULL,
    failed_attempts interval DEFAULT NULL,
    events interval DEFAULT NULL,
    cancelled_deliveries interval DEFAULT NULL,
    idempotency_keys interval DEFAULT NULL,
    revoked_api_keys interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text;
    v_value interval;
BEGIN
    FOR v_name, v_value IN VALUES ('succeeded_attempts', set_retention.succeeded_attempts),
                                  ('failed_attempts', set_retention.failed_attempts),
                                  ('events', set_retention.events),
                                  ('cancelled_deliveries', set_retention.cancelled_deliveries),
                                  ('idempotency_keys', set_retention.idempotency_keys),
                                  ('revoked_api_keys', set_retention.revoked_api_keys) LOOP
        IF v_value < interval '1 second' OR v_value > interval '10 years' THEN
            PERFORM postbox._raise('out_of_range', v_name,
                format('postbox: %s must be between 1 second and 10 years: %s', v_name, v_value));
        END IF;
    END LOOP;
    IF set_retention.idempotency_keys < interval '24 hours' THEN
        PERFORM postbox._raise('out_of_range', 'idempotency_keys',
            format('postbox: idempotency_keys must be kept at least 24 hours (a retried emit must find its key): %s',
                             set_retention.idempotency_keys));
    END IF;
    PERFORM postbox._retention();  -- the row, with the defaults if there was none
    UPDATE postbox.retention r
       SET succeeded_attempts = coalesce(set_retention.succeeded_attempts, r.succeeded_attempts),
           failed_attempts = coalesce(set_retention.failed_attempts, r.failed_attempts),
           events = coalesce(set_retention.events, r.events),
           cancelled_deliveries = coalesce(set_retention.cancelled_deliveries, r.cancelled_deliveries),
           idempotency_keys = coalesce(set_retention.idempotency_keys, r.idempotency_keys),
           revoked_api_keys = coalesce(set_retention.revoked_api_keys, r.revoked_api_keys),
           updated_at = now();
END
$fn$;
COMMENT ON FUNCTION postbox.set_retention(interval, interval, interval, interval, interval, interval) IS 'Sets the retention windows (NULL leaves one as it is); idempotency keys are kept at least 24 hours.';
GRANT EXECUTE ON FUNCTION postbox.set_retention(interval, interval, interval, interval, interval, interval) TO postbox_admin;

-- Deletes what has outlived its retention window, at most max_rows of each
-- kind per call, and returns how many of each it deleted. Each call is one
-- short transaction; the worker calls it on a schedule until a call finds
-- less than max_rows of every kind. Rows are taken FOR UPDATE SKIP LOCKED,
-- so concurrent callers delete disjoint rows and never wait for each other.
-- Never purged: pending (and so in-flight or held) and failed deliveries,
-- and the events any delivery still refers to. Each kind is found through an
-- index on its age; when nothing has expired, each is one empty index probe.
CREATE FUNCTION postbox.purge(max_rows integer DEFAULT 10000)
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
-- The worker purges on a schedule.
GRANT EXECUTE ON FUNCTION postbox.purge(integer) TO postbox_worker;
