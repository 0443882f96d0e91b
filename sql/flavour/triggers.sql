-- postbox-sql: the emit triggers (extension/src/trigger.rs in the compiled
-- extension) in PL/pgSQL, and the one privileged write behind each.
--
-- # Rights: the design of 0.3.0, with a function where Rust switches user
-- The triggers are SECURITY INVOKER: the application's rows are read and
-- encoded with the caller's rights (row_to_json runs the caller's output
-- functions and casts as the caller, never as the owner). Each then hands
-- the encoded text to a SECURITY DEFINER function that writes into
-- postbox's tables as the owner. In the compiled extension that step is
-- C (extension/src/owner.rs switches user around fixed statements); here it
-- must be a function the caller may execute, so it is granted to
-- postbox_emitter, and it re-checks everything a hand-made call could
-- forge: the event type, the shape and size of every row, the arguments.
-- A direct call can therefore write nothing that postbox.emit, which
-- emitters may call anyway, could not.
--
-- So a role that writes to an attached table must be a member of
-- postbox_emitter in this flavour (in the compiled extension any role with
-- the table's privileges may): the trigger says so in a 42501 error that
-- names the rule, before anything is written.

-- The statement trigger's write: one postbox.emitted row for a statement's
-- rows (a JSON array of objects, as the trigger encoded them), after the
-- checks the compiled trigger makes on each row: its size, and that it is
-- valid jsonb, which expansion stores. p_relid names the table in messages.
CREATE FUNCTION postbox._emit_statement_write(p_relid oid, p_event_type text, p_rows json, p_args text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_max    integer := postbox._max_payload_bytes();
    v_len    integer;
    v_odd    boolean;
    v_wake   boolean;
    v_why    text;
    v_detail text;
BEGIN
    -- What the trigger guarantees, checked again for a direct call.
    IF p_args IS NULL OR cardinality(p_args) < 2 OR array_position(p_args, NULL) IS NOT NULL
       OR p_event_type IS NULL
       OR p_event_type NOT IN (p_args[1] || '.created', p_args[1] || '.deleted') THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_statement_write takes what emit_statement encoded (use postbox.attach)');
    END IF;
    IF p_rows IS NULL OR json_typeof(p_rows) <> 'array' THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_statement_write takes a JSON array of rows (use postbox.attach)');
    END IF;
    -- One pass over the rows: their shape, and the first one too large.
    SELECT bool_or(json_typeof(r.v) <> 'object'),
           (array_agg(octet_length(r.v::text) ORDER BY r.n) FILTER (WHERE octet_length(r.v::text) > v_max))[1]
      INTO v_odd, v_len
      FROM json_array_elements(p_rows) WITH ORDINALITY AS r(v, n);
    IF v_odd THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_statement_write takes a JSON array of rows (use postbox.attach)');
    END IF;
    IF v_len IS NOT NULL THEN
        PERFORM postbox._raise('event_data_too_large', NULL, format(
            'postbox: a row of %s is larger than postbox.max_payload_bytes (%s bytes) allows for %s events: %s bytes',
            postbox._table_name(p_relid), v_max, p_args[1], v_len));
    END IF;
    BEGIN
        PERFORM p_rows::jsonb;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_why = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
        PERFORM postbox._raise('event_data_invalid', NULL, format(
            'postbox: a row of %s cannot be sent as %s event data: %s', postbox._table_name(p_relid), p_args[1],
            v_why || CASE WHEN coalesce(v_detail, '') = '' THEN '' ELSE ' (' || v_detail || ')' END));
    END;
    IF NOT EXISTS (SELECT FROM postbox.event_types t WHERE t.name = p_event_type) THEN
        PERFORM postbox._unknown_event_type(p_event_type);  -- raises: the statement is undone
    END IF;
    INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
    VALUES (postbox._uuid7(), p_event_type, clock_timestamp(), p_rows, p_args)
    RETURNING (SELECT w.waiting FROM postbox.wakeup w) INTO v_wake;
    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._emit_statement_write(oid, text, json, text[]) IS 'Internal (SQL flavour): the statement trigger''s write, as the owner, of rows the trigger encoded as its caller; re-checks what a direct call could forge.';
GRANT EXECUTE ON FUNCTION postbox._emit_statement_write(oid, text, json, text[]) TO postbox_emitter;

-- The row trigger's write: postbox._emit_row (sql/emit.sql) as the owner,
-- after the checks the compiled trigger makes before it calls it. Only the
-- row that is sent counts against the limit: an UPDATE's old row is only
-- compared (an update that shrinks a row must go through).
CREATE FUNCTION postbox._emit_row_write(p_relid oid, p_op text, p_new json, p_old json, p_args text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_max    integer := postbox._max_payload_bytes();
    v_sent   json := CASE p_op WHEN 'DELETE' THEN p_old ELSE p_new END;
    v_why    text;
    v_detail text;
BEGIN
    IF p_args IS NULL OR cardinality(p_args) < 2 OR array_position(p_args, NULL) IS NOT NULL
       OR p_op IS NULL OR p_op NOT IN ('INSERT', 'UPDATE', 'DELETE')
       OR (p_op <> 'DELETE' AND p_new IS NULL) OR (p_op <> 'INSERT' AND p_old IS NULL)
       OR json_typeof(coalesce(p_new, p_old)) <> 'object' OR json_typeof(coalesce(p_old, p_new)) <> 'object' THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_row_write takes what emit_row_change encoded (use postbox.attach)');
    END IF;
    IF octet_length(v_sent::text) > v_max THEN
        PERFORM postbox._raise('event_data_too_large', NULL, format(
            'postbox: a row of %s is larger than postbox.max_payload_bytes (%s bytes) allows for %s events: %s bytes',
            postbox._table_name(p_relid), v_max, p_args[1], octet_length(v_sent::text)));
    END IF;
    BEGIN
        PERFORM p_new::jsonb, p_old::jsonb;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_why = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
        PERFORM postbox._raise('event_data_invalid', NULL, format(
            'postbox: a row of %s cannot be sent as %s event data: %s', postbox._table_name(p_relid), p_args[1],
            v_why || CASE WHEN coalesce(v_detail, '') = '' THEN '' ELSE ' (' || v_detail || ')' END));
    END;
    PERFORM postbox._emit_row(p_relid, p_op, p_new, p_old, p_args);
END
$fn$;
COMMENT ON FUNCTION postbox._emit_row_write(oid, text, json, json, text[]) IS 'Internal (SQL flavour): the row trigger''s write (postbox._emit_row) as the owner, of rows the trigger encoded as its caller.';
GRANT EXECUTE ON FUNCTION postbox._emit_row_write(oid, text, json, json, text[]) TO postbox_emitter;

-- "schema.table" for messages, as the compiled trigger writes it.
CREATE FUNCTION postbox._table_name(p_relid oid) RETURNS text
LANGUAGE sql STABLE
AS $fn$
    SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid
$fn$;
COMMENT ON FUNCTION postbox._table_name(oid) IS 'Internal (SQL flavour): a table''s schema.table, for the emit triggers'' messages.';

-- The statement trigger (INSERT and DELETE, with a transition table): one
-- emitted row per statement holding its rows as a JSON array, split at
-- about 8 MiB as the compiled trigger splits it. SECURITY INVOKER.
CREATE FUNCTION postbox.emit_statement() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_store   name;
    v_cols    text[];
    v_rows    text;
    v_chunk   record;
BEGIN
    IF TG_NARGS < 2 THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement needs (resource, tenant_column [, columns...]) as trigger arguments: ' || TG_NAME);
    END IF;
    IF TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' OR TG_OP NOT IN ('INSERT', 'DELETE') THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement is a statement-level AFTER INSERT or DELETE trigger (use postbox.attach): ' || TG_NAME);
    END IF;
    SELECT CASE TG_OP WHEN 'INSERT' THEN t.tgnewtable ELSE t.tgoldtable END INTO v_store
      FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    IF v_store IS NULL THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement needs a transition table (REFERENCING NEW/OLD TABLE; use postbox.attach): ' || TG_NAME);
    END IF;
    IF NOT (pg_catalog.pg_has_role('postbox_emitter', 'MEMBER')
            OR pg_catalog.has_function_privilege('postbox._emit_statement_write(oid, text, json, text[])', 'EXECUTE')) THEN
        PERFORM postbox._raise('trigger_misused', NULL, pg_catalog.format(
            'postbox: a role that writes to a table postbox is attached to must be a member of postbox_emitter (the SQL flavour): %s writes %s.%s',
            current_user, TG_TABLE_SCHEMA, TG_TABLE_NAME));
    END IF;
    IF TG_NARGS > 2 THEN
        v_cols := TG_ARGV[1:];
    END IF;
    -- The rows as row_to_json writes them (only the tenant and payload
    -- columns, in table order, when the trigger names them), in chunks of
    -- about 8 MiB, as the caller. The transition tables attach names
    -- (postbox_new, postbox_old) are read with static SQL, whose plan
    -- PL/pgSQL keeps per table; another name, from a trigger made by hand,
    -- with the same query run dynamically (the name quoted).
    IF TG_OP = 'INSERT' AND v_store = 'postbox_new' THEN
        -- Most statements hold far less than a chunk: one pass.
        SELECT '[' || pg_catalog.string_agg(
                   CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(t)::text
                        ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                                FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e
                               WHERE e.key = ANY (v_cols)) END, ',') || ']'
          INTO v_rows FROM postbox_new AS t;
        IF v_rows IS NULL THEN
            RETURN NULL;
        ELSIF pg_catalog.octet_length(v_rows) <= 8388608 THEN
            PERFORM postbox._emit_statement_write(TG_RELID, TG_ARGV[0] || '.created', v_rows::json, TG_ARGV[0:TG_NARGS - 1]);
            RETURN NULL;
        END IF;
        FOR v_chunk IN
            SELECT '[' || pg_catalog.string_agg(c.j, ',' ORDER BY c.i) || ']' AS rows
              FROM (SELECT r.i, r.j,
                           (pg_catalog.sum(pg_catalog.octet_length(r.j) + 1) OVER (ORDER BY r.i)
                            - pg_catalog.octet_length(r.j) - 1) / 8388608 AS n
                      FROM (SELECT pg_catalog.row_number() OVER () AS i,
                                   CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(t)::text
                                        ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                                                FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e
                                               WHERE e.key = ANY (v_cols)) END AS j
                              FROM postbox_new AS t) AS r) AS c
             GROUP BY c.n ORDER BY c.n
        LOOP
            PERFORM postbox._emit_statement_write(TG_RELID, TG_ARGV[0] || '.created', v_chunk.rows::json, TG_ARGV[0:TG_NARGS - 1]);
        END LOOP;
    ELSIF TG_OP = 'DELETE' AND v_store = 'postbox_old' THEN
        -- Most statements hold far less than a chunk: one pass.
        SELECT '[' || pg_catalog.string_agg(
                   CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(t)::text
                        ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                                FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e
                               WHERE e.key = ANY (v_cols)) END, ',') || ']'
          INTO v_rows FROM postbox_old AS t;
        IF v_rows IS NULL THEN
            RETURN NULL;
        ELSIF pg_catalog.octet_length(v_rows) <= 8388608 THEN
            PERFORM postbox._emit_statement_write(TG_RELID, TG_ARGV[0] || '.deleted', v_rows::json, TG_ARGV[0:TG_NARGS - 1]);
            RETURN NULL;
        END IF;
        FOR v_chunk IN
            SELECT '[' || pg_catalog.string_agg(c.j, ',' ORDER BY c.i) || ']' AS rows
              FROM (SELECT r.i, r.j,
                           (pg_catalog.sum(pg_catalog.octet_length(r.j) + 1) OVER (ORDER BY r.i)
                            - pg_catalog.octet_length(r.j) - 1) / 8388608 AS n
                      FROM (SELECT pg_catalog.row_number() OVER () AS i,
                                   CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(t)::text
                                        ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                                                FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e
                                               WHERE e.key = ANY (v_cols)) END AS j
                              FROM postbox_old AS t) AS r) AS c
             GROUP BY c.n ORDER BY c.n
        LOOP
            PERFORM postbox._emit_statement_write(TG_RELID, TG_ARGV[0] || '.deleted', v_chunk.rows::json, TG_ARGV[0:TG_NARGS - 1]);
        END LOOP;
    ELSE
        FOR v_chunk IN EXECUTE pg_catalog.format($q$
            SELECT '[' || pg_catalog.string_agg(c.j, ',' ORDER BY c.i) || ']' AS rows
              FROM (SELECT r.i, r.j,
                           (pg_catalog.sum(pg_catalog.octet_length(r.j) + 1) OVER (ORDER BY r.i)
                            - pg_catalog.octet_length(r.j) - 1) / 8388608 AS n
                      FROM (SELECT pg_catalog.row_number() OVER () AS i,
                                   CASE WHEN $1 IS NULL THEN pg_catalog.row_to_json(t)::text
                                        ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                                                FROM pg_catalog.json_each(pg_catalog.row_to_json(t)) AS e
                                               WHERE e.key = ANY ($1)) END AS j
                              FROM %I AS t) AS r) AS c
             GROUP BY c.n ORDER BY c.n $q$, v_store) USING v_cols
        LOOP
            PERFORM postbox._emit_statement_write(TG_RELID,
                TG_ARGV[0] || CASE TG_OP WHEN 'INSERT' THEN '.created' ELSE '.deleted' END,
                v_chunk.rows::json, TG_ARGV[0:TG_NARGS - 1]);
        END LOOP;
    END IF;
    RETURN NULL;
