-- postbox 0.6.0 -> 0.7.0: the house, round two (issue 24). The tables are
-- unchanged. Every function, view, comment and grant that is new or changed
-- is written again here, as in sql/*.sql: rule errors carry machine codes
-- (postbox._raise), defaults live in SQL (callers pass NULL), the endpoint's
-- state is decided by postbox._endpoint_state alone, the worker's queue
-- statements are functions (sql/queue.sql), and the attempt log stores the
-- headers the worker sent (postbox._request_headers, which rebuilt them, is
-- gone; rows written before keep the custom headers only). Generated from
-- the 0.6.0 and 0.7.0 install scripts; the upgrade test compares the result
-- with a fresh install (tests/tests/extension.rs).

CREATE FUNCTION postbox."_api_key_prefix"( "key" TEXT /* & str */ ) RETURNS TEXT /* String */ IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c /* Rust */ AS 'MODULE_PATHNAME', '_api_key_prefix_wrapper';

CREATE FUNCTION postbox."_generate_portal_token"() RETURNS TEXT /* String */ STRICT VOLATILE PARALLEL SAFE LANGUAGE c /* Rust */ AS 'MODULE_PATHNAME', '_generate_portal_token_wrapper';

CREATE FUNCTION postbox."_raise"( "code" TEXT, /* Option < & str > */ "field" TEXT, /* Option < & str > */ "message" TEXT, /* Option < & str > */ "item" TEXT DEFAULT NULL /* Option < & str > */ ) RETURNS void VOLATILE PARALLEL SAFE LANGUAGE c /* Rust */ AS 'MODULE_PATHNAME', 'raise_sql_wrapper';

CREATE OR REPLACE FUNCTION postbox.defaults(OUT signature_style text, OUT rotation_grace interval,
                                 OUT portal_link_lifetime interval, OUT test_event_type text)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 'standard', interval '24 hours', interval '15 minutes', 'webhook.test';
END;

