-- postbox 0.1.0 -> 0.2.0
--
-- emit no longer routes: it writes one lean row into postbox.emitted (a
-- statement trigger one row per statement), and the worker routes at
-- expansion, with the endpoints as they were at emit (pause history in
-- postbox.endpoint_pauses). events.fanout and its index go.

-- Pause history: routing at expansion skips endpoints that were paused when
-- an event was emitted, even if they have been resumed since.
CREATE TABLE postbox.endpoint_pauses (
    endpoint_id uuid NOT NULL REFERENCES postbox.endpoints (id) ON DELETE CASCADE,
    tenant      text NOT NULL,
    paused_at   timestamptz NOT NULL,
    resumed_at  timestamptz,  -- NULL while paused
    PRIMARY KEY (endpoint_id, paused_at)
);

-- Endpoints paused now: since before any record.
INSERT INTO postbox.endpoint_pauses (endpoint_id, tenant, paused_at)
SELECT id, tenant, '-infinity' FROM postbox.endpoints WHERE NOT enabled;

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
    -- With rows: resource, tenant column, payload columns (emit_row_change's arguments).
    -- No CHECK that exactly one of data and rows is set: only postbox's own
    -- functions write here, and a CHECK is re-read from the catalog text on
    -- every insert (measured: ~12% of the statement trigger's insert).
    trigger_args text[]
) WITH (
    -- A queue: every row is deleted soon after it is written. Vacuum early.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);

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

-- Events emitted under 0.1.0 and not yet expanded: expand them as 0.1.0 would have.
INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, created_at)
SELECT v.tenant, f.endpoint_id, v.id, v.created_at, v.created_at
  FROM postbox.events v CROSS JOIN LATERAL unnest(v.fanout) AS f(endpoint_id)
  JOIN postbox.endpoints e ON e.id = f.endpoint_id AND e.disabled_at IS NULL
 WHERE v.fanout IS NOT NULL;

CREATE OR REPLACE VIEW postbox.endpoint_status AS
SELECT e.id, e.tenant, e.url, e.event_types, e.enabled,
       CASE WHEN NOT e.enabled THEN 'paused'
            WHEN e.disabled_at IS NOT NULL THEN 'disabled'
            WHEN e.consecutive_failures > 0 THEN 'failing'
            ELSE 'healthy' END AS status,
       e.disabled_reason, e.consecutive_failures, e.last_attempt_at, e.last_success_at, e.last_error,
       (SELECT count(*) FROM postbox.outbox d
         WHERE d.endpoint_id = e.id AND d.status = 'pending')
     + CASE WHEN e.disabled_at IS NULL THEN
           -- Emitted, not yet expanded, and routed to e (expand_events' rule).
           (SELECT count(*)
              FROM postbox.emitted m
              CROSS JOIN LATERAL (SELECT m.tenant WHERE m.rows IS NULL
                                  UNION ALL
                                  SELECT r ->> m.trigger_args[2] FROM json_array_elements(m.rows) r) x(tenant)
              JOIN postbox.event_types t ON t.name = m.event_type
             WHERE x.tenant = e.tenant AND e.event_types && t.match_keys AND e.created_at <= m.created_at
               AND NOT EXISTS (SELECT FROM postbox.endpoint_pauses p
                                WHERE p.endpoint_id = e.id AND p.paused_at <= m.created_at
                                  AND (p.resumed_at IS NULL OR p.resumed_at > m.created_at)))
       ELSE 0 END AS pending
  FROM postbox.endpoints e;

DROP INDEX postbox.events_to_expand;
ALTER TABLE postbox.events DROP COLUMN fanout;
-- events are no longer updated after insert.
ALTER TABLE postbox.events RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
                                  autovacuum_vacuum_cost_delay);

CREATE OR REPLACE FUNCTION postbox.create_endpoint(
    tenant text,
    url text,
    event_types text[] DEFAULT '{*}',
    headers jsonb DEFAULT '{}',
    description text DEFAULT NULL,
    signature_style text DEFAULT 'standard',
    signature_header text DEFAULT NULL,
    own_secret text DEFAULT NULL,
    options jsonb DEFAULT '{}')
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_id      uuid := postbox._uuid7();
    v_url     text;
    v_sig     text;
    v_headers jsonb;
    v_filters text[];
    v_secret  text;