END
$fn$;

-- The row trigger (attach uses it for UPDATE, which needs OLD and NEW):
-- encodes the rows as the caller and hands them to _emit_row_write.
-- SECURITY INVOKER.
CREATE FUNCTION postbox.emit_row_change() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_cols   text[];
    v_new    text;
    v_old    text;
BEGIN
    IF TG_NARGS < 2 THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_row_change needs (resource, tenant_column [, columns...]) as trigger arguments: ' || TG_NAME);
    END IF;
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' OR TG_OP NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_row_change is a row-level AFTER INSERT, UPDATE or DELETE trigger (use postbox.attach): ' || TG_NAME);
    END IF;
    IF NOT (pg_catalog.pg_has_role('postbox_emitter', 'MEMBER')
            OR pg_catalog.has_function_privilege('postbox._emit_row_write(oid, text, json, json, text[])', 'EXECUTE')) THEN
        PERFORM postbox._raise('trigger_misused', NULL, pg_catalog.format(
            'postbox: a role that writes to a table postbox is attached to must be a member of postbox_emitter (the SQL flavour): %s writes %s.%s',
            current_user, TG_TABLE_SCHEMA, TG_TABLE_NAME));
    END IF;
    IF TG_NARGS > 2 THEN
        v_cols := TG_ARGV[1:];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(NEW)::text
                      ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                              FROM pg_catalog.json_each(pg_catalog.row_to_json(NEW)) AS e WHERE e.key = ANY (v_cols)) END;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := CASE WHEN v_cols IS NULL THEN pg_catalog.row_to_json(OLD)::text
                      ELSE (SELECT '{' || pg_catalog.string_agg(pg_catalog.to_json(e.key)::text || ':' || e.value::text, ',') || '}'
                              FROM pg_catalog.json_each(pg_catalog.row_to_json(OLD)) AS e WHERE e.key = ANY (v_cols)) END;
    END IF;
    PERFORM postbox._emit_row_write(TG_RELID, TG_OP, v_new::json, v_old::json, TG_ARGV[0:TG_NARGS - 1]);
    RETURN NULL;
END
$fn$;
