-- postbox 0.4.0 -> 0.5.0: what the HTTP API (postbox-api) needs.
--   * api_keys: HTTP API keys, kept as their SHA-256; create_api_key,
--     rotate_api_key, revoke_api_key, authenticate_api_key and the
--     api_key_list view (no hashes).
--   * api_idempotency: the first response to each POST with an
--     Idempotency-Key (api_request_begin, api_request_end), purged on the
--     idempotency_keys window (purge returns the kind api_requests too).
--   * portal_sessions: the settings portal's one-time links and sessions
--     (create_portal_session, open_portal_session,
--     authenticate_portal_session), purged a day after they end.
-- Nothing existing changes shape. Workers before 0.5.0 do not run against
-- it (they check the version).
-- Shipped scripts are frozen: never edit this file after release.

-- The new tables (sql/schema.sql).
-- Keys of the HTTP API (postbox-api). Only a key's SHA-256 is kept: the key
-- is shown once, when made or rotated. Operator keys (the application's own
-- backend) act for every tenant and so have none; every other key belongs to
-- one tenant. Nothing is granted on this table: the functions that read and
-- write it are the only way in.
CREATE TABLE postbox.api_keys (
    id           uuid PRIMARY KEY,  -- version 7: time-ordered
    tenant       text,
    role         text NOT NULL CHECK (role IN ('admin', 'member', 'operator')),
    label        text NOT NULL,
    -- sha256 of the whole key; this unique index is the lookup.
    key_hash     bytea NOT NULL UNIQUE,
    -- The key's first characters, to tell keys apart in lists.
    key_prefix   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz,
    -- Written at most once a minute per key, so reads stay reads.
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'operator') = (tenant IS NULL))
);
CREATE INDEX api_keys_tenant ON postbox.api_keys (tenant, created_at);

