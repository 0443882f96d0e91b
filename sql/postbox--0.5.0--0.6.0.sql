-- postbox 0.5.0 -> 0.6.0: security, round two (issue 23).
--   * register_endpoint returns the secret only when it creates the
--     endpoint (NULL otherwise): stored secrets are never read back.
--   * replay works in batches (max_rows, default 1,000) and says whether
--     more remain, so no call holds a connection or its rows for long.
--   * api_idempotency keys stored answers by credential (the API key's or
--     portal session's id) as well as tenant. Stored answers from 0.5.0 are
--     deleted: they hold secrets and name no credential (a repeat of such a
--     request after the upgrade runs again).
--   * API keys: revoked keys are purged after the new revoked_api_keys
--     retention window (30 days; set_retention takes it), a tenant keeps at
--     most 1,000 keys in all, list_api_keys pages them, and each key records
--     the portal session (and user) that made it.
--   * Portal sessions: manage_keys and user_id (create_portal_session), the
--     key rules for sessions (_key_session, _session_owns_key),
--     revoke_portal_sessions and end_portal_session (sign-out).
--   * The attempt log keeps custom header names with masked values; the
--     values 0.5.0 stored are masked here.
--   * worker_heartbeat refuses a second live instance of a worker id.
-- Workers and APIs before 0.6.0 do not run against it (they check the
-- version). Shipped scripts are frozen: never edit this file after release.

-- Tables (sql/schema.sql): new columns go last, as in a fresh install.
ALTER TABLE postbox.retention ADD COLUMN revoked_api_keys interval NOT NULL DEFAULT '30 days';

ALTER TABLE postbox.api_keys ADD COLUMN made_by_session uuid, ADD COLUMN for_user text;
-- Purging revoked keys by age (postbox.purge); live keys never enter it.
CREATE INDEX api_keys_revoked ON postbox.api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

DELETE FROM postbox.api_idempotency;
ALTER TABLE postbox.api_idempotency ADD COLUMN credential uuid NOT NULL;
ALTER TABLE postbox.api_idempotency DROP CONSTRAINT api_idempotency_pkey;
ALTER TABLE postbox.api_idempotency ADD CONSTRAINT api_idempotency_pkey PRIMARY KEY (tenant, credential, idempotency_key);

ALTER TABLE postbox.portal_sessions
    ADD COLUMN manage_keys boolean NOT NULL DEFAULT false,
    ADD COLUMN user_id text,
    ADD CONSTRAINT portal_sessions_manage_keys_admin CHECK (NOT manage_keys OR role = 'admin');

-- Header values 0.5.0 kept in the attempt log: names stay, values masked
-- (postbox_rules::headers::MASKED_VALUE).
UPDATE postbox.attempt_log a
   SET request_headers = (SELECT jsonb_object_agg(k, '********') FROM jsonb_object_keys(a.request_headers) k)
 WHERE a.request_headers IS NOT NULL AND a.request_headers <> '{}';

-- Functions whose arguments or results change.
DROP FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz);
DROP FUNCTION postbox.set_retention(interval, interval, interval, interval, interval);
DROP FUNCTION postbox.rotate_api_key(text, uuid);
DROP FUNCTION postbox.revoke_api_key(text, uuid);
DROP FUNCTION postbox._api_key(text, uuid);
DROP FUNCTION postbox.create_api_key(text, text, text);
DROP FUNCTION postbox.api_request_begin(text, text, bytea);
DROP FUNCTION postbox.api_request_end(text, text, integer, text);
DROP FUNCTION postbox.create_portal_session(text, text, interval);
DROP FUNCTION postbox.authenticate_portal_session(bytea);

