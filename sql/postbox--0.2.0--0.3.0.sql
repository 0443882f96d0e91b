-- postbox 0.2.0 -> 0.3.0: no caller's code runs with postbox's rights, one
-- bad row never stops delivery, and each concept has one home.
--   * emit_statement and emit_row_change are SECURITY INVOKER: they read and
--     encode the application's rows with the caller's rights, and only their
--     write into postbox.emitted runs as the owner. emit_row_change is Rust
--     now, row-level AFTER triggers only (the statement-level form named its
--     transition tables through the caller's search_path; hand-made
--     statement triggers on it must move to emit_statement, as attach does).
--   * rows the triggers cannot send (not valid jsonb, or over
--     postbox.max_payload_bytes) fail the application's statement with 22023.
--   * expand_events sets aside rows it cannot expand (postbox.emitted_rejects).
--   * the routing rule is written once (_routes), as is reading the events
--     out of an emitted row (_emitted_events); one NOTIFY helper (_wake) for
--     the paths that are not hot; dead code and unused grants are gone.
-- Shipped scripts are frozen: never edit this file after release.

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
    rejected_at  timestamptz NOT NULL DEFAULT now()
);

ALTER FUNCTION postbox.emit_statement() SECURITY INVOKER;

CREATE OR REPLACE FUNCTION postbox.emit_row_change() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'emit_row_change_wrapper';

-- The write behind the row trigger postbox.emit_row_change (Rust,
-- extension/src/trigger.rs). The trigger encodes NEW and OLD with the
-- caller's rights and calls this as the owner: it sees only that JSON text,
-- the trigger's arguments and the table's oid, so nothing the caller typed or
-- named runs here. Granted to no one; SECURITY INVOKER, run by the owner.
-- One event: the tenant from the row, its payload columns, and for UPDATE
-- the payload columns that changed (in table order; none: no event).
CREATE FUNCTION postbox._emit_row(p_relid oid, p_op text, p_new json, p_old json, p_args text[])
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
    v_columns text[] := CASE WHEN cardinality(p_args) > 2 THEN p_args[3:] END;
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
        INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data)
        VALUES (postbox._uuid7(), v_tenant, v_type, clock_timestamp(), v_data)
        RETURNING 1)
    SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = v_type),
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

-- Turns committed postbox.emitted rows into events and outbox rows, oldest
-- first; concurrent workers skip each other's rows. A row that cannot be
-- expanded (data PostgreSQL refuses, say from before 0.3.0 checked rows at
-- emit) never stops the rest: it is moved to postbox.emitted_rejects with
-- the reason, for admins to read. Other errors (a lock timeout, a lost
-- connection) are not the row's fault: they fail the call, and the rows
-- stay for the next one.
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
BEGIN
    v_rows := ARRAY(SELECT e.ctid FROM postbox.emitted e
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
                                                 trigger_args, reason)
            SELECT g.id, g.tenant, g.event_type, g.created_at, g.data, g.rows, g.trigger_args, v_reason
              FROM gone g;
        END;
    END LOOP;
    RETURN v_expanded;
END
$fn$;

-- The one routing rule, for expansion and for endpoint_status.pending: the
-- endpoints that get an event of p_event_type for p_tenant emitted at p_at.
-- They are the tenant's endpoints whose filter matches, that existed then,
-- were not paused at that moment (endpoint_pauses) and are not disabled now.
-- Endpoints paused now are included: their rows are held until resume.
-- A SQL-standard body: parsed once at creation (no search_path at call
-- time), and inlined into its callers' plans, so no function runs per event.
CREATE FUNCTION postbox._routes(p_tenant text, p_event_type text, p_at timestamptz)
RETURNS TABLE (endpoint_id uuid)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT e.id
      FROM postbox.event_types t
      JOIN postbox.endpoints e ON e.tenant = p_tenant AND e.event_types && t.match_keys
     WHERE t.name = p_event_type
       AND e.disabled_at IS NULL AND e.created_at <= p_at
       AND NOT EXISTS (SELECT FROM postbox.endpoint_pauses p
                        WHERE p.endpoint_id = e.id AND p.paused_at <= p_at
                          AND (p.resumed_at IS NULL OR p.resumed_at > p_at));
END;

