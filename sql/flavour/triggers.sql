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
-- the table's privileges may): the trigger says so in a trigger_misused
-- error (22023) that names the rule, before anything is written.

-- Whether valid json text could be refused as jsonb, which only text with
-- a \u escape (\u0000, a lone surrogate, or one a database not in UTF-8
-- cannot hold), an exponent of four digits or more (numeric takes at most
-- 1000) or a run of 255 digits (the most a regex counts; numeric refuses
-- far longer ones) can be. A false alarm only costs the exact check: a
-- jsonb conversion inside an exception block, a subtransaction, which
-- every statement paid before (measured in docs/measurements.md).
CREATE FUNCTION postbox._jsonb_may_refuse(p_json text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT pg_catalog.strpos(p_json, '\u') > 0 OR p_json ~ '[eE][+-]?0*[0-9]{4}|[0-9]{255}'
$fn$;
COMMENT ON FUNCTION postbox._jsonb_may_refuse(text) IS 'Internal (SQL flavour): whether valid json text could be refused as jsonb, so that the triggers'' writes check only then.';

-- What the compiled trigger refuses in the rows it sends, raised as it
-- raises it: the first text of p_sized (in the statement's order) larger
-- than postbox.max_payload_bytes, or a text of p_parsed that is valid json
-- but not jsonb, which expansion stores. The jsonb check is a conversion in
-- an exception block, a subtransaction, so the writes call this only where
-- a check could fail: past the setting's least value, or where
-- _jsonb_may_refuse says so. Runs as the owner, inside the writes.
CREATE FUNCTION postbox._refuse_unsendable(p_relid oid, p_resource text, p_sized text[], p_parsed text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_max    integer := postbox._max_payload_bytes();
    v_len    integer;
    v_text   text;
    v_why    text;
    v_detail text;
BEGIN
    SELECT octet_length(r.v) INTO v_len
      FROM unnest(p_sized) WITH ORDINALITY AS r(v, n)
     WHERE octet_length(r.v) > v_max ORDER BY r.n LIMIT 1;
    IF v_len IS NOT NULL THEN
        PERFORM postbox._raise('event_data_too_large', NULL, format(
            'postbox: a row of %s is larger than postbox.max_payload_bytes (%s bytes) allows for %s events: %s bytes',
            postbox._table_name(p_relid), v_max, p_resource, v_len));
    END IF;
    FOREACH v_text IN ARRAY p_parsed LOOP
        CONTINUE WHEN v_text IS NULL OR NOT postbox._jsonb_may_refuse(v_text);
        BEGIN
            PERFORM v_text::jsonb;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_why = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            PERFORM postbox._raise('event_data_invalid', NULL, format(
                'postbox: a row of %s cannot be sent as %s event data: %s', postbox._table_name(p_relid), p_resource,
                v_why || CASE WHEN coalesce(v_detail, '') = '' THEN '' ELSE ' (' || v_detail || ')' END));
        END;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION postbox._refuse_unsendable(oid, text, text[], text[]) IS 'Internal (SQL flavour): raises what the compiled trigger raises for rows it cannot send (too large, or not jsonb).';

-- The statement trigger's write: one postbox.emitted row for a statement's
-- rows (each row's JSON, as the trigger encoded them), after the
-- checks the compiled trigger makes on each row: its size, and that it is
-- valid jsonb, which expansion stores. p_relid names the table in messages.
-- Both checks (_refuse_unsendable) run only when one could fail (measured
-- in docs/measurements.md, "postbox-sql's emit"). The rows come
-- as an array of texts, so that each one's size is its length. A direct
-- call can pass texts that are not one object each: the array they make
-- must still be JSON, no part of it is larger than the text it came in,
-- and expansion takes an event only from an object with a tenant.
CREATE FUNCTION postbox._emit_statement_write(p_relid oid, p_event_type text, p_rows text[], p_args text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_text   text;
    v_wake   boolean;
BEGIN
    -- What the trigger guarantees, checked again for a direct call.
    -- (Arrays of one dimension first: array_position refuses others.)
    IF array_ndims(p_args) IS DISTINCT FROM 1 OR array_ndims(p_rows) IS DISTINCT FROM 1
       OR cardinality(p_args) < 2 OR array_position(p_args, NULL) IS NOT NULL
       OR p_event_type IS NULL
       OR p_event_type NOT IN (p_args[1] || '.created', p_args[1] || '.deleted')
       OR array_position(p_rows, NULL) IS NOT NULL THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_statement_write takes what emit_statement encoded (use postbox.attach)');
    END IF;
    v_text := '[' || array_to_string(p_rows, ',') || ']';
    -- Each check only where it could fail (see _refuse_unsendable).
    IF octet_length(v_text) > /*@payload_bytes_min@*/ OR postbox._jsonb_may_refuse(v_text) THEN
        PERFORM postbox._refuse_unsendable(p_relid, p_args[1], p_rows, ARRAY[v_text]);
    END IF;
    -- One statement: written only if the event type is in the catalog.
    INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
    SELECT postbox._uuid7(), p_event_type, clock_timestamp(), v_text::json, p_args
     WHERE EXISTS (SELECT FROM postbox.event_types t WHERE t.name = p_event_type AND NOT postbox._reserved_type(t.name))
    RETURNING (SELECT w.waiting FROM postbox.wakeup w) INTO v_wake;
    IF NOT FOUND THEN
        PERFORM postbox._unknown_event_type(p_event_type);  -- raises: the statement is undone
    END IF;
    IF v_wake THEN
        PERFORM pg_notify('postbox_wakeup', '');
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._emit_statement_write(oid, text, text[], text[]) IS 'Internal (SQL flavour): the statement trigger''s write, as the owner, of rows the trigger encoded as its caller; re-checks what a direct call could forge.';
GRANT EXECUTE ON FUNCTION postbox._emit_statement_write(oid, text, text[], text[]) TO postbox_emitter;

-- The row trigger's write: postbox._emit_row (sql/emit.sql) as the owner,
-- after the checks the compiled trigger makes before it calls it. Only the
-- row that is sent counts against the limit: an UPDATE's old row is only
-- compared (an update that shrinks a row must go through).
CREATE FUNCTION postbox._emit_row_write(p_relid oid, p_op text, p_new json, p_old json, p_args text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_sent   json := CASE p_op WHEN 'DELETE' THEN p_old ELSE p_new END;
BEGIN
    IF array_ndims(p_args) IS DISTINCT FROM 1 OR cardinality(p_args) < 2 OR array_position(p_args, NULL) IS NOT NULL
       OR p_op IS NULL OR p_op NOT IN ('INSERT', 'UPDATE', 'DELETE')
       OR (p_op <> 'DELETE' AND p_new IS NULL) OR (p_op <> 'INSERT' AND p_old IS NULL)
       OR json_typeof(coalesce(p_new, p_old)) <> 'object' OR json_typeof(coalesce(p_old, p_new)) <> 'object' THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: _emit_row_write takes what emit_row_change encoded (use postbox.attach)');
    END IF;
    IF octet_length(v_sent::text) > /*@payload_bytes_min@*/
       OR postbox._jsonb_may_refuse(p_new::text) OR postbox._jsonb_may_refuse(p_old::text) THEN
        PERFORM postbox._refuse_unsendable(p_relid, p_args[1], ARRAY[v_sent::text], ARRAY[p_new::text, p_old::text]);
    END IF;
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

-- The SQL expression that encodes a row of p_relid, aliased t, as the
-- triggers send it, for the queries they make when static SQL cannot name
-- what they read: an object of the named columns (the tenant and payload
-- columns) in table order, each value as row_to_json writes it (to_json:
-- a json column's text as it is, never parsed, since parsing could fail
-- on a row the compiled trigger refuses by name), or, without columns,
-- row_to_json itself. Names are quoted.
CREATE FUNCTION postbox._row_encoding(p_relid oid, p_columns text[]) RETURNS text
LANGUAGE sql STABLE
AS $fn$
    SELECT CASE WHEN p_columns IS NULL THEN 'pg_catalog.row_to_json(t)::text'
                ELSE '''{'' || ' || coalesce(pg_catalog.string_agg(pg_catalog.format(
                         '%L || COALESCE(pg_catalog.to_json(t.%I)::text, ''null'')',
                         pg_catalog.to_json(a.attname::text)::text || ':', a.attname), ' || '','' || ' ORDER BY a.attnum),
                     '''''') || ' || ''}''' END
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_relid AND a.attname = ANY (p_columns) AND a.attnum > 0 AND NOT a.attisdropped
$fn$;
COMMENT ON FUNCTION postbox._row_encoding(oid, text[]) IS 'Internal (SQL flavour): the SQL expression the emit triggers encode a row with, when they name columns or read a table static SQL cannot name.';

-- The statement trigger (INSERT and DELETE, with a transition table): one
-- emitted row per statement holding its rows as a JSON array, split into
-- chunks as the compiled trigger splits it (CHUNK_BYTES in
-- extension/src/trigger.rs). SECURITY INVOKER.
CREATE FUNCTION postbox.emit_statement() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    c_chunk   constant integer := /*@chunk_bytes@*/;
    v_store   name;
    v_rows    text[];
    v_type    text;
    v_chunk   text[];
BEGIN
    IF TG_NARGS < 2 THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement needs (resource, tenant_column [, columns...]) as trigger arguments: ' || TG_NAME);
    END IF;
    IF TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' OR TG_OP NOT IN ('INSERT', 'DELETE') THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement is a statement-level AFTER INSERT or DELETE trigger (use postbox.attach): ' || TG_NAME);
    END IF;
    -- attach's triggers name their transition tables postbox_new and
    -- postbox_old; others are looked up. (A trigger made by hand under
    -- attach's name without them fails on the name: the query below reads
    -- what the caller could read anyway, as the caller.)
    IF TG_NAME = 'postbox_insert' AND TG_OP = 'INSERT' THEN
        v_store := 'postbox_new';
    ELSIF TG_NAME = 'postbox_delete' AND TG_OP = 'DELETE' THEN
        v_store := 'postbox_old';
    ELSE
        SELECT CASE TG_OP WHEN 'INSERT' THEN t.tgnewtable ELSE t.tgoldtable END INTO v_store
          FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    END IF;
    IF v_store IS NULL THEN
        PERFORM postbox._raise('trigger_misused', NULL,
            'postbox: emit_statement needs a transition table (REFERENCING NEW/OLD TABLE; use postbox.attach): ' || TG_NAME);
    END IF;
    IF NOT (pg_catalog.pg_has_role('postbox_emitter', 'MEMBER')
            OR pg_catalog.has_function_privilege('postbox._emit_statement_write(oid, text, text[], text[])', 'EXECUTE')) THEN
        PERFORM postbox._raise('trigger_misused', NULL, pg_catalog.format(
            'postbox: a role that writes to a table postbox is attached to must be a member of postbox_emitter (the SQL flavour): %s writes %s.%s',
            current_user, TG_TABLE_SCHEMA, TG_TABLE_NAME));
    END IF;
    -- Each row encoded as the caller. attach's transition tables, without
    -- columns, are read with static SQL, whose plan PL/pgSQL keeps; the
    -- rest with the query _row_encoding makes.
    -- Payload columns are named when the third argument is not the empty
    -- string before the key columns (attach); the encoding then takes the
    -- tenant, payload and key columns.
    IF NOT (TG_NARGS > 2 AND TG_ARGV[2] <> '') AND v_store = 'postbox_new' THEN
        v_rows := ARRAY(SELECT pg_catalog.row_to_json(t)::text FROM postbox_new AS t);
    ELSIF NOT (TG_NARGS > 2 AND TG_ARGV[2] <> '') AND v_store = 'postbox_old' THEN
        v_rows := ARRAY(SELECT pg_catalog.row_to_json(t)::text FROM postbox_old AS t);
    ELSE
        EXECUTE pg_catalog.format('SELECT ARRAY(SELECT %s FROM %I AS t)',
            postbox._row_encoding(TG_RELID, CASE WHEN TG_NARGS > 2 AND TG_ARGV[2] <> '' THEN TG_ARGV[1:] END),
            v_store)
          INTO v_rows;
    END IF;
    IF pg_catalog.cardinality(v_rows) = 0 THEN
        RETURN NULL;
    END IF;
    v_type := TG_ARGV[0] || CASE TG_OP WHEN 'INSERT' THEN '.created' ELSE '.deleted' END;
    IF pg_catalog.octet_length(pg_catalog.array_to_string(v_rows, ',')) + 2 <= c_chunk THEN
        -- Most statements hold far less than a chunk: one write.
        PERFORM postbox._emit_statement_write(TG_RELID, v_type, v_rows, TG_ARGV[0:TG_NARGS - 1]);
        RETURN NULL;
    END IF;
    -- A row goes to the chunk its start falls in, in the statement's order.
    FOR v_chunk IN
        SELECT pg_catalog.array_agg(c.j ORDER BY c.i)
          FROM (SELECT r.i, r.j,
                       (pg_catalog.sum(pg_catalog.octet_length(r.j) + 1) OVER (ORDER BY r.i)
                        - pg_catalog.octet_length(r.j) - 1) / c_chunk AS n
                  FROM pg_catalog.unnest(v_rows) WITH ORDINALITY AS r(j, i)) AS c
         GROUP BY c.n ORDER BY c.n
    LOOP
        PERFORM postbox._emit_statement_write(TG_RELID, v_type, v_chunk, TG_ARGV[0:TG_NARGS - 1]);
    END LOOP;
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
    v_query  text;
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
    -- Named columns: the query _row_encoding makes, run on each row.
    IF TG_NARGS > 2 AND TG_ARGV[2] <> '' THEN
        v_query := 'SELECT ' || postbox._row_encoding(TG_RELID, TG_ARGV[1:]) || ' FROM (SELECT ($1).*) AS t';
    END IF;
    IF TG_OP <> 'DELETE' AND v_query IS NULL THEN
        v_new := pg_catalog.row_to_json(NEW)::text;
    ELSIF TG_OP <> 'DELETE' THEN
        EXECUTE v_query INTO v_new USING NEW;
    END IF;
    IF TG_OP <> 'INSERT' AND v_query IS NULL THEN
        v_old := pg_catalog.row_to_json(OLD)::text;
    ELSIF TG_OP <> 'INSERT' THEN
        EXECUTE v_query INTO v_old USING OLD;
    END IF;
    PERFORM postbox._emit_row_write(TG_RELID, TG_OP, v_new::json, v_old::json, TG_ARGV[0:TG_NARGS - 1]);
    RETURN NULL;
END
$fn$;
