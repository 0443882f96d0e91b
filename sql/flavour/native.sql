-- postbox-sql: the functions the compiled extension writes in Rust
-- (extension/src/lib.rs), in PL/pgSQL and SQL, for the SQL-only flavour.
-- Same names, arguments, results, volatility and errors; the comments and
-- grants are the extension's own (sql/native.sql). Every rule here mirrors
-- one of postbox-rules (rules/src/<module>.rs, named beside each function);
-- the differential test (tests/tests/sql_flavour.rs) holds the two to the
-- same verdicts and messages over the rules crate's generated corpus.
--
-- Loaded where the extension loads its Rust functions: after schema.sql,
-- before endpoints.sql (scripts/sql-flavour.py assembles the install).
--
-- None of these is SECURITY DEFINER: they run as their caller, as the Rust
-- functions do, and read nothing but their arguments. The two settings are
-- in sql/flavour/settings.sql.
-- Built-in functions are schema-qualified, so a caller's search_path cannot
-- swap one for its own.

-- Raises a postbox error (extension/src/lib.rs `raise_sql`): the code's
-- SQLSTATE, the message, and DETAIL as one line of compact JSON, as
-- postbox_rules::codes::detail writes it. The codes and their SQLSTATEs
-- are filled in from rules/src/codes.rs when the install is assembled.
CREATE FUNCTION postbox._raise(code text, field text, message text, item text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $fn$
DECLARE
    v_code    text := code;
    v_message text := coalesce(message, 'postbox: (no message)');
    v_state   text;
    v_detail  text;
BEGIN
    SELECT c.state INTO v_state FROM (VALUES /*@codes@*/) AS c(name, state) WHERE c.name = code;
    IF v_state IS NULL THEN
        v_message := pg_catalog.format('postbox: an error with an unknown code (%s): %s',
                                       coalesce(code, 'NULL'), v_message);
        v_code := 'internal';
        v_state := 'XX000';
    END IF;
    v_detail := '{"code":' || pg_catalog.to_json(v_code)::text
        || CASE WHEN field IS NULL THEN '' ELSE ',"field":' || pg_catalog.to_json(field)::text END
        || CASE WHEN item IS NULL THEN '' ELSE ',"item":' || pg_catalog.to_json(postbox._shown(item))::text END
        || '}';
    RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_message, DETAIL = v_detail;
END
$fn$;

-- rules/src/error.rs `shown`: whole up to 100 characters, else the first
-- 40 and the size in bytes.
CREATE FUNCTION postbox._shown(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT CASE WHEN pg_catalog.length(value) <= 100 THEN value
                ELSE pg_catalog.left(value, 40) || '... (' || pg_catalog.octet_length(value) || ' bytes)' END
$fn$;

-- rules/src/headers.rs `validate`: a JSON object of at most 20 headers,
-- each name an HTTP token of at most 256 bytes, not reserved, not the
-- endpoint's signature header, unique ignoring case; each value a string
-- of visible ASCII, space and tab, not blank, at most 4096 bytes. Keys are
-- checked in byte order, as serde_json's map holds them. Errors name the
-- header, never its value.
CREATE FUNCTION postbox._validate_headers(headers jsonb, signature_header text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    v_sig    text := pg_catalog.lower(signature_header COLLATE "C");
    v_seen   text[] := '{}';
    v_name   text;
    v_lower  text;
    v_value  jsonb;
    v_text   text;
    v_bad    text;
    v_n      integer;
    v_code   text;
    v_rule   text;
    v_shown  text;
BEGIN
    IF headers IS NULL THEN
        PERFORM postbox._raise('required', 'headers', 'postbox: headers must not be NULL: NULL');
    END IF;
    IF pg_catalog.jsonb_typeof(headers) <> 'object' THEN
        PERFORM postbox._raise('headers_not_object', 'headers',
            'postbox: headers must be a JSON object of name to value: a JSON ' || pg_catalog.jsonb_typeof(headers));
    END IF;
    SELECT pg_catalog.count(*) INTO v_n FROM pg_catalog.jsonb_object_keys(headers);
    IF v_n > 20 THEN
        PERFORM postbox._raise('headers_too_many', 'headers', pg_catalog.format(
            'postbox: an endpoint may have at most 20 custom headers: %s headers', v_n));
    END IF;
    FOR v_name, v_value IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(headers) e ORDER BY e.key COLLATE "C" LOOP
        v_code := NULL;
        v_shown := v_name;
        v_lower := pg_catalog.lower(v_name COLLATE "C");
        IF v_name = '' THEN
            v_code := 'header_name_empty'; v_rule := 'header name must not be empty'; v_shown := '""';
        ELSIF pg_catalog.octet_length(v_name) > 256 THEN
            v_code := 'header_name_too_long'; v_rule := 'header name must be at most 256 bytes';
        ELSIF v_name !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
            v_code := 'header_name_invalid';
            v_rule := 'header name must be an HTTP token (letters, digits and !#$%&''*+-.^_`|~)';
        ELSIF v_lower IN (/*@reserved_headers@*/) THEN
            v_code := 'header_name_reserved'; v_rule := 'header name is reserved (is set by postbox)';
        ELSIF pg_catalog.starts_with(v_lower, 'proxy-') THEN
            v_code := 'header_name_reserved'; v_rule := 'header name is reserved (Proxy-* headers are reserved)';
        ELSIF pg_catalog.starts_with(v_lower, 'webhook-') THEN
            v_code := 'header_name_reserved';
            v_rule := 'header name is reserved (webhook-* headers are reserved for the signature)';
        ELSIF v_lower = v_sig THEN
            v_code := 'header_name_reserved';
            v_rule := 'header name is reserved (it is this endpoint''s signature header)';
        ELSIF v_lower = ANY (v_seen) THEN
            v_code := 'header_name_duplicate'; v_rule := 'header names must be unique ignoring case';
        ELSIF pg_catalog.jsonb_typeof(v_value) <> 'string' THEN
            v_code := 'header_value_not_string';
            v_rule := 'header value must be a string, not a JSON ' || pg_catalog.jsonb_typeof(v_value);
        ELSE
            v_text := v_value #>> '{}';
            v_bad := pg_catalog.substring(v_text, '[^\t -~]');
            IF pg_catalog.btrim(v_text, E' \t') = '' THEN
                v_code := 'header_value_empty'; v_rule := 'header value must not be empty';
            ELSIF pg_catalog.octet_length(v_text) > 4096 THEN
                v_code := 'header_value_too_long';
                v_rule := pg_catalog.format('header value must be at most 4096 bytes (this one has %s)',
                                            pg_catalog.octet_length(v_text));
            ELSIF v_bad IS NOT NULL THEN
                v_code := 'header_value_invalid';
                -- {:04X}: at least four digits (lpad would cut a longer one)
                v_rule := pg_catalog.format('header value may hold only visible ASCII, space and tab (found U+%s)',
                                            pg_catalog.right('000' || pg_catalog.upper(pg_catalog.to_hex(pg_catalog.ascii(v_bad))),
                                                             GREATEST(4, pg_catalog.length(pg_catalog.to_hex(pg_catalog.ascii(v_bad))))));
            END IF;
        END IF;
        IF v_code IS NOT NULL THEN
            PERFORM postbox._raise(v_code, 'headers', 'postbox: ' || v_rule || ': ' || postbox._shown(v_shown), v_name);
        END IF;
        v_seen := v_seen || v_lower;
    END LOOP;
    RETURN headers;
END
$fn$;

-- rules/src/headers.rs `SignatureStyle::parse` and `validate_signature`:
-- the header the signature goes in (NULL for standard, whose headers are fixed).
CREATE FUNCTION postbox._validate_signature(style text, header text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    v_header text := header;
    v_lower  text;
BEGIN
    IF style IS NULL OR style NOT IN ('standard', 'sha256-hex', 'hex') THEN
        PERFORM postbox._raise('signature_style_unknown', 'signature_style',
            'postbox: signature_style must be ''standard'', ''sha256-hex'' or ''hex'': '
            || postbox._shown(coalesce(style, 'NULL')));
    END IF;
    IF style = 'standard' THEN
        IF v_header IS NOT NULL THEN
            PERFORM postbox._raise('signature_header_not_applicable', 'signature_header',
                'postbox: signature_header applies only to signature_style ''sha256-hex'' or ''hex'': '
                || postbox._shown(v_header));
        END IF;
        RETURN NULL;
    END IF;
    v_header := coalesce(v_header, 'X-Webhook-Signature');
    v_lower := pg_catalog.lower(v_header COLLATE "C");
    IF v_header = '' THEN
        PERFORM postbox._raise('header_name_empty', 'signature_header',
            'postbox: signature header name must not be empty: ""');
    ELSIF pg_catalog.octet_length(v_header) > 256 THEN
        PERFORM postbox._raise('header_name_too_long', 'signature_header',
            'postbox: signature header name must be at most 256 bytes: ' || postbox._shown(v_header));
    ELSIF v_header !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
        PERFORM postbox._raise('header_name_invalid', 'signature_header',
            'postbox: signature header name must be an HTTP token (letters, digits and !#$%&''*+-.^_`|~): '
            || postbox._shown(v_header));
    ELSIF v_lower IN (/*@reserved_headers@*/) OR pg_catalog.starts_with(v_lower, 'proxy-') THEN
        PERFORM postbox._raise('header_name_reserved', 'signature_header',
            'postbox: signature header must not be a reserved header: ' || postbox._shown(v_header));
    END IF;
    RETURN v_header;
END
$fn$;

-- rules/src/event.rs `validate_name` and `match_keys`: two or more
-- dot-separated segments of [a-z0-9_], at most 200 bytes; every filter
-- that matches the name ('*', each prefix with '.*', the name).
CREATE FUNCTION postbox._event_match_keys(name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
DECLARE
    v_keys text[] := ARRAY['*'];
BEGIN
    IF pg_catalog.octet_length(name) > 200 THEN
        PERFORM postbox._raise('event_type_too_long', 'event_type',
            'postbox: event type must be at most 200 bytes: ' || postbox._shown(name));
    END IF;
    IF name !~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$' THEN
        PERFORM postbox._raise('event_type_invalid', 'event_type',
            'postbox: event type must be two or more dot-separated segments of lowercase letters, digits and underscores: '
            || postbox._shown(name));
    END IF;
    v_keys := v_keys || ARRAY(SELECT pg_catalog.left(name, p - 1) || '.*'
                                FROM pg_catalog.generate_series(1, pg_catalog.length(name)) AS p
                               WHERE pg_catalog.substr(name, p, 1) = '.' ORDER BY p);
    RETURN v_keys || name;
END
$fn$;

-- rules/src/event.rs `validate_filters`: at least one and at most 100
-- entries, each '*', a prefix pattern 'a.*' or an exact name in the
-- catalog (an unknown one is refused with the closest catalog names);
-- returned without duplicates, in order.
CREATE FUNCTION postbox._validate_filters(filters text[], catalog text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    v_out    text[] := '{}';
    v_f      text;
    v_close  text[];
BEGIN
    IF filters IS NULL THEN
        PERFORM postbox._raise('required', 'event_types', 'postbox: event_types must not be NULL: NULL');
    END IF;
    IF pg_catalog.array_position(filters, NULL) IS NOT NULL THEN
        PERFORM postbox._raise('required', 'event_types', 'postbox: event_types must not contain NULL: NULL');
    END IF;
    IF pg_catalog.cardinality(filters) = 0 THEN
        PERFORM postbox._raise('event_types_empty', 'event_types',
            'postbox: event_types must list at least one event type or pattern (''*'' for all): {}');
    END IF;
    IF pg_catalog.cardinality(filters) > 100 THEN
        PERFORM postbox._raise('event_types_too_many', 'event_types', pg_catalog.format(
            'postbox: event_types may hold at most 100 entries: %s', pg_catalog.cardinality(filters)));
    END IF;
    FOREACH v_f IN ARRAY filters LOOP
        IF v_f = '*' THEN
            NULL;
        ELSIF v_f LIKE '%.*' THEN
            IF pg_catalog.octet_length(v_f) > 200 OR v_f !~ '^[a-z0-9_]+(\.[a-z0-9_]+)*\.\*$' THEN
                PERFORM postbox._raise('event_filter_invalid', 'event_types',
                    'postbox: event filter pattern must be ''*'' or valid name segments followed by ''.*'': '
                    || postbox._shown(v_f), v_f);
            END IF;
        ELSIF pg_catalog.octet_length(v_f) > 200 THEN
            PERFORM postbox._raise('event_type_too_long', 'event_types',
                'postbox: event type must be at most 200 bytes: ' || postbox._shown(v_f), v_f);
        ELSIF v_f !~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$' THEN
            PERFORM postbox._raise('event_type_invalid', 'event_types',
                'postbox: event type must be two or more dot-separated segments of lowercase letters, digits and underscores: '
                || postbox._shown(v_f), v_f);
        ELSIF pg_catalog.array_position(catalog, v_f) IS NULL THEN
            v_close := postbox._close_names(v_f, catalog);
            PERFORM postbox._raise('event_type_unknown', 'event_types', pg_catalog.format(
                'postbox: unknown event type (%s): %s',
                CASE WHEN pg_catalog.cardinality(v_close) > 0
                     THEN 'did you mean ' || pg_catalog.array_to_string(v_close, ', ') || '?'
                     ELSE 'create it with postbox.create_event_type first' END,
                postbox._shown(v_f)), v_f);
        END IF;
        IF NOT (v_f = ANY (v_out)) THEN
            v_out := v_out || v_f;
        END IF;
    END LOOP;
    RETURN v_out;
END
$fn$;

-- rules/src/event.rs `close_names`: up to three catalog names whose
-- Jaro-Winkler similarity is at least 0.8 or whose Levenshtein distance is
-- at most 3, closest first (then by name). Both measures over characters,
-- computed as strsim 0.11 computes them, in the same floating-point order.
CREATE FUNCTION postbox._close_names(name text, catalog text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
DECLARE
    a        text[] := pg_catalog.regexp_split_to_array(name, '');
    a_len    integer := pg_catalog.length(name);
    v_c      text;
    b        text[];
    b_len    integer;
    v_range  integer;
    a_flags  boolean[];
    b_flags  boolean[];
    v_match  integer;
    v_trans  integer;
    v_jaro   double precision;
    v_score  double precision;
    v_prefix integer;
    v_lev    integer;
    v_cache  integer[];
    v_result integer;
    v_db     integer;
    v_da     integer;
    v_k      integer;
    v_scored text[] := '{}';
    v_scores double precision[] := '{}';
BEGIN
    FOREACH v_c IN ARRAY catalog LOOP
        CONTINUE WHEN v_c IS NULL;
        b := pg_catalog.regexp_split_to_array(v_c, '');
        b_len := pg_catalog.length(v_c);
        -- Jaro.
        IF a_len = 0 AND b_len = 0 THEN
            v_jaro := 1.0;
        ELSIF a_len = 0 OR b_len = 0 THEN
            v_jaro := 0.0;
        ELSE
            v_range := GREATEST(GREATEST(a_len, b_len) / 2 - 1, 0);
            a_flags := pg_catalog.array_fill(false, ARRAY[a_len]);
            b_flags := pg_catalog.array_fill(false, ARRAY[b_len]);
            v_match := 0;
            FOR i IN 1 .. a_len LOOP
                FOR j IN GREATEST(1, i - v_range) .. LEAST(b_len, i + v_range) LOOP
                    IF a[i] = b[j] AND NOT b_flags[j] THEN
                        a_flags[i] := true;
                        b_flags[j] := true;
                        v_match := v_match + 1;
                        EXIT;
                    END IF;
                END LOOP;
            END LOOP;
            v_trans := 0;
            IF v_match > 0 THEN
                v_k := 1;
                FOR i IN 1 .. a_len LOOP
                    IF a_flags[i] THEN
                        WHILE NOT b_flags[v_k] LOOP
                            v_k := v_k + 1;
                        END LOOP;
                        IF a[i] <> b[v_k] THEN
                            v_trans := v_trans + 1;
                        END IF;
                        v_k := v_k + 1;
                    END IF;
                END LOOP;
                v_trans := v_trans / 2;
                v_jaro := ((v_match::double precision / a_len::double precision)
                          + (v_match::double precision / b_len::double precision)
                          + ((v_match - v_trans)::double precision / v_match::double precision)) / 3.0::double precision;
            ELSE
                v_jaro := 0.0;
            END IF;
        END IF;
        -- Winkler: a common prefix of up to four characters.
        v_score := v_jaro;
        IF v_jaro > 0.7::double precision THEN
            v_prefix := 0;
            WHILE v_prefix < 4 AND v_prefix < a_len AND v_prefix < b_len AND a[v_prefix + 1] = b[v_prefix + 1] LOOP
                v_prefix := v_prefix + 1;
            END LOOP;
            v_score := v_jaro + 0.1::double precision * v_prefix::double precision * (1.0::double precision - v_jaro);
        END IF;
        IF v_score < 0.8::double precision THEN
            -- Levenshtein, only when Jaro-Winkler does not decide.
            v_cache := ARRAY(SELECT pg_catalog.generate_series(1, b_len));
            v_result := b_len;
            FOR i IN 1 .. a_len LOOP
                v_result := i;
                v_db := i - 1;
                FOR j IN 1 .. b_len LOOP
                    v_da := v_db + CASE WHEN a[i] = b[j] THEN 0 ELSE 1 END;
                    v_db := v_cache[j];
                    v_result := LEAST(v_result + 1, LEAST(v_da, v_db + 1));
                    v_cache[j] := v_result;
                END LOOP;
            END LOOP;
            v_lev := v_result;
            CONTINUE WHEN v_lev > 3;
        END IF;
        v_scored := v_scored || v_c;
        v_scores := v_scores || v_score;
    END LOOP;
    RETURN ARRAY(SELECT s.c FROM unnest(v_scored, v_scores) AS s(c, score)
                  ORDER BY s.score DESC, s.c COLLATE "C" LIMIT 3);
END
$fn$;

-- rules/src/options.rs `parse`: a JSON object of known keys, each in its
-- range, checked in byte order of the keys as serde_json's map holds them.
-- Numbers are read as the extension reads them (pgrx hands it jsonb's text,
-- which serde_json parses): digits only is a whole number, anything else a
-- 64-bit float; messages show values as serde_json writes them (the
-- shortest form for floats). Retry gaps written as text are parsed as
-- humantime 2.4 parses them, overflow and inexact fractions included.
CREATE FUNCTION postbox._validate_options(options jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
DECLARE
    c_u64     constant numeric := 18446744073709551615;
    c_keys    constant text := 'timeout_ms, connect_timeout_ms, max_in_flight, rate_limit_per_s, retry_schedule, batch_max_events, batch_max_wait_ms, batch_max_bytes, ordering, ordering_given_up, coalesce';
    c_gap     constant text := 'options.retry_schedule intervals must be seconds or durations like "500ms", "30s", "5m", "2h", from 1ms to 7 days';
    c_space   constant text := E'[\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
    v_key     text;
    v_val     jsonb;
    v_lo      numeric;
    v_hi      numeric;
    v_timeout numeric;
    v_connect numeric;
    v_rate    double precision;
    v_gap     jsonb;
    -- The broken rule, its code, the value it shows (as JSON, or as text) and its key.
    v_rule    text;
    v_code    text;
    v_show    jsonb;
    v_text    text;
    v_item    text;
    -- A gap being parsed (humantime): text, characters, position, number, parts.
    v_str     text;
    v_ch      text[];
    v_len     integer;
    v_i       integer;
    v_c       text;
    v_n       numeric;
    v_fnum    numeric;
    v_fden    numeric;
    v_start   integer;
    v_end     integer;
    v_unit    text;
    v_mul     numeric;     -- the unit in nanoseconds
    v_sec     numeric;
    v_nsec    numeric;
    v_osec    numeric;     -- the duration so far
    v_onsec   numeric;
    v_ok      boolean;
    v_ns      numeric;
    -- A float as ryu writes it.
    v_f       double precision;
    v_ft      text;
    v_neg     boolean;
    v_digits  text;
    v_k       integer;
    v_kk      integer;
BEGIN
    IF pg_catalog.jsonb_typeof(options) <> 'object' THEN
        v_rule := 'options must be a JSON object';
        v_show := options;
    END IF;
    FOR v_key, v_val IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(
            CASE WHEN v_rule IS NULL THEN options ELSE '{}' END) e ORDER BY e.key COLLATE "C" LOOP
        IF v_key IN ('timeout_ms', 'connect_timeout_ms', 'max_in_flight', 'batch_max_events',
                     'batch_max_wait_ms', 'batch_max_bytes') THEN
            SELECT r.lo, r.hi INTO v_lo, v_hi
              FROM (VALUES ('timeout_ms', 100, 120000), ('connect_timeout_ms', 100, 60000),
                           ('max_in_flight', 1, 1000), ('batch_max_events', 1, 1000),
                           ('batch_max_wait_ms', 0, 60000), ('batch_max_bytes', 1024, 16777216)) AS r(key, lo, hi)
             WHERE r.key = v_key;
            IF pg_catalog.jsonb_typeof(v_val) = 'number' AND v_val::text ~ '^[0-9]{1,20}$'
               AND v_val::text::numeric <= c_u64 AND v_val::text::numeric BETWEEN v_lo AND v_hi THEN
                IF v_key = 'timeout_ms' THEN v_timeout := v_val::text::numeric; END IF;
                IF v_key = 'connect_timeout_ms' THEN v_connect := v_val::text::numeric; END IF;
            ELSE
                v_rule := pg_catalog.format('options.%s must be a whole number from %s to %s', v_key, v_lo, v_hi);
                v_show := v_val;
                v_item := v_key;
            END IF;
        ELSIF v_key IN ('ordering', 'ordering_given_up') THEN
            IF NOT (v_val = ANY (CASE v_key WHEN 'ordering' THEN ARRAY['"none"', '"key"']::jsonb[]
                                            ELSE ARRAY['"skip"', '"hold"']::jsonb[] END)) THEN
                v_rule := pg_catalog.format('options.%s must be %s', v_key,
                              CASE v_key WHEN 'ordering' THEN '"none" or "key"' ELSE '"skip" or "hold"' END);
                v_show := v_val;
                v_item := v_key;
            END IF;
        ELSIF v_key = 'coalesce' THEN
            IF pg_catalog.jsonb_typeof(v_val) <> 'boolean' THEN
                v_rule := 'options.coalesce must be true or false';
                v_show := v_val;
                v_item := v_key;
            END IF;
        ELSIF v_key = 'rate_limit_per_s' THEN
            IF pg_catalog.jsonb_typeof(v_val) = 'number' THEN
                v_rate := v_val::text::double precision;
            END IF;
            IF pg_catalog.jsonb_typeof(v_val) <> 'number'
               OR NOT (v_rate >= 0.01::double precision AND v_rate <= 100000.0::double precision) THEN
                v_rule := 'options.rate_limit_per_s must be a number from 0.01 to 100000';
                v_show := v_val;
                v_item := v_key;
            END IF;
        ELSIF v_key = 'retry_schedule' THEN
            v_item := v_key;
            IF pg_catalog.jsonb_typeof(v_val) <> 'array' THEN
                v_rule := 'options.retry_schedule must be an array of intervals such as ["30s", "5m", "2h"]';
                v_show := v_val;
            ELSIF pg_catalog.jsonb_array_length(v_val) > 30 THEN
                v_rule := 'options.retry_schedule may hold at most 30 intervals';
                v_text := pg_catalog.jsonb_array_length(v_val)::text;
            ELSE
                FOR v_gap IN SELECT g.value FROM pg_catalog.jsonb_array_elements(v_val) WITH ORDINALITY AS g(value, n) ORDER BY g.n LOOP
                    v_ns := NULL;
                    IF pg_catalog.jsonb_typeof(v_gap) = 'number' THEN
                        -- Duration::try_from_secs_f64: nanoseconds rounded half to even.
                        IF v_gap::text::numeric >= 0 AND v_gap::text::numeric < c_u64 + 1 THEN
                            v_ns := v_gap::text::numeric * 1000000000;
                            v_ns := CASE WHEN v_ns - pg_catalog.floor(v_ns) = 0.5
                                         THEN pg_catalog.floor(v_ns) + (pg_catalog.floor(v_ns) % 2)
                                         ELSE pg_catalog.round(v_ns) END;
                        END IF;
                    ELSIF pg_catalog.jsonb_typeof(v_gap) = 'string' THEN
                        -- humantime::parse_duration(s.trim()); NULL for an error.
                        v_str := pg_catalog.regexp_replace(v_gap #>> '{}', '^' || c_space || '+|' || c_space || '+$', '', 'g');
                        v_ok := true;
                        IF v_str = '0' THEN
                            v_ns := 0;
                        ELSE
                            v_ch := pg_catalog.regexp_split_to_array(v_str, '');
                            v_len := pg_catalog.cardinality(v_ch);
                            v_osec := 0;
                            v_onsec := 0;
                            v_i := 1;
                            -- the first number's first digit, after blanks
                            WHILE v_i <= v_len AND v_ch[v_i] ~ ('^' || c_space || '$') LOOP v_i := v_i + 1; END LOOP;
                            IF v_i > v_len OR v_ch[v_i] !~ '^[0-9]$' THEN
                                v_ok := false;
                            ELSE
                                v_n := v_ch[v_i]::numeric;
                                v_i := v_i + 1;
                            END IF;
                            WHILE v_ok LOOP
                                -- the number: digits and blanks, maybe a fraction, up to a letter
                                v_fnum := NULL;
                                v_start := NULL;
                                WHILE v_i <= v_len LOOP
                                    v_c := v_ch[v_i];
                                    v_i := v_i + 1;
                                    IF v_c ~ '^[0-9]$' THEN
                                        v_n := v_n * 10 + v_c::numeric;
                                        IF v_n > c_u64 THEN v_ok := false; EXIT; END IF;
                                    ELSIF v_c ~ ('^' || c_space || '$') THEN
                                        NULL;
                                    ELSIF v_c ~ '^[a-zA-Z\u00b5]$' THEN
                                        v_start := v_i - 1;
                                        EXIT;
                                    ELSIF v_c = '.' THEN
                                        v_fnum := 0;
                                        v_fden := 1;
                                        WHILE v_i <= v_len LOOP
                                            v_c := v_ch[v_i];
                                            v_i := v_i + 1;
                                            IF v_c ~ '^[0-9]$' THEN
                                                v_fden := v_fden * 10;
                                                v_fnum := v_fnum * 10 + v_c::numeric;
                                                IF v_fden > c_u64 OR v_fnum > c_u64 THEN v_ok := false; EXIT; END IF;
                                            ELSIF v_c ~ ('^' || c_space || '$') THEN
                                                NULL;
                                            ELSIF v_c ~ '^[a-zA-Z\u00b5]$' THEN
                                                v_start := v_i - 1;
                                                EXIT;
                                            ELSE
                                                v_ok := false;
                                                EXIT;
                                            END IF;
                                        END LOOP;
                                        IF v_fden = 1 THEN v_ok := false; END IF;
                                        EXIT;
                                    ELSE
                                        v_ok := false;
                                        EXIT;
                                    END IF;
                                END LOOP;
                                EXIT WHEN NOT v_ok;
                                -- the unit: letters up to a blank, a digit or the end
                                v_end := v_len + 1;
                                IF v_start IS NULL THEN
                                    v_start := v_len + 1;
                                ELSE
                                    WHILE v_i <= v_len LOOP
                                        v_c := v_ch[v_i];
                                        IF v_c ~ '^[a-zA-Z\u00b5]$' THEN
                                            v_i := v_i + 1;
                                        ELSIF v_c ~ '^[0-9]$' OR v_c ~ ('^' || c_space || '$') THEN
                                            EXIT;
                                        ELSE
                                            v_ok := false;
                                            EXIT;
                                        END IF;
                                    END LOOP;
                                    v_end := v_i;
                                END IF;
                                EXIT WHEN NOT v_ok;
                                v_unit := pg_catalog.array_to_string(v_ch[v_start:v_end - 1], '');
                                v_mul := CASE
                                    WHEN v_unit IN ('nanos', 'nsec', 'ns') THEN 1
                                    WHEN v_unit IN ('usec', 'us', E'\u00b5s') THEN 1000
                                    WHEN v_unit IN ('millis', 'msec', 'ms') THEN 1000000
                                    WHEN v_unit IN ('seconds', 'second', 'secs', 'sec', 's') THEN 1000000000
                                    WHEN v_unit IN ('minutes', 'minute', 'min', 'mins', 'm') THEN 60000000000
                                    WHEN v_unit IN ('hours', 'hour', 'hr', 'hrs', 'h') THEN 3600000000000
                                    WHEN v_unit IN ('days', 'day', 'd') THEN 86400000000000
                                    WHEN v_unit IN ('weeks', 'week', 'wk', 'wks', 'w') THEN 604800000000000
                                    WHEN v_unit IN ('months', 'month', 'M') THEN 2630016000000000
                                    WHEN v_unit IN ('years', 'year', 'yr', 'yrs', 'y') THEN 31557600000000000 END;
                                IF v_mul IS NULL THEN v_ok := false; EXIT; END IF;
                                -- the whole part: below a second in nanoseconds, else in seconds
                                IF v_mul < 1000000000 THEN
                                    v_sec := 0; v_nsec := v_n * v_mul;
                                ELSE
                                    v_sec := v_n * (v_mul / 1000000000); v_nsec := 0;
                                END IF;
                                IF v_sec > c_u64 OR v_nsec > c_u64 THEN v_ok := false; EXIT; END IF;
                                -- the fraction: exact division only; below an hour in nanoseconds
                                IF v_fnum IS NOT NULL THEN
                                    IF v_mul = 1 THEN v_ok := false; EXIT; END IF;
                                    IF v_mul < 3600000000000 THEN
                                        IF v_fnum * v_mul > c_u64 OR (v_fnum * v_mul) % v_fden <> 0 THEN v_ok := false; EXIT; END IF;
                                        v_nsec := v_nsec + (v_fnum * v_mul) / v_fden;
                                    ELSE
                                        IF v_fnum * (v_mul / 1000000000) > c_u64
                                           OR (v_fnum * (v_mul / 1000000000)) % v_fden <> 0 THEN v_ok := false; EXIT; END IF;
                                        v_sec := v_sec + (v_fnum * (v_mul / 1000000000)) / v_fden;
                                    END IF;
                                END IF;
                                IF v_onsec + v_nsec > c_u64 THEN v_ok := false; EXIT; END IF;
                                v_onsec := v_onsec + v_nsec;
                                v_osec := v_osec + v_sec + pg_catalog.floor(v_onsec / 1000000000);
                                v_onsec := v_onsec % 1000000000;
                                IF v_osec > c_u64 THEN v_ok := false; EXIT; END IF;
                                -- next: a digit right after the unit starts a number; else blanks, then a digit or the end
                                IF v_i <= v_len AND v_ch[v_i] ~ '^[0-9]$' THEN
                                    v_n := v_ch[v_i]::numeric;
                                    v_i := v_i + 1;
                                    CONTINUE;
                                END IF;
                                IF v_i <= v_len THEN v_i := v_i + 1; END IF;  -- the blank that ended the unit
                                WHILE v_i <= v_len AND v_ch[v_i] ~ ('^' || c_space || '$') LOOP v_i := v_i + 1; END LOOP;
                                EXIT WHEN v_i > v_len;
                                IF v_ch[v_i] !~ '^[0-9]$' THEN v_ok := false; EXIT; END IF;
                                v_n := v_ch[v_i]::numeric;
                                v_i := v_i + 1;
                            END LOOP;
                            IF v_ok THEN
                                v_ns := v_osec * 1000000000 + v_onsec;
                            END IF;
                        END IF;
                    END IF;
                    IF v_ns IS NULL OR v_ns < 1000000 OR v_ns > 604800000000000 THEN
                        v_rule := c_gap;
                        v_show := v_gap;
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
            IF v_rule IS NULL THEN
                v_item := NULL;
            END IF;
        ELSE
            v_rule := 'options may hold only ' || c_keys;
            v_text := v_key;
            v_item := v_key;
        END IF;
        EXIT WHEN v_rule IS NOT NULL;
    END LOOP;
    IF v_rule IS NULL AND v_connect > v_timeout THEN
        v_rule := 'options.connect_timeout_ms must not exceed options.timeout_ms';
        v_text := v_connect || ' > ' || v_timeout;
        v_item := 'connect_timeout_ms';
    END IF;
    IF v_rule IS NULL THEN
        RETURN options;
    END IF;
    -- The value as serde_json writes it: compact, floats as its float printer
    -- (zmij) does: the shortest digits, fixed for exponents -5 to 15, else
    -- d.ddde+X / d.ddde-X.
    IF v_text IS NULL AND pg_catalog.jsonb_typeof(v_show) = 'number'
       AND NOT (v_show::text ~ '^[0-9]{1,20}$' AND v_show::text::numeric <= c_u64)
       AND NOT (v_show::text ~ '^-[0-9]{1,19}$' AND v_show::text::numeric >= -9223372036854775808) THEN
        v_f := v_show::text::double precision;
        v_neg := v_f < 0 OR v_show::text LIKE '-%';
        v_ft := pg_catalog.ltrim(pg_catalog.abs(v_f)::text, '-');
        IF v_f = 0 THEN
            v_text := CASE WHEN v_neg THEN '-0.0' ELSE '0.0' END;
        ELSE
            -- digits and exponent: value = digits * 10^k
            v_digits := pg_catalog.replace(pg_catalog.split_part(v_ft, 'e', 1), '.', '');
            v_k := coalesce(NULLIF(pg_catalog.split_part(v_ft, 'e', 2), '')::integer, 0)
                 - pg_catalog.length(pg_catalog.split_part(pg_catalog.split_part(v_ft, 'e', 1), '.', 2));
            v_digits := pg_catalog.ltrim(v_digits, '0');
            WHILE pg_catalog.right(v_digits, 1) = '0' LOOP
                v_digits := pg_catalog.left(v_digits, -1);
                v_k := v_k + 1;
            END LOOP;
            v_kk := pg_catalog.length(v_digits) + v_k;
            v_text := CASE
                WHEN v_k >= 0 AND v_kk <= 16 THEN v_digits || pg_catalog.repeat('0', v_k) || '.0'
                WHEN v_kk > 0 AND v_kk <= 16 THEN pg_catalog.left(v_digits, v_kk) || '.' || pg_catalog.substr(v_digits, v_kk + 1)
                WHEN v_kk > -5 AND v_kk <= 0 THEN '0.' || pg_catalog.repeat('0', -v_kk) || v_digits
                WHEN pg_catalog.length(v_digits) = 1 THEN v_digits || 'e' || CASE WHEN v_kk > 0 THEN '+' ELSE '' END || (v_kk - 1)
                ELSE pg_catalog.left(v_digits, 1) || '.' || pg_catalog.substr(v_digits, 2) || 'e'
                     || CASE WHEN v_kk > 0 THEN '+' ELSE '' END || (v_kk - 1) END;
            IF v_neg THEN
                v_text := '-' || v_text;
            END IF;
        END IF;
    ELSIF v_text IS NULL THEN
        v_text := pg_catalog.regexp_replace(v_show::text,
            '("(?:[^"\\]|\\.)*"|[^",:\s\[\]{}]+|[\[\]{}])|(,) |(:) ', '\1\2\3', 'g');
    END IF;
    v_code := CASE WHEN v_rule = 'options must be a JSON object' THEN 'options_not_object'
                   WHEN pg_catalog.starts_with(v_rule, 'options may hold only') THEN 'options_unknown_key' END;
    IF v_code IS NULL THEN
        v_code := 'options_value_invalid';
    END IF;
    PERFORM postbox._raise(v_code, 'options', 'postbox: ' || v_rule || ': ' || postbox._shown(v_text), v_item);
END
$fn$;

-- rules/src/secret.rs `validate_for`: standard needs whsec_ and base64 of
-- 24 to 64 bytes (padding optional, trailing bits zero, as the base64
-- crate decodes); the hex styles take printable ASCII of 16 to 256
-- characters. Errors never show the secret, only its size.
CREATE FUNCTION postbox._validate_secret(secret text, style text) RETURNS void
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
DECLARE
    v_b64   text;
    v_data  text;
    v_rest  integer;
    v_last  integer;
    v_bytes integer;
BEGIN
    PERFORM postbox._validate_signature(style, NULL);  -- the style's own check
    IF style = 'standard' THEN
        IF NOT pg_catalog.starts_with(secret, 'whsec_') THEN
            PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
                'postbox: secret must start with whsec_: (secret hidden, %s characters)', pg_catalog.octet_length(secret)));
        END IF;
        v_b64 := pg_catalog.substr(secret, 7);
        IF v_b64 !~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}(==?)?|[A-Za-z0-9+/]{3}=?)?$' THEN
            PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
                'postbox: secret must be whsec_ followed by base64: (secret hidden, %s characters)', pg_catalog.octet_length(secret)));
        END IF;
        v_data := pg_catalog.rtrim(v_b64, '=');
        v_rest := pg_catalog.length(v_data) % 4;
        IF v_rest > 0 THEN
            -- The last character's unused low bits must be zero.
            v_last := pg_catalog.strpos('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
                                        pg_catalog.right(v_data, 1)) - 1;
            IF (v_rest = 2 AND v_last % 16 <> 0) OR (v_rest = 3 AND v_last % 4 <> 0) THEN
                PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
                    'postbox: secret must be whsec_ followed by base64: (secret hidden, %s characters)', pg_catalog.octet_length(secret)));
            END IF;
        END IF;
        v_bytes := pg_catalog.length(v_data) / 4 * 3 + CASE v_rest WHEN 2 THEN 1 WHEN 3 THEN 2 ELSE 0 END;
        IF v_bytes NOT BETWEEN 24 AND 64 THEN
            PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
                'postbox: secret must encode 24 to 64 bytes: (secret hidden, %s bytes)', v_bytes));
        END IF;
        RETURN;
    END IF;
    IF secret !~ '^[ -~]*$' THEN
        PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
            'postbox: secret must be printable ASCII: (secret hidden, %s characters)', pg_catalog.length(secret)));
    END IF;
    IF pg_catalog.octet_length(secret) NOT BETWEEN 16 AND 256 THEN
        PERFORM postbox._raise('secret_invalid', 'secret', pg_catalog.format(
            'postbox: secret must be 16 to 256 characters: (secret hidden, %s characters)', pg_catalog.length(secret)));
    END IF;