-- Creates the tenant's endpoint for url, or, if the tenant has one for that
-- URL already (the oldest, if several), sets its event types. The secret is
-- returned only when it creates (as create_endpoint does); for an endpoint
-- that was there, secret is NULL: stored secrets are never read back, and a
-- caller that lost one rotates. The other arguments apply only when it
-- creates. Serialised per tenant and URL, so two registrations of one URL
-- at once make one endpoint.
CREATE OR REPLACE FUNCTION postbox.register_endpoint(
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
CREATE OR REPLACE VIEW postbox.api_key_list AS
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

-- Comments (each beside its object in a fresh install's list).
COMMENT ON TABLE postbox.retention IS 'How long postbox keeps attempts, events, cancelled deliveries, idempotency keys, pause history and revoked API keys it no longer needs; postbox.purge deletes what is older. Empty until set_retention or the first purge writes the defaults.';
COMMENT ON FUNCTION postbox.register_endpoint(text, text, text[], json, text, text, text, text, jsonb, boolean, text) IS 'Creates the tenant''s endpoint for a URL, or sets the event types of the one it has; returns its id, whether it was created, and the secret only if it was (else NULL: rotate to get a new one).';
COMMENT ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer) IS 'Queues again, each with a fresh schedule, up to max_rows failed and cancelled deliveries of one of the tenant''s endpoints queued in [since, until), oldest first; returns how many, and whether more remain (repeat the call until more is false).';
COMMENT ON FUNCTION postbox.set_retention(interval, interval, interval, interval, interval, interval) IS 'Sets the retention windows (NULL leaves one as it is); idempotency keys are kept at least 24 hours.';
COMMENT ON FUNCTION postbox._max_api_keys_kept() IS 'Internal: the most API keys per tenant, revoked ones kept for their window included (inlined).';
COMMENT ON FUNCTION postbox._check_user_id(text) IS 'Internal: raises unless a portal user id is NULL or 1 to 200 characters.';
COMMENT ON FUNCTION postbox._key_session(text, uuid) IS 'Internal: the open portal session of a tenant if it may manage API keys, else the error; NULL for no session.';
COMMENT ON FUNCTION postbox._session_owns_key(postbox.portal_sessions, postbox.api_keys) IS 'Internal: whether a portal session (NULL: none) may see and manage an API key: the keys it made, or its user''s.';
COMMENT ON FUNCTION postbox.create_api_key(text, text, text, uuid) IS 'Makes an HTTP API key (admin or member of a tenant, or operator with tenant NULL) and returns it, the only time it is shown; with session, for that portal session (allowed to manage keys), which it records with its user.';
COMMENT ON FUNCTION postbox._api_key(text, uuid, uuid) IS 'Internal: an API key of a tenant (NULL: operator), locked, or the unknown-key error (also for another tenant''s id, or a key the portal session may not manage).';
COMMENT ON FUNCTION postbox.rotate_api_key(text, uuid, uuid) IS 'Gives an HTTP API key (tenant NULL: an operator key) a new value, returned once; the old one stops working at commit. With session, only a key that portal session may manage.';
COMMENT ON FUNCTION postbox.revoke_api_key(text, uuid, uuid) IS 'Revokes an HTTP API key (tenant NULL: an operator key); it stops working at commit. With session, only a key that portal session may manage.';
COMMENT ON VIEW postbox.api_key_list IS 'The HTTP API''s keys without their hashes: tenant, role, label, the first characters, when made, rotated, last used and revoked, and the portal session (and its user) that made it.';
COMMENT ON FUNCTION postbox.list_api_keys(text, uuid, uuid, integer) IS 'A page of a tenant''s HTTP API keys (tenant NULL: operator keys) after a key id, oldest first, without hashes; with session, only the keys that portal session may manage.';
COMMENT ON FUNCTION postbox.api_request_begin(text, uuid, text, bytea) IS 'postbox-api: the stored response of the first POST with this Idempotency-Key from the same credential (same request required), or claims the key.';
COMMENT ON FUNCTION postbox.api_request_end(text, uuid, text, integer, text) IS 'postbox-api: stores the response of the request that claimed the Idempotency-Key.';
COMMENT ON FUNCTION postbox.create_portal_session(text, text, interval, boolean, text) IS 'Makes a one-time settings portal link token for a tenant (admin or member), valid for 1 minute to 1 day, optionally allowed to manage API keys and for a named user; returned once.';
COMMENT ON FUNCTION postbox.authenticate_portal_session(bytea) IS 'postbox-api: the id, tenant, role, end, key permission and user of the open portal session whose cookie has this SHA-256, if any.';
COMMENT ON FUNCTION postbox.revoke_portal_sessions(text, text) IS 'Ends a tenant''s open portal sessions and unused links (only one user''s, when given) at once; returns how many.';
COMMENT ON FUNCTION postbox.end_portal_session(bytea) IS 'postbox-api: signs out the open portal session whose cookie has this SHA-256; returns whether there was one.';

-- Privileges: nothing for PUBLIC, then postbox_admin what the HTTP API calls.
REVOKE ALL ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer),
    postbox.set_retention(interval, interval, interval, interval, interval, interval),
    postbox._max_api_keys_kept(), postbox._key_session(text, uuid), postbox._check_user_id(text),
    postbox._session_owns_key(postbox.portal_sessions, postbox.api_keys),
    postbox.create_api_key(text, text, text, uuid), postbox._api_key(text, uuid, uuid),
    postbox.rotate_api_key(text, uuid, uuid), postbox.revoke_api_key(text, uuid, uuid),
    postbox.list_api_keys(text, uuid, uuid, integer),
    postbox.api_request_begin(text, uuid, text, bytea), postbox.api_request_end(text, uuid, text, integer, text),
    postbox.create_portal_session(text, text, interval, boolean, text), postbox.authenticate_portal_session(bytea),
    postbox.revoke_portal_sessions(text, text), postbox.end_portal_session(bytea)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION postbox.replay(text, uuid, timestamptz, timestamptz, integer),
    postbox.set_retention(interval, interval, interval, interval, interval, interval),
    postbox.create_api_key(text, text, text, uuid), postbox.rotate_api_key(text, uuid, uuid),
    postbox.revoke_api_key(text, uuid, uuid), postbox.list_api_keys(text, uuid, uuid, integer),
    postbox.api_request_begin(text, uuid, text, bytea), postbox.api_request_end(text, uuid, text, integer, text),
    postbox.create_portal_session(text, text, interval, boolean, text), postbox.authenticate_portal_session(bytea),
    postbox.revoke_portal_sessions(text, text), postbox.end_portal_session(bytea)
  TO postbox_admin;

-- worker_heartbeat: a second live instance of a worker id is refused
-- (55006) instead of taken for a restart; a stale row is taken over as before.
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

COMMENT ON FUNCTION postbox.worker_heartbeat(text, uuid, interval) IS 'A worker''s heartbeat: refreshes its row and releases the claims of workers not seen for stale_after (or of its own previous instance, once that is stale). Returns how many. Another instance of the worker_id seen within stale_after is refused (SQLSTATE 55006).';
