-- postbox: the HTTP API's keys and its stored Idempotency-Key answers
-- (postbox-api connects as a role granted postbox_admin).

-- The most active (not revoked) keys a tenant may have: far more than a
-- team's people and tools, and a bound on what one tenant can create.
CREATE FUNCTION postbox._max_api_keys()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 100;
END;
COMMENT ON FUNCTION postbox._max_api_keys() IS 'Internal: the most active API keys per tenant (inlined).';

CREATE FUNCTION postbox._no_api_key(p_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM postbox._raise('api_key_not_found', 'id',
        format('postbox: no api key has this id: %s', coalesce(p_id::text, 'NULL')));
END
$fn$;
COMMENT ON FUNCTION postbox._no_api_key(uuid) IS 'Internal: raises the unknown-api-key error.';

-- Most keys a tenant may have at all, revoked ones (kept for the
-- revoked_api_keys window) included: create-and-revoke loops stop here
-- instead of growing the table without bound.
CREATE FUNCTION postbox._max_api_keys_kept()
RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT 1000;
END;
COMMENT ON FUNCTION postbox._max_api_keys_kept() IS 'Internal: the most API keys per tenant, revoked ones kept for their window included (inlined).';

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
        PERFORM postbox._raise('session_may_not_manage_keys', 'session', 'postbox: this portal session may not manage api keys (the operator allows it when making the session)');
    END IF;
    RETURN s;
END
$fn$;
COMMENT ON FUNCTION postbox._key_session(text, uuid) IS 'Internal: the open portal session of a tenant if it may manage API keys, else the error; NULL for no session.';

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
COMMENT ON FUNCTION postbox._session_owns_key(postbox.portal_sessions, postbox.api_keys) IS 'Internal: whether a portal session (NULL: none) may see and manage an API key: the keys it made, or its user''s.';

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
        PERFORM postbox._refuse_suspended(tenant);
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
COMMENT ON FUNCTION postbox.create_api_key(text, text, text, uuid) IS 'Makes an HTTP API key (admin or member of a tenant, or operator with tenant NULL) and returns it, the only time it is shown; with session, for that portal session (allowed to manage keys), which it records with its user.';
-- the HTTP API's keys and idempotent requests (postbox-api connects as
-- a role granted postbox_admin)
GRANT EXECUTE ON FUNCTION postbox.create_api_key(text, text, text, uuid) TO postbox_admin;

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
COMMENT ON FUNCTION postbox._api_key(text, uuid, uuid) IS 'Internal: an API key of a tenant (NULL: operator), locked, or the unknown-key error (also for another tenant''s id, or a key the portal session may not manage).';

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
        PERFORM postbox._raise('api_key_revoked', 'id',
            format('postbox: a revoked api key cannot be rotated: %s', id));
    END IF;
    PERFORM postbox._refuse_suspended(k.tenant);
    UPDATE postbox.api_keys x
       SET key_hash = sha256(convert_to(v_key, 'UTF8')), key_prefix = postbox._api_key_prefix(v_key), rotated_at = now()
     WHERE x.id = k.id;
    RETURN v_key;
END
$fn$;
COMMENT ON FUNCTION postbox.rotate_api_key(text, uuid, uuid) IS 'Gives an HTTP API key (tenant NULL: an operator key) a new value, returned once; the old one stops working at commit. With session, only a key that portal session may manage.';
-- the HTTP API's keys and idempotent requests (postbox-api connects as
-- a role granted postbox_admin)
GRANT EXECUTE ON FUNCTION postbox.rotate_api_key(text, uuid, uuid) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.revoke_api_key(text, uuid, uuid) IS 'Revokes an HTTP API key (tenant NULL: an operator key); it stops working at commit. With session, only a key that portal session may manage.';
GRANT EXECUTE ON FUNCTION postbox.revoke_api_key(text, uuid, uuid) TO postbox_admin;

-- The HTTP API's keys, without their hashes: who made each (a portal
-- session, for a user) included.
CREATE VIEW postbox.api_key_list AS
SELECT k.id, k.tenant, k.role, k.label, k.key_prefix, k.created_at, k.rotated_at, k.last_used_at, k.revoked_at,
       k.made_by_session, k.for_user
  FROM postbox.api_keys k;
COMMENT ON VIEW postbox.api_key_list IS 'The HTTP API''s keys without their hashes: tenant, role, label, the first characters, when made, rotated, last used and revoked, and the portal session (and its user) that made it.';
GRANT SELECT ON postbox.api_key_list TO postbox_admin;

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
COMMENT ON FUNCTION postbox.list_api_keys(text, uuid, uuid, integer) IS 'A page of a tenant''s HTTP API keys (tenant NULL: operator keys) after a key id, oldest first, without hashes; with session, only the keys that portal session may manage.';
GRANT EXECUTE ON FUNCTION postbox.list_api_keys(text, uuid, uuid, integer) TO postbox_admin;

-- Who holds the key whose SHA-256 is key_hash: its id, tenant and role, or
-- no row (unknown or revoked); a key of a tenant whose plan has no webhooks
-- raises tenant_suspended. The caller hashes the key, so the key itself
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
    -- Keys follow the plan: a live key of a tenant without webhooks is
    -- refused with its reason (the API answers 403), not taken for unknown.
    PERFORM postbox._refuse_suspended(k.tenant);
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
COMMENT ON FUNCTION postbox.authenticate_api_key(bytea) IS 'postbox-api: the id, tenant and role of the live key with this SHA-256, if any; records its use at most once a minute. A key of a tenant whose endpoint limit is 0 raises tenant_suspended.';
GRANT EXECUTE ON FUNCTION postbox.authenticate_api_key(bytea) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.api_request_begin(text, uuid, text, bytea) IS 'postbox-api: the stored response of the first POST with this Idempotency-Key from the same credential (same request required), or claims the key.';
GRANT EXECUTE ON FUNCTION postbox.api_request_begin(text, uuid, text, bytea) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.api_request_end(text, uuid, text, integer, text) IS 'postbox-api: stores the response of the request that claimed the Idempotency-Key.';
GRANT EXECUTE ON FUNCTION postbox.api_request_end(text, uuid, text, integer, text) TO postbox_admin;

-- Raises unless p_user_id is NULL or a user id of 1 to 200 characters.
CREATE FUNCTION postbox._check_user_id(p_user_id text)
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
COMMENT ON FUNCTION postbox._check_user_id(text) IS 'Internal: raises unless a portal user id is NULL or 1 to 200 characters.';