-- The events an emitted row holds, for expansion and endpoint_status.pending:
-- the row itself (emit, row triggers), or one per row of a statement whose
-- tenant column is set, as {resource: payload columns}. Inlined like _routes.
CREATE FUNCTION postbox._emitted_events(p_tenant text, p_data jsonb, p_rows jsonb, p_args text[])
RETURNS TABLE (tenant text, data jsonb)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT p_tenant, p_data WHERE p_rows IS NULL
    UNION ALL
    SELECT r.value ->> p_args[2],
           jsonb_build_object(p_args[1], CASE WHEN cardinality(p_args) > 2
                                              THEN postbox._row_payload(r.value, p_args[3:])
                                              ELSE r.value END)
      FROM jsonb_array_elements(p_rows) r
     WHERE r.value ->> p_args[2] IS NOT NULL;
END;

-- expand_events' work for the emitted rows at p_rows (locked by the caller):
-- their events, and an outbox row for each endpoint each event routes to.
CREATE FUNCTION postbox._expand(p_rows tid[])
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
        -- emit's event keeps its id; a statement's rows get theirs now.
        SELECT CASE WHEN b.rows IS NULL THEN b.id ELSE postbox._uuid7() END AS id,
               x.tenant, b.event_type, b.created_at, x.data
          FROM batch b
         CROSS JOIN LATERAL postbox._emitted_events(b.tenant, b.data, b.rows::jsonb, b.trigger_args) x
    ), stored AS (
        INSERT INTO postbox.events (id, tenant, event_type, created_at, data)
        SELECT id, tenant, event_type, created_at, data FROM ev
        RETURNING id, tenant, event_type, created_at
    ), queued AS (
        INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, created_at)
        SELECT s.tenant, r.endpoint_id, s.id, s.created_at, s.created_at
          FROM stored s
         CROSS JOIN LATERAL postbox._routes(s.tenant, s.event_type, s.created_at) r
         -- Each endpoint's rows on pages of their own: pages of a healthy
         -- endpoint empty out whole, and those of a stuck one stay all-visible,
         -- so vacuum skips them instead of rescanning them every cycle.
         ORDER BY r.endpoint_id, s.id
        RETURNING 1
    )
    SELECT count(*)::integer INTO v_expanded FROM stored;
    RETURN v_expanded;
END
$fn$;

CREATE OR REPLACE VIEW postbox.endpoint_status AS
SELECT e.id, e.tenant, e.url, e.event_types, e.enabled,
       CASE WHEN NOT e.enabled THEN 'paused'
            WHEN e.disabled_at IS NOT NULL THEN 'disabled'
            WHEN e.consecutive_failures > 0 THEN 'failing'
            ELSE 'healthy' END AS status,
       e.disabled_reason, e.consecutive_failures, e.last_attempt_at, e.last_success_at, e.last_error,
       (SELECT count(*) FROM postbox.outbox d
         WHERE d.endpoint_id = e.id AND d.status = 'pending')
     + (SELECT count(*)  -- emitted, not yet expanded, and routed to e
          FROM postbox.emitted m
         CROSS JOIN LATERAL postbox._emitted_events(m.tenant, m.data, m.rows::jsonb, m.trigger_args) x
         WHERE x.tenant = e.tenant
           AND e.id IN (SELECT r.endpoint_id FROM postbox._routes(x.tenant, m.event_type, m.created_at) r))
       AS pending
  FROM postbox.endpoints e;

