-- postbox: the settings portal's links and sessions (postbox-api).

-- Portal links (postbox-api's settings page): a link for one tenant and
-- role, returned once, usable once within valid_for (1 minute to 1 day).
-- manage_keys lets the session make and manage API keys (admin only), and
-- user_id names the product's user it is for (up to 200 characters): such
-- a session manages the keys it made and that user's. SECURITY DEFINER:
-- portal_sessions is granted to no one.
CREATE FUNCTION postbox.create_portal_session(tenant text, role text, valid_for interval DEFAULT NULL,
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
COMMENT ON FUNCTION postbox.create_portal_session(text, text, interval, boolean, text) IS 'Makes a one-time settings portal link token for a tenant (admin or member), valid for 1 minute to 1 day, optionally allowed to manage API keys and for a named user; returned once.';
GRANT EXECUTE ON FUNCTION postbox.create_portal_session(text, text, interval, boolean, text) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.open_portal_session(bytea, bytea, interval) IS 'postbox-api: uses a portal link (once, before it expires) and opens the session whose cookie has the given SHA-256.';
GRANT EXECUTE ON FUNCTION postbox.open_portal_session(bytea, bytea, interval) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.authenticate_portal_session(bytea) IS 'postbox-api: the id, tenant, role, end, key permission and user of the open portal session whose cookie has this SHA-256, if any.';
GRANT EXECUTE ON FUNCTION postbox.authenticate_portal_session(bytea) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.revoke_portal_sessions(text, text) IS 'Ends a tenant''s open portal sessions and unused links (only one user''s, when given) at once; returns how many.';
GRANT EXECUTE ON FUNCTION postbox.revoke_portal_sessions(text, text) TO postbox_admin;

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
COMMENT ON FUNCTION postbox.end_portal_session(bytea) IS 'postbox-api: signs out the open portal session whose cookie has this SHA-256; returns whether there was one.';
GRANT EXECUTE ON FUNCTION postbox.end_portal_session(bytea) TO postbox_admin;
