-- postbox: endpoints, and the tenant checks every tenant-scoped function
-- starts with. Loaded after schema.sql and the Rust functions (see
-- extension/src/lib.rs for the order of the sql/ files).
--
-- Every function that writes is SECURITY DEFINER with a pinned search_path:
-- the three roles get EXECUTE on what they may do (granted beside each
-- function) and no direct access to the tables, except the worker, which
-- reads and writes the outbox itself (grants in schema.sql).
-- Bad input raises SQLSTATE 22023 with a message naming the rule and value.

-- The defaults of what callers may leave out, or pass NULL for: written
-- here only. The functions that take them apply them (coalesce), and the
-- HTTP API's /v1/choices shows them, so the page can name them without
-- restating them.
CREATE FUNCTION postbox.defaults(OUT signature_style text, OUT rotation_grace interval,
                                 OUT portal_link_lifetime interval, OUT test_event_type text)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 'standard', interval '24 hours', interval '15 minutes', 'webhook.test';
END;
COMMENT ON FUNCTION postbox.defaults() IS 'The defaults of what callers may leave out or pass NULL for: an endpoint''s signature style, a rotation''s grace period, a portal link''s lifetime, the test event type.';
GRANT EXECUTE ON FUNCTION postbox.defaults() TO postbox_admin;

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
COMMENT ON FUNCTION postbox._max_key_bytes() IS 'Internal: the longest tenant and idempotency key, in bytes (inlined).';