BEGIN
    PERFORM postbox._check_tenant_limit(create_endpoint.tenant);
    v_url := postbox.validate_url(create_endpoint.url);
    v_sig := postbox._validate_signature(coalesce(create_endpoint.signature_style, 'standard'),
                                         create_endpoint.signature_header);
    v_headers := postbox.validate_headers(coalesce(create_endpoint.headers, '{}'), v_sig);
    v_filters := postbox._validate_filters(coalesce(create_endpoint.event_types, '{*}'), postbox._catalog_names());
    PERFORM postbox._validate_options(coalesce(create_endpoint.options, '{}'));
    IF create_endpoint.own_secret IS NULL THEN
        v_secret := postbox._generate_secret();
    ELSE
        PERFORM postbox._validate_secret(create_endpoint.own_secret);
        v_secret := create_endpoint.own_secret;
    END IF;

    -- created_at from the clock, as emit's: routing sends an endpoint only
    -- events emitted after it was created, even within one transaction.
    INSERT INTO postbox.endpoints (id, tenant, url, event_types, headers, description,
                                   signature_style, signature_header, options, created_at)
    VALUES (v_id, create_endpoint.tenant, v_url, v_filters, v_headers, create_endpoint.description,
            coalesce(create_endpoint.signature_style, 'standard'), v_sig,
            coalesce(create_endpoint.options, '{}'), clock_timestamp());
    INSERT INTO postbox.endpoint_secrets (endpoint_id, secret) VALUES (v_id, v_secret);

    id := v_id;
    secret := v_secret;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.update_endpoint(
    id uuid,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    description text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    options jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e postbox.endpoints%ROWTYPE;
BEGIN
    SELECT * INTO e FROM postbox.endpoints WHERE id = update_endpoint.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM postbox._no_endpoint(update_endpoint.id);
    END IF;
    IF update_endpoint.url IS NOT NULL THEN
        e.url := postbox.validate_url(update_endpoint.url);
    END IF;
    IF update_endpoint.event_types IS NOT NULL THEN
        e.event_types := postbox._validate_filters(update_endpoint.event_types, postbox._catalog_names());
    END IF;
    IF update_endpoint.headers IS NOT NULL THEN
        e.headers := postbox.validate_headers(update_endpoint.headers, e.signature_header);
    END IF;
    IF update_endpoint.description IS NOT NULL THEN
        e.description := update_endpoint.description;
    END IF;
    IF update_endpoint.options IS NOT NULL THEN
        e.options := postbox._validate_options(update_endpoint.options);
    END IF;
    IF update_endpoint.enabled IS NOT NULL THEN
        -- Pause history, which routing reads: events emitted while paused never go out.
        IF e.enabled AND NOT update_endpoint.enabled THEN
            INSERT INTO postbox.endpoint_pauses (endpoint_id, tenant, paused_at)
            VALUES (e.id, e.tenant, clock_timestamp());
        ELSIF NOT e.enabled AND update_endpoint.enabled THEN
            UPDATE postbox.endpoint_pauses SET resumed_at = clock_timestamp()
             WHERE endpoint_id = e.id AND resumed_at IS NULL;
        END IF;
        e.enabled := update_endpoint.enabled;
        IF update_endpoint.enabled THEN
            -- Resuming clears the failure streak and any automatic disable.
            e.disabled_at := NULL;
            e.disabled_reason := NULL;
            e.consecutive_failures := 0;
            e.failing_since := NULL;
        END IF;
    END IF;
    UPDATE postbox.endpoints
       SET url = e.url, event_types = e.event_types, headers = e.headers, description = e.description,
           options = e.options, enabled = e.enabled, disabled_at = e.disabled_at,
           disabled_reason = e.disabled_reason, consecutive_failures = e.consecutive_failures,
           failing_since = e.failing_since, updated_at = now()
     WHERE id = update_endpoint.id;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.delete_endpoint(id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    DELETE FROM postbox.endpoints WHERE id = delete_endpoint.id;  -- secrets go with it (cascade)
    IF NOT FOUND THEN
        PERFORM postbox._no_endpoint(delete_endpoint.id);
    END IF;
    UPDATE postbox.outbox
       SET status = 'cancelled', last_error = 'endpoint deleted', lease_until = NULL
     WHERE endpoint_id = delete_endpoint.id AND status = 'pending';
    -- Events not yet expanded are routed to existing endpoints only.
END
$fn$;

-- The emit path is the application's hot path: one lookup (the event type
-- and the wake-up flag in a single statement), one lean row in
-- postbox.emitted, and a NOTIFY only while a worker is waiting. Routing
-- happens at expansion, after commit.
CREATE OR REPLACE FUNCTION postbox.emit(tenant text, event_type text, data jsonb, idempotency_key text DEFAULT NULL)
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
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: tenant must not be NULL: NULL';
    END IF;
    PERFORM postbox._check_data(data);

    SELECT true, (SELECT w.waiting FROM postbox.wakeup w)
      INTO v_known, v_wake
      FROM postbox.event_types t
     WHERE t.name = emit.event_type;
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

    INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data)
    VALUES (v_id, tenant, event_type, clock_timestamp(), data);

    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
    RETURN v_id;
