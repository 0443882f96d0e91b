-- postbox 0.8.0 -> 0.9.0, in development. Nothing of the extension's
-- objects has changed yet: this script is where the changes go, and the
-- upgrade tests compare its result with a fresh install, for the compiled
-- extension (tests/tests/extension.rs) and for postbox-sql, whose upgrade
-- scripts scripts/sql-flavour.py makes from this one
-- (tests/tests/sql_flavour.rs).

-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
