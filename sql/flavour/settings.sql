-- postbox-sql: the two settings, postbox.max_payload_bytes and
-- postbox.allow_insecure_urls.
--
-- The compiled extension defines them as superuser-only (SUSET) server
-- settings. A SQL install has no library to define a setting, any role can
-- SET a custom one in its own session, and since PostgreSQL 15 only a
-- superuser may attach one to a function or role. So here they live in a
-- table that only its owner (the installing role) and superusers may change:
--   UPDATE postbox.settings SET value = '1048576' WHERE name = 'max_payload_bytes';
--   UPDATE postbox.settings SET value = 'on' WHERE name = 'allow_insecure_urls';  -- development only
-- postbox_admin, the emitters and the worker may read it, never write it;
-- a session's SET postbox.* changes nothing here. Values are checked as
-- the extension checks the settings (same ranges), and upgrades keep them.
CREATE TABLE postbox.settings (
    name  text PRIMARY KEY CHECK (name IN ('max_payload_bytes', 'allow_insecure_urls')),
    value text NOT NULL,
    CONSTRAINT max_payload_bytes_is_/*@payload_bytes_min@*/_to_/*@payload_bytes_max@*/_bytes
        CHECK (name <> 'max_payload_bytes' OR (value ~ '^[0-9]{1,8}$' AND value::integer BETWEEN /*@payload_bytes_min@*/ AND /*@payload_bytes_max@*/)),
    CONSTRAINT allow_insecure_urls_is_on_or_off
        CHECK (name <> 'allow_insecure_urls' OR value IN ('on', 'off'))
);
COMMENT ON TABLE postbox.settings IS 'The SQL flavour''s settings (the compiled extension''s postbox.* server settings): only the owner changes them.';
-- Read by the functions below as their callers (the emit triggers run as the application).
GRANT SELECT ON postbox.settings TO postbox_admin, postbox_emitter, postbox_worker;
INSERT INTO postbox.settings (name, value) VALUES ('max_payload_bytes', '/*@payload_bytes_default@*/'), ('allow_insecure_urls', 'off');

-- The extension's Rust functions of the same names read the server settings.
-- PL/pgSQL, not SQL: its plan is kept for the session (a SQL function's is
-- made again at every call before PostgreSQL 18), and emit calls it.
CREATE FUNCTION postbox._max_payload_bytes() RETURNS integer
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $fn$
BEGIN
    RETURN (SELECT s.value::integer FROM postbox.settings s WHERE s.name = 'max_payload_bytes');
END
$fn$;

CREATE FUNCTION postbox._allow_insecure_urls() RETURNS boolean
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $fn$
BEGIN
    RETURN (SELECT s.value = 'on' FROM postbox.settings s WHERE s.name = 'allow_insecure_urls');
END
$fn$;
