-- postbox: deliveries after routing: retries and replays, and the workers'
-- registry.

CREATE FUNCTION postbox._no_delivery(p_id bigint)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('delivery_not_found', 'id',
        format('postbox: no failed or cancelled delivery has this id: %s', coalesce(p_id::text, 'NULL')));
END
$fn$;
COMMENT ON FUNCTION postbox._no_delivery(bigint) IS 'Internal: raises the unknown-delivery error.';

CREATE FUNCTION postbox.retry_delivery(tenant text, id bigint)
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

-- Queues again the failed and cancelled deliveries of the endpoint whose
-- event was queued in [since, until), oldest first, each with a fresh
-- schedule, at most max_rows of them (1 to 10,000) per call, through the
-- outbox_settled index. Returns how many it queued, and whether more in the
-- range remain: a caller repeats the same call until more is false (queued
-- rows are pending again, so a repeat goes on where this one stopped). In
-- batches, so no call holds its rows, its connection or a long transaction
-- however long the range.
CREATE FUNCTION postbox.replay(tenant text, endpoint_id uuid, since timestamptz, until timestamptz DEFAULT 'infinity',
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

-- A worker's heartbeat, every second: it refreshes the worker's row and
-- releases the claims of workers not seen for stale_after, so that a killed
-- worker's deliveries are retried within seconds, not when their leases run
-- out. Returns how many claims it released. The same worker_id with another
-- instance whose row is stale is that worker restarted: its old claims are
-- released at once. Another instance whose row is fresh is a second live
-- worker with the same id, which would release the first one's claims on
-- every beat (and send them twice): refused with 55006 (object_in_use). A
-- worker judges others only once it has itself been seen without a gap for
-- stale_after, so after a database outage every worker has that long to
-- come back before it counts as dead. SECURITY INVOKER: the worker's own
-- rights on outbox and workers. The outbox is scanned by leased_by only when
-- a worker has died (it has no index: claims stay HOT updates).
CREATE FUNCTION postbox.worker_heartbeat(worker_id text, instance uuid, stale_after interval)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    w        postbox.workers;
    v_dead   text;
    v_n      bigint;
    released bigint := 0;
BEGIN
    IF worker_heartbeat.worker_id IS NULL OR worker_heartbeat.worker_id = ''
       OR octet_length(worker_heartbeat.worker_id) > 256 THEN
        PERFORM postbox._raise('length_out_of_range', 'worker_id',
            'postbox: worker_id must be 1 to 256 bytes');
    END IF;
    IF worker_heartbeat.instance IS NULL THEN
        PERFORM postbox._raise('required', 'instance', 'postbox: instance must not be NULL');
    END IF;
    IF worker_heartbeat.stale_after IS NULL OR worker_heartbeat.stale_after <= interval '0'
       OR worker_heartbeat.stale_after > interval '1 hour' THEN
        PERFORM postbox._raise('out_of_range', 'stale_after',
            format('postbox: stale_after must be more than 0 and at most 1 hour: %s',
                             coalesce(worker_heartbeat.stale_after::text, 'NULL')));
    END IF;
    SELECT * INTO w FROM postbox.workers x WHERE x.worker_id = worker_heartbeat.worker_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO postbox.workers AS x (worker_id, instance)
        VALUES (worker_heartbeat.worker_id, worker_heartbeat.instance)
        ON CONFLICT ON CONSTRAINT workers_pkey DO NOTHING;
        IF NOT FOUND THEN
            -- Another instance registered this id a moment ago.
            PERFORM postbox._raise('worker_id_in_use', 'worker_id',
                format('postbox: worker_id %s is in use by another running worker: give each worker its own id (POSTBOX_WORKER_ID)',
                                 worker_heartbeat.worker_id));
        END IF;
    ELSIF w.instance <> worker_heartbeat.instance
          AND w.seen_at >= now() - worker_heartbeat.stale_after THEN
        PERFORM postbox._raise('worker_id_in_use', 'worker_id',
            format('postbox: worker_id %s is in use by another running worker (seen %s s ago): give each worker its own id (POSTBOX_WORKER_ID)',
                             worker_heartbeat.worker_id,
                             round(extract(epoch FROM now() - w.seen_at)::numeric, 1)));
    ELSIF w.instance <> worker_heartbeat.instance THEN
        -- Restarted (the old process stopped beating): what it had claimed,
        -- nobody has.
        UPDATE postbox.outbox o SET lease_until = NULL, leased_by = NULL
         WHERE o.leased_by = worker_heartbeat.worker_id AND o.status = 'pending'
           AND o.lease_until > now();
        GET DIAGNOSTICS released = ROW_COUNT;
        UPDATE postbox.workers x
           SET instance = worker_heartbeat.instance, started_at = now(), alive_since = now(), seen_at = now()
         WHERE x.worker_id = worker_heartbeat.worker_id;
        RETURN released;
    ELSE
        UPDATE postbox.workers x
           SET alive_since = CASE WHEN x.seen_at < now() - worker_heartbeat.stale_after
                                  THEN now() ELSE x.alive_since END,
               seen_at = now()
         WHERE x.worker_id = worker_heartbeat.worker_id;
        IF w.alive_since <= now() - worker_heartbeat.stale_after
           AND w.seen_at >= now() - worker_heartbeat.stale_after THEN
            FOR v_dead IN
                DELETE FROM postbox.workers x
                 WHERE x.seen_at < now() - worker_heartbeat.stale_after
                   AND x.worker_id <> worker_heartbeat.worker_id
                RETURNING x.worker_id
            LOOP
                UPDATE postbox.outbox o SET lease_until = NULL, leased_by = NULL
                 WHERE o.leased_by = v_dead AND o.status = 'pending' AND o.lease_until > now();
                GET DIAGNOSTICS v_n = ROW_COUNT;
                released := released + v_n;
            END LOOP;
        END IF;
    END IF;
    RETURN released;
END
$fn$;
COMMENT ON FUNCTION postbox.worker_heartbeat(text, uuid, interval) IS 'A worker''s heartbeat: refreshes its row and releases the claims of workers not seen for stale_after (or of its own previous instance, once that is stale). Returns how many. Another instance of the worker_id seen within stale_after is refused (SQLSTATE 55006).';
-- Every worker, every second.
GRANT EXECUTE ON FUNCTION postbox.worker_heartbeat(text, uuid, interval) TO postbox_worker;

-- A worker stopping cleanly (after giving its claims back) leaves the registry.
CREATE FUNCTION postbox.worker_stopped(worker_id text, instance uuid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF worker_stopped.worker_id IS NULL THEN
        PERFORM postbox._raise('required', 'worker_id', 'postbox: worker_id must not be NULL');
    END IF;
    IF worker_stopped.instance IS NULL THEN
        PERFORM postbox._raise('required', 'instance', 'postbox: instance must not be NULL');
    END IF;
    DELETE FROM postbox.workers x
     WHERE x.worker_id = worker_stopped.worker_id AND x.instance = worker_stopped.instance;
END
$fn$;
COMMENT ON FUNCTION postbox.worker_stopped(text, uuid) IS 'A worker that stopped cleanly leaves the registry.';
GRANT EXECUTE ON FUNCTION postbox.worker_stopped(text, uuid) TO postbox_worker;