END
$fn$;

-- 32 bytes from PostgreSQL's strong random source (pg_strong_random, as
-- gen_random_uuid uses it): the random bytes of six version 4 UUIDs
-- (bytes 0-5 of three and 9-15 of three; 6 and 8 hold fixed bits), for the
-- three generators below (the Rust ones draw from the OS CSPRNG). The SQL
-- flavour's own: the extension has no such function.
CREATE FUNCTION postbox._random_bytes() RETURNS bytea
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT pg_catalog.substr(
        pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 1, 6) || pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 10, 7)
     || pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 1, 6) || pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 10, 7)
     || pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 1, 6) || pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 10, 7),
        1, 32)
$fn$;
COMMENT ON FUNCTION postbox._random_bytes() IS 'Internal (SQL flavour): 32 bytes from the strong random source, for the secret, key and token generators.';

-- rules/src/secret.rs `encode`: whsec_ and standard base64.
CREATE FUNCTION postbox._generate_secret() RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT 'whsec_' || pg_catalog.encode(postbox._random_bytes(), 'base64')
$fn$;

-- rules/src/api_key.rs `encode`: pbk_ and unpadded base64url.
CREATE FUNCTION postbox._generate_api_key() RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT 'pbk_' || pg_catalog.translate(pg_catalog.rtrim(pg_catalog.encode(postbox._random_bytes(), 'base64'), '='), '+/', '-_')
$fn$;

