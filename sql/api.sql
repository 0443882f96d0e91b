-- postbox public SQL API. Loaded last (finalize), after the Rust functions.
--
-- Every function that writes is SECURITY DEFINER with a pinned search_path:
-- the three roles get EXECUTE on what they may do and no direct access to the
-- tables, except the worker, which reads and writes the outbox itself.
-- Bad input raises SQLSTATE 22023 with a message naming the rule and value.

-------------------------------------------------------------------------------
-- Event catalog
-------------------------------------------------------------------------------

CREATE FUNCTION postbox.create_event_type(name text, description text DEFAULT NULL, schema jsonb DEFAULT NULL,
                                          example jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    IF create_event_type.name IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: event type name must not be NULL: NULL';
    END IF;
    IF create_event_type.schema IS NOT NULL
       AND jsonb_typeof(create_event_type.schema) NOT IN ('object', 'boolean') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: event type schema must be a JSON Schema (an object or a boolean): %s',
                             left(create_event_type.schema::text, 100));
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

-------------------------------------------------------------------------------
-- Endpoints
-------------------------------------------------------------------------------

-- The longest tenant and idempotency key, in bytes: far beyond any id or
-- slug, and well under the 2,712 bytes a btree entry may hold (tenants are
-- indexed in endpoints, the attempt log and outbox_settled; keys with their
-- tenant in idempotency_keys). Without it one long value would fail every
-- acknowledgement batch it is in. Inlined where it is used.
CREATE FUNCTION postbox._max_key_bytes()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 256;
END;