-- The HTTP API's first response to each POST with an Idempotency-Key, per
-- tenant, for the idempotency_keys retention window. A response may hold a
-- secret (a new endpoint's, a rotated key): nothing is granted on it.
CREATE TABLE postbox.api_idempotency (
    tenant          text NOT NULL,
    idempotency_key text NOT NULL,
    -- sha256 of the request (method, path, query, body): a repeat with the
    -- same key must be the same request.
    request_hash    bytea NOT NULL,
    status          smallint NOT NULL DEFAULT 0,  -- 0 until the response is stored
    body            text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX api_idempotency_created ON postbox.api_idempotency USING brin (created_at);

-- Sessions of the settings portal that postbox-api serves. The product's
-- backend asks for a link for one tenant; the link's token works once, for
-- a short while, and opens a session whose cookie the browser keeps. Only
-- SHA-256 of the token and of the cookie are kept. Nothing is granted on it.
CREATE TABLE postbox.portal_sessions (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    -- admin changes the tenant's endpoints; member only sees them.
    role            text NOT NULL CHECK (role IN ('admin', 'member')),
    link_hash       bytea NOT NULL UNIQUE,
    link_expires_at timestamptz NOT NULL,
    -- Set when the link is used, once.
    session_hash    bytea UNIQUE,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_sessions_created ON postbox.portal_sessions USING brin (created_at);

-- New Rust function (extension/src/lib.rs).
CREATE FUNCTION postbox."_generate_api_key"() RETURNS TEXT
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_generate_api_key_wrapper';

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

-- Makes an API key and returns it, the only time it is shown. SECURITY
-- DEFINER: it writes api_keys, on which no role has any privilege (it holds
-- the keys' hashes). Tenant keys are admin (read and write the tenant's
-- endpoints) or member (read only); operator keys act for every tenant and
-- take no tenant.
CREATE FUNCTION postbox.create_api_key(tenant text, role text, label text)
RETURNS TABLE (id uuid, key text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_id  uuid := postbox._uuid7();
    v_key text := postbox._generate_api_key();
BEGIN
    IF role IS NULL OR role NOT IN ('admin', 'member', 'operator') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: role must be admin, member or operator: %s', coalesce(postbox._shown(role), 'NULL'));
    END IF;
    IF role = 'operator' AND tenant IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: operator keys act for every tenant and take no tenant (pass NULL): %s', postbox._shown(tenant));
    END IF;
    IF role <> 'operator' THEN
        PERFORM postbox._require_tenant(tenant);
    END IF;
    IF label IS NULL OR length(label) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: api key label must be 1 to 200 characters: %s', coalesce(postbox._shown(label), 'NULL'));
    END IF;
    -- Serialised per tenant, so concurrent creations cannot pass the limit.
    PERFORM pg_advisory_xact_lock(hashtextextended('postbox.create_api_key ' || coalesce(tenant, ''), 0));
    IF (SELECT count(*) FROM postbox.api_keys k
         WHERE k.tenant IS NOT DISTINCT FROM create_api_key.tenant AND k.revoked_at IS NULL)
       >= postbox._max_api_keys() THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: a tenant has at most %s active api keys (revoke one first): %s',
            postbox._max_api_keys(), coalesce(postbox._shown(tenant), 'operator keys'));
    END IF;
    INSERT INTO postbox.api_keys (id, tenant, role, label, key_hash, key_prefix)
    VALUES (v_id, tenant, role, label, sha256(convert_to(v_key, 'UTF8')), left(v_key, 12));
    id := v_id;
    key := v_key;
    RETURN NEXT;
END
$fn$;

-- The key of tenant (NULL: an operator key) with this id, locked; another
-- tenant's id gets the error of an unknown one.
CREATE FUNCTION postbox._api_key(p_tenant text, p_id uuid)
RETURNS postbox.api_keys
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    k postbox.api_keys;
BEGIN
    IF p_tenant IS NOT NULL THEN
        PERFORM postbox._require_tenant(p_tenant);
    END IF;
    SELECT * INTO k FROM postbox.api_keys x
     WHERE x.id = p_id AND x.tenant IS NOT DISTINCT FROM p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM postbox._no_api_key(p_id);
    END IF;
    RETURN k;
END
$fn$;

-- Gives a key a new value, returned once; the old one stops working when
-- this commits. SECURITY DEFINER: it writes api_keys.
CREATE FUNCTION postbox.rotate_api_key(tenant text, id uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    k     postbox.api_keys := postbox._api_key(tenant, id);
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
-- changes nothing. SECURITY DEFINER: it writes api_keys.
CREATE FUNCTION postbox.revoke_api_key(tenant text, id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    k postbox.api_keys := postbox._api_key(tenant, id);
BEGIN
    UPDATE postbox.api_keys x SET revoked_at = coalesce(x.revoked_at, now()) WHERE x.id = k.id;
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
-- (status and body) if there is one, else no row, having claimed the key.
-- A second request with the key waits here until the first commits (then
-- gets its response) or rolls back (then runs). Errors are not stored: a
-- request that failed changed nothing, and may be sent again. SECURITY
-- DEFINER: api_idempotency holds responses with secrets and is granted to
-- no one.
CREATE FUNCTION postbox.api_request_begin(tenant text, idempotency_key text, request_hash bytea)
RETURNS TABLE (status smallint, body text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    r postbox.api_idempotency;
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF idempotency_key IS NULL OR idempotency_key !~ '^[\x21-\x7e]{1,255}$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: Idempotency-Key must be 1 to 255 visible ASCII characters: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL'));
    END IF;
    IF request_hash IS NULL OR length(request_hash) <> 32 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: request_hash must be a SHA-256 (32 bytes)';
    END IF;
    INSERT INTO postbox.api_idempotency AS a (tenant, idempotency_key, request_hash)
    VALUES (tenant, idempotency_key, request_hash)
    ON CONFLICT ON CONSTRAINT api_idempotency_pkey DO NOTHING;
    IF FOUND THEN
        RETURN;  -- the first
    END IF;
    SELECT * INTO r FROM postbox.api_idempotency a
     WHERE a.tenant = api_request_begin.tenant AND a.idempotency_key = api_request_begin.idempotency_key
       FOR UPDATE;
    IF r.created_at < now() - (postbox._retention()).idempotency_keys THEN
        -- Expired, not yet purged: as if it were gone.
        UPDATE postbox.api_idempotency a
           SET request_hash = api_request_begin.request_hash, status = 0, body = '', created_at = now()
         WHERE a.tenant = r.tenant AND a.idempotency_key = r.idempotency_key;
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
CREATE FUNCTION postbox.api_request_end(tenant text, idempotency_key text, status integer, body text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
BEGIN
    PERFORM postbox._require_tenant(tenant);
    IF status IS NULL OR status NOT BETWEEN 200 AND 299 OR body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: only a successful response is stored (status 200 to 299, a body): %s',
            coalesce(status::text, 'NULL'));
    END IF;
    UPDATE postbox.api_idempotency a SET status = api_request_end.status, body = api_request_end.body
     WHERE a.tenant = api_request_end.tenant AND a.idempotency_key = api_request_end.idempotency_key
       AND a.status = 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'postbox: no request with this Idempotency-Key is under way: %s',
            coalesce(postbox._shown(idempotency_key), 'NULL'));
    END IF;
END
$fn$;

-- Portal links (postbox-api's settings page): a link for one tenant and
-- role, returned once, usable once within valid_for (1 minute to 1 day).
-- SECURITY DEFINER: portal_sessions is granted to no one.
CREATE FUNCTION postbox.create_portal_session(tenant text, role text, valid_for interval DEFAULT '15 minutes')
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
    INSERT INTO postbox.portal_sessions (id, tenant, role, link_hash, link_expires_at)
    VALUES (v_id, tenant, role, sha256(convert_to(v_token, 'UTF8')), now() + valid_for);
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

-- The open session whose cookie has this SHA-256: its id, tenant, role and
-- end; else no row. PL/pgSQL: the portal calls it on every request (plans
-- kept). SECURITY DEFINER: it reads portal_sessions.
CREATE FUNCTION postbox.authenticate_portal_session(session_hash bytea)
RETURNS TABLE (id uuid, tenant text, role text, expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY
    SELECT s.id, s.tenant, s.role, s.expires_at FROM postbox.portal_sessions s
     WHERE s.session_hash = authenticate_portal_session.session_hash AND s.expires_at > now();
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

-- The HTTP API's keys, without their hashes.
CREATE VIEW postbox.api_key_list AS
SELECT k.id, k.tenant, k.role, k.label, k.key_prefix, k.created_at, k.rotated_at, k.last_used_at, k.revoked_at
  FROM postbox.api_keys k;

SELECT pg_catalog.pg_extension_config_dump('postbox.api_keys', '');

COMMENT ON TABLE postbox.api_keys IS 'HTTP API keys (postbox-api): each key''s SHA-256, tenant (none for operator keys), role, label and use; granted to no one.';
COMMENT ON TABLE postbox.api_idempotency IS 'The HTTP API''s first response to each POST with an Idempotency-Key, per tenant, for the idempotency_keys window; holds secrets, granted to no one.';
COMMENT ON VIEW postbox.api_key_list IS 'The HTTP API''s keys without their hashes: tenant, role, label, the first characters, and when made, rotated, last used and revoked.';
COMMENT ON FUNCTION postbox.create_api_key(text, text, text) IS 'Makes an HTTP API key (admin or member of a tenant, or operator with tenant NULL) and returns it, the only time it is shown.';
COMMENT ON FUNCTION postbox.rotate_api_key(text, uuid) IS 'Gives an HTTP API key (tenant NULL: an operator key) a new value, returned once; the old one stops working at commit.';
COMMENT ON FUNCTION postbox.revoke_api_key(text, uuid) IS 'Revokes an HTTP API key (tenant NULL: an operator key); it stops working at commit.';
COMMENT ON FUNCTION postbox.authenticate_api_key(bytea) IS 'postbox-api: the id, tenant and role of the live key with this SHA-256, if any; records its use at most once a minute.';
COMMENT ON FUNCTION postbox.api_request_begin(text, text, bytea) IS 'postbox-api: the stored response of the first POST with this Idempotency-Key (same request required), or claims the key.';
COMMENT ON FUNCTION postbox.api_request_end(text, text, integer, text) IS 'postbox-api: stores the response of the request that claimed the Idempotency-Key.';
COMMENT ON TABLE postbox.portal_sessions IS 'Settings portal links and sessions (postbox-api): SHA-256 of the one-time link token and of the session cookie, tenant, role, ends; granted to no one.';
COMMENT ON FUNCTION postbox.create_portal_session(text, text, interval) IS 'Makes a one-time settings portal link token for a tenant (admin or member), valid for 1 minute to 1 day; returned once.';
COMMENT ON FUNCTION postbox.open_portal_session(bytea, bytea, interval) IS 'postbox-api: uses a portal link (once, before it expires) and opens the session whose cookie has the given SHA-256.';
COMMENT ON FUNCTION postbox.authenticate_portal_session(bytea) IS 'postbox-api: the tenant and role of the open portal session whose cookie has this SHA-256, if any.';
COMMENT ON FUNCTION postbox._max_api_keys() IS 'Internal: the most active API keys per tenant (inlined).';
COMMENT ON FUNCTION postbox._no_api_key(uuid) IS 'Internal: raises the unknown-api-key error.';
COMMENT ON FUNCTION postbox._api_key(text, uuid) IS 'Internal: an API key of a tenant (NULL: operator), locked, or the unknown-key error (also for another tenant''s id).';
COMMENT ON FUNCTION postbox._generate_api_key() IS 'Internal: a new pbk_ API key from the OS CSPRNG.';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
GRANT EXECUTE ON FUNCTION postbox.create_api_key(text, text, text), postbox.rotate_api_key(text, uuid),
                          postbox.revoke_api_key(text, uuid), postbox.authenticate_api_key(bytea),
                          postbox.api_request_begin(text, text, bytea),
                          postbox.api_request_end(text, text, integer, text),
                          postbox.create_portal_session(text, text, interval),
                          postbox.open_portal_session(bytea, bytea, interval),
                          postbox.authenticate_portal_session(bytea)
   TO postbox_admin;
GRANT SELECT ON postbox.api_key_list TO postbox_admin;