-- rules/src/api_key.rs `encode_with(PORTAL_PREFIX)`: pbp_ and unpadded base64url.
CREATE FUNCTION postbox._generate_portal_token() RETURNS text
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT 'pbp_' || pg_catalog.translate(pg_catalog.rtrim(pg_catalog.encode(postbox._random_bytes(), 'base64'), '='), '+/', '-_')
$fn$;

-- rules/src/api_key.rs `shown`: the first 12 bytes (pbk_ and 8
-- characters), or the whole key if it is shorter or 12 bytes would split
-- a character.
CREATE FUNCTION postbox._api_key_prefix(key text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT coalesce(
        (SELECT pg_catalog.left(key, n) FROM pg_catalog.generate_series(1, 12) AS n
          WHERE pg_catalog.octet_length(pg_catalog.left(key, n)) = 12 LIMIT 1),
        key)
$fn$;

-- extension/src/lib.rs `_uuid7_floor`: the smallest version 7 UUID of the
-- millisecond `at` falls in (clamped to the 48-bit range).
CREATE FUNCTION postbox._uuid7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT (pg_catalog.lpad(pg_catalog.to_hex(
                CASE WHEN at = '-infinity' THEN 0
                     WHEN at = 'infinity' THEN 281474976710655
                     ELSE LEAST(GREATEST(pg_catalog.floor(EXTRACT(epoch FROM at) * 1000), 0), 281474976710655)::bigint END),
                12, '0') || '70008000000000000000')::uuid
$fn$;

-- extension/src/lib.rs `_event_id`: the emitted row's id with n (modulo
-- 2^32) in its last 32 bits, so a statement's events sort by position.
CREATE FUNCTION postbox._event_id(emitted uuid, n bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT (pg_catalog.left(emitted::text, 28) || pg_catalog.lpad(pg_catalog.to_hex(n & 4294967295), 8, '0'))::uuid
$fn$;

-- A time-ordered (version 7, RFC 9562) UUID: 48 bits of Unix milliseconds,
-- 12 bits of the millisecond's fraction, then 62 random bits (a version 4
-- UUID's last 8 bytes, whose variant bits are already 10). Ids a session
-- makes only grow: it keeps its last 60-bit timestamp in a session setting
-- and steps past it when the clock has not moved on (PostgreSQL 18's
-- uuidv7() does the same, per backend). A value more than ten seconds ahead
-- of the clock is ignored, so setting it by hand cannot push ids into the
-- future. The timestamp is the epoch as a double times 4,096,000 (4096ths
-- of a millisecond): below 2^53, so exact to a unit; as hex, 15 digits
-- until the year 10889, the version digit going in after the twelfth.
-- One SQL expression, so that it is inlined into the statements that call
-- it: as a PL/pgSQL function it cost the emit path about as much as
-- writing the row (docs/measurements.md, "postbox-sql's emit"). Not STRICT
-- (it takes no arguments), which would keep it from being inlined.
CREATE FUNCTION postbox._uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $fn$
    SELECT (pg_catalog.overlay(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.set_config('postbox.uuid7_last',
                CASE WHEN pg_catalog.current_setting('postbox.uuid7_last', true) ~ '^[0-9]{1,18}$'
                      AND pg_catalog.current_setting('postbox.uuid7_last', true)::bigint
                          BETWEEN pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 4096000)::bigint
                              AND pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 4096000)::bigint + 40960000
                     THEN pg_catalog.current_setting('postbox.uuid7_last', true)::bigint + 1
                     ELSE pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 4096000)::bigint END::text,
                false)::bigint), 15, '0'), '7', 13, 0)
            || pg_catalog.right(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 16))::uuid
$fn$;
