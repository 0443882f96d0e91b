-- postbox: the event catalog, emit and attach (the application's side), and
-- routing: expansion of emitted rows into events and deliveries.

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

CREATE FUNCTION postbox.create_event_type(name text, description text DEFAULT NULL, schema jsonb DEFAULT NULL,
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
COMMENT ON FUNCTION postbox.create_event_type(text, text, jsonb, jsonb) IS 'Adds an event type to the catalog, or updates its description, schema and example payload.';
GRANT EXECUTE ON FUNCTION postbox.create_event_type(text, text, jsonb, jsonb) TO postbox_admin;

CREATE FUNCTION postbox._unknown_event_type(p_name text)
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
COMMENT ON FUNCTION postbox._unknown_event_type(text) IS 'Internal: raises the unknown-event-type error with the closest names (or event_type_reserved for postbox.*).';

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

CREATE FUNCTION postbox._check_data(p_data jsonb)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_bytes integer;
BEGIN
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        PERFORM postbox._raise('event_data_invalid', 'data', format(
            'postbox: event data must be a JSON object: %s', coalesce(left(p_data::text, 100), 'NULL')));
    END IF;
    v_bytes := octet_length(p_data::text);
    IF v_bytes > postbox._max_payload_bytes() THEN
        PERFORM postbox._raise('event_data_too_large', 'data', format(
            'postbox: event data must be at most postbox.max_payload_bytes (%s) bytes: %s bytes',
            postbox._max_payload_bytes(), v_bytes));
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._check_data(jsonb) IS 'Internal: raises unless event data is an object within postbox.max_payload_bytes.';

-- The emit path is the application's hot path: one lookup (the event type
-- and the wake-up flag in a single statement), one lean row in
-- postbox.emitted, and a NOTIFY only while a worker is waiting. Routing
-- happens at expansion, after commit.
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

-- An ordering key as the outbox keeps it: hashed to 64 bits, so that the
-- claim's walk over keys is over fixed-width index entries spread evenly
-- (it starts at a random point, so no key waits for the others); NULL (no
-- key) is the empty key. Two keys that collide are only ordered together.
-- hashtextextended is the hash of hash partitioning, which must not change
-- between PostgreSQL versions.
CREATE FUNCTION postbox._ordering_hash(p_key text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.hashtextextended(coalesce(p_key, ''), 0);
END;
COMMENT ON FUNCTION postbox._ordering_hash(text) IS 'Internal: an ordering key as the outbox keeps it, hashed (NULL: the empty key).';

-- The triggers' arguments (attach): resource, tenant column, the payload
-- columns, then, after an empty string (no column has an empty name), the
-- table's primary key columns. Tables attached before 0.9.0 have no key
-- columns. The payload columns:
CREATE FUNCTION postbox._trigger_columns(p_args text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT p_args[3:coalesce(pg_catalog.array_position(p_args, ''), cardinality(p_args) + 1) - 1];
END;
COMMENT ON FUNCTION postbox._trigger_columns(text[]) IS 'Internal: the payload columns among an emit trigger''s arguments.';
GRANT EXECUTE ON FUNCTION postbox._trigger_columns(text[]) TO postbox_admin;

-- A row's ordering key: the resource and its primary key, as order:42
-- (one column) or order:[1, "eu"] (several: a JSON array as jsonb writes
-- it), so that every change of one row is one key. NULL when the triggers
-- name no key columns (attached before 0.9.0): the endpoint is then one key.
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

-- The payload of a row: all its columns, or only p_columns.
CREATE FUNCTION postbox._row_payload(p_row jsonb, p_columns text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN p_columns IS NULL OR cardinality(p_columns) = 0 THEN p_row
                ELSE (SELECT coalesce(jsonb_object_agg(c, p_row -> c), '{}')
                        FROM unnest(p_columns) AS c WHERE p_row ? c) END
$fn$;
COMMENT ON FUNCTION postbox._row_payload(jsonb, text[]) IS 'Internal: a row as JSON, limited to the given columns.';
-- Inlined by endpoint_status.pending (through _emitted_events).
GRANT EXECUTE ON FUNCTION postbox._row_payload(jsonb, text[]) TO postbox_admin;

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

CREATE FUNCTION postbox._register_resource(p_resource text)
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
COMMENT ON FUNCTION postbox._register_resource(text) IS 'Internal: registers <resource>.created/updated/deleted for attach.';
GRANT EXECUTE ON FUNCTION postbox._register_resource(text) TO postbox_emitter;

-- SECURITY INVOKER on purpose: creating the triggers needs the caller's own
-- TRIGGER privilege on the table, so attach cannot reach tables the caller
-- could not touch anyway.
CREATE FUNCTION postbox.attach(tbl regclass, resource text, tenant_column text, columns text[] DEFAULT NULL)
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
COMMENT ON FUNCTION postbox._wake() IS 'Internal: NOTIFYs postbox_wakeup if a worker waits (paths that are not hot).';

CREATE FUNCTION postbox.send_test(tenant text, id uuid, event_type text DEFAULT NULL, data jsonb DEFAULT NULL)
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
GRANT EXECUTE ON FUNCTION postbox.send_test(text, uuid, text, jsonb) TO postbox_admin;

-- The advisory lock that expansion holds, and update_endpoint takes to turn
-- ordering on (a constant: the bytes of 'pbox' and 'expd').
CREATE FUNCTION postbox._expansion_lock()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT 8098157642854723684::bigint;
END;
COMMENT ON FUNCTION postbox._expansion_lock() IS 'Internal: the advisory lock key that serializes expansions (and turning ordering on).';

-- Turns committed postbox.emitted rows into events and outbox rows, oldest
-- first; concurrent workers skip each other's rows. A row that cannot be
-- expanded (data PostgreSQL refuses, say from before 0.3.0 checked rows at
-- emit) never stops the rest: it is moved to postbox.emitted_rejects with
-- the reason, for admins to read. Other errors (a lock timeout, a lost
-- connection) are not the row's fault: they fail the call, and the rows
-- stay for the next one.
CREATE FUNCTION postbox.expand_events(max_events integer DEFAULT 1000)
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

-- Whether an endpoint's options make it ordered (rules/src/options.rs:
-- "ordering": "key"). Inlined.
CREATE FUNCTION postbox._ordered(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(p_options ->> 'ordering' = 'key', false);
END;
COMMENT ON FUNCTION postbox._ordered(jsonb) IS 'Internal: whether endpoint options ask for ordered delivery per key (inlined).';
GRANT EXECUTE ON FUNCTION postbox._ordered(jsonb) TO postbox_admin, postbox_worker;

-- Whether an ordered endpoint's given-up delivery holds its key
-- ("ordering_given_up": "hold"). Inlined.
CREATE FUNCTION postbox._holds(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(p_options ->> 'ordering_given_up' = 'hold', false);
END;
COMMENT ON FUNCTION postbox._holds(jsonb) IS 'Internal: whether an ordered endpoint''s given-up delivery keeps its key waiting (inlined).';
GRANT EXECUTE ON FUNCTION postbox._holds(jsonb) TO postbox_worker;

-- Whether an endpoint's options make it coalesce ("coalesce": true): of
-- its waiting deliveries with one ordering key and event type, only the
-- newest is sent. Inlined.
CREATE FUNCTION postbox._coalesces(p_options jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce((p_options -> 'coalesce')::text = 'true', false);
END;
COMMENT ON FUNCTION postbox._coalesces(jsonb) IS 'Internal: whether an endpoint sends only the newest of its waiting events per ordering key and type (inlined).';
GRANT EXECUTE ON FUNCTION postbox._coalesces(jsonb) TO postbox_admin;

-- The one routing rule, for expansion and for endpoint_status.pending: the
-- endpoints that get an event of p_event_type for p_tenant emitted at p_at.
-- They are the tenant's endpoints whose filter matches, that existed then,
-- were not paused at that moment (endpoint_pauses) and are not disabled now.
-- Endpoints paused now are included: their rows are held until resume.
-- A SQL-standard body: parsed once at creation (no search_path at call
-- time), and inlined into its callers' plans, so no function runs per event.
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

-- The events an emitted row holds, for expansion and endpoint_status.pending:
-- the row itself (emit, row triggers), or one per row of a statement whose
-- tenant column is set, as {resource: payload columns}. Inlined like _routes.
-- n is the row's position in its statement (0 for a single event); a
-- statement's row has its row key (_row_key), a single event its own.
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

-- Why a delivery was coalesced, as its last_error says: a newer event of
-- its key and type replaced it.
CREATE FUNCTION postbox._coalesced_by(p_event_type text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT 'coalesced: a newer ' || p_event_type || ' event of its ordering key was queued';
END;
COMMENT ON FUNCTION postbox._coalesced_by(text) IS 'Internal: the last_error of a coalesced delivery.';

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