-- Raises the too-long error for a tenant or key (a value as long as that is
-- shown only in part); returns nothing.
CREATE FUNCTION postbox._too_long(p_what text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('postbox: %s must be at most %s bytes: %s... (%s bytes)',
        p_what, postbox._max_key_bytes(), left(p_value, 40), octet_length(p_value));
END
$fn$;

-- Raises unless p_tenant is a tenant name (every tenant-scoped form checks it first).
CREATE FUNCTION postbox._require_tenant(p_tenant text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF p_tenant IS NULL OR p_tenant = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: tenant must be a non-empty string: '
            || coalesce(quote_literal(p_tenant), 'NULL');
    END IF;
    IF octet_length(p_tenant) > postbox._max_key_bytes() THEN
        PERFORM postbox._too_long('tenant', p_tenant);
    END IF;
END
$fn$;

-- Raises unless p_tenant may have one more endpoint. Locks the tenant's limit
-- row, so concurrent creates for a limited tenant cannot both slip under it.
CREATE FUNCTION postbox._check_tenant_limit(p_tenant text)
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', p_tenant);
    END IF;
    SELECT count(*) INTO v_count FROM postbox.endpoints WHERE tenant = p_tenant;
    IF v_count >= v_max THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: tenant may have at most %s endpoints: %s', v_max, p_tenant);
    END IF;
END
$fn$;

CREATE FUNCTION postbox._catalog_names()
RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM postbox.event_types $fn$;

-- Custom headers, read as json so that a name given twice is refused instead
-- of silently merged (jsonb keeps the last); then the header rules.
-- json holds what jsonb cannot (\u0000, numbers beyond numeric, lone
-- surrogates): that is bad headers (22023), not the cast's own error.
CREATE FUNCTION postbox._headers(p_headers json, p_signature_header text)
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: headers must be JSON that jsonb can hold (%s)', SQLERRM);
    END;
    IF json_typeof(p_headers) = 'object' THEN
        -- Header names are case-insensitive, so X-A and x-a are the same header.
        SELECT min(k) INTO v_twice FROM json_object_keys(p_headers) k
         GROUP BY lower(k) HAVING count(*) > 1 LIMIT 1;
        IF v_twice IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('postbox: a header may be given only once: %s', postbox._shown(v_twice));
        END IF;
    END IF;
    RETURN postbox.validate_headers(v_headers, p_signature_header);
END
$fn$;

-- Returns p_value unless it nests 32 levels deep. The JSON decoder of the
-- Rust checks (validate_headers, _validate_options) gives up at 128 levels
-- with an internal error (XX000), not a rule's 22023; headers and options
-- nest 2 levels at most. Looking for level 32 only (not "32 to last")
-- descends no deeper, so a value 10,000 levels deep cannot exhaust the stack.
CREATE FUNCTION postbox._check_depth(p_what text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF jsonb_path_exists(p_value, 'strict $.**{32}') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: %s must nest fewer than 32 levels deep', p_what);
    END IF;
    RETURN p_value;
END
$fn$;

-- The public check of custom headers: the depth first (see _check_depth),
-- then the rules (Rust, _validate_headers). A SQL-standard body.
CREATE FUNCTION postbox.validate_headers(headers jsonb, signature_header text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN postbox._validate_headers(postbox._check_depth('headers', validate_headers.headers),
                                 validate_headers.signature_header);

CREATE FUNCTION postbox._check_envelope(p_envelope text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF p_envelope IS NULL OR p_envelope NOT IN ('postbox', 'standard', 'flat') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: envelope must be ''postbox'', ''standard'' or ''flat'': %s',
                             coalesce(postbox._shown(p_envelope), 'NULL'));
    END IF;
    RETURN p_envelope;
END
$fn$;

-- The one create path, behind create_endpoint's two forms and register_endpoint.
CREATE FUNCTION postbox._create_endpoint(
    p_tenant text, p_url text, p_event_types text[], p_headers json, p_description text,
    p_signature_style text, p_signature_header text, p_own_secret text, p_options jsonb,
    p_enabled boolean, p_envelope text)
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id      uuid := postbox._uuid7();
    v_url     text;
    v_style   text := coalesce(p_signature_style, 'standard');
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

CREATE FUNCTION postbox.create_endpoint(
    tenant text,
    url text,
    event_types text[] DEFAULT '{*}',
    headers json DEFAULT '{}',
    description text DEFAULT NULL,
    signature_style text DEFAULT 'standard',
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

-- The keys endpoint_config returns, and this form of create_endpoint takes.
CREATE FUNCTION postbox._config_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $fn$ SELECT ARRAY['url', 'event_types', 'headers', 'description', 'signature_style',
                     'signature_header', 'options', 'enabled', 'envelope'] $fn$;

CREATE FUNCTION postbox.create_endpoint(tenant text, config jsonb)
RETURNS TABLE (id uuid, secret text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_unknown text;
BEGIN
    IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: config must be a JSON object as endpoint_config returns: %s',
            coalesce(jsonb_typeof(config), 'NULL'));
    END IF;
    SELECT min(k) INTO v_unknown FROM jsonb_object_keys(config) k WHERE k <> ALL (postbox._config_keys());
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: config has a key create_endpoint does not take (it takes %s): %s',
            array_to_string(postbox._config_keys(), ', '), postbox._shown(v_unknown));
    END IF;
    IF jsonb_typeof(config -> 'event_types') IS DISTINCT FROM 'array'
       OR EXISTS (SELECT FROM jsonb_array_elements(config -> 'event_types') f WHERE jsonb_typeof(f) <> 'string') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: config event_types must be an array of strings: %s', coalesce(jsonb_typeof(config -> 'event_types'), 'missing'));
    END IF;
    FOREACH v_unknown IN ARRAY ARRAY['enabled'] LOOP
        IF config ? v_unknown AND jsonb_typeof(config -> v_unknown) <> 'boolean' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'postbox: config enabled must be true or false: %s', jsonb_typeof(config -> v_unknown));
        END IF;
    END LOOP;
    FOREACH v_unknown IN ARRAY ARRAY['url', 'description', 'signature_style', 'signature_header', 'envelope'] LOOP
        IF config ? v_unknown AND jsonb_typeof(config -> v_unknown) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'postbox: config %s must be a string: %s', v_unknown, jsonb_typeof(config -> v_unknown));
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

-- Creates the tenant's endpoint for url, or, if the tenant has one for that
-- URL already (the oldest, if several), sets its event types. The secret is
-- returned only when it creates (as create_endpoint does); for an endpoint
-- that was there, secret is NULL: stored secrets are never read back, and a
-- caller that lost one rotates. The other arguments apply only when it
-- creates. Serialised per tenant and URL, so two registrations of one URL
-- at once make one endpoint.
CREATE FUNCTION postbox.register_endpoint(
    tenant text,
    url text,
    event_types text[] DEFAULT '{*}',
    headers json DEFAULT '{}',
    description text DEFAULT NULL,
    signature_style text DEFAULT 'standard',
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

CREATE FUNCTION postbox._no_endpoint(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('postbox: no endpoint has this id: %s', coalesce(p_id::text, 'NULL'));
END
$fn$;

-- Endpoint p_id of tenant p_tenant, locked; checks the tenant first. An id
-- of another tenant gets exactly the error of an id that does not exist, so
-- ids cannot be probed across tenants.
CREATE FUNCTION postbox._endpoint(p_tenant text, p_id uuid)
RETURNS postbox.endpoints
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e postbox.endpoints;
BEGIN
    PERFORM postbox._require_tenant(p_tenant);
    SELECT * INTO e FROM postbox.endpoints x WHERE x.id = p_id AND x.tenant = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM postbox._no_endpoint(p_id);
    END IF;
    RETURN e;
END
$fn$;

CREATE FUNCTION postbox.unregister_endpoint(tenant text, url text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id uuid;
    v_n  integer := 0;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    FOR v_id IN SELECT e.id FROM postbox.endpoints e
                 WHERE e.tenant = unregister_endpoint.tenant AND e.url = postbox.validate_url(url)
                 ORDER BY e.id FOR UPDATE LOOP
        PERFORM postbox._delete_endpoint(tenant, v_id);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$fn$;

-- Pause history, which routing reads: events emitted while paused (by an
-- admin or by the plan) never go out.
CREATE FUNCTION postbox._pause(p_endpoint uuid, p_tenant text, p_reason text, p_paused boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_paused THEN
        INSERT INTO postbox.endpoint_pauses (endpoint_id, tenant, paused_at, reason)
        VALUES (p_endpoint, p_tenant, clock_timestamp(), p_reason);
    ELSE
        UPDATE postbox.endpoint_pauses SET resumed_at = clock_timestamp()
         WHERE endpoint_id = p_endpoint AND reason = p_reason AND resumed_at IS NULL;
    END IF;
END
$fn$;

CREATE FUNCTION postbox.update_endpoint(
    tenant text,
    id uuid,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    headers json DEFAULT NULL,
    description text DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    options jsonb DEFAULT NULL,
    envelope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e postbox.endpoints;
BEGIN
    e := postbox._endpoint(update_endpoint.tenant, update_endpoint.id);
    IF update_endpoint.url IS NOT NULL THEN
        e.url := postbox.validate_url(update_endpoint.url);
    END IF;
    IF update_endpoint.event_types IS NOT NULL THEN
        e.event_types := postbox._validate_filters(update_endpoint.event_types, postbox._catalog_names());
    END IF;
    IF update_endpoint.headers IS NOT NULL THEN
        e.headers := postbox._headers(update_endpoint.headers, e.signature_header);
    END IF;
    IF update_endpoint.description IS NOT NULL THEN
        e.description := update_endpoint.description;
    END IF;
    IF update_endpoint.options IS NOT NULL THEN
        e.options := postbox._validate_options(postbox._check_depth('options', update_endpoint.options));
    END IF;
    IF update_endpoint.envelope IS NOT NULL THEN
        e.envelope := postbox._check_envelope(update_endpoint.envelope);
    END IF;
    IF update_endpoint.enabled IS NOT NULL THEN
        IF e.enabled <> update_endpoint.enabled THEN
            PERFORM postbox._pause(e.id, e.tenant, 'admin', NOT update_endpoint.enabled);
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
           options = e.options, envelope = e.envelope, enabled = e.enabled, disabled_at = e.disabled_at,
           disabled_reason = e.disabled_reason, consecutive_failures = e.consecutive_failures,
           failing_since = e.failing_since, updated_at = now()
     WHERE id = e.id;
END
$fn$;

-- delete_endpoint's work, for it and unregister_endpoint.
CREATE FUNCTION postbox._delete_endpoint(p_tenant text, p_id uuid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM postbox._endpoint(p_tenant, p_id);
    DELETE FROM postbox.endpoints WHERE id = p_id;  -- secrets and pauses go with it (cascade)
    UPDATE postbox.outbox
       SET status = 'cancelled', last_error = 'endpoint deleted', lease_until = NULL
     WHERE endpoint_id = p_id AND status = 'pending';
    -- Events not yet expanded are routed to existing endpoints only.
END
$fn$;

CREATE FUNCTION postbox.delete_endpoint(tenant text, id uuid)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT postbox._delete_endpoint(tenant, id) $fn$;

CREATE FUNCTION postbox.rotate_secret(tenant text, id uuid, grace interval DEFAULT '24 hours', own_secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    e        postbox.endpoints;
    v_secret text;
BEGIN
    e := postbox._endpoint(rotate_secret.tenant, rotate_secret.id);
    IF rotate_secret.grace IS NULL OR rotate_secret.grace < interval '0' OR rotate_secret.grace > interval '30 days' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: grace must be between 0 and 30 days: %s', coalesce(rotate_secret.grace::text, 'NULL'));
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

-- The endpoint's configuration as JSON, without secrets, in the form
-- create_endpoint(tenant, config) takes back.
CREATE FUNCTION postbox.endpoint_config(tenant text, id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    e postbox.endpoints;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    SELECT * INTO e FROM postbox.endpoints x WHERE x.id = endpoint_config.id AND x.tenant = endpoint_config.tenant;
    IF NOT FOUND THEN
        PERFORM postbox._no_endpoint(id);
    END IF;
    RETURN jsonb_build_object(
        'url', e.url, 'event_types', to_jsonb(e.event_types), 'headers', e.headers,
        'description', e.description, 'signature_style', e.signature_style,
        'signature_header', e.signature_header, 'options', e.options,
        'enabled', e.enabled, 'envelope', e.envelope);
END
$fn$;

-- Plans: a tenant at limit 0 has no webhooks. Its endpoints are suspended
-- (they behave as paused: events emitted meanwhile are never sent, queued
-- deliveries wait) until the limit is raised or removed.
CREATE FUNCTION postbox.set_tenant_limit(tenant text, max_endpoints integer)
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: max_endpoints must be 0 or more (NULL for no limit): %s', set_tenant_limit.max_endpoints);
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

-------------------------------------------------------------------------------
-- Emitting
-------------------------------------------------------------------------------

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
    v_close := postbox._close_names(p_name, postbox._catalog_names());
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('postbox: unknown event type (%s): %s',
        CASE WHEN cardinality(v_close) > 0 THEN 'did you mean ' || array_to_string(v_close, ', ') || '?'
             ELSE 'create it with postbox.create_event_type first' END,
        coalesce(p_name, 'NULL'));
END
$fn$;

CREATE FUNCTION postbox._check_data(p_data jsonb)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_bytes integer;
BEGIN
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: event data must be a JSON object: %s', coalesce(left(p_data::text, 100), 'NULL'));
    END IF;
    v_bytes := octet_length(p_data::text);
    IF v_bytes > postbox._max_payload_bytes() THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: event data must be at most postbox.max_payload_bytes (%s) bytes: %s bytes',
            postbox._max_payload_bytes(), v_bytes);
    END IF;
END
$fn$;

-- The emit path is the application's hot path: one lookup (the event type
-- and the wake-up flag in a single statement), one lean row in
-- postbox.emitted, and a NOTIFY only while a worker is waiting. Routing
-- happens at expansion, after commit.
CREATE FUNCTION postbox.emit(tenant text, event_type text, data jsonb, idempotency_key text DEFAULT NULL)
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
    IF tenant = '' THEN  -- as every tenant-scoped form (_require_tenant): no endpoint could have it
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: tenant must be a non-empty string: ''''';
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

-- The payload of a row: all its columns, or only p_columns.
CREATE FUNCTION postbox._row_payload(p_row jsonb, p_columns text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN p_columns IS NULL OR cardinality(p_columns) = 0 THEN p_row
                ELSE (SELECT coalesce(jsonb_object_agg(c, p_row -> c), '{}')
                        FROM unnest(p_columns) AS c WHERE p_row ? c) END
$fn$;

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

CREATE FUNCTION postbox._register_resource(p_resource text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_suffix text;
BEGIN
    IF p_resource IS NULL OR p_resource ~ '[.](created|updated|deleted)$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: resource must be a name such as recording: %s',
                             coalesce(postbox._shown(p_resource), 'NULL'));
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: attach needs a table (tbl): %s', coalesce(tbl::text, 'NULL'));
    END IF;
    PERFORM postbox._register_resource(resource);  -- validates the name first
    FOREACH v_col IN ARRAY ARRAY[tenant_column] || coalesce(columns, '{}') LOOP
        IF v_col IS NULL OR NOT EXISTS (SELECT FROM pg_attribute
                       WHERE attrelid = tbl AND attname = v_col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('postbox: %s must name a column of %s: %s',
                                 CASE WHEN v_col IS NOT DISTINCT FROM tenant_column THEN 'tenant_column' ELSE 'columns' END,
                                 tbl, coalesce(postbox._shown(v_col), 'NULL'));
        END IF;
    END LOOP;
    -- A column listed twice would be passed to the triggers twice, for every
    -- row written (ten thousand times, if so listed).
    SELECT c INTO v_col FROM unnest(columns) c GROUP BY c HAVING count(*) > 1 ORDER BY c LIMIT 1;
    IF v_col IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: columns must name each column once: %s', v_col);
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

CREATE FUNCTION postbox.send_test(tenant text, id uuid, event_type text DEFAULT 'webhook.test', data jsonb DEFAULT NULL)
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
    IF e.suspended THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', e.tenant);
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

-------------------------------------------------------------------------------
-- Worker side: expansion and manual retry
-------------------------------------------------------------------------------

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
BEGIN
    IF max_events IS NULL OR max_events < 1 OR max_events > 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: max_events must be between 1 and 1000000: %s', coalesce(max_events::text, 'NULL'));
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
-- n is the row's position in its statement (0 for a single event).
CREATE FUNCTION postbox._emitted_events(p_tenant text, p_data jsonb, p_rows jsonb, p_args text[])
RETURNS TABLE (tenant text, data jsonb, n bigint)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT p_tenant, p_data, 0::bigint WHERE p_rows IS NULL
    UNION ALL
    SELECT r.value ->> p_args[2],
           jsonb_build_object(p_args[1], CASE WHEN cardinality(p_args) > 2
                                              THEN postbox._row_payload(r.value, p_args[3:])
                                              ELSE r.value END),
           r.n
      FROM jsonb_array_elements(p_rows) WITH ORDINALITY r(value, n)
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
        -- emit's event keeps its id; a statement's rows get the statement's
        -- id with their position in it, so ids sort in emit order.
        -- A statement's row whose tenant is too long raises 22023 here, and
        -- expand_events sets its emitted row aside.
        SELECT CASE WHEN b.rows IS NULL THEN b.id ELSE postbox._event_id(b.id, x.n) END AS id,
               CASE WHEN octet_length(x.tenant) <= postbox._max_key_bytes() THEN x.tenant
                    ELSE postbox._too_long('tenant', x.tenant) END AS tenant,
               b.event_type, b.created_at, x.data
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

CREATE FUNCTION postbox._no_delivery(p_id bigint)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('postbox: no failed or cancelled delivery has this id: %s', coalesce(p_id::text, 'NULL'));
END
$fn$;

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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: replay needs since <= until: %s to %s',
                             coalesce(since::text, 'NULL'), coalesce(until::text, 'NULL'));
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: replay max_rows must be between 1 and 10000: %s', coalesce(max_rows::text, 'NULL'));
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'postbox: worker_id must be 1 to 256 bytes';
    END IF;
    IF worker_heartbeat.instance IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: instance must not be NULL';
    END IF;
    IF worker_heartbeat.stale_after IS NULL OR worker_heartbeat.stale_after <= interval '0'
       OR worker_heartbeat.stale_after > interval '1 hour' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: stale_after must be more than 0 and at most 1 hour: %s',
                             coalesce(worker_heartbeat.stale_after::text, 'NULL'));
    END IF;
    SELECT * INTO w FROM postbox.workers x WHERE x.worker_id = worker_heartbeat.worker_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO postbox.workers AS x (worker_id, instance)
        VALUES (worker_heartbeat.worker_id, worker_heartbeat.instance)
        ON CONFLICT ON CONSTRAINT workers_pkey DO NOTHING;
        IF NOT FOUND THEN
            -- Another instance registered this id a moment ago.
            RAISE EXCEPTION USING ERRCODE = '55006',
                MESSAGE = format('postbox: worker_id %s is in use by another running worker: give each worker its own id (POSTBOX_WORKER_ID)',
                                 worker_heartbeat.worker_id);
        END IF;
    ELSIF w.instance <> worker_heartbeat.instance
          AND w.seen_at >= now() - worker_heartbeat.stale_after THEN
        RAISE EXCEPTION USING ERRCODE = '55006',
            MESSAGE = format('postbox: worker_id %s is in use by another running worker (seen %s s ago): give each worker its own id (POSTBOX_WORKER_ID)',
                             worker_heartbeat.worker_id,
                             round(extract(epoch FROM now() - w.seen_at)::numeric, 1));
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

-- A worker stopping cleanly (after giving its claims back) leaves the registry.
CREATE FUNCTION postbox.worker_stopped(worker_id text, instance uuid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF worker_stopped.worker_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: worker_id must not be NULL';
    END IF;
    IF worker_stopped.instance IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: instance must not be NULL';
    END IF;
    DELETE FROM postbox.workers x
     WHERE x.worker_id = worker_stopped.worker_id AND x.instance = worker_stopped.instance;
END
$fn$;

-------------------------------------------------------------------------------
-- Retention
-------------------------------------------------------------------------------

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
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('postbox: %s must be between 1 second and 10 years: %s', v_name, v_value);
        END IF;
    END LOOP;
    IF set_retention.idempotency_keys < interval '24 hours' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: idempotency_keys must be kept at least 24 hours (a retried emit must find its key): %s',
                             set_retention.idempotency_keys);
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: max_rows must be between 1 and 1000000: %s', coalesce(purge.max_rows::text, 'NULL'));
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

-------------------------------------------------------------------------------
-- The HTTP API: keys and idempotent requests (postbox-api)
-------------------------------------------------------------------------------

-- The most active (not revoked) keys a tenant may have: far more than a
-- team's people and tools, and a bound on what one tenant can create.
CREATE FUNCTION postbox._max_api_keys()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 100;
END;

CREATE FUNCTION postbox._no_api_key(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('postbox: no api key has this id: %s', coalesce(p_id::text, 'NULL'));
END
$fn$;

-- Most keys a tenant may have at all, revoked ones (kept for the
-- revoked_api_keys window) included: create-and-revoke loops stop here
-- instead of growing the table without bound.
CREATE FUNCTION postbox._max_api_keys_kept()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 1000;
END;

-- The open portal session p_session of tenant p_tenant, if it may manage
-- API keys; else the error. NULL: no session (a key, or SQL), no check.
CREATE FUNCTION postbox._key_session(p_tenant text, p_session uuid)
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
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE =
            'postbox: this portal session may not manage api keys (the operator allows it when making the session)';
    END IF;
    RETURN s;
END
$fn$;

-- Whether portal session s (NULL: none) may see and manage key k: keys it
-- made, or its user's. The one rule, for lists, rotation and revocation.
CREATE FUNCTION postbox._session_owns_key(s postbox.portal_sessions, k postbox.api_keys)
RETURNS boolean
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    -- Never NULL: a key with no session or user must read as false, not unknown.
    SELECT s.id IS NULL OR coalesce(k.made_by_session = s.id, false)
           OR coalesce(s.user_id IS NOT NULL AND k.for_user = s.user_id, false);
END;

-- Makes an API key and returns it, the only time it is shown. SECURITY
-- DEFINER: it writes api_keys, on which no role has any privilege (it holds
-- the keys' hashes). Tenant keys are admin (read and write the tenant's
-- endpoints) or member (read only); operator keys act for every tenant and
-- take no tenant. With session, the key is made for that portal session
-- (which must be allowed to manage keys) and records it and its user.
CREATE FUNCTION postbox.create_api_key(tenant text, role text, label text, session uuid DEFAULT NULL)
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
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: role must be admin, member or operator: %s', coalesce(postbox._shown(role), 'NULL'));
    END IF;
    IF role = 'operator' AND (tenant IS NOT NULL OR session IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: operator keys act for every tenant and take no tenant or session (pass NULL): %s',
            coalesce(postbox._shown(tenant), session::text));
    END IF;
    IF role <> 'operator' THEN
        PERFORM postbox._require_tenant(tenant);
    END IF;
    IF label IS NULL OR length(label) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: api key label must be 1 to 200 characters: %s', coalesce(postbox._shown(label), 'NULL'));
    END IF;
    s := postbox._key_session(tenant, session);
    -- Serialised per tenant, so concurrent creations cannot pass the limits.
    PERFORM pg_advisory_xact_lock(hashtextextended('postbox.create_api_key ' || coalesce(tenant, ''), 0));
    IF (SELECT count(*) FROM postbox.api_keys k
         WHERE k.tenant IS NOT DISTINCT FROM create_api_key.tenant AND k.revoked_at IS NULL)
       >= postbox._max_api_keys() THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: a tenant has at most %s active api keys (revoke one first): %s',
            postbox._max_api_keys(), coalesce(postbox._shown(tenant), 'operator keys'));
    END IF;
    IF (SELECT count(*) FROM postbox.api_keys k WHERE k.tenant IS NOT DISTINCT FROM create_api_key.tenant)
       >= postbox._max_api_keys_kept() THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: a tenant has at most %s api keys, revoked ones included until the revoked_api_keys window (%s) ends: %s',
            postbox._max_api_keys_kept(), (postbox._retention()).revoked_api_keys,
            coalesce(postbox._shown(tenant), 'operator keys'));
    END IF;
    INSERT INTO postbox.api_keys (id, tenant, role, label, key_hash, key_prefix, made_by_session, for_user)
    VALUES (v_id, tenant, role, label, sha256(convert_to(v_key, 'UTF8')), left(v_key, 12), s.id, s.user_id);
    id := v_id;
    key := v_key;
    RETURN NEXT;
END
$fn$;

-- The key of tenant (NULL: an operator key) with this id, locked; another
-- tenant's id, and a key the session p_session may not manage, get the
-- error of an unknown one.
CREATE FUNCTION postbox._api_key(p_tenant text, p_id uuid, p_session uuid)
RETURNS postbox.api_keys
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k postbox.api_keys;
    s postbox.portal_sessions;
BEGIN
    IF p_tenant IS NOT NULL THEN
        PERFORM postbox._require_tenant(p_tenant);
    END IF;
    s := postbox._key_session(p_tenant, p_session);
    SELECT * INTO k FROM postbox.api_keys x
     WHERE x.id = p_id AND x.tenant IS NOT DISTINCT FROM p_tenant FOR UPDATE;
    IF NOT FOUND OR NOT postbox._session_owns_key(s, k) THEN
        PERFORM postbox._no_api_key(p_id);
    END IF;
    RETURN k;
END
$fn$;

-- Gives a key a new value, returned once; the old one stops working when
-- this commits. With session: only a key that portal session may manage.
-- SECURITY DEFINER: it writes api_keys.
CREATE FUNCTION postbox.rotate_api_key(tenant text, id uuid, session uuid DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    k     postbox.api_keys := postbox._api_key(tenant, id, session);
    v_key text := postbox._generate_api_key();
BEGIN
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: a revoked api key cannot be rotated: %s', id);
    END IF;
    UPDATE postbox.api_keys x
       SET key_hash = sha256(convert_to(v_key, 'UTF8')), key_prefix = left(v_key, 12), rotated_at = now()
     WHERE x.id = k.id;
    RETURN v_key;
END
$fn$;

-- Revokes a key: it stops working when this commits. Revoking a revoked key
-- changes nothing. With session: only a key that portal session may manage.
-- SECURITY DEFINER: it writes api_keys.
CREATE FUNCTION postbox.revoke_api_key(tenant text, id uuid, session uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    k postbox.api_keys := postbox._api_key(tenant, id, session);
BEGIN
    UPDATE postbox.api_keys x SET revoked_at = coalesce(x.revoked_at, now()) WHERE x.id = k.id;
END
$fn$;

-- The HTTP API's keys, without their hashes: who made each (a portal
-- session, for a user) included.
CREATE VIEW postbox.api_key_list AS
SELECT k.id, k.tenant, k.role, k.label, k.key_prefix, k.created_at, k.rotated_at, k.last_used_at, k.revoked_at,
       k.made_by_session, k.for_user
  FROM postbox.api_keys k;

-- A page of the tenant's keys (NULL: operator keys), oldest first, after
-- the key with id `after`; with session, only the keys that portal session
-- may manage. Revoked keys show until the revoked_api_keys window ends.
-- SECURITY DEFINER: it reads api_keys (never the hashes).
CREATE FUNCTION postbox.list_api_keys(tenant text, session uuid DEFAULT NULL, after uuid DEFAULT NULL,
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
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('postbox: max_rows must be between 1 and 1000: %s', coalesce(max_rows::text, 'NULL'));
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

-- Who holds the key whose SHA-256 is key_hash: its id, tenant and role, or
-- no row (unknown or revoked). The caller hashes the key, so the key itself
-- never reaches the server, its statement log or its parameter log. Records
-- the use at most once a minute per key, so most calls write nothing.
-- PL/pgSQL, not SQL: the API calls it on every request, and PL/pgSQL keeps
-- its plans (as an SQL function it was parsed and planned on each call:
-- a quarter of PostgreSQL's CPU under the API's load, measured with perf).
-- SECURITY DEFINER: it reads key_hash, which no role may read, and writes
-- last_used_at.
CREATE FUNCTION postbox.authenticate_api_key(key_hash bytea)
RETURNS TABLE (id uuid, tenant text, role text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k postbox.api_keys;
BEGIN
    SELECT * INTO k FROM postbox.api_keys x
     WHERE x.key_hash = authenticate_api_key.key_hash AND x.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        -- Concurrent callers wait here for one another, re-check, and skip.
        UPDATE postbox.api_keys x SET last_used_at = now()
         WHERE x.id = k.id AND (x.last_used_at IS NULL OR x.last_used_at < now() - interval '1 minute');
    END IF;
    id := k.id;
    tenant := k.tenant;
    role := k.role;
    RETURN NEXT;
END
$fn$;

-- Starts a POST with an Idempotency-Key, in the transaction that will do
-- its work: returns the stored response of the first request with this key
-- from the same credential (the API key's or portal session's id) if there
-- is one, else no row, having claimed the key. Another credential of the
-- tenant never gets that answer (it may hold a new key or secret): its
-- request is its own. A second request with the key waits here until the
-- first commits (then gets its response) or rolls back (then runs). Errors
-- are not stored: a request that failed changed nothing, and may be sent
-- again. SECURITY DEFINER: api_idempotency holds responses with secrets and
-- is granted to no one.
CREATE FUNCTION postbox.api_request_begin(tenant text, credential uuid, idempotency_key text, request_hash bytea)
RETURNS TABLE (status smallint, body text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    r postbox.api_idempotency;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF credential IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: credential must not be NULL';
    END IF;
    IF idempotency_key IS NULL OR idempotency_key !~ '^[\x21-\x7e]{1,255}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: Idempotency-Key must be 1 to 255 visible ASCII characters: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL'));
    END IF;
    IF request_hash IS NULL OR length(request_hash) <> 32 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: request_hash must be a SHA-256 (32 bytes)';
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
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: this Idempotency-Key was used for another request (within %s): %s',
            (postbox._retention()).idempotency_keys, postbox._shown(idempotency_key));
    END IF;
    status := r.status;
    body := r.body;
    RETURN NEXT;
END
$fn$;

-- Stores the response of the request api_request_begin claimed the key for.
-- SECURITY DEFINER: it writes api_idempotency.
CREATE FUNCTION postbox.api_request_end(tenant text, credential uuid, idempotency_key text, status integer, body text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF credential IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: credential must not be NULL';
    END IF;
    IF status IS NULL OR status NOT BETWEEN 200 AND 299 OR body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: only a successful response is stored (status 200 to 299, a body): %s',
            coalesce(status::text, 'NULL'));
    END IF;
    UPDATE postbox.api_idempotency a SET status = api_request_end.status, body = api_request_end.body
     WHERE a.tenant = api_request_end.tenant AND a.credential = api_request_end.credential
       AND a.idempotency_key = api_request_end.idempotency_key AND a.status = 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: no request with this Idempotency-Key is under way: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL'));
    END IF;
END
$fn$;

-- Raises unless p_user_id is NULL or a user id of 1 to 200 characters.
CREATE FUNCTION postbox._check_user_id(p_user_id text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF p_user_id IS NOT NULL AND length(p_user_id) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: user_id must be 1 to 200 characters: %s', postbox._shown(p_user_id));
    END IF;
END
$fn$;

-- Portal links (postbox-api's settings page): a link for one tenant and
-- role, returned once, usable once within valid_for (1 minute to 1 day).
-- manage_keys lets the session make and manage API keys (admin only), and
-- user_id names the product's user it is for (up to 200 characters): such
-- a session manages the keys it made and that user's. SECURITY DEFINER:
-- portal_sessions is granted to no one.
CREATE FUNCTION postbox.create_portal_session(tenant text, role text, valid_for interval DEFAULT '15 minutes',
                                              manage_keys boolean DEFAULT false, user_id text DEFAULT NULL)
RETURNS TABLE (id uuid, token text, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id    uuid := postbox._uuid7();
    v_token text := 'pbp_' || substr(postbox._generate_api_key(), 5);
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF role IS NULL OR role NOT IN ('admin', 'member') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: portal role must be admin or member: %s', coalesce(postbox._shown(role), 'NULL'));
    END IF;
    IF valid_for IS NULL OR valid_for < interval '1 minute' OR valid_for > interval '1 day' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: valid_for must be between 1 minute and 1 day: %s', coalesce(valid_for::text, 'NULL'));
    END IF;
    IF manage_keys IS NULL OR (manage_keys AND role <> 'admin') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: manage_keys must be true or false, and true only for an admin session: %s',
            coalesce(manage_keys::text, 'NULL'));
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

-- Uses a portal link: if the token with this SHA-256 is unused and not
-- expired, the session with the cookie whose SHA-256 is session_hash opens
-- for `lasts` (1 minute to 1 day), and its tenant, role and end are
-- returned; else no row. A link works once. SECURITY DEFINER: it writes
-- portal_sessions.
CREATE FUNCTION postbox.open_portal_session(link_hash bytea, session_hash bytea, lasts interval)
RETURNS TABLE (tenant text, role text, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF open_portal_session.session_hash IS NULL OR length(open_portal_session.session_hash) <> 32 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: session_hash must be a SHA-256 (32 bytes)';
    END IF;
    IF lasts IS NULL OR lasts < interval '1 minute' OR lasts > interval '1 day' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: lasts must be between 1 minute and 1 day: %s', coalesce(lasts::text, 'NULL'));
    END IF;
    RETURN QUERY
    UPDATE postbox.portal_sessions s
       SET session_hash = open_portal_session.session_hash, expires_at = now() + lasts
     WHERE s.link_hash = open_portal_session.link_hash AND s.session_hash IS NULL AND s.link_expires_at > now()
    RETURNING s.tenant, s.role, s.expires_at;
END
$fn$;

-- The open session whose cookie has this SHA-256: its id, tenant, role,
-- end, whether it may manage API keys, and its user; else no row.
-- PL/pgSQL: the portal calls it on every request (plans kept). SECURITY
-- DEFINER: it reads portal_sessions.
CREATE FUNCTION postbox.authenticate_portal_session(session_hash bytea)
RETURNS TABLE (id uuid, tenant text, role text, expires_at timestamptz, manage_keys boolean, user_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY
    SELECT s.id, s.tenant, s.role, s.expires_at, s.manage_keys, s.user_id FROM postbox.portal_sessions s
     WHERE s.session_hash = authenticate_portal_session.session_hash AND s.expires_at > now();
END
$fn$;

-- Ends the tenant's portal sessions and unused links (only user_id's, when
-- given) at once: for a product whose user left the team or lost a device.
-- Returns how many it ended. SECURITY DEFINER: it writes portal_sessions.
CREATE FUNCTION postbox.revoke_portal_sessions(tenant text, user_id text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_n integer;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    PERFORM postbox._check_user_id(user_id);
    UPDATE postbox.portal_sessions s
       SET expires_at = least(s.expires_at, now()), link_expires_at = least(s.link_expires_at, now())
     WHERE s.tenant = revoke_portal_sessions.tenant
       AND (user_id IS NULL OR s.user_id = user_id)
       AND (s.expires_at > now() OR (s.session_hash IS NULL AND s.link_expires_at > now()));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$fn$;

-- Signs out: ends the open session whose cookie has this SHA-256. Returns
-- whether there was one. SECURITY DEFINER: it writes portal_sessions.
CREATE FUNCTION postbox.end_portal_session(session_hash bytea)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE postbox.portal_sessions s SET expires_at = now()
     WHERE s.session_hash = end_portal_session.session_hash AND s.expires_at > now();
    RETURN FOUND;
END
$fn$;

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

-- An endpoint's state, as every view shows it.
CREATE FUNCTION postbox._endpoint_state(p_enabled boolean, p_suspended boolean, p_disabled_at timestamptz,
                                        p_consecutive_failures integer)
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT CASE WHEN p_suspended THEN 'suspended'
                WHEN NOT p_enabled THEN 'paused'
                WHEN p_disabled_at IS NOT NULL THEN 'disabled'
                WHEN p_consecutive_failures > 0 THEN 'failing'
                ELSE 'healthy' END;
END;

CREATE VIEW postbox.endpoint_status AS
SELECT e.id, e.tenant, e.url, e.event_types, e.enabled,
       postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) AS status,
       e.disabled_reason, e.consecutive_failures, e.last_attempt_at, e.last_success_at, e.last_error,
       (SELECT count(*) FROM postbox.outbox d
         WHERE d.endpoint_id = e.id AND d.status = 'pending')
     + (SELECT count(*)  -- emitted, not yet expanded, and routed to e
          FROM postbox.emitted m
         CROSS JOIN LATERAL postbox._emitted_events(m.tenant, m.data, m.rows::jsonb, m.trigger_args) x
         WHERE x.tenant = e.tenant
           AND e.id IN (SELECT r.endpoint_id FROM postbox._routes(x.tenant, m.event_type, m.created_at) r))
       AS pending,
       e.suspended
  FROM postbox.endpoints e;

-- What a settings page's edit form shows: everything but secret material.
CREATE VIEW postbox.endpoint_settings AS
SELECT e.id, e.tenant, e.url, e.event_types, e.headers, e.description, e.options,
       e.signature_style, e.signature_header, e.envelope, e.enabled, e.suspended,
       postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures) AS status,
       e.disabled_at, e.disabled_reason, e.created_at, e.updated_at,
       -- The secrets that sign now, newest first: when each was made and
       -- until when a rotated one still signs. Never the secret itself.
       (SELECT coalesce(jsonb_agg(jsonb_build_object('created_at', s.created_at, 'expires_at', s.expires_at)
                                  ORDER BY s.created_at DESC), '[]')
          FROM postbox.endpoint_secrets s
         WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())) AS secrets
  FROM postbox.endpoints e;

-- Filtered by tenant, each branch reads through an index: pending rows
-- through the tenant's endpoints (endpoints_tenant, outbox_due), failed and
-- cancelled ones through outbox_settled, succeeded ones through
-- attempt_log_endpoint.
CREATE VIEW postbox.deliveries AS
SELECT d.id, d.tenant, d.endpoint_id, d.event_id, v.event_type,
       CASE WHEN d.lease_until > now() THEN 'in_flight'
            WHEN NOT d.is_test AND (NOT e.enabled OR e.suspended) THEN 'held'
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

-- The headers an attempt sent, except the signature: the fixed ones (the
-- User-Agent names the worker's version, which is the extension's: a worker
-- drives only its own version), Standard Webhooks' id and timestamp for the
-- standard style, and the endpoint's custom headers as sent.
CREATE FUNCTION postbox._request_headers(p_style text, p_event_id uuid, p_started_at timestamptz, p_custom jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT jsonb_build_object('content-type', 'application/json',
                              'user-agent', 'postbox/' || (SELECT x.extversion FROM pg_catalog.pg_extension x
                                                            WHERE x.extname = 'postbox'))
        || CASE WHEN p_style = 'standard'
                THEN jsonb_build_object('webhook-id', p_event_id::text,
                                        'webhook-timestamp', floor(extract(epoch FROM p_started_at))::bigint::text)
                ELSE '{}' END
        || coalesce(p_custom, '{}');
END;

-- The delivery log. Filtered by tenant (and endpoint, and time) it reads
-- through attempt_log_endpoint.
CREATE VIEW postbox.attempts AS
SELECT a.delivery_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.tenant, a.event_id, a.outcome,
       v.event_type, v.data,
       postbox._request_headers(e.signature_style, a.event_id, a.started_at, a.request_headers) AS request_headers,
       a.is_test
  FROM postbox.attempt_log a
  LEFT JOIN postbox.events v ON v.id = a.event_id
  LEFT JOIN postbox.endpoints e ON e.id = a.endpoint_id;

-- Success and failure counts per endpoint over the last hour, day and week,
-- from attempts (test sends left out; a retry that failed counts as a
-- failure). Each endpoint's week is an index-only range scan of
-- attempt_log_endpoint, never a scan of the log.
CREATE VIEW postbox.endpoint_stats AS
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
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed') AND a.started_at > now() - interval '1 hour') AS failed_1h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded' AND a.started_at > now() - interval '24 hours') AS succeeded_24h,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed') AND a.started_at > now() - interval '24 hours') AS failed_24h,
                      count(*) FILTER (WHERE a.outcome = 'succeeded') AS succeeded_7d,
                      count(*) FILTER (WHERE a.outcome IN ('retrying', 'failed')) AS failed_7d
                 FROM postbox.attempt_log a
                WHERE a.tenant = e.tenant AND a.endpoint_id = e.id
                  AND a.started_at > now() - interval '7 days' AND NOT a.is_test) w) s;


-------------------------------------------------------------------------------
-- pg_dump keeps the configuration (and so, for a superuser, the secrets)
-------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('postbox.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('postbox.endpoint_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('postbox.tenant_limits', '');
SELECT pg_catalog.pg_extension_config_dump('postbox.endpoint_pauses', '');
SELECT pg_catalog.pg_extension_config_dump('postbox.event_types', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('postbox.retention', '');
SELECT pg_catalog.pg_extension_config_dump('postbox.api_keys', '');

-------------------------------------------------------------------------------
-- Comments on every object (a pg_test checks none is missing)
-------------------------------------------------------------------------------

COMMENT ON SCHEMA postbox IS 'postbox: signed webhooks straight out of PostgreSQL.';
COMMENT ON TABLE postbox.event_types IS 'The event catalog: names endpoints can subscribe to and emit can send.';
COMMENT ON TABLE postbox.tenant_limits IS 'Per-tenant endpoint limits; a tenant without a row has no limit, 0 means no webhooks.';
COMMENT ON TABLE postbox.endpoints IS 'Webhook endpoints: configuration and health. Secrets live in endpoint_secrets.';
COMMENT ON TABLE postbox.endpoint_secrets IS 'Signing secrets; only postbox_worker can read them. Rotated ones keep expires_at until their grace ends.';
COMMENT ON TABLE postbox.events IS 'Events, written by the worker when it expands postbox.emitted; deliveries point here.';
COMMENT ON TABLE postbox.emitted_rejects IS 'Emitted rows expansion could not turn into events, with the reason; nothing of them was sent.';
COMMENT ON TABLE postbox.emitted IS 'The emit buffer: what emit and the triggers wrote, not yet turned into events and outbox rows.';
COMMENT ON TABLE postbox.endpoint_pauses IS 'When each endpoint was paused and resumed: events emitted meanwhile never go to it.';
COMMENT ON TABLE postbox.idempotency_keys IS 'Idempotency keys of emit, per tenant: a repeated key returns the first event''s id.';
COMMENT ON TABLE postbox.outbox IS 'Deliveries not yet succeeded: pending (claimed with a lease), failed or cancelled. Succeeded ones move to attempt_log.';
COMMENT ON TABLE postbox.attempt_log IS 'Append-only log of delivery attempts.';
COMMENT ON TABLE postbox.retention IS 'How long postbox keeps attempts, events, cancelled deliveries, idempotency keys, pause history and revoked API keys it no longer needs; postbox.purge deletes what is older. Empty until set_retention or the first purge writes the defaults.';
COMMENT ON FUNCTION postbox.set_retention(interval, interval, interval, interval, interval, interval) IS 'Sets the retention windows (NULL leaves one as it is); idempotency keys are kept at least 24 hours.';
COMMENT ON FUNCTION postbox.worker_heartbeat(text, uuid, interval) IS 'A worker''s heartbeat: refreshes its row and releases the claims of workers not seen for stale_after (or of its own previous instance, once that is stale). Returns how many. Another instance of the worker_id seen within stale_after is refused (SQLSTATE 55006).';
COMMENT ON FUNCTION postbox.worker_stopped(text, uuid) IS 'A worker that stopped cleanly leaves the registry.';
COMMENT ON FUNCTION postbox.purge(integer) IS 'Deletes what outlived its retention window, at most max_rows of each kind, skipping rows other purges hold; never pending or failed deliveries or the events they need. The worker runs it on a schedule.';
COMMENT ON FUNCTION postbox._retention() IS 'Internal: the retention windows, the table''s defaults written the first time.';
COMMENT ON FUNCTION postbox._uuid7_floor(timestamptz) IS 'Internal: the smallest version 7 UUID of a moment''s millisecond, for age ranges of time-ordered ids.';
COMMENT ON TABLE postbox.wakeup IS 'One-row wake-up flag: emit NOTIFYs only while a worker says it is waiting.';
COMMENT ON TABLE postbox.api_keys IS 'HTTP API keys (postbox-api): each key''s SHA-256, tenant (none for operator keys), role, label and use; granted to no one.';
COMMENT ON TABLE postbox.api_idempotency IS 'The HTTP API''s first response to each POST with an Idempotency-Key, per tenant, for the idempotency_keys window; holds secrets, granted to no one.';
COMMENT ON VIEW postbox.api_key_list IS 'The HTTP API''s keys without their hashes: tenant, role, label, the first characters, when made, rotated, last used and revoked, and the portal session (and its user) that made it.';
COMMENT ON FUNCTION postbox.create_api_key(text, text, text, uuid) IS 'Makes an HTTP API key (admin or member of a tenant, or operator with tenant NULL) and returns it, the only time it is shown; with session, for that portal session (allowed to manage keys), which it records with its user.';
COMMENT ON FUNCTION postbox.rotate_api_key(text, uuid, uuid) IS 'Gives an HTTP API key (tenant NULL: an operator key) a new value, returned once; the old one stops working at commit. With session, only a key that portal session may manage.';
COMMENT ON FUNCTION postbox.revoke_api_key(text, uuid, uuid) IS 'Revokes an HTTP API key (tenant NULL: an operator key); it stops working at commit. With session, only a key that portal session may manage.';
COMMENT ON FUNCTION postbox.list_api_keys(text, uuid, uuid, integer) IS 'A page of a tenant''s HTTP API keys (tenant NULL: operator keys) after a key id, oldest first, without hashes; with session, only the keys that portal session may manage.';
COMMENT ON FUNCTION postbox.revoke_portal_sessions(text, text) IS 'Ends a tenant''s open portal sessions and unused links (only one user''s, when given) at once; returns how many.';
COMMENT ON FUNCTION postbox.end_portal_session(bytea) IS 'postbox-api: signs out the open portal session whose cookie has this SHA-256; returns whether there was one.';
COMMENT ON FUNCTION postbox._max_api_keys_kept() IS 'Internal: the most API keys per tenant, revoked ones kept for their window included (inlined).';
COMMENT ON FUNCTION postbox._check_user_id(text) IS 'Internal: raises unless a portal user id is NULL or 1 to 200 characters.';
COMMENT ON FUNCTION postbox._key_session(text, uuid) IS 'Internal: the open portal session of a tenant if it may manage API keys, else the error; NULL for no session.';
COMMENT ON FUNCTION postbox._session_owns_key(postbox.portal_sessions, postbox.api_keys) IS 'Internal: whether a portal session (NULL: none) may see and manage an API key: the keys it made, or its user''s.';
COMMENT ON FUNCTION postbox.authenticate_api_key(bytea) IS 'postbox-api: the id, tenant and role of the live key with this SHA-256, if any; records its use at most once a minute.';
COMMENT ON FUNCTION postbox.api_request_begin(text, uuid, text, bytea) IS 'postbox-api: the stored response of the first POST with this Idempotency-Key from the same credential (same request required), or claims the key.';
COMMENT ON FUNCTION postbox.api_request_end(text, uuid, text, integer, text) IS 'postbox-api: stores the response of the request that claimed the Idempotency-Key.';
COMMENT ON TABLE postbox.portal_sessions IS 'Settings portal links and sessions (postbox-api): SHA-256 of the one-time link token and of the session cookie, tenant, role, ends; granted to no one.';
COMMENT ON FUNCTION postbox.create_portal_session(text, text, interval, boolean, text) IS 'Makes a one-time settings portal link token for a tenant (admin or member), valid for 1 minute to 1 day, optionally allowed to manage API keys and for a named user; returned once.';
COMMENT ON FUNCTION postbox.open_portal_session(bytea, bytea, interval) IS 'postbox-api: uses a portal link (once, before it expires) and opens the session whose cookie has the given SHA-256.';
COMMENT ON FUNCTION postbox.authenticate_portal_session(bytea) IS 'postbox-api: the id, tenant, role, end, key permission and user of the open portal session whose cookie has this SHA-256, if any.';
COMMENT ON FUNCTION postbox._max_api_keys() IS 'Internal: the most active API keys per tenant (inlined).';
COMMENT ON FUNCTION postbox._no_api_key(uuid) IS 'Internal: raises the unknown-api-key error.';
COMMENT ON FUNCTION postbox._api_key(text, uuid, uuid) IS 'Internal: an API key of a tenant (NULL: operator), locked, or the unknown-key error (also for another tenant''s id, or a key the portal session may not manage).';
COMMENT ON FUNCTION postbox._generate_api_key() IS 'Internal: a new pbk_ API key from the OS CSPRNG.';
COMMENT ON TABLE postbox.workers IS 'Workers alive: each refreshes its row every second; one not seen for a few seconds is dead, and its claims are released.';
COMMENT ON VIEW postbox.endpoint_status IS 'One row per endpoint: healthy, failing, disabled (automatic) or paused (enabled = false), and its pending deliveries.';
COMMENT ON VIEW postbox.deliveries IS 'Every delivery with its status: pending, in_flight, held, succeeded, failed or cancelled.';
COMMENT ON VIEW postbox.attempts IS 'The delivery log: every attempt with its event (type, id, data), the headers it sent but the signature, the status code, the first 4 KiB of the response, the error and the duration.';
COMMENT ON VIEW postbox.endpoint_settings IS 'Every endpoint''s configuration and state, for an edit form: everything but secret material (each signing secret''s creation and expiry only).';
COMMENT ON VIEW postbox.endpoint_stats IS 'Per endpoint: succeeded and failed attempts and the success rate over the last 1 hour, 24 hours and 7 days (test sends left out).';

COMMENT ON FUNCTION postbox.create_event_type(text, text, jsonb, jsonb) IS 'Adds an event type to the catalog, or updates its description, schema and example payload.';
COMMENT ON FUNCTION postbox.create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Registers a webhook endpoint for a tenant and returns its id and signing secret (shown only here).';
COMMENT ON FUNCTION postbox.create_endpoint(text, jsonb) IS 'Registers a webhook endpoint from a configuration as endpoint_config returns it; returns its id and new secret.';
COMMENT ON FUNCTION postbox.register_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Creates the tenant''s endpoint for a URL, or sets the event types of the one it has; returns its id, whether it was created, and the secret only if it was (else NULL: rotate to get a new one).';
COMMENT ON FUNCTION postbox.unregister_endpoint(text, text) IS 'Deletes the tenant''s endpoints with this URL, as delete_endpoint does; returns how many.';
COMMENT ON FUNCTION postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text) IS 'Changes one of the tenant''s endpoints; NULL leaves a field as it is. enabled => false pauses it, true resumes it.';
COMMENT ON FUNCTION postbox.delete_endpoint(text, uuid) IS 'Removes one of the tenant''s endpoints and its secrets, and cancels its pending deliveries; its attempt log stays.';
COMMENT ON FUNCTION postbox.rotate_secret(text, uuid, interval, text) IS 'Gives one of the tenant''s endpoints a new secret, returned once; older ones keep signing until the grace period ends.';
COMMENT ON FUNCTION postbox.endpoint_config(text, uuid) IS 'One of the tenant''s endpoints as JSON, without secrets, in the form create_endpoint(tenant, config) takes.';
COMMENT ON FUNCTION postbox.set_tenant_limit(text, integer) IS 'Sets how many endpoints a tenant may have (NULL: no limit). 0 means no webhooks: its endpoints are suspended until the limit is raised.';
COMMENT ON FUNCTION postbox.emit(text, text, jsonb, text) IS 'Records an event in the caller''s transaction; its webhooks go out if and only if the transaction commits.';
COMMENT ON FUNCTION postbox.emit_statement() IS 'Statement trigger (Rust) for INSERT and DELETE with a transition table: emit_statement(resource, tenant_column [, column ...]); attach creates it.';
COMMENT ON FUNCTION postbox.emit_row_change() IS 'Row trigger (Rust) for AFTER INSERT, UPDATE or DELETE: emit_row_change(resource, tenant_column [, column ...]) emits <resource>.created/updated/deleted; attach uses it for UPDATE.';
COMMENT ON FUNCTION postbox._emit_row(oid, text, json, json, text[]) IS 'Internal: the row trigger''s write, run as the owner over already-encoded rows; granted to no one.';
COMMENT ON FUNCTION postbox.attach(regclass, text, text, text[]) IS 'Creates the emit triggers on a table and registers its three event types. Idempotent.';
COMMENT ON FUNCTION postbox.send_test(text, uuid, text, jsonb) IS 'Queues one test delivery to one of the tenant''s endpoints, even while paused, whatever its filter; without data, the event type''s example.';
COMMENT ON FUNCTION postbox.expand_events(integer) IS 'Worker: turns committed emitted rows into events and routed outbox rows, oldest first; sets aside rows it cannot expand; returns how many events.';
COMMENT ON FUNCTION postbox._expand(tid[]) IS 'Internal: expand_events'' work for the emitted rows it locked.';
COMMENT ON FUNCTION postbox.retry_delivery(text, bigint) IS 'Queues one of the tenant''s failed or cancelled deliveries again with a fresh schedule; earlier attempts stay logged.';
COMMENT ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer) IS 'Queues again, each with a fresh schedule, up to max_rows failed and cancelled deliveries of one of the tenant''s endpoints queued in [since, until), oldest first; returns how many, and whether more remain (repeat the call until more is false).';
COMMENT ON FUNCTION postbox.validate_url(text) IS 'Returns the normalized webhook URL, or raises 22023 naming the broken rule.';
COMMENT ON FUNCTION postbox.validate_headers(jsonb, text) IS 'Returns the custom headers if all are allowed, or raises 22023 naming the broken rule.';
COMMENT ON FUNCTION postbox._check_tenant_limit(text) IS 'Internal: raises unless the tenant may have one more endpoint.';
COMMENT ON FUNCTION postbox._require_tenant(text) IS 'Internal: raises unless the tenant is a non-empty string of at most _max_key_bytes.';
COMMENT ON FUNCTION postbox._max_key_bytes() IS 'Internal: the longest tenant and idempotency key, in bytes (inlined).';
COMMENT ON FUNCTION postbox._too_long(text, text) IS 'Internal: raises the too-long error for a tenant or key.';
COMMENT ON FUNCTION postbox._headers(json, text) IS 'Internal: custom headers read as json, refusing a name given twice, then the header rules.';
COMMENT ON FUNCTION postbox._shown(text) IS 'Internal: a value as error messages show it, cut to its start and size if long.';
COMMENT ON FUNCTION postbox._validate_headers(jsonb, text) IS 'Internal: the header rules, for validate_headers once the depth is checked.';
COMMENT ON FUNCTION postbox._check_depth(text, jsonb) IS 'Internal: refuses JSON nested too deep for the Rust checks to decode.';
COMMENT ON FUNCTION postbox._check_envelope(text) IS 'Internal: raises unless the envelope is postbox, standard or flat.';
COMMENT ON FUNCTION postbox._create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Internal: the one create path behind create_endpoint (both forms) and register_endpoint.';
COMMENT ON FUNCTION postbox._config_keys() IS 'Internal: the keys of an endpoint configuration (endpoint_config, create_endpoint).';
COMMENT ON FUNCTION postbox._endpoint(text, uuid) IS 'Internal: an endpoint of a tenant, locked, or the unknown-endpoint error (also for another tenant''s id).';
COMMENT ON FUNCTION postbox._pause(uuid, text, text, boolean) IS 'Internal: starts or ends a pause (admin or plan) in the pause history.';
COMMENT ON FUNCTION postbox._delete_endpoint(text, uuid) IS 'Internal: delete_endpoint''s work, for it and unregister_endpoint.';
COMMENT ON FUNCTION postbox._no_delivery(bigint) IS 'Internal: raises the unknown-delivery error.';
COMMENT ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) IS 'Internal: an endpoint''s state as the views show it (inlined).';
COMMENT ON FUNCTION postbox._request_headers(text, uuid, timestamptz, jsonb) IS 'Internal: the headers an attempt sent, except the signature (inlined).';
COMMENT ON FUNCTION postbox._event_id(uuid, bigint) IS 'Internal: the id of a statement''s nth event, from the statement''s emitted id, so ids sort in emit order.';
COMMENT ON FUNCTION postbox._catalog_names() IS 'Internal: every event type name, for validation messages.';
COMMENT ON FUNCTION postbox._no_endpoint(uuid) IS 'Internal: raises the unknown-endpoint error.';
COMMENT ON FUNCTION postbox._unknown_event_type(text) IS 'Internal: raises the unknown-event-type error with the closest names.';
COMMENT ON FUNCTION postbox._check_data(jsonb) IS 'Internal: raises unless event data is an object within postbox.max_payload_bytes.';
COMMENT ON FUNCTION postbox._row_payload(jsonb, text[]) IS 'Internal: a row as JSON, limited to the given columns.';
COMMENT ON FUNCTION postbox._routes(text, text, timestamptz) IS 'Internal: the routing rule, the endpoints an event emitted at a time goes to (inlined).';
COMMENT ON FUNCTION postbox._emitted_events(text, jsonb, jsonb, text[]) IS 'Internal: the events an emitted row holds, with tenant and data (inlined).';
COMMENT ON FUNCTION postbox._register_resource(text) IS 'Internal: registers <resource>.created/updated/deleted for attach.';
COMMENT ON FUNCTION postbox._validate_signature(text, text) IS 'Internal: checks a signature style and returns its header.';
COMMENT ON FUNCTION postbox._event_match_keys(text) IS 'Internal: validates an event name and returns every filter that matches it.';
COMMENT ON FUNCTION postbox._validate_filters(text[], text[]) IS 'Internal: validates an endpoint''s event_types against the catalog.';
COMMENT ON FUNCTION postbox._close_names(text, text[]) IS 'Internal: catalog names close to an unknown one.';
COMMENT ON FUNCTION postbox._validate_options(jsonb) IS 'Internal: validates per-endpoint delivery options.';
COMMENT ON FUNCTION postbox._generate_secret() IS 'Internal: a new whsec_ secret from the OS CSPRNG.';
COMMENT ON FUNCTION postbox._validate_secret(text, text) IS 'Internal: checks a caller-supplied secret for a signature style without echoing it.';
COMMENT ON FUNCTION postbox._uuid7() IS 'Internal: a time-ordered (version 7) UUID.';
COMMENT ON FUNCTION postbox._max_payload_bytes() IS 'Internal: the current postbox.max_payload_bytes.';
COMMENT ON FUNCTION postbox._wake() IS 'Internal: NOTIFYs postbox_wakeup if a worker waits (paths that are not hot).';

-------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC, then each role what it needs
-------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
GRANT USAGE ON SCHEMA postbox TO postbox_emitter, postbox_admin, postbox_worker;

GRANT EXECUTE ON FUNCTION postbox.emit(text, text, jsonb, text),
                          postbox.emit_row_change(),
                          postbox.emit_statement(),
                          postbox.attach(regclass, text, text, text[]),
                          postbox._register_resource(text),
                          postbox._shown(text)  -- attach's messages, as the caller
   TO postbox_emitter;
GRANT SELECT ON postbox.event_types TO postbox_emitter;

GRANT EXECUTE ON FUNCTION postbox.create_event_type(text, text, jsonb, jsonb),
                          postbox.create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text),
                          postbox.create_endpoint(text, jsonb),
                          postbox.register_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text),
                          postbox.unregister_endpoint(text, text),
                          postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text),
                          postbox.delete_endpoint(text, uuid),
                          postbox.rotate_secret(text, uuid, interval, text),
                          postbox.endpoint_config(text, uuid),
                          postbox.set_tenant_limit(text, integer),
                          postbox.send_test(text, uuid, text, jsonb),
                          postbox.retry_delivery(text, bigint),
                          postbox.replay(text, uuid, timestamptz, timestamptz, integer),
                          postbox.set_retention(interval, interval, interval, interval, interval, interval),
                          postbox.purge(integer),
                          postbox.validate_url(text),
                          postbox.validate_headers(jsonb, text),
                          -- what validate_headers inlines, run as the caller
                          postbox._check_depth(text, jsonb), postbox._validate_headers(jsonb, text),
                          -- the HTTP API's keys and idempotent requests (postbox-api connects as
                          -- a role granted postbox_admin)
                          postbox.create_api_key(text, text, text, uuid), postbox.rotate_api_key(text, uuid, uuid),
                          postbox.revoke_api_key(text, uuid, uuid), postbox.authenticate_api_key(bytea),
                          postbox.list_api_keys(text, uuid, uuid, integer),
                          postbox.api_request_begin(text, uuid, text, bytea),
                          postbox.api_request_end(text, uuid, text, integer, text),
                          postbox.create_portal_session(text, text, interval, boolean, text),
                          postbox.open_portal_session(bytea, bytea, interval),
                          postbox.authenticate_portal_session(bytea),
                          postbox.revoke_portal_sessions(text, text),
                          postbox.end_portal_session(bytea)
   TO postbox_admin;
GRANT SELECT ON postbox.event_types, postbox.tenant_limits, postbox.retention, postbox.workers, postbox.endpoint_status,
                postbox.endpoint_settings, postbox.endpoint_stats,
                postbox.deliveries, postbox.attempts, postbox.emitted_rejects, postbox.api_key_list
   TO postbox_admin;
-- endpoint_status.pending inlines the routing rule (_routes, _emitted_events),
-- and an inlined function's tables are read with the caller's rights: the
-- columns routing reads, none of them secret.
GRANT EXECUTE ON FUNCTION postbox._routes(text, text, timestamptz),
                          postbox._emitted_events(text, jsonb, jsonb, text[]),
                          postbox._row_payload(jsonb, text[]),
                          postbox._endpoint_state(boolean, boolean, timestamptz, integer),
                          postbox._request_headers(text, uuid, timestamptz, jsonb)
   TO postbox_admin;
GRANT SELECT (id, tenant, event_types, created_at, disabled_at) ON postbox.endpoints TO postbox_admin;
GRANT SELECT ON postbox.endpoint_pauses TO postbox_admin;

-- Exactly what the worker's statements use (worker/src): expansion, the
-- claim (outbox, events, endpoints, secrets), acknowledgements (outbox,
-- attempt_log, endpoint health), metrics (emitted), the wake-up flag, purging and
-- the workers' heartbeats.
GRANT EXECUTE ON FUNCTION postbox.expand_events(integer), postbox.purge(integer),
                          postbox.worker_heartbeat(text, uuid, interval), postbox.worker_stopped(text, uuid)
   TO postbox_worker;
GRANT SELECT ON postbox.endpoints, postbox.endpoint_secrets, postbox.events, postbox.emitted
   TO postbox_worker;
GRANT SELECT, UPDATE, DELETE ON postbox.outbox TO postbox_worker;
GRANT INSERT ON postbox.attempt_log TO postbox_worker;
GRANT UPDATE (disabled_at, disabled_reason, consecutive_failures, failing_since,
              last_attempt_at, last_success_at, last_error, updated_at)
   ON postbox.endpoints TO postbox_worker;
GRANT SELECT, INSERT, UPDATE ON postbox.wakeup TO postbox_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON postbox.workers TO postbox_worker;