END
$fn$;

-- Trigger function: emit_row_change('<resource>', '<tenant column>' [, '<column>' ...]).
-- As a statement trigger with transition tables named postbox_new /
-- postbox_old (what postbox.attach creates) it writes ONE postbox.emitted row
-- for the whole statement: its rows as a JSON array, which the worker turns
-- into one event per row (tenant and payload columns picked there). As a row
-- trigger (UPDATE, which needs OLD/NEW pairs) it writes one event. This is
-- the application's hot path: one statement, nothing looked up but the event
-- type and the wake-up flag, and a NOTIFY only while a worker waits.
CREATE OR REPLACE FUNCTION postbox.emit_row_change()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Custom plans would be re-planned on every call; the generic ones are as good here.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_resource   text := TG_ARGV[0];
    v_tenant_col text := TG_ARGV[1];
    v_columns    text[];
    v_type       text;
    v_tenant     text;
    v_old        jsonb;
    v_new        jsonb;
    v_changed    text[];
    v_data       jsonb;
    v_known      boolean;
    v_wake       boolean;
BEGIN
    IF TG_NARGS < 2 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: emit_row_change needs (resource, tenant_column [, columns...]) as trigger arguments: %s', TG_NAME);
    END IF;
    IF TG_NARGS > 2 THEN
        v_columns := TG_ARGV[2:];
    END IF;
    v_type := v_resource || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END;

    IF TG_LEVEL = 'STATEMENT' THEN
        -- TG_ARGV is 0-based; the slice stores it 1-based.
        IF TG_OP = 'INSERT' THEN
            WITH ins AS (
                INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
                SELECT postbox._uuid7(), v_type, clock_timestamp(), x.rows, TG_ARGV[0:]
                  FROM (SELECT json_agg(postbox_row) AS rows FROM postbox_new AS postbox_row) x
                 WHERE x.rows IS NOT NULL
                RETURNING 1)
            SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = v_type),
                   (SELECT w.waiting FROM postbox.wakeup w) AND EXISTS (SELECT FROM ins)
              INTO v_known, v_wake;
        ELSIF TG_OP = 'DELETE' THEN
            -- The INSERT branch again, over postbox_old: static SQL must name the
            -- transition table, and dynamic SQL would be planned on every call.
            WITH ins AS (
                INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
                SELECT postbox._uuid7(), v_type, clock_timestamp(), x.rows, TG_ARGV[0:]
                  FROM (SELECT json_agg(postbox_row) AS rows FROM postbox_old AS postbox_row) x
                 WHERE x.rows IS NOT NULL
                RETURNING 1)
            SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = v_type),
                   (SELECT w.waiting FROM postbox.wakeup w) AND EXISTS (SELECT FROM ins)
              INTO v_known, v_wake;
        ELSE
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'postbox: emit_row_change handles statement-level INSERT and DELETE only; use a row trigger for: %s', TG_OP);
        END IF;
    ELSE
        IF TG_OP = 'INSERT' THEN
            v_new := to_jsonb(NEW);
            v_tenant := v_new ->> v_tenant_col;
            v_data := jsonb_build_object(v_resource, postbox._row_payload(v_new, v_columns));
        ELSIF TG_OP = 'DELETE' THEN
            v_old := to_jsonb(OLD);
            v_tenant := v_old ->> v_tenant_col;
            v_data := jsonb_build_object(v_resource, postbox._row_payload(v_old, v_columns));
        ELSE
            v_new := to_jsonb(NEW);
            v_tenant := v_new ->> v_tenant_col;
            v_new := postbox._row_payload(v_new, v_columns);
            v_old := postbox._row_payload(to_jsonb(OLD), v_columns);
            -- Changed columns in table order; only payload columns count.
            SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_changed
              FROM pg_attribute a
             WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
               AND v_new ? a.attname
               AND (v_new -> a.attname) IS DISTINCT FROM (v_old -> a.attname);
            IF v_changed IS NULL THEN
                RETURN NULL;  -- nothing changed: nothing to say
            END IF;
            v_data := jsonb_build_object(v_resource, v_new, 'changed', to_jsonb(v_changed));
        END IF;
        IF v_tenant IS NULL THEN
            RETURN NULL;
        END IF;
        WITH ins AS (
            INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data)
            VALUES (postbox._uuid7(), v_tenant, v_type, clock_timestamp(), v_data)
            RETURNING 1)
        SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = v_type),
               (SELECT w.waiting FROM postbox.wakeup w) AND EXISTS (SELECT FROM ins)
          INTO v_known, v_wake;
    END IF;

    IF NOT v_known THEN
        PERFORM postbox._unknown_event_type(v_type);  -- raises: the statement is undone
    END IF;
    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
    RETURN NULL;
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
    IF (SELECT w.waiting FROM postbox.wakeup w) THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
    RETURN v_event;
