-- postbox 0.7.0 -> 0.8.0: the release of postbox-sql, the SQL-only flavour
-- (issue 25). The tables are unchanged. postbox._allow_insecure_urls() is
-- back in the SQL API (0.1.0 and 0.2.0 had it): the worker reads the
-- development switch through it, so that the SQL flavour can answer from
-- its settings table. Generated from the 0.7.0 and 0.8.0 install scripts;
-- the upgrade test compares the result with a fresh install
-- (tests/tests/extension.rs).

CREATE FUNCTION postbox."_allow_insecure_urls"() RETURNS bool /* bool */ STRICT STABLE PARALLEL SAFE LANGUAGE c /* Rust */ AS 'MODULE_PATHNAME', '_allow_insecure_urls_wrapper';

COMMENT ON FUNCTION postbox._allow_insecure_urls() IS 'Internal: whether postbox.allow_insecure_urls is on (development only); the worker honours it too.';

GRANT EXECUTE ON FUNCTION postbox._allow_insecure_urls() TO postbox_admin;

GRANT EXECUTE ON FUNCTION postbox._allow_insecure_urls() TO postbox_worker;

-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