CREATE OR REPLACE FUNCTION postbox._too_long(p_what text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    PERFORM postbox._raise('length_out_of_range', p_what, format('postbox: %s must be at most %s bytes: %s... (%s bytes)',
        p_what, postbox._max_key_bytes(), left(p_value, 40), octet_length(p_value)));
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._require_tenant(p_tenant text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF p_tenant IS NULL OR p_tenant = '' THEN
        PERFORM postbox._raise('length_out_of_range', 'tenant', 'postbox: tenant must be a non-empty string: '
            || coalesce(quote_literal(p_tenant), 'NULL'));
    END IF;
    IF octet_length(p_tenant) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('tenant', p_tenant);
    END IF;
END
$fn$;

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
        PERFORM postbox._raise('tenant_suspended', NULL,
            format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', p_tenant));
    END IF;
    SELECT count(*) INTO v_count FROM postbox.endpoints WHERE tenant = p_tenant;
    IF v_count >= v_max THEN
        PERFORM postbox._raise('tenant_endpoint_limit', NULL,
            format('postbox: tenant may have at most %s endpoints: %s', v_max, p_tenant));
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._headers(p_headers json, p_signature_header text)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_twice   text;
    v_headers jsonb;
BEGIN
    BEGIN
        v_headers := p_headers::jsonb;
    EXCEPTION WHEN data_exception THEN
        PERFORM postbox._raise('headers_invalid_json', 'headers',
            format('postbox: headers must be JSON that jsonb can hold (%s)', SQLERRM));
    END;
    IF json_typeof(p_headers) = 'object' THEN
        -- Header names are case-insensitive, so X-A and x-a are the same header.
        SELECT min(k) INTO v_twice FROM json_object_keys(p_headers) k
         GROUP BY lower(k) HAVING count(*) > 1 LIMIT 1;
        IF v_twice IS NOT NULL THEN
            PERFORM postbox._raise('header_name_duplicate', 'headers',
                format('postbox: a header may be given only once: %s', postbox._shown(v_twice)), v_twice);
        END IF;
    END IF;
    RETURN postbox.validate_headers(v_headers, p_signature_header);
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._check_depth(p_what text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF jsonb_path_exists(p_value, 'strict $.**{32}') THEN
        PERFORM postbox._raise('json_too_deep', p_what,
            format('postbox: %s must nest fewer than 32 levels deep', p_what));
    END IF;
    RETURN p_value;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._check_envelope(p_envelope text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF p_envelope IS NULL OR p_envelope NOT IN ('postbox', 'standard', 'flat') THEN
        PERFORM postbox._raise('envelope_unknown', 'envelope',
            format('postbox: envelope must be ''postbox'', ''standard'' or ''flat'': %s',
                             coalesce(postbox._shown(p_envelope), 'NULL')));
    END IF;
    RETURN p_envelope;
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
    id := v_id;
    secret := v_secret;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.create_endpoint(
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
RETURNS TABLE (id uuid, secret text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM postbox._create_endpoint(tenant, url, event_types, headers, description, signature_style,
                                           signature_header, own_secret, options, enabled, envelope)
$fn$;

CREATE OR REPLACE FUNCTION postbox.create_endpoint(tenant text, config jsonb)
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_unknown text;
BEGIN
    IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
        PERFORM postbox._raise('config_invalid', 'config', format(
            'postbox: config must be a JSON object as endpoint_config returns: %s',
            coalesce(jsonb_typeof(config), 'NULL')));
    END IF;
    SELECT min(k) INTO v_unknown FROM jsonb_object_keys(config) k WHERE k <> ALL (postbox._config_keys());
    IF v_unknown IS NOT NULL THEN
        PERFORM postbox._raise('config_invalid', 'config', format(
            'postbox: config has a key create_endpoint does not take (it takes %s): %s',
            array_to_string(postbox._config_keys(), ', '), postbox._shown(v_unknown)), v_unknown);
    END IF;
    IF jsonb_typeof(config -> 'event_types') IS DISTINCT FROM 'array'
       OR EXISTS (SELECT FROM jsonb_array_elements(config -> 'event_types') f WHERE jsonb_typeof(f) <> 'string') THEN
        PERFORM postbox._raise('config_invalid', 'config', format(
            'postbox: config event_types must be an array of strings: %s', coalesce(jsonb_typeof(config -> 'event_types'), 'missing')), 'event_types');
    END IF;
    FOREACH v_unknown IN ARRAY ARRAY['enabled'] LOOP
        IF config ? v_unknown AND jsonb_typeof(config -> v_unknown) <> 'boolean' THEN
            PERFORM postbox._raise('config_invalid', 'config', format(
                'postbox: config enabled must be true or false: %s', jsonb_typeof(config -> v_unknown)), v_unknown);
        END IF;
    END LOOP;
    FOREACH v_unknown IN ARRAY ARRAY['url', 'description', 'signature_style', 'signature_header', 'envelope'] LOOP
        IF config ? v_unknown AND jsonb_typeof(config -> v_unknown) NOT IN ('string', 'null') THEN
            PERFORM postbox._raise('config_invalid', 'config', format(
                'postbox: config %s must be a string: %s', v_unknown, jsonb_typeof(config -> v_unknown)), v_unknown);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM postbox._create_endpoint(
        tenant, config ->> 'url',
        ARRAY(SELECT jsonb_array_elements_text(config -> 'event_types')),
        (config -> 'headers')::json, config ->> 'description',
        config ->> 'signature_style', config ->> 'signature_header', NULL,
        config -> 'options', (config -> 'enabled')::boolean, config ->> 'envelope');
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
    v_url text;
    v_id  uuid;
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
        UPDATE postbox.endpoints e
           SET event_types = postbox._validate_filters(event_types, postbox._catalog_names()), updated_at = now()
         WHERE e.id = v_id;
    END IF;
    RETURN QUERY SELECT v_id, NULL::text, false;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._no_endpoint(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('endpoint_not_found', 'id',
        format('postbox: no endpoint has this id: %s', coalesce(p_id::text, 'NULL')));
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
    RETURN v_secret;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.set_tenant_limit(tenant text, max_endpoints integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    v_suspend boolean := set_tenant_limit.max_endpoints = 0;
    v_id      uuid;
BEGIN
    PERFORM postbox._require_tenant(set_tenant_limit.tenant);
    IF set_tenant_limit.max_endpoints < 0 THEN
        PERFORM postbox._raise('out_of_range', 'max_endpoints',
            format('postbox: max_endpoints must be 0 or more (NULL for no limit): %s', set_tenant_limit.max_endpoints));
    END IF;
    IF set_tenant_limit.max_endpoints IS NULL THEN
        DELETE FROM postbox.tenant_limits WHERE tenant = set_tenant_limit.tenant;  -- back to no limit
    ELSE
        INSERT INTO postbox.tenant_limits (tenant, max_endpoints)
        VALUES (set_tenant_limit.tenant, set_tenant_limit.max_endpoints)
        ON CONFLICT (tenant) DO UPDATE SET max_endpoints = EXCLUDED.max_endpoints, updated_at = now();
    END IF;
    FOR v_id IN SELECT e.id FROM postbox.endpoints e
                 WHERE e.tenant = set_tenant_limit.tenant AND e.suspended <> coalesce(v_suspend, false)
                 ORDER BY e.id FOR UPDATE LOOP
        PERFORM postbox._pause(v_id, set_tenant_limit.tenant, 'plan', coalesce(v_suspend, false));
        UPDATE postbox.endpoints SET suspended = coalesce(v_suspend, false), updated_at = now() WHERE id = v_id;
    END LOOP;
END
$fn$;

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
    v_close := postbox._close_names(p_name, postbox._catalog_names());
    PERFORM postbox._raise('event_type_unknown', 'event_type', format('postbox: unknown event type (%s): %s',
        CASE WHEN cardinality(v_close) > 0 THEN 'did you mean ' || array_to_string(v_close, ', ') || '?'
             ELSE 'create it with postbox.create_event_type first' END,
        coalesce(p_name, 'NULL')), p_name);
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._check_data(p_data jsonb)
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
        PERFORM postbox._raise('required', 'tenant', 'postbox: tenant must not be NULL: NULL');
    END IF;
    IF tenant = '' THEN  -- as every tenant-scoped form (_require_tenant): no endpoint could have it
        PERFORM postbox._raise('length_out_of_range', 'tenant', 'postbox: tenant must be a non-empty string: ''''');
    END IF;
    IF octet_length(tenant) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('tenant', tenant);
    END IF;
    IF octet_length(idempotency_key) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('idempotency_key', idempotency_key);
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
    FOREACH v_suffix IN ARRAY ARRAY['created', 'updated', 'deleted'] LOOP
        INSERT INTO postbox.event_types (name, description, match_keys)
        VALUES (p_resource || '.' || v_suffix,
                format('A %s row was %s (emitted by postbox.attach).', p_resource, v_suffix),
                postbox._event_match_keys(p_resource || '.' || v_suffix))
        ON CONFLICT (name) DO NOTHING;
    END LOOP;
END
$fn$;

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
        PERFORM postbox._raise('tenant_suspended', NULL,
            format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', e.tenant));
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
    IF max_events IS NULL OR max_events < 1 OR max_events > 1000000 THEN
        PERFORM postbox._raise('out_of_range', 'max_events', format(
            'postbox: max_events must be between 1 and 1000000: %s', coalesce(max_events::text, 'NULL')));
    END IF;
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

CREATE OR REPLACE FUNCTION postbox._routes(p_tenant text, p_event_type text, p_at timestamptz)
RETURNS TABLE (endpoint_id uuid)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT e.id
      FROM postbox.event_types t
      JOIN postbox.endpoints e ON e.tenant = p_tenant AND e.event_types && t.match_keys
     WHERE t.name = p_event_type
       -- Not the state: routing ignores pauses now (the pause history
       -- decides, as of p_at); only a disabled endpoint, whose deliveries
       -- are cancelled, gets none.
       AND e.disabled_at IS NULL AND e.created_at <= p_at
       AND NOT EXISTS (SELECT FROM postbox.endpoint_pauses p
                        WHERE p.endpoint_id = e.id AND p.paused_at <= p_at
                          AND (p.resumed_at IS NULL OR p.resumed_at > p_at));
END;

CREATE OR REPLACE FUNCTION postbox._no_delivery(p_id bigint)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('delivery_not_found', 'id',
        format('postbox: no failed or cancelled delivery has this id: %s', coalesce(p_id::text, 'NULL')));
END
$fn$;

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
    -- A fresh schedule: the attempt count restarts; earlier attempts stay in the log.
    UPDATE postbox.outbox
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, leased_by = NULL
     WHERE id = retry_delivery.id;
    PERFORM postbox._wake();
END
$fn$;

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
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, leased_by = NULL
     WHERE d.id = ANY (v_ids[1:max_rows]);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM postbox._wake();
    END IF;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.worker_heartbeat(worker_id text, instance uuid, stale_after interval)
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

CREATE OR REPLACE FUNCTION postbox.worker_stopped(worker_id text, instance uuid)
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

CREATE OR REPLACE FUNCTION postbox._claimable(p_status text, p_lease_until timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p_status = 'pending' AND (p_lease_until IS NULL OR p_lease_until < now());
END;

CREATE OR REPLACE FUNCTION postbox._due(p_status text, p_next_attempt_at timestamptz, p_lease_until timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT postbox._claimable(p_status, p_lease_until) AND p_next_attempt_at <= now();
END;

CREATE OR REPLACE FUNCTION postbox.claim(worker_id text, max_rows bigint, endpoint_ids uuid[], endpoint_rooms integer[],
                              endpoint_room integer, tenants text[], tenant_rooms integer[], tenant_room integer,
                              lease_seconds double precision, max_bytes bigint)
RETURNS TABLE (id bigint, tenant text, endpoint_id uuid, event_id uuid, attempts integer, is_test boolean,
               queued_at timestamptz, event_type text, event_time timestamptz, data text, lease_until timestamptz)
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
        SELECT d.id, d.event_id, d.next_attempt_at, o.tenant, o.tenant_room, o.r
          FROM (SELECT * FROM eps WHERE eps.room > 0 ORDER BY eps.r) o
         CROSS JOIN LATERAL (
               SELECT d.id, d.event_id, d.next_attempt_at FROM postbox.outbox d
                WHERE d.endpoint_id = o.id AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
                ORDER BY d.next_attempt_at
                LIMIT o.room
                  FOR UPDATE SKIP LOCKED) d
         LIMIT claim.max_rows
    ), capped AS (
        SELECT f.id, f.event_id, f.r, f.next_attempt_at
          FROM (SELECT f.*, row_number() OVER (PARTITION BY f.tenant ORDER BY f.r, f.next_attempt_at) AS n
                  FROM fair f) f
         WHERE f.n <= f.tenant_room
    ), tests AS (
        SELECT d.id, d.event_id, 2.0::float8 AS r, d.next_attempt_at FROM postbox.outbox d
         WHERE d.is_test AND postbox._due(d.status, d.next_attempt_at, d.lease_until)
           AND EXISTS (SELECT FROM postbox.endpoints e
                        WHERE e.id = d.endpoint_id
                          AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                      e.consecutive_failures) IN ('paused', 'disabled'))
         ORDER BY d.next_attempt_at
         LIMIT 16
           FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT s.id, s.event_type, s.created_at, s.data
          FROM (SELECT p.id, v.event_type, v.created_at, v.data,
                       octet_length(v.data) AS size,
                       sum(octet_length(v.data)) OVER (ORDER BY p.r, p.next_attempt_at, p.id
                                                       ROWS UNBOUNDED PRECEDING) AS upto
                  FROM (SELECT * FROM capped UNION ALL SELECT * FROM tests) p
                 -- Events fetched per row, by primary key (the generic plan cannot
                 -- scan the table); the text is made once and returned as is.
                 CROSS JOIN LATERAL (SELECT v.event_type, v.created_at, v.data::text AS data
                                       FROM postbox.events v WHERE v.id = p.event_id OFFSET 0) v) s
         WHERE s.upto <= claim.max_bytes OR s.upto = s.size
    ), claimed AS (
        -- Ids as an array, for the primary key (see picked).
        UPDATE postbox.outbox o
           SET lease_until = now() + make_interval(secs => claim.lease_seconds), leased_by = claim.worker_id
         WHERE o.id = ANY (ARRAY(SELECT id FROM picked))
        RETURNING o.id, o.tenant, o.endpoint_id, o.event_id, o.attempts, o.is_test, o.created_at,
                  o.lease_until
    )
    SELECT c.id, c.tenant, c.endpoint_id, c.event_id, c.attempts, c.is_test, c.created_at,
           p.event_type, p.created_at, p.data, c.lease_until
      FROM claimed c JOIN picked p ON p.id = c.id;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.claimed_endpoints(ids uuid[])
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

CREATE OR REPLACE FUNCTION postbox.release_claims(ids bigint[], worker_id text)
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

CREATE OR REPLACE FUNCTION postbox.release_lost(worker_id text, after timestamptz)
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

CREATE OR REPLACE FUNCTION postbox.next_due(blocked_endpoints uuid[], blocked_tenants text[])
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN (
        SELECT min(x.n) FROM postbox._due_endpoints d
         CROSS JOIN LATERAL (SELECT FROM postbox.endpoints e
                              WHERE e.id = d.endpoint_id
                                AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('healthy', 'failing')
                                AND e.id <> ALL (next_due.blocked_endpoints)
                                AND e.tenant <> ALL (next_due.blocked_tenants)
                             OFFSET 0) e
         CROSS JOIN LATERAL (SELECT o.next_attempt_at AS n FROM postbox.outbox o
                              WHERE o.endpoint_id = d.endpoint_id
                                AND postbox._claimable(o.status, o.lease_until)
                              ORDER BY o.next_attempt_at LIMIT 1) x);
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.acknowledge(
    ids bigint[], tenants text[], endpoint_ids uuid[], event_ids uuid[], attempts integer[],
    started_at timestamptz[], durations_ms integer[], status_codes integer[], excerpts text[], errors text[],
    outcomes text[], is_tests boolean[], queued_at timestamptz[], request_headers text[],
    statuses text[], next_at timestamptz[],
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
                                     queued_at, request_headers)
    SELECT u.d, u.t, u.e, u.v, u.a, u.s, u.du, u.c, u.x, u.er, u.o, u.it, u.q, u.h::jsonb
      FROM unnest(acknowledge.ids, acknowledge.tenants, acknowledge.endpoint_ids, acknowledge.event_ids,
                  acknowledge.attempts, acknowledge.started_at, acknowledge.durations_ms,
                  acknowledge.status_codes, acknowledge.excerpts, acknowledge.errors, acknowledge.outcomes,
                  acknowledge.is_tests, acknowledge.queued_at, acknowledge.request_headers)
           AS u(d, t, e, v, a, s, du, c, x, er, o, it, q, h);

    DELETE FROM postbox.outbox o
     WHERE o.id = ANY (ARRAY(SELECT u.id FROM unnest(acknowledge.ids, acknowledge.statuses) AS u(id, st)
                              WHERE u.st IS NULL));

    UPDATE postbox.outbox o
       SET attempts = u.attempts, status = u.status,
           next_attempt_at = coalesce(u.next_at, o.next_attempt_at),
           lease_until = NULL, leased_by = NULL, last_attempt_at = u.at,
           last_status_code = u.code, last_error = u.err
      FROM unnest(acknowledge.ids, acknowledge.attempts, acknowledge.statuses, acknowledge.next_at,
                  acknowledge.started_at, acknowledge.status_codes, acknowledge.errors)
           AS u(id, attempts, status, next_at, at, code, err)
     WHERE o.id = u.id AND u.status IS NOT NULL AND o.status = 'pending';

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

CREATE OR REPLACE FUNCTION postbox.queue_gauges(cap bigint, OUT due bigint, OUT oldest_age_seconds double precision)
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

CREATE OR REPLACE FUNCTION postbox.set_waiting(waiting boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO postbox.wakeup AS w (singleton, waiting) VALUES (true, set_waiting.waiting)
    ON CONFLICT (singleton) DO UPDATE SET waiting = EXCLUDED.waiting
     WHERE w.waiting IS DISTINCT FROM EXCLUDED.waiting;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.set_retention(
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

    -- Cancelled deliveries, and failed ones whose endpoint is gone (they can
    -- never be retried), through outbox_settled, which holds only those.
    DELETE FROM postbox.outbox d
     WHERE d.id = ANY (ARRAY(
           SELECT x.id FROM postbox.outbox x
            WHERE x.status <> 'pending' AND x.created_at < v_now - r.cancelled_deliveries
              AND (x.status = 'cancelled'
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

CREATE OR REPLACE FUNCTION postbox._no_api_key(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('api_key_not_found', 'id',
        format('postbox: no api key has this id: %s', coalesce(p_id::text, 'NULL')));
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._key_session(p_tenant text, p_session uuid)
RETURNS postbox.portal_sessions
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s postbox.portal_sessions;
BEGIN
    IF p_session IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM postbox.portal_sessions x
     WHERE x.id = p_session AND x.tenant = p_tenant AND x.expires_at > now();
    IF NOT FOUND OR NOT s.manage_keys THEN
        PERFORM postbox._raise('session_may_not_manage_keys', 'session', 'postbox: this portal session may not manage api keys (the operator allows it when making the session)');
    END IF;
    RETURN s;
END
$fn$;

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
    UPDATE postbox.api_keys x
       SET key_hash = sha256(convert_to(v_key, 'UTF8')), key_prefix = postbox._api_key_prefix(v_key), rotated_at = now()
     WHERE x.id = k.id;
    RETURN v_key;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.list_api_keys(tenant text, session uuid DEFAULT NULL, after uuid DEFAULT NULL,
                                      max_rows integer DEFAULT 100)
RETURNS SETOF postbox.api_key_list
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    s postbox.portal_sessions;
BEGIN
    IF tenant IS NOT NULL THEN
        PERFORM postbox._require_tenant(tenant);
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000 THEN
        PERFORM postbox._raise('out_of_range', 'max_rows',
            format('postbox: max_rows must be between 1 and 1000: %s', coalesce(max_rows::text, 'NULL')));
    END IF;
    s := postbox._key_session(tenant, session);
    RETURN QUERY
    SELECT l.* FROM postbox.api_keys k
      JOIN postbox.api_key_list l ON l.id = k.id
     WHERE k.tenant IS NOT DISTINCT FROM list_api_keys.tenant
       AND (after IS NULL OR k.id > after)
       AND postbox._session_owns_key(s, k)
     ORDER BY k.id
     LIMIT max_rows;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.api_request_begin(tenant text, credential uuid, idempotency_key text, request_hash bytea)
RETURNS TABLE (status smallint, body text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    r postbox.api_idempotency;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF credential IS NULL THEN
        PERFORM postbox._raise('required', 'credential', 'postbox: credential must not be NULL');
    END IF;
    IF idempotency_key IS NULL OR idempotency_key !~ '^[\x21-\x7e]{1,255}$' THEN
        PERFORM postbox._raise('idempotency_key_invalid', 'idempotency_key', format(
            'postbox: Idempotency-Key must be 1 to 255 visible ASCII characters: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL')));
    END IF;
    IF request_hash IS NULL OR length(request_hash) <> 32 THEN
        PERFORM postbox._raise('hash_invalid', 'request_hash', 'postbox: request_hash must be a SHA-256 (32 bytes)');
    END IF;
    INSERT INTO postbox.api_idempotency AS a (tenant, credential, idempotency_key, request_hash)
    VALUES (tenant, credential, idempotency_key, request_hash)
    ON CONFLICT ON CONSTRAINT api_idempotency_pkey DO NOTHING;
    IF FOUND THEN
        RETURN;  -- the first
    END IF;
    SELECT * INTO r FROM postbox.api_idempotency a
     WHERE a.tenant = api_request_begin.tenant AND a.credential = api_request_begin.credential
       AND a.idempotency_key = api_request_begin.idempotency_key
       FOR UPDATE;
    IF r.created_at < now() - (postbox._retention()).idempotency_keys THEN
        -- Expired, not yet purged: as if it were gone.
        UPDATE postbox.api_idempotency a
           SET request_hash = api_request_begin.request_hash, status = 0, body = '', created_at = now()
         WHERE a.tenant = r.tenant AND a.credential = r.credential AND a.idempotency_key = r.idempotency_key;
        RETURN;
    END IF;
    IF r.request_hash <> request_hash THEN
        PERFORM postbox._raise('idempotency_key_reused', 'idempotency_key', format(
            'postbox: this Idempotency-Key was used for another request (within %s): %s',
            (postbox._retention()).idempotency_keys, postbox._shown(idempotency_key)));
    END IF;
    status := r.status;
    body := r.body;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.api_request_end(tenant text, credential uuid, idempotency_key text, status integer, body text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF credential IS NULL THEN
        PERFORM postbox._raise('required', 'credential', 'postbox: credential must not be NULL');
    END IF;
    IF status IS NULL OR status NOT BETWEEN 200 AND 299 OR body IS NULL THEN
        PERFORM postbox._raise('idempotency_response_invalid', 'status', format(
            'postbox: only a successful response is stored (status 200 to 299, a body): %s',
            coalesce(status::text, 'NULL')));
    END IF;
    UPDATE postbox.api_idempotency a SET status = api_request_end.status, body = api_request_end.body
     WHERE a.tenant = api_request_end.tenant AND a.credential = api_request_end.credential
       AND a.idempotency_key = api_request_end.idempotency_key AND a.status = 0;
    IF NOT FOUND THEN
        PERFORM postbox._raise('idempotency_request_unknown', 'idempotency_key', format(
            'postbox: no request with this Idempotency-Key is under way: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL')));
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox._check_user_id(p_user_id text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF p_user_id IS NOT NULL AND length(p_user_id) NOT BETWEEN 1 AND 200 THEN
        PERFORM postbox._raise('length_out_of_range', 'user_id', format(
            'postbox: user_id must be 1 to 200 characters: %s', postbox._shown(p_user_id)));
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.create_portal_session(tenant text, role text, valid_for interval DEFAULT NULL,
                                              manage_keys boolean DEFAULT false, user_id text DEFAULT NULL)
RETURNS TABLE (id uuid, token text, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id    uuid := postbox._uuid7();
    v_token text := postbox._generate_portal_token();
BEGIN
    PERFORM postbox._require_tenant(tenant);
    -- NULL is the default (postbox.defaults): what the HTTP API passes.
    valid_for := coalesce(valid_for, (postbox.defaults()).portal_link_lifetime);
    IF role IS NULL OR role NOT IN ('admin', 'member') THEN
        PERFORM postbox._raise('role_unknown', 'role', format(
            'postbox: portal role must be admin or member: %s', coalesce(postbox._shown(role), 'NULL')));
    END IF;
    IF valid_for IS NULL OR valid_for < interval '1 minute' OR valid_for > interval '1 day' THEN
        PERFORM postbox._raise('out_of_range', 'valid_for', format(
            'postbox: valid_for must be between 1 minute and 1 day: %s', coalesce(valid_for::text, 'NULL')));
    END IF;
    IF manage_keys IS NULL OR (manage_keys AND role <> 'admin') THEN
        PERFORM postbox._raise('manage_keys_invalid', 'manage_keys', format(
            'postbox: manage_keys must be true or false, and true only for an admin session: %s',
            coalesce(manage_keys::text, 'NULL')));
    END IF;
    PERFORM postbox._check_user_id(user_id);
    INSERT INTO postbox.portal_sessions (id, tenant, role, link_hash, link_expires_at, manage_keys, user_id)
    VALUES (v_id, tenant, role, sha256(convert_to(v_token, 'UTF8')), now() + valid_for, manage_keys, user_id);
    id := v_id;
    token := v_token;
    expires_at := now() + valid_for;
    RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION postbox.open_portal_session(link_hash bytea, session_hash bytea, lasts interval)
RETURNS TABLE (tenant text, role text, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF open_portal_session.session_hash IS NULL OR length(open_portal_session.session_hash) <> 32 THEN
        PERFORM postbox._raise('hash_invalid', 'session_hash', 'postbox: session_hash must be a SHA-256 (32 bytes)');
    END IF;
    IF lasts IS NULL OR lasts < interval '1 minute' OR lasts > interval '1 day' THEN
        PERFORM postbox._raise('out_of_range', 'lasts', format(
            'postbox: lasts must be between 1 minute and 1 day: %s', coalesce(lasts::text, 'NULL')));
    END IF;
    RETURN QUERY
    UPDATE postbox.portal_sessions s
       SET session_hash = open_portal_session.session_hash, expires_at = now() + lasts
     WHERE s.link_hash = open_portal_session.link_hash AND s.session_hash IS NULL AND s.link_expires_at > now()
    RETURNING s.tenant, s.role, s.expires_at;
END
$fn$;

CREATE OR REPLACE VIEW postbox._due_endpoints AS
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

CREATE OR REPLACE VIEW postbox.deliveries AS
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type,
       CASE WHEN d.lease_until > now() THEN 'in_flight'
            WHEN NOT d.is_test AND postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at,
                                                            e.consecutive_failures) IN ('suspended', 'paused')
                 THEN 'held'
            ELSE 'pending' END AS status,
       d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at
  FROM postbox.endpoints e
  JOIN postbox.outbox d ON d.endpoint_id = e.id AND d.tenant = e.tenant AND d.status = 'pending'
  LEFT JOIN postbox.events v ON v.id = d.event_id
UNION ALL
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type, d.status, d.attempts, NULL,
       d.last_status_code, d.last_error, d.created_at
  FROM postbox.outbox d
  LEFT JOIN postbox.events v ON v.id = d.event_id
 WHERE d.status <> 'pending'
UNION ALL
SELECT a.delivery_id, a.tenant, a.endpoint_id, a.event_id, v.event_type,
       'succeeded', a.attempt, NULL, a.status_code, NULL, a.queued_at
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
 WHERE a.outcome = 'succeeded';

CREATE OR REPLACE VIEW postbox.attempts AS
SELECT a.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, a.event_id, a.outcome,
       v.event_type, v.data,
       -- {} when nothing was sent (the attempt failed before its request).
       coalesce(a.request_headers, '{}') AS request_headers,
       a.is_test
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id;

DROP FUNCTION postbox._request_headers(text, uuid, timestamptz, jsonb);

COMMENT ON FUNCTION postbox.defaults() IS 'The defaults of what callers may leave out or pass NULL for: an endpoint''s signature style, a rotation''s grace period, a portal link''s lifetime, the test event type.';

COMMENT ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) IS 'Internal: an endpoint''s state (suspended, paused, disabled, failing, healthy), decided here only (inlined).';

COMMENT ON FUNCTION postbox._claimable(text, timestamptz) IS 'Internal: whether an outbox row can be claimed at some time: pending and not leased, or its lease ran out (inlined).';

COMMENT ON FUNCTION postbox._due(text, timestamptz, timestamptz) IS 'Internal: whether an outbox row is due: claimable and its time has come (inlined).';

COMMENT ON VIEW postbox._due_endpoints IS 'Internal: the endpoints with pending deliveries, by a loose scan of outbox_due; the last row is NULL.';

COMMENT ON FUNCTION postbox.claim(text, bigint, uuid[], integer[], integer, text[], integer[], integer, double precision, bigint) IS 'Worker: leases up to max_rows due deliveries fairly (per endpoint and tenant room, max_bytes of payload) to worker_id for lease_seconds, with their events.';

COMMENT ON FUNCTION postbox.claimed_endpoints(uuid[]) IS 'Worker: the delivery settings and valid secrets (newest first) of the endpoints of a claim.';

COMMENT ON FUNCTION postbox.release_claims(bigint[], text) IS 'Worker: gives back the claims of worker_id among ids (shutdown), so that any worker takes them at once.';

COMMENT ON FUNCTION postbox.release_lost(text, timestamptz) IS 'Worker: gives back what worker_id leased after its last received batch (a claim whose answer was lost).';

COMMENT ON FUNCTION postbox.next_due(uuid[], text[]) IS 'Worker: the earliest attempt time of a claimable delivery of a sending endpoint outside the blocked ones (NULL: none).';

COMMENT ON FUNCTION postbox.acknowledge(bigint[], text[], uuid[], uuid[], integer[], timestamptz[], integer[], integer[], text[], text[], text[], boolean[], timestamptz[], text[], text[], timestamptz[], uuid[], boolean[], integer[], timestamptz[], timestamptz[], timestamptz[], text[], uuid[], integer, double precision) IS 'Worker: records a batch of attempts in one transaction: the attempt log, the outbox (deleted, rescheduled or failed), endpoint health, and endpoints disabled with their pending deliveries cancelled (returned).';

COMMENT ON FUNCTION postbox.queue_gauges(bigint) IS 'Worker: due deliveries plus unexpanded emitted rows (each counted up to cap) and the age of the oldest, for its metrics.';

COMMENT ON FUNCTION postbox.set_waiting(boolean) IS 'Worker: raises (a worker waits) or clears the wake-up flag that makes emitters NOTIFY.';

COMMENT ON FUNCTION postbox._generate_portal_token() IS 'Internal: a new pbp_ portal link token from the OS CSPRNG.';

COMMENT ON FUNCTION postbox._api_key_prefix(text) IS 'Internal: the start of an API key that lists show (api_keys.key_prefix).';

COMMENT ON FUNCTION postbox._raise(text, text, text, text) IS 'Internal: raises a postbox error: the SQLSTATE of its code, the message, and DETAIL {"code", "field", "item"} (docs/errors.md). Every postbox error in SQL goes through it.';

GRANT EXECUTE ON FUNCTION postbox._claimable(text, timestamptz) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox._due(text, timestamptz, timestamptz) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox._raise(text, text, text, text) TO postbox_admin;

GRANT EXECUTE ON FUNCTION postbox._raise(text, text, text, text) TO postbox_emitter;

GRANT EXECUTE ON FUNCTION postbox._raise(text, text, text, text) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.acknowledge(bigint[], text[], uuid[], uuid[], integer[], timestamptz[], integer[], integer[], text[], text[], text[], boolean[], timestamptz[], text[], text[], timestamptz[], uuid[], boolean[], integer[], timestamptz[], timestamptz[], timestamptz[], text[], uuid[], integer, double precision) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.claim(text, bigint, uuid[], integer[], integer, text[], integer[], integer, double precision, bigint) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.claimed_endpoints(uuid[]) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.defaults() TO postbox_admin;

GRANT EXECUTE ON FUNCTION postbox.next_due(uuid[], text[]) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.queue_gauges(bigint) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.release_claims(bigint[], text) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.release_lost(text, timestamptz) TO postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.set_waiting(boolean) TO postbox_worker;

GRANT SELECT ON postbox._due_endpoints TO postbox_worker;

-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