END
$fn$;

-- Turns committed postbox.emitted rows into events and outbox rows, oldest
-- first, in one statement; concurrent workers skip each other's rows.
-- Routing: the tenant's endpoints whose filter matches, that existed when
-- the event was emitted, were not paused at that moment and are not
-- disabled now. Endpoints paused now get their rows (held until resume).
CREATE OR REPLACE FUNCTION postbox.expand_events(max_events integer DEFAULT 1000)
RETURNS integer
-- PL/pgSQL rather than SQL: the worker calls it in every cycle, and PL/pgSQL
-- keeps the plan between calls; a generic one, or it would be re-planned
-- on every call (measured: 8% of PostgreSQL's CPU under load).
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_expanded integer;
BEGIN
    WITH batch AS (
        -- By ctid, so that even the generic plan deletes exactly the rows it
        -- locked (a join on id may be planned as a scan of the whole table).
        DELETE FROM postbox.emitted m
         WHERE m.ctid = ANY (ARRAY(SELECT e.ctid FROM postbox.emitted e
                                    ORDER BY e.id LIMIT max_events FOR UPDATE SKIP LOCKED))
        RETURNING m.*
    ), ev AS (
        SELECT b.id, b.tenant, b.event_type, b.created_at, b.data
          FROM batch b
         WHERE b.rows IS NULL
        UNION ALL
        SELECT postbox._uuid7(), r.value ->> b.trigger_args[2], b.event_type, b.created_at,
               jsonb_build_object(b.trigger_args[1],
                                  CASE WHEN cardinality(b.trigger_args) > 2
                                       THEN postbox._row_payload(r.value, b.trigger_args[3:])
                                       ELSE r.value END)
          FROM batch b CROSS JOIN LATERAL jsonb_array_elements(b.rows::jsonb) AS r(value)
         WHERE b.rows IS NOT NULL AND r.value ->> b.trigger_args[2] IS NOT NULL
    ), stored AS (
        INSERT INTO postbox.events (id, tenant, event_type, created_at, data)
        SELECT id, tenant, event_type, created_at, data FROM ev
        RETURNING id, tenant, event_type, created_at
    ), queued AS (
        INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, created_at)
        SELECT s.tenant, e.id, s.id, s.created_at, s.created_at
          FROM stored s
          JOIN postbox.event_types t ON t.name = s.event_type
          JOIN postbox.endpoints e
            ON e.tenant = s.tenant AND e.event_types && t.match_keys
           AND e.disabled_at IS NULL AND e.created_at <= s.created_at
         WHERE NOT EXISTS (SELECT FROM postbox.endpoint_pauses p
                            WHERE p.endpoint_id = e.id AND p.paused_at <= s.created_at
                              AND (p.resumed_at IS NULL OR p.resumed_at > s.created_at))
         -- Each endpoint's rows on pages of their own: pages of a healthy
         -- endpoint empty out whole, and those of a stuck one stay all-visible,
         -- so vacuum skips them instead of rescanning them every cycle.
         ORDER BY e.id, s.id
        RETURNING 1
    )
    SELECT count(*)::integer INTO v_expanded FROM stored;
    RETURN v_expanded;