-- The wake-up for paths that are not hot (test sends, retries): NOTIFY only
-- while a worker waits. emit and the triggers check the flag in the same
-- statement as their insert instead, to save a statement per emit.
CREATE FUNCTION postbox._wake()
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF (SELECT w.waiting FROM postbox.wakeup w) THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.send_test(id uuid, event_type text DEFAULT 'webhook.test', data jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant text;
    v_event  uuid := postbox._uuid7();
    v_data   jsonb;
    v_now    timestamptz := clock_timestamp();
BEGIN
    SELECT tenant INTO v_tenant FROM postbox.endpoints WHERE id = send_test.id;
    IF NOT FOUND THEN
        PERFORM postbox._no_endpoint(send_test.id);
    END IF;
    IF NOT EXISTS (SELECT FROM postbox.event_types WHERE name = send_test.event_type) THEN
        PERFORM postbox._unknown_event_type(send_test.event_type);
    END IF;
    v_data := coalesce(send_test.data, jsonb_build_object(
        'message', 'This is a test event from postbox.', 'endpoint_id', send_test.id));
    PERFORM postbox._check_data(v_data);

    INSERT INTO postbox.events (id, tenant, event_type, created_at, data)
    VALUES (v_event, v_tenant, send_test.event_type, v_now, v_data);
    INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, is_test, next_attempt_at, created_at)
    VALUES (v_tenant, send_test.id, v_event, true, v_now, v_now);
    PERFORM postbox._wake();
    RETURN v_event;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.retry_delivery(id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM postbox.outbox WHERE id = retry_delivery.id FOR UPDATE;
    IF v_status IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: no failed or cancelled delivery has this id: %s', coalesce(retry_delivery.id::text, 'NULL'));
    END IF;
    IF v_status = 'pending' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: only a failed or cancelled delivery can be retried; this one is still pending: %s', retry_delivery.id);
    END IF;
    IF NOT EXISTS (SELECT FROM postbox.outbox d JOIN postbox.endpoints e ON e.id = d.endpoint_id
                    WHERE d.id = retry_delivery.id) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: the endpoint of this delivery was deleted: %s', retry_delivery.id);
    END IF;
    -- A fresh schedule: the attempt count restarts; earlier attempts stay in the log.
    UPDATE postbox.outbox
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, leased_by = NULL
     WHERE id = retry_delivery.id;
    PERFORM postbox._wake();
END
$fn$;

-- Dead code and grants nothing uses.
DROP INDEX postbox.endpoints_routable;
DROP FUNCTION postbox._allow_insecure_urls();
REVOKE EXECUTE ON FUNCTION postbox.validate_url(text) FROM postbox_worker;
REVOKE SELECT ON postbox.event_types, postbox.endpoint_status, postbox.deliveries, postbox.attempts,
                 postbox.attempt_log
    FROM postbox_worker;
REVOKE DELETE ON postbox.events, postbox.idempotency_keys, postbox.attempt_log FROM postbox_worker;

REVOKE ALL ON FUNCTION postbox._emit_row(oid, text, json, json, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION postbox._expand(tid[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION postbox._routes(text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION postbox._wake() FROM PUBLIC;
REVOKE ALL ON postbox.emitted_rejects FROM PUBLIC;
GRANT SELECT ON postbox.emitted_rejects TO postbox_admin;
-- endpoint_status.pending inlines the routing rule (_routes, _emitted_events),
-- and an inlined function's tables are read with the caller's rights: the
-- columns routing reads, none of them secret.
GRANT EXECUTE ON FUNCTION postbox._routes(text, text, timestamptz),
                          postbox._emitted_events(text, jsonb, jsonb, text[]),
                          postbox._row_payload(jsonb, text[])
   TO postbox_admin;
GRANT SELECT (id, tenant, event_types, created_at, disabled_at) ON postbox.endpoints TO postbox_admin;
GRANT SELECT ON postbox.endpoint_pauses TO postbox_admin;

COMMENT ON TABLE postbox.emitted_rejects IS 'Emitted rows expansion could not turn into events, with the reason; nothing of them was sent.';
COMMENT ON TABLE postbox.idempotency_keys IS 'Idempotency keys of emit, per tenant: a repeated key returns the first event''s id.';
COMMENT ON VIEW postbox.endpoint_status IS 'One row per endpoint: healthy, failing, disabled (automatic) or paused (enabled = false), and its pending deliveries.';
COMMENT ON FUNCTION postbox.emit_row_change() IS 'Row trigger (Rust) for AFTER INSERT, UPDATE or DELETE: emit_row_change(resource, tenant_column [, column ...]) emits <resource>.created/updated/deleted; attach uses it for UPDATE.';
COMMENT ON FUNCTION postbox._emit_row(oid, text, json, json, text[]) IS 'Internal: the row trigger''s write, run as the owner over already-encoded rows; granted to no one.';
COMMENT ON FUNCTION postbox.expand_events(integer) IS 'Worker: turns committed emitted rows into events and routed outbox rows, oldest first; sets aside rows it cannot expand; returns how many events.';
COMMENT ON FUNCTION postbox._expand(tid[]) IS 'Internal: expand_events'' work for the emitted rows it locked.';
COMMENT ON FUNCTION postbox._routes(text, text, timestamptz) IS 'Internal: the routing rule, the endpoints an event emitted at a time goes to (inlined).';
COMMENT ON FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[]) IS 'Internal: the events an emitted row holds, with tenant and data (inlined).';
COMMENT ON FUNCTION postbox._wake() IS 'Internal: NOTIFYs postbox_wakeup if a worker waits (paths that are not hot).';