-- Raises the too-long error for a tenant or key (a value as long as that is
-- shown only in part); returns nothing.
CREATE FUNCTION postbox._too_long(p_what text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    PERFORM postbox._raise('length_out_of_range', p_what, format('postbox: %s must be at most %s bytes: %s... (%s bytes)',
        p_what, postbox._max_key_bytes(), left(p_value, 40), octet_length(p_value)));
END
$fn$;
COMMENT ON FUNCTION postbox._too_long(text, text) IS 'Internal: raises the too-long error for a tenant or key.';

-- Raises unless p_tenant is a tenant name (every tenant-scoped form checks it first).
CREATE FUNCTION postbox._require_tenant(p_tenant text)
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
COMMENT ON FUNCTION postbox._require_tenant(text) IS 'Internal: raises unless the tenant is a non-empty string of at most _max_key_bytes.';

-- Raises tenant_suspended: the one error for everything a tenant whose plan
-- has no webhooks (its endpoint limit is 0) is refused.
CREATE FUNCTION postbox._suspended(p_tenant text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM postbox._raise('tenant_suspended', NULL,
        format('postbox: webhooks are not available to this tenant (its endpoint limit is 0): %s', p_tenant));
END
$fn$;
COMMENT ON FUNCTION postbox._suspended(text) IS 'Internal: raises tenant_suspended for a tenant whose plan has no webhooks.';

-- Keys follow the plan: raises tenant_suspended if the tenant's endpoint
-- limit is 0 (create_api_key, rotate_api_key, authenticate_api_key). NULL
-- (an operator key's) belongs to no tenant: nothing.
CREATE FUNCTION postbox._refuse_suspended(p_tenant text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT FROM postbox.tenant_limits l WHERE l.tenant = p_tenant AND l.max_endpoints = 0) THEN
        PERFORM postbox._suspended(p_tenant);
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._refuse_suspended(text) IS 'Internal: raises tenant_suspended if the tenant''s endpoint limit is 0 (its plan has no webhooks); nothing for NULL.';

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
        PERFORM postbox._suspended(p_tenant);
    END IF;
    SELECT count(*) INTO v_count FROM postbox.endpoints WHERE tenant = p_tenant;
    IF v_count >= v_max THEN
        PERFORM postbox._raise('tenant_endpoint_limit', NULL,
            format('postbox: tenant may have at most %s endpoints: %s', v_max, p_tenant));
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox._check_tenant_limit(text) IS 'Internal: raises unless the tenant may have one more endpoint.';

CREATE FUNCTION postbox._catalog_names()
RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM postbox.event_types $fn$;
COMMENT ON FUNCTION postbox._catalog_names() IS 'Internal: every event type name, for validation messages.';

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
COMMENT ON FUNCTION postbox._headers(json, text) IS 'Internal: custom headers read as json, refusing a name given twice, then the header rules.';

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
        PERFORM postbox._raise('json_too_deep', p_what,
            format('postbox: %s must nest fewer than 32 levels deep', p_what));
    END IF;
    RETURN p_value;
END
$fn$;
COMMENT ON FUNCTION postbox._check_depth(text, jsonb) IS 'Internal: refuses JSON nested too deep for the Rust checks to decode.';
-- what validate_headers inlines, run as the caller
GRANT EXECUTE ON FUNCTION postbox._check_depth(text, jsonb) TO postbox_admin;

-- The public check of custom headers: the depth first (see _check_depth),
-- then the rules (Rust, _validate_headers). A SQL-standard body.
CREATE FUNCTION postbox.validate_headers(headers jsonb, signature_header text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN postbox._validate_headers(postbox._check_depth('headers', validate_headers.headers),
                                 validate_headers.signature_header);
COMMENT ON FUNCTION postbox.validate_headers(jsonb, text) IS 'Returns the custom headers if all are allowed, or raises 22023 naming the broken rule.';
GRANT EXECUTE ON FUNCTION postbox.validate_headers(jsonb, text) TO postbox_admin;

CREATE FUNCTION postbox._check_envelope(p_envelope text)
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
COMMENT ON FUNCTION postbox._check_envelope(text) IS 'Internal: raises unless the envelope is postbox, standard or flat.';

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
    PERFORM postbox._operator_events('postbox.endpoint.created', ARRAY[postbox._notice(p_tenant, v_id, v_url, 'created')]);
    id := v_id;
    secret := v_secret;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION postbox._create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Internal: the one create path behind create_endpoint (both forms) and register_endpoint.';

CREATE FUNCTION postbox.create_endpoint(
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
COMMENT ON FUNCTION postbox.create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Registers a webhook endpoint for a tenant and returns its id and signing secret (shown only here).';
GRANT EXECUTE ON FUNCTION postbox.create_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) TO postbox_admin;

-- The keys endpoint_config returns, and this form of create_endpoint takes.
CREATE FUNCTION postbox._config_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $fn$ SELECT ARRAY['url', 'event_types', 'headers', 'description', 'signature_style',
                     'signature_header', 'options', 'enabled', 'envelope'] $fn$;
COMMENT ON FUNCTION postbox._config_keys() IS 'Internal: the keys of an endpoint configuration (endpoint_config, create_endpoint).';

CREATE FUNCTION postbox.create_endpoint(tenant text, config jsonb)
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
COMMENT ON FUNCTION postbox.create_endpoint(text, jsonb) IS 'Registers a webhook endpoint from a configuration as endpoint_config returns it; returns its id and new secret.';
GRANT EXECUTE ON FUNCTION postbox.create_endpoint(text, jsonb) TO postbox_admin;

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
    v_url     text;
    v_id      uuid;
    v_filters text[];
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
        v_filters := postbox._validate_filters(event_types, postbox._catalog_names());
        UPDATE postbox.endpoints e
           SET event_types = v_filters, updated_at = now()
         WHERE e.id = v_id AND e.event_types IS DISTINCT FROM v_filters;
        IF FOUND THEN
            PERFORM postbox._operator_events('postbox.endpoint.updated',
                ARRAY[postbox._notice(tenant, v_id, v_url, 'changed: event_types')]);
        END IF;
    END IF;
    RETURN QUERY SELECT v_id, NULL::text, false;
END
$fn$;
COMMENT ON FUNCTION postbox.register_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Creates the tenant''s endpoint for a URL, or sets the event types of the one it has; returns its id, whether it was created, and the secret only if it was (else NULL: rotate to get a new one).';
GRANT EXECUTE ON FUNCTION postbox.register_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) TO postbox_admin;

CREATE FUNCTION postbox._no_endpoint(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('endpoint_not_found', 'id',
        format('postbox: no endpoint has this id: %s', coalesce(p_id::text, 'NULL')));
END
$fn$;
COMMENT ON FUNCTION postbox._no_endpoint(uuid) IS 'Internal: raises the unknown-endpoint error.';

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
COMMENT ON FUNCTION postbox._endpoint(text, uuid) IS 'Internal: an endpoint of a tenant, locked, or the unknown-endpoint error (also for another tenant''s id).';

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
COMMENT ON FUNCTION postbox.unregister_endpoint(text, text) IS 'Deletes the tenant''s endpoints with this URL, as delete_endpoint does; returns how many.';
GRANT EXECUTE ON FUNCTION postbox.unregister_endpoint(text, text) TO postbox_admin;

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
COMMENT ON FUNCTION postbox._pause(uuid, text, text, boolean) IS 'Internal: starts or ends a pause (admin or plan) in the pause history.';

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
    v_was postbox.endpoints;
    v_was_keyed boolean;
    v_changes text[];
    v_from text;
    v_to text;
    v_reason text;
BEGIN
    e := postbox._endpoint(update_endpoint.tenant, update_endpoint.id);
    v_was := e;
    v_was_keyed := postbox._ordered(e.options) OR postbox._coalesces(e.options);
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
            e.resumed_at := now();
        END IF;
    END IF;
    -- Turning ordering or coalescing on: the deliveries already queued for
    -- the endpoint take their events' keys now. The expansion lock waits
    -- for an expansion that read the old options, and keeps the next one
    -- until this commits, so no delivery is queued without its key.
    IF (postbox._ordered(e.options) OR postbox._coalesces(e.options)) AND NOT v_was_keyed THEN
        PERFORM pg_advisory_xact_lock(postbox._expansion_lock());
        UPDATE postbox.outbox d
           SET ordering_key = postbox._ordering_hash(v.ordering_key)
          FROM postbox.events v
         WHERE d.endpoint_id = e.id AND d.ordering_key IS NULL AND NOT d.is_test AND v.id = d.event_id;
    END IF;
    UPDATE postbox.endpoints
       SET url = e.url, event_types = e.event_types, headers = e.headers, description = e.description,
           options = e.options, envelope = e.envelope, enabled = e.enabled, disabled_at = e.disabled_at,
           disabled_reason = e.disabled_reason, consecutive_failures = e.consecutive_failures,
           failing_since = e.failing_since, resumed_at = e.resumed_at, updated_at = now()
     WHERE id = e.id;
    -- The operator hears what changed, by name (never a header's value),
    -- and how the endpoint's state changed (postbox._endpoint_state).
    v_changes := ARRAY(SELECT c.name FROM (VALUES
            ('url', v_was.url IS DISTINCT FROM e.url), ('event_types', v_was.event_types IS DISTINCT FROM e.event_types),
            ('headers', v_was.headers IS DISTINCT FROM e.headers),
            ('description', v_was.description IS DISTINCT FROM e.description),
            ('options', v_was.options IS DISTINCT FROM e.options),
            ('envelope', v_was.envelope IS DISTINCT FROM e.envelope)) AS c(name, changed)
        WHERE c.changed);
    v_from := postbox._endpoint_state(v_was.enabled, v_was.suspended, v_was.disabled_at, v_was.consecutive_failures);
    v_to := postbox._endpoint_state(e.enabled, e.suspended, e.disabled_at, e.consecutive_failures);
    v_reason := concat_ws('; ', CASE WHEN v_to = v_from THEN NULL
                                     WHEN v_to = 'paused' THEN 'paused'
                                     WHEN v_from = 'disabled' THEN 'resumed after being disabled'
                                     ELSE 'resumed' END,  -- from paused, or failing (the streak cleared)
                          'changed: ' || nullif(array_to_string(v_changes, ', '), ''));
    IF v_reason <> '' THEN
        PERFORM postbox._operator_events('postbox.endpoint.updated',
            ARRAY[postbox._notice(e.tenant, e.id, e.url, v_reason)]);
    END IF;
END
$fn$;
COMMENT ON FUNCTION postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text) IS 'Changes one of the tenant''s endpoints; NULL leaves a field as it is. enabled => false pauses it, true resumes it.';
GRANT EXECUTE ON FUNCTION postbox.update_endpoint(text, uuid, text, text[], json, text, boolean, jsonb, text) TO postbox_admin;

-- delete_endpoint's work, for it and unregister_endpoint.
CREATE FUNCTION postbox._delete_endpoint(p_tenant text, p_id uuid)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e postbox.endpoints;
BEGIN
    e := postbox._endpoint(p_tenant, p_id);
    DELETE FROM postbox.endpoints WHERE id = p_id;  -- secrets and pauses go with it (cascade)
    PERFORM postbox._operator_events('postbox.endpoint.deleted', ARRAY[postbox._notice(p_tenant, p_id, e.url, 'deleted')]);
    UPDATE postbox.outbox
       SET status = 'cancelled', last_error = 'endpoint deleted', lease_until = NULL
     WHERE endpoint_id = p_id AND status = 'pending';
    -- Events not yet expanded are routed to existing endpoints only.
END
$fn$;
COMMENT ON FUNCTION postbox._delete_endpoint(text, uuid) IS 'Internal: delete_endpoint''s work, for it and unregister_endpoint.';

CREATE FUNCTION postbox.delete_endpoint(tenant text, id uuid)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT postbox._delete_endpoint(tenant, id) $fn$;
COMMENT ON FUNCTION postbox.delete_endpoint(text, uuid) IS 'Removes one of the tenant''s endpoints and its secrets, and cancels its pending deliveries; its attempt log stays.';
GRANT EXECUTE ON FUNCTION postbox.delete_endpoint(text, uuid) TO postbox_admin;

CREATE FUNCTION postbox.rotate_secret(tenant text, id uuid, grace interval DEFAULT NULL, own_secret text DEFAULT NULL)
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
    PERFORM postbox._operator_events('postbox.endpoint.updated',
        ARRAY[postbox._notice(e.tenant, e.id, e.url, 'secret rotated')]);
    RETURN v_secret;
END
$fn$;
COMMENT ON FUNCTION postbox.rotate_secret(text, uuid, interval, text) IS 'Gives one of the tenant''s endpoints a new secret, returned once; older ones keep signing until the grace period ends.';
GRANT EXECUTE ON FUNCTION postbox.rotate_secret(text, uuid, interval, text) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.endpoint_config(text, uuid) IS 'One of the tenant''s endpoints as JSON, without secrets, in the form create_endpoint(tenant, config) takes.';
GRANT EXECUTE ON FUNCTION postbox.endpoint_config(text, uuid) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.set_tenant_limit(text, integer) IS 'Sets how many endpoints a tenant may have (NULL: no limit). 0 means no webhooks: its endpoints are suspended and its API keys refused until the limit is raised.';
GRANT EXECUTE ON FUNCTION postbox.set_tenant_limit(text, integer) TO postbox_admin;

-- An endpoint's state: the one place it is decided. suspended (its tenant's
-- plan has no webhooks) and paused (its admin's switch) hold deliveries;
-- disabled (failing too long) cancels them; failing and healthy send. The
-- views show it, the worker's claim takes deliveries of sending endpoints
-- only, and test sends refuse suspended ones. A test
-- (tests/tests/extension.rs: endpoint_state_is_decided_once) fails when
-- another place combines the columns.
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
COMMENT ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) IS 'Internal: an endpoint''s state (suspended, paused, disabled, failing, healthy), decided here only (inlined).';
-- Inlined by the views admins read.
GRANT EXECUTE ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) TO postbox_admin;
-- The worker's claim and next_due (sql/queue.sql) take sending endpoints only.
GRANT EXECUTE ON FUNCTION postbox._endpoint_state(boolean, boolean, timestamptz, integer) TO postbox_worker;