END
$fn$;


-- The statement trigger in Rust (see extension/src/trigger.rs).
CREATE FUNCTION postbox.emit_statement() RETURNS trigger
LANGUAGE c SECURITY DEFINER
AS 'MODULE_PATHNAME', 'emit_statement_wrapper';
REVOKE ALL ON FUNCTION postbox.emit_statement() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION postbox.emit_statement() TO postbox_emitter;

-- SECURITY INVOKER on purpose: creating the triggers needs the caller's own
-- TRIGGER privilege on the table, so attach cannot reach tables the caller
-- could not touch anyway.
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
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: attach needs a table: %s', tbl);
    END IF;
    PERFORM postbox._register_resource(resource);  -- validates the name first
    FOREACH v_col IN ARRAY ARRAY[tenant_column] || coalesce(columns, '{}') LOOP
        IF v_col IS NULL OR NOT EXISTS (SELECT FROM pg_attribute
                       WHERE attrelid = tbl AND attname = v_col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('postbox: column does not exist in %s: %s', tbl, coalesce(v_col, 'NULL'));
        END IF;
    END LOOP;

    SELECT string_agg(quote_literal(a), ', ') INTO v_args
      FROM unnest(ARRAY[resource, tenant_column] || coalesce(columns, '{}')) AS a;

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

-- Tables attached under 0.1.0: move their INSERT and DELETE triggers to emit_statement.
DO $repoint$
DECLARE
    t     record;
    v_def text;
BEGIN
    FOR t IN SELECT tg.oid, tg.tgname, tg.tgrelid::regclass AS tbl
               FROM pg_catalog.pg_trigger tg
              WHERE tg.tgfoid = 'postbox.emit_row_change()'::regprocedure
                AND tg.tgname IN ('postbox_insert', 'postbox_delete')
                AND tg.tgtype & 1 = 0  -- statement-level
    LOOP
        -- The definition may name the function with or without its schema.
        v_def := regexp_replace(pg_catalog.pg_get_triggerdef(t.oid),
                                'EXECUTE FUNCTION (postbox\.)?emit_row_change\(',
                                'EXECUTE FUNCTION postbox.emit_statement(');
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
        EXECUTE v_def;
    END LOOP;
END
$repoint$;

COMMENT ON FUNCTION postbox.emit_statement() IS 'Statement trigger (Rust) for INSERT and DELETE with a transition table: emit_statement(resource, tenant_column [, column ...]); attach creates it.';
COMMENT ON FUNCTION postbox.emit_row_change() IS 'Trigger function: emit_row_change(resource, tenant_column [, column ...]) emits <resource>.created/updated/deleted.';
COMMENT ON TABLE postbox.events IS 'Events, written by the worker when it expands postbox.emitted; deliveries point here.';
COMMENT ON TABLE postbox.emitted IS 'The emit buffer: what emit and the triggers wrote, not yet turned into events and outbox rows.';
COMMENT ON TABLE postbox.endpoint_pauses IS 'When each endpoint was paused and resumed: events emitted meanwhile never go to it.';
COMMENT ON FUNCTION postbox.expand_events(integer) IS 'Worker: turns committed emitted rows into events and routed outbox rows, oldest first; returns how many events.';

SELECT pg_catalog.pg_extension_config_dump('postbox.endpoint_pauses', '');
REVOKE ALL ON postbox.endpoint_pauses, postbox.emitted FROM PUBLIC;
GRANT SELECT ON postbox.emitted TO postbox_worker;
