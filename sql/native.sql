-- postbox: the comments and grants of the functions written in Rust
-- (extension/src), which pgrx creates, and the last word on privileges.
-- Loaded last (finalize).

COMMENT ON SCHEMA postbox IS 'postbox: signed webhooks straight out of PostgreSQL.';

COMMENT ON FUNCTION postbox._uuid7_floor(timestamptz) IS 'Internal: the smallest version 7 UUID of a moment''s millisecond, for age ranges of time-ordered ids.';

COMMENT ON FUNCTION postbox._generate_api_key() IS 'Internal: a new pbk_ API key from the OS CSPRNG.';

COMMENT ON FUNCTION postbox._generate_portal_token() IS 'Internal: a new pbp_ portal link token from the OS CSPRNG.';

COMMENT ON FUNCTION postbox._api_key_prefix(text) IS 'Internal: the start of an API key that lists show (api_keys.key_prefix).';

COMMENT ON FUNCTION postbox.emit_statement() IS 'Statement trigger (Rust) for INSERT and DELETE with a transition table: emit_statement(resource, tenant_column [, column ...]); attach creates it.';
GRANT EXECUTE ON FUNCTION postbox.emit_statement() TO postbox_emitter;

COMMENT ON FUNCTION postbox.emit_row_change() IS 'Row trigger (Rust) for AFTER INSERT, UPDATE or DELETE: emit_row_change(resource, tenant_column [, column ...]) emits <resource>.created/updated/deleted; attach uses it for UPDATE.';
GRANT EXECUTE ON FUNCTION postbox.emit_row_change() TO postbox_emitter;

COMMENT ON FUNCTION postbox.validate_url(text) IS 'Returns the normalized webhook URL, or raises 22023 naming the broken rule.';
GRANT EXECUTE ON FUNCTION postbox.validate_url(text) TO postbox_admin;

COMMENT ON FUNCTION postbox._shown(text) IS 'Internal: a value as error messages show it, cut to its start and size if long.';
-- attach's messages, as the caller
GRANT EXECUTE ON FUNCTION postbox._shown(text) TO postbox_emitter;

COMMENT ON FUNCTION postbox._validate_headers(jsonb, text) IS 'Internal: the header rules, for validate_headers once the depth is checked.';
-- what validate_headers inlines, run as the caller
GRANT EXECUTE ON FUNCTION postbox._validate_headers(jsonb, text) TO postbox_admin;

COMMENT ON FUNCTION postbox._event_id(uuid, bigint) IS 'Internal: the id of a statement''s nth event, from the statement''s emitted id, so ids sort in emit order.';

COMMENT ON FUNCTION postbox._validate_signature(text, text) IS 'Internal: checks a signature style and returns its header.';

COMMENT ON FUNCTION postbox._event_match_keys(text) IS 'Internal: validates an event name and returns every filter that matches it.';

COMMENT ON FUNCTION postbox._validate_filters(text[], text[]) IS 'Internal: validates an endpoint''s event_types against the catalog.';

COMMENT ON FUNCTION postbox._close_names(text, text[]) IS 'Internal: catalog names close to an unknown one.';

COMMENT ON FUNCTION postbox._validate_options(jsonb) IS 'Internal: validates per-endpoint delivery options.';

COMMENT ON FUNCTION postbox._generate_secret() IS 'Internal: a new whsec_ secret from the OS CSPRNG.';

COMMENT ON FUNCTION postbox._validate_secret(text, text) IS 'Internal: checks a caller-supplied secret for a signature style without echoing it.';

COMMENT ON FUNCTION postbox._uuid7() IS 'Internal: a time-ordered (version 7) UUID.';

COMMENT ON FUNCTION postbox._max_payload_bytes() IS 'Internal: the current postbox.max_payload_bytes.';

COMMENT ON FUNCTION postbox._allow_insecure_urls() IS 'Internal: whether postbox.allow_insecure_urls is on (development only); the worker honours it too.';
-- validate_url reads it as its caller; the worker asks it at start.
GRANT EXECUTE ON FUNCTION postbox._allow_insecure_urls() TO postbox_admin, postbox_worker;

COMMENT ON FUNCTION postbox._raise(text, text, text, text) IS 'Internal: raises a postbox error: the SQLSTATE of its code, the message, and DETAIL {"code", "field", "item"} (docs/errors.md). Every postbox error in SQL goes through it.';
-- SECURITY INVOKER functions raise as their caller
GRANT EXECUTE ON FUNCTION postbox._raise(text, text, text, text) TO postbox_admin, postbox_emitter, postbox_worker;

-- A function is executable by PUBLIC when it is created: take that back
-- for every function of every file, so that each role has exactly the
-- grants written beside the objects. Tables grant PUBLIC nothing; the
-- second line keeps it so.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;
