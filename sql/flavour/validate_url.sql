-- postbox-sql: postbox.validate_url, the webhook URL rule (rules/src/url.rs
-- and the address ranges of rules/src/ip.rs) in PL/pgSQL, for the SQL-only
-- flavour. The Rust side parses with the url crate 2.5.8 (the WHATWG URL
-- Standard, with idna 1.1.0 for hosts); this function ports the parts of
-- that parser a webhook URL goes through: the same verdicts, the same
-- normalized URL (Url::as_str) and the same messages, codes and DETAIL.
--
-- What it ports, in the order the parser works:
--   * leading and trailing C0 controls and spaces trimmed, ASCII tab, LF and
--     CR removed everywhere;
--   * the scheme (special: http, https, ws, wss, ftp, file; any other is
--     parsed as a non-special URL, so a broken authority still gives the
--     parse error rather than "must use https");
--   * user info (last '@' of the authority), the "empty host" cases, the
--     port (default ports dropped: 80 http/ws, 443 https/wss, 21 ftp;
--     "invalid port number");
--   * hosts: IPv6 literals (with embedded IPv4) and their serialization with
--     the longest run of zeros compressed; opaque hosts of non-special URLs
--     ("invalid domain character"); for special URLs percent-decoding, then
--     idna's domain_to_ascii with the URL deny list for ASCII names
--     (lower-casing, the forbidden code points, xn-- labels that must be
--     valid punycode and decode to a valid label), then the "ends in a
--     number" IPv4 parser (decimal, hex, octal and short forms, overflow);
--   * paths (percent-encoding, '\' as '/', the dot segments with their %2e
--     forms) and queries (the special-query set), for http and https, the
--     only schemes whose normalized form is ever returned or measured.
-- It assumes a UTF8 database, as the install does.
--
-- Where the url crate departs from the standard, this follows the crate:
-- a '\' ends the port of a non-special URL too (foo://h:1\x parses), and
-- an authority whose user info is empty but present (foo://@, foo://:@/)
-- is not "empty host" for a non-special URL.
--
-- Known differences from the Rust side, all about internationalized names
-- (for a host that is ASCII once percent-decoded and has no "xn--" label,
-- no difference is known):
--   1. A host that holds non-ASCII characters once percent-decoded does not
--      go through UTS 46 here. It is normalized with NFKC, U+3002, U+FF0E
--      and U+FF61 become '.', and if that leaves ASCII the host goes on as
--      an ASCII host (so https://１２７．０．０．１/ is 127.0.0.1 and refused,
--      as in Rust). If non-ASCII remains it is refused with url_invalid,
--      "webhook URL must be a valid absolute URL (invalid international
--      domain name)". Rust maps, case-folds and punycode-encodes such a
--      host: it accepts https://bücher.example/ (as xn--bcher-kva.example)
--      where this refuses it; it drops the characters UTS 46 ignores (U+00AD
--      SOFT HYPHEN, U+200B, variation selectors...), which stay here and so
--      refuse the host; and where Rust fails such a host for another reason
--      (a host mapped to nothing: "empty host"; a bad address:
--      "invalid IPv4 address") the reason given here is the IDNA one.
--      Characters whose NFKC form holds a '.' (other than the three full
--      stops above, e.g. U+2024, U+2488, U+FE52) are refused, as UTS 46
--      disallows them. (Every other code point whose NFKC form is ASCII maps
--      to that form, lower-cased, in UTS 46 as well: checked against the
--      Unicode 17 IDNA mapping table.)
--   2. A "xn--" label is decoded exactly as idna decodes it (its punycode
--      errors and overflows, the 2000-character input and 1000-character
--      output limits, the trailing '-'), and the ASCII of the decoded label
--      is checked exactly (the deny list, '.'). Its non-ASCII characters are
--      judged by an approximation of UTS 46's validity criteria, not by its
--      tables; the decoded label is refused when:
--        - it is not in NFKC (this covers NFC and the compatibility
--          mappings); normalize() uses the server's Unicode version (14 for
--          PostgreSQL 14 and 15, 15.0 for 16, 15.1 for 17, 16.0 for 18),
--          idna a newer one, so characters new since differ;
--        - lower() changes it (Cherokee capitals, which UTS 46 keeps, left
--          out); lower() follows the database's LC_CTYPE, so under the C or
--          POSIX locale upper-case non-ASCII letters get through here;
--        - it holds a code point UTS 46 disallows, ignores or maps that the
--          two checks above let through, from a list taken from the Unicode
--          17 IDNA mapping table (controls, format characters, private use,
--          noncharacters, tags, U+3002, Greek ypogegrammeni forms, Cherokee
--          small letters, ...). Unassigned code points, which UTS 46
--          disallows, are not detected: they pass here;
--        - it starts with a combining mark (General_Category M, from
--          Unicode 14 data: marks assigned since are missed);
--        - it holds U+200C ZERO WIDTH NON-JOINER or U+200D ZERO WIDTH
--          JOINER other than right after a virama (Canonical_Combining_Class
--          9, Unicode 14 data). Rust also accepts a U+200C between letters
--          that join (the Arabic-script rule of CheckJoiners, which needs
--          the Joining_Type table): refused here, e.g. Persian names such as
--          xn--mgba3gch31f060k.com.
--      Not checked here, checked in Rust: the bidi rule (RFC 5893) that Rust
--      applies to every label of a host once one label decodes to
--      right-to-left text (Hebrew, Arabic...). Hosts that break it (a label
--      of such a host starting with a digit, say, or mixing scripts the rule
--      forbids) are accepted here and refused there.
--   3. Nothing else is known to differ. (A URL over 2048 bytes is refused
--      before parsing on both sides; a bad setting of
--      postbox.allow_insecure_urls is reported by postbox._allow_insecure_urls
--      before the URL is looked at, as the extension reads its setting
--      first.)
CREATE FUNCTION postbox.validate_url(url text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_allow    boolean;
    v_shown    text;        -- the URL as messages show it (user info hidden)
    v_in       text;        -- the input, trimmed, without tab, LF and CR
    v_err      text;        -- the parse error (url::ParseError's Display)
    v_scheme   text;
    v_kind     text;        -- 'special' (http, https, ws, wss, ftp), 'file' or 'opaque'
    v_rest     text;        -- what is left to parse
    v_auth     boolean := false;  -- the URL has an authority (//...)
    v_cred     boolean := false;  -- a non-empty user name or password
    v_host_str text;        -- the host as written (NULL: no host to parse)
    v_host     text;        -- the host as serialized (NULL: no host)
    v_hkind    text;        -- 'domain', 'ipv4' or 'ipv6'
    v_name     text;        -- a domain, as idna returns it
    v_v4       bigint;
    v_v6       integer[];
    v_port     integer;
    v_frag     boolean := false;
    v_path     text;
    v_query    text;
    v_out      text;
    v_code     text;
    v_rule     text;
    v_value    text;
    v_why      text;
    -- scratch
    v_m        text;
    v_s        text;
    v_t        text;
    v_c        text;
    v_hex      text;
    v_chars    text[];
    v_parts    text[];
    v_segs     text[];
    v_cps      integer[];
    v_nums     bigint[];
    v_i        integer;
    v_j        integer;
    v_k        integer;
    v_n        integer;
    v_x        integer;
    v_flag     boolean;
    v_a        bigint;
    v_b        bigint;
    v_w        bigint;
    v_bias     bigint;
    v_old      bigint;
    v_pos      bigint;
    v_cp       bigint;
BEGIN
    IF url IS NULL THEN
        PERFORM postbox._raise('required', 'url', 'postbox: url must not be NULL: NULL', NULL);
        RETURN NULL;
    END IF;
    v_allow := postbox._allow_insecure_urls();

    -- url::without_userinfo: everything from the scheme's end (or the start)
    -- to the last '@' becomes "(hidden)", worked on the text as given.
    v_i := pg_catalog.strpos(pg_catalog.reverse(url), '@');
    IF v_i = 0 THEN
        v_shown := url;
    ELSE
        v_i := pg_catalog.length(url) - v_i + 1;            -- the last '@'
        v_m := pg_catalog.left(url, v_i - 1);
        v_j := pg_catalog.strpos(v_m, '://');
        IF v_j > 0 THEN
            v_j := v_j + 2;
        ELSE
            v_j := pg_catalog.strpos(v_m, ':');
            IF NOT (v_j > 1 AND pg_catalog.left(v_m, v_j - 1) ~ '^[A-Za-z0-9+.-]+$') THEN
                v_j := 0;
            END IF;
        END IF;
        v_shown := pg_catalog.left(url, v_j) || '(hidden)' || pg_catalog.substr(url, v_i);
    END IF;

    IF pg_catalog.octet_length(url) > 2048 THEN
        PERFORM postbox._raise('url_too_long', 'url',
            'postbox: webhook URL must be at most 2048 bytes: '
            || postbox._shown(pg_catalog.left(v_shown, 64) || '... (' || pg_catalog.octet_length(url) || ' bytes)'),
            NULL);
        RETURN NULL;
    END IF;

    ---------------------------------------------------------------- parsing
    <<parse>>
    BEGIN
        v_in := pg_catalog.regexp_replace(url, '^[\u0001-\u0020]+|[\u0001-\u0020]+$', '', 'g');
        v_in := pg_catalog.translate(v_in, pg_catalog.chr(9) || pg_catalog.chr(10) || pg_catalog.chr(13), '');

        v_m := pg_catalog.substring(v_in, '^([A-Za-z][A-Za-z0-9+.-]*):');
        IF v_m IS NULL THEN
            v_err := 'relative URL without a base';
            EXIT parse;
        END IF;
        v_scheme := pg_catalog.lower(v_m COLLATE "C");
        v_rest := pg_catalog.substr(v_in, pg_catalog.length(v_m) + 2);
        v_kind := CASE WHEN v_scheme IN ('http', 'https', 'ws', 'wss', 'ftp') THEN 'special'
                       WHEN v_scheme = 'file' THEN 'file' ELSE 'opaque' END;

        IF v_kind = 'special' THEN
            -- Any number of '/' and '\' (none included) before the authority.
            v_rest := pg_catalog.ltrim(v_rest, '/\');
            v_auth := true;
        ELSIF v_kind = 'file' THEN
            -- file: has a host only after two slashes; no user info, no
            -- port. A Windows drive letter, an empty host or localhost
            -- stands for none. Only the host can fail.
            IF v_rest ~ '^[/\\][/\\]' THEN
                v_rest := pg_catalog.substr(v_rest, 3);
                v_host_str := pg_catalog.substring(v_rest, '^[^/\\?#]*');
                IF v_host_str = '' OR v_host_str ~ '^[A-Za-z][:|]$' THEN
                    v_host_str := NULL;
                END IF;
            END IF;
        ELSIF pg_catalog.left(v_rest, 2) = '//' THEN
            v_rest := pg_catalog.substr(v_rest, 3);
            v_auth := true;
        END IF;
        -- A non-special URL without "//" (mailto:, javascript:...) cannot fail.

        IF v_auth THEN
            -- User info: up to the last '@' before the authority's end.
            v_m := pg_catalog.substring(v_rest, CASE WHEN v_kind = 'special' THEN '^[^/?#\\]*' ELSE '^[^/?#]*' END);
            v_i := pg_catalog.strpos(pg_catalog.reverse(v_m), '@');
            IF v_i > 0 THEN
                v_i := pg_catalog.length(v_m) - v_i + 1;
                IF v_i = 1 AND pg_catalog.length(v_m) = 1 AND pg_catalog.length(v_rest) > 1 THEN
                    -- "@" alone, then '/', '?', '#' (or '\').
                    v_err := 'empty host';
                    EXIT parse;
                END IF;
                v_s := pg_catalog.left(v_m, v_i - 1);
                v_j := pg_catalog.strpos(v_s, ':');
                -- An empty user name and an empty password are not written.
                v_cred := CASE WHEN v_j = 0 THEN v_s <> '' ELSE v_j > 1 OR v_j < pg_catalog.length(v_s) END;
                v_rest := pg_catalog.substr(v_rest, v_i + 1);
            END IF;
            -- The host: up to ':' (not inside brackets), '/', '?', '#' (and
            -- '\' for special schemes).
            v_host_str := pg_catalog.substring(v_rest, CASE WHEN v_kind = 'special'
                THEN '^(?:[^]:/?#\\[]|\]|\[[^]/?#\\]*)*' ELSE '^(?:[^]:/?#[]|\]|\[[^]/?#]*)*' END);
            v_rest := pg_catalog.substr(v_rest, pg_catalog.length(v_host_str) + 1);
            IF v_kind = 'special' AND v_host_str = '' THEN
                v_err := 'empty host';
                EXIT parse;
            END IF;
        END IF;

        ------------------------------------------------------------ host
        IF v_host_str IS NOT NULL THEN
            IF pg_catalog.left(v_host_str, 1) = '[' THEN
                ---------------------------------------------------- IPv6
                IF pg_catalog.right(v_host_str, 1) <> ']' THEN
                    v_err := 'invalid IPv6 address';
                    EXIT parse;
                END IF;
                v_chars := pg_catalog.string_to_array(pg_catalog.substr(v_host_str, 2, pg_catalog.length(v_host_str) - 2), NULL);
                v_n := pg_catalog.cardinality(v_chars);
                v_v6 := '{0,0,0,0,0,0,0,0}';
                v_j := 0;                   -- piece pointer (0-based)
                v_k := NULL;                -- compress pointer
                v_i := 1;                   -- input position (1-based)
                v_flag := false;            -- an IPv4 part follows
                IF v_n < 2 THEN
                    v_err := 'invalid IPv6 address';
                    EXIT parse;
                END IF;
                IF v_chars[1] = ':' THEN
                    IF v_chars[2] <> ':' THEN
                        v_err := 'invalid IPv6 address';
                        EXIT parse;
                    END IF;
                    v_i := 3;
                    v_j := 1;
                    v_k := 1;
                END IF;
                WHILE v_i <= v_n LOOP
                    IF v_j = 8 THEN
                        v_err := 'invalid IPv6 address';
                        EXIT parse;
                    END IF;
                    IF v_chars[v_i] = ':' THEN
                        IF v_k IS NOT NULL THEN
                            v_err := 'invalid IPv6 address';
                            EXIT parse;
                        END IF;
                        v_i := v_i + 1;
                        v_j := v_j + 1;
                        v_k := v_j;
                        CONTINUE;
                    END IF;
                    v_x := v_i;             -- start of this piece
                    v_a := 0;
                    WHILE v_i <= v_n AND v_i < v_x + 4
                          AND pg_catalog.strpos('0123456789abcdefABCDEF', v_chars[v_i]) > 0 LOOP
                        v_a := v_a * 16 + (pg_catalog.strpos('0123456789abcdef', pg_catalog.lower(v_chars[v_i] COLLATE "C")) - 1);
                        v_i := v_i + 1;
                    END LOOP;
                    IF v_i <= v_n THEN
                        IF v_chars[v_i] = '.' THEN
                            IF v_i = v_x OR v_j > 6 THEN
                                v_err := 'invalid IPv6 address';
                                EXIT parse;
                            END IF;
                            v_i := v_x;
                            v_flag := true;
                        ELSIF v_chars[v_i] = ':' THEN
                            v_i := v_i + 1;
                            IF v_i > v_n THEN
                                v_err := 'invalid IPv6 address';
                                EXIT parse;
                            END IF;
                        ELSE
                            v_err := 'invalid IPv6 address';
                            EXIT parse;
                        END IF;
                    END IF;
                    EXIT WHEN v_flag;
                    v_v6[v_j + 1] := v_a;
                    v_j := v_j + 1;
                END LOOP;
                IF v_flag THEN
                    -- An IPv4 address in the last two pieces: four decimal
                    -- numbers up to 255, no leading zeros.
                    IF v_j > 6 THEN
                        v_err := 'invalid IPv6 address';
                        EXIT parse;
                    END IF;
                    v_x := 0;               -- numbers seen
                    WHILE v_i <= v_n LOOP
                        IF v_x > 0 THEN
                            IF v_x < 4 AND v_chars[v_i] = '.' THEN
                                v_i := v_i + 1;
                            ELSE
                                v_err := 'invalid IPv6 address';
                                EXIT parse;
                            END IF;
                        END IF;
                        v_a := NULL;
                        WHILE v_i <= v_n AND pg_catalog.ascii(v_chars[v_i]) BETWEEN 48 AND 57 LOOP
                            IF v_a IS NULL THEN
                                v_a := pg_catalog.ascii(v_chars[v_i]) - 48;
                            ELSIF v_a = 0 THEN
                                v_err := 'invalid IPv6 address';
                                EXIT parse;
                            ELSE
                                v_a := v_a * 10 + pg_catalog.ascii(v_chars[v_i]) - 48;
                                IF v_a > 255 THEN
                                    v_err := 'invalid IPv6 address';
                                    EXIT parse;
                                END IF;
                            END IF;
                            v_i := v_i + 1;
                        END LOOP;
                        IF v_a IS NULL THEN
                            v_err := 'invalid IPv6 address';
                            EXIT parse;
                        END IF;
                        v_v6[v_j + 1] := v_v6[v_j + 1] * 256 + v_a;
                        v_x := v_x + 1;
                        IF v_x = 2 OR v_x = 4 THEN
                            v_j := v_j + 1;
                        END IF;
                    END LOOP;
                    IF v_x <> 4 THEN
                        v_err := 'invalid IPv6 address';
                        EXIT parse;
                    END IF;
                END IF;
                IF v_i <= v_n THEN
                    v_err := 'invalid IPv6 address';
                    EXIT parse;
                END IF;
                IF v_k IS NOT NULL THEN
                    -- Move the pieces after "::" to the end.
                    v_x := v_j - v_k;       -- swaps
                    v_j := 7;
                    WHILE v_x > 0 LOOP
                        v_a := v_v6[v_j + 1];
                        v_v6[v_j + 1] := v_v6[v_k + v_x];
                        v_v6[v_k + v_x] := v_a;
                        v_x := v_x - 1;
                        v_j := v_j - 1;
                    END LOOP;
                ELSIF v_j <> 8 THEN
                    v_err := 'invalid IPv6 address';
                    EXIT parse;
                END IF;
                -- Serialized with the first longest run (two or more) of
                -- zero pieces as "::", in lower-case hex.
                v_i := -1;                  -- start of the longest run
                v_n := 0;                   -- its length
                v_k := -1;                  -- start of the current run
                FOR v_x IN 0..7 LOOP
                    IF v_v6[v_x + 1] = 0 THEN
                        IF v_k < 0 THEN
                            v_k := v_x;
                        END IF;
                        IF v_x - v_k + 1 > v_n THEN
                            v_i := v_k;
                            v_n := v_x - v_k + 1;
                        END IF;
                    ELSE
                        v_k := -1;
                    END IF;
                END LOOP;
                IF v_n < 2 THEN
                    v_i := -1;
                END IF;
                v_host := '';
                v_x := 0;
                WHILE v_x < 8 LOOP
                    IF v_x = v_i THEN
                        v_host := v_host || CASE WHEN v_x = 0 THEN '::' ELSE ':' END;
                        EXIT WHEN v_i + v_n >= 8;
                        v_x := v_i + v_n;
                    END IF;
                    v_host := v_host || pg_catalog.to_hex(v_v6[v_x + 1]) || CASE WHEN v_x < 7 THEN ':' ELSE '' END;
                    v_x := v_x + 1;
                END LOOP;
                v_host := '[' || v_host || ']';
                v_hkind := 'ipv6';

            ELSIF v_kind = 'opaque' THEN
                ---------------------------------------- non-special host
                IF v_host_str ~ '[ #/:<>?@[\\\]^|]' THEN
                    v_err := 'invalid domain character';
                    EXIT parse;
                END IF;
                IF v_host_str <> '' THEN
                    v_host := v_host_str;   -- not serialized: never returned
                    v_hkind := 'domain';
                END IF;

            ELSE
                ---------------------------- special host: a name or IPv4
                v_name := v_host_str;
                IF pg_catalog.strpos(v_name, '%') > 0 OR v_name ~ '[^\u0001-\u007F]' THEN
                    -- Percent-decode to bytes (as hex).
                    v_chars := pg_catalog.string_to_array(v_name, NULL);
                    v_n := pg_catalog.cardinality(v_chars);
                    v_hex := '';
                    v_i := 1;
                    WHILE v_i <= v_n LOOP
                        v_c := v_chars[v_i];
                        IF v_c = '%' AND v_i + 2 <= v_n
                           AND (v_chars[v_i + 1] || v_chars[v_i + 2]) ~ '^[0-9A-Fa-f]{2}$' THEN
                            v_hex := v_hex || pg_catalog.lower((v_chars[v_i + 1] || v_chars[v_i + 2]) COLLATE "C");
                            v_i := v_i + 3;
                        ELSE
                            v_hex := v_hex || pg_catalog.encode(pg_catalog.convert_to(v_c, 'UTF8'), 'hex');
                            v_i := v_i + 1;
                        END IF;
                    END LOOP;
                    IF v_hex ~ '^(?:..)*00' THEN
                        -- NUL: a forbidden domain code point.
                        v_err := 'invalid international domain name';
                        EXIT parse;
                    END IF;
                    IF v_hex ~ '^(?:[0-7][0-9a-f])*$' THEN
                        v_name := pg_catalog.convert_from(pg_catalog.decode(v_hex, 'hex'), 'UTF8');
                    ELSE
                        -- Not UTF-8: idna refuses it.
                        IF v_hex !~ ('^(?:[0-7][0-9a-f]|(?:c[2-9a-f]|d[0-9a-f])[89ab][0-9a-f]'
                                     '|e0[ab][0-9a-f][89ab][0-9a-f]|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]'
                                     '|ed[89][0-9a-f][89ab][0-9a-f]'
                                     '|f0(?:9[0-9a-f]|[ab][0-9a-f])[89ab][0-9a-f][89ab][0-9a-f]'
                                     '|f[1-3][89ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]'
                                     '|f48[0-9a-f][89ab][0-9a-f][89ab][0-9a-f])*$') THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                        v_name := pg_catalog.convert_from(pg_catalog.decode(v_hex, 'hex'), 'UTF8');
                        -- Non-ASCII: not UTS 46, but NFKC and the full stops
                        -- (difference 1 above).
                        v_s := pg_catalog.translate(v_name, '.' || pg_catalog.chr(65294) || pg_catalog.chr(65377), '');
                        IF pg_catalog.strpos(pg_catalog.normalize(v_s, 'NFKC'), '.') > 0 THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                        v_name := pg_catalog.translate(pg_catalog.normalize(v_name, 'NFKC'), pg_catalog.chr(12290), '.');
                        IF v_name ~ '[^\u0001-\u007F]' THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                    END IF;
                END IF;

                -- idna::domain_to_ascii (AsciiDenyList::URL, hyphens allowed,
                -- no DNS length check) on an ASCII name: names of a-z and
                -- dots pass as they are; otherwise each label after the
                -- leading plain ones ([a-z][a-z0-9-]*, not ending in '-', no
                -- "--" at 3-4) is checked: an "xn--" label must be valid
                -- punycode decoding to a valid label, any other must hold
                -- no forbidden code point. The result is the name
                -- lower-cased.
                IF v_name !~ '^[a-z.]*$' THEN
                    v_flag := true;         -- still in the plain prefix
                    FOREACH v_s IN ARRAY pg_catalog.string_to_array(v_name, '.') LOOP
                        IF v_flag AND (v_s = '' OR (v_s ~ '^[a-z][a-z0-9-]*$' AND pg_catalog.right(v_s, 1) <> '-'
                                                    AND pg_catalog.substr(v_s, 3, 2) <> '--')) THEN
                            CONTINUE;
                        END IF;
                        v_flag := false;
                        CONTINUE WHEN v_s = '';
                        IF pg_catalog.lower(pg_catalog.left(v_s, 4) COLLATE "C") <> 'xn--' THEN
                            IF v_s ~ '[\u0001-\u0020\u007F%#/:<>?@[\\\]^|]' THEN
                                v_err := 'invalid international domain name';
                                EXIT parse;
                            END IF;
                            CONTINUE;
                        END IF;
                        ------------------------------ punycode (RFC 3492)
                        IF pg_catalog.right(v_s, 1) = '-' OR pg_catalog.length(v_s) - 4 > 2000 THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                        v_t := pg_catalog.lower(pg_catalog.substr(v_s, 5) COLLATE "C");
                        -- Basic code points: before the last '-'.
                        v_i := pg_catalog.strpos(pg_catalog.reverse(v_t), '-');
                        v_cps := '{}';
                        IF v_i > 0 THEN
                            v_i := pg_catalog.length(v_t) - v_i + 1;
                            IF v_i > 1 THEN
                                SELECT pg_catalog.array_agg(pg_catalog.ascii(c.ch) ORDER BY c.o) INTO v_cps
                                FROM pg_catalog.unnest(pg_catalog.string_to_array(pg_catalog.left(v_t, v_i - 1), NULL))
                                     WITH ORDINALITY AS c(ch, o);
                                v_t := pg_catalog.substr(v_t, v_i + 1);
                            END IF;
                            -- (a '-' first: no basic code points, and the
                            -- '-' is read as a digit, which fails below)
                        END IF;
                        v_chars := pg_catalog.string_to_array(v_t, NULL);
                        v_n := pg_catalog.cardinality(v_chars);
                        v_k := pg_catalog.cardinality(v_cps);   -- output length
                        v_cp := 128;
                        v_bias := 72;
                        v_pos := 0;
                        v_i := 1;
                        WHILE v_i <= v_n LOOP
                            v_old := v_pos;
                            v_w := 1;
                            v_x := 36;              -- k
                            LOOP
                                IF v_i > v_n THEN
                                    v_err := 'invalid international domain name';
                                    EXIT parse;
                                END IF;
                                v_a := pg_catalog.strpos('abcdefghijklmnopqrstuvwxyz0123456789', v_chars[v_i]) - 1;
                                v_i := v_i + 1;
                                IF v_a < 0 OR v_a * v_w > 4294967295 OR v_pos + v_a * v_w > 4294967295 THEN
                                    v_err := 'invalid international domain name';
                                    EXIT parse;
                                END IF;
                                v_pos := v_pos + v_a * v_w;
                                v_b := CASE WHEN v_x <= v_bias THEN 1 WHEN v_x >= v_bias + 26 THEN 26 ELSE v_x - v_bias END;
                                EXIT WHEN v_a < v_b;
                                v_w := v_w * (36 - v_b);
                                IF v_w > 4294967295 THEN
                                    v_err := 'invalid international domain name';
                                    EXIT parse;
                                END IF;
                                v_x := v_x + 36;
                            END LOOP;
                            -- adapt(delta, length + 1, first time)
                            v_a := (v_pos - v_old) / CASE WHEN v_old = 0 THEN 700 ELSE 2 END;
                            v_a := v_a + v_a / (v_k + 1);
                            v_b := 0;
                            WHILE v_a > 455 LOOP
                                v_a := v_a / 35;
                                v_b := v_b + 36;
                            END LOOP;
                            v_bias := v_b + (36 * v_a) / (v_a + 38);
                            v_cp := v_cp + v_pos / (v_k + 1);
                            v_pos := v_pos % (v_k + 1);
                            IF v_cp > 1114111 OR v_cp BETWEEN 55296 AND 57343 THEN
                                v_err := 'invalid international domain name';
                                EXIT parse;
                            END IF;
                            v_cps := v_cps[1:v_pos::integer] || v_cp::integer || v_cps[v_pos::integer + 1:v_k];
                            v_k := v_k + 1;
                            v_pos := v_pos + 1;
                        END LOOP;
                        -- The decoded label (difference 2 above). Its ASCII:
                        -- the deny list and '.'.
                        IF EXISTS (SELECT FROM pg_catalog.unnest(v_cps) AS p(cp)
                                   WHERE p.cp < 33 OR p.cp = 127
                                      OR (p.cp < 128 AND pg_catalog.strpos('%#/:<>?@[\]^|.', pg_catalog.chr(p.cp)) > 0)) THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                        SELECT pg_catalog.string_agg(pg_catalog.chr(p.cp), '' ORDER BY p.o) INTO v_t
                        FROM pg_catalog.unnest(v_cps) WITH ORDINALITY AS p(cp, o);
                        v_m := pg_catalog.regexp_replace(v_t, '[\u13A0-\u13F5]', '', 'g');
                        IF v_k > 1000
                           OR pg_catalog.normalize(v_t, 'NFKC') <> v_t
                           OR pg_catalog.lower(v_m) <> v_m
                           -- not valid in UTS 46, though NFKC and lower() keep them
                           OR v_t ~ ('[\u0080-\u009F\u00AD\u0345\u034F\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891'
                                     '\u08E2\u115F-\u1160\u13F8-\u13FD\u1680\u17B4-\u17B5\u180B-\u180F\u1C80-\u1C88'
                                     '\u1F80-\u1F87\u1F90-\u1F97\u1FA0-\u1FA7\u1FB2-\u1FB4\u1FB7\u1FC2-\u1FC4\u1FC7'
                                     '\u1FF2-\u1FF4\u1FF7\u200B\u200E-\u200F\u2028-\u202E\u2060-\u2064\u2066-\u206F'
                                     '\u2FF0-\u2FFB\u3002\uAB70-\uABBF\uE000-\uF8FF\uFDD0-\uFDEF\uFE00-\uFE0F\uFEFF'
                                     '\uFFF9-\uFFFF\U000110BD\U000110CD\U00013430-\U00013438\U0001BCA0-\U0001BCA3'
                                     '\U0001D173-\U0001D17A\U0001FFFE-\U0001FFFF\U0002FFFE-\U0002FFFF'
                                     '\U0003FFFE-\U0003FFFF\U0004FFFE-\U0004FFFF\U0005FFFE-\U0005FFFF'
                                     '\U0006FFFE-\U0006FFFF\U0007FFFE-\U0007FFFF\U0008FFFE-\U0008FFFF'
                                     '\U0009FFFE-\U0009FFFF\U000AFFFE-\U000AFFFF\U000BFFFE-\U000BFFFF'
                                     '\U000CFFFE-\U000CFFFF\U000DFFFE-\U000DFFFF\U000E0001\U000E0020-\U000E007F'
                                     '\U000E0100-\U000E01EF\U000EFFFE-\U0010FFFF]')
                           -- a joiner (ZWNJ, ZWJ) not right after a virama
                           OR v_t ~ ('(?<!['
                                        '\u094D\u09CD\u0A4D\u0ACD\u0B4D\u0BCD\u0C4D\u0CCD\u0D3B-\u0D3C\u0D4D\u0DCA\u0E3A\u0EBA\u0F84'
                                        '\u1039-\u103A\u1714-\u1715\u1734\u17D2\u1A60\u1B44\u1BAA-\u1BAB\u1BF2-\u1BF3\u2D7F\uA806'
                                        '\uA82C\uA8C4\uA953\uA9C0\uAAF6\uABED\U00010A3F\U00011046\U00011070\U0001107F\U000110B9'
                                        '\U00011133-\U00011134\U000111C0\U00011235\U000112EA\U0001134D\U00011442\U000114C2\U000115BF'
                                        '\U0001163F\U000116B6\U0001172B\U00011839\U0001193D-\U0001193E\U000119E0\U00011A34\U00011A47'
                                        '\U00011A99\U00011C3F\U00011D44-\U00011D45\U00011D97'
                                     '])[\u200C\u200D]')
                           -- a combining mark (General_Category M) first
                           OR v_t ~ ('^['
                                        '\u0300-\u036F\u0483-\u0489\u0591-\u05BD\u05BF\u05C1-\u05C2\u05C4-\u05C5\u05C7\u0610-\u061A'
                                        '\u064B-\u065F\u0670\u06D6-\u06DC\u06DF-\u06E4\u06E7-\u06E8\u06EA-\u06ED\u0711\u0730-\u074A'
                                        '\u07A6-\u07B0\u07EB-\u07F3\u07FD\u0816-\u0819\u081B-\u0823\u0825-\u0827\u0829-\u082D'
                                        '\u0859-\u085B\u0898-\u089F\u08CA-\u08E1\u08E3-\u0903\u093A-\u093C\u093E-\u094F\u0951-\u0957'
                                        '\u0962-\u0963\u0981-\u0983\u09BC\u09BE-\u09C4\u09C7-\u09C8\u09CB-\u09CD\u09D7\u09E2-\u09E3'
                                        '\u09FE\u0A01-\u0A03\u0A3C\u0A3E-\u0A42\u0A47-\u0A48\u0A4B-\u0A4D\u0A51\u0A70-\u0A71\u0A75'
                                        '\u0A81-\u0A83\u0ABC\u0ABE-\u0AC5\u0AC7-\u0AC9\u0ACB-\u0ACD\u0AE2-\u0AE3\u0AFA-\u0AFF'
                                        '\u0B01-\u0B03\u0B3C\u0B3E-\u0B44\u0B47-\u0B48\u0B4B-\u0B4D\u0B55-\u0B57\u0B62-\u0B63\u0B82'
                                        '\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0BD7\u0C00-\u0C04\u0C3C\u0C3E-\u0C44\u0C46-\u0C48'
                                        '\u0C4A-\u0C4D\u0C55-\u0C56\u0C62-\u0C63\u0C81-\u0C83\u0CBC\u0CBE-\u0CC4\u0CC6-\u0CC8'
                                        '\u0CCA-\u0CCD\u0CD5-\u0CD6\u0CE2-\u0CE3\u0D00-\u0D03\u0D3B-\u0D3C\u0D3E-\u0D44\u0D46-\u0D48'
                                        '\u0D4A-\u0D4D\u0D57\u0D62-\u0D63\u0D81-\u0D83\u0DCA\u0DCF-\u0DD4\u0DD6\u0DD8-\u0DDF'
                                        '\u0DF2-\u0DF3\u0E31\u0E34-\u0E3A\u0E47-\u0E4E\u0EB1\u0EB4-\u0EBC\u0EC8-\u0ECD\u0F18-\u0F19'
                                        '\u0F35\u0F37\u0F39\u0F3E-\u0F3F\u0F71-\u0F84\u0F86-\u0F87\u0F8D-\u0F97\u0F99-\u0FBC\u0FC6'
                                        '\u102B-\u103E\u1056-\u1059\u105E-\u1060\u1062-\u1064\u1067-\u106D\u1071-\u1074\u1082-\u108D'
                                        '\u108F\u109A-\u109D\u135D-\u135F\u1712-\u1715\u1732-\u1734\u1752-\u1753\u1772-\u1773'
                                        '\u17B4-\u17D3\u17DD\u180B-\u180D\u180F\u1885-\u1886\u18A9\u1920-\u192B\u1930-\u193B'
                                        '\u1A17-\u1A1B\u1A55-\u1A5E\u1A60-\u1A7C\u1A7F\u1AB0-\u1ACE\u1B00-\u1B04\u1B34-\u1B44'
                                        '\u1B6B-\u1B73\u1B80-\u1B82\u1BA1-\u1BAD\u1BE6-\u1BF3\u1C24-\u1C37\u1CD0-\u1CD2\u1CD4-\u1CE8'
                                        '\u1CED\u1CF4\u1CF7-\u1CF9\u1DC0-\u1DFF\u20D0-\u20F0\u2CEF-\u2CF1\u2D7F\u2DE0-\u2DFF'
                                        '\u302A-\u302F\u3099-\u309A\uA66F-\uA672\uA674-\uA67D\uA69E-\uA69F\uA6F0-\uA6F1\uA802\uA806'
                                        '\uA80B\uA823-\uA827\uA82C\uA880-\uA881\uA8B4-\uA8C5\uA8E0-\uA8F1\uA8FF\uA926-\uA92D'
                                        '\uA947-\uA953\uA980-\uA983\uA9B3-\uA9C0\uA9E5\uAA29-\uAA36\uAA43\uAA4C-\uAA4D\uAA7B-\uAA7D'
                                        '\uAAB0\uAAB2-\uAAB4\uAAB7-\uAAB8\uAABE-\uAABF\uAAC1\uAAEB-\uAAEF\uAAF5-\uAAF6\uABE3-\uABEA'
                                        '\uABEC-\uABED\uFB1E\uFE00-\uFE0F\uFE20-\uFE2F\U000101FD\U000102E0\U00010376-\U0001037A'
                                        '\U00010A01-\U00010A03\U00010A05-\U00010A06\U00010A0C-\U00010A0F\U00010A38-\U00010A3A'
                                        '\U00010A3F\U00010AE5-\U00010AE6\U00010D24-\U00010D27\U00010EAB-\U00010EAC'
                                        '\U00010F46-\U00010F50\U00010F82-\U00010F85\U00011000-\U00011002\U00011038-\U00011046'
                                        '\U00011070\U00011073-\U00011074\U0001107F-\U00011082\U000110B0-\U000110BA\U000110C2'
                                        '\U00011100-\U00011102\U00011127-\U00011134\U00011145-\U00011146\U00011173'
                                        '\U00011180-\U00011182\U000111B3-\U000111C0\U000111C9-\U000111CC\U000111CE-\U000111CF'
                                        '\U0001122C-\U00011237\U0001123E\U000112DF-\U000112EA\U00011300-\U00011303'
                                        '\U0001133B-\U0001133C\U0001133E-\U00011344\U00011347-\U00011348\U0001134B-\U0001134D'
                                        '\U00011357\U00011362-\U00011363\U00011366-\U0001136C\U00011370-\U00011374'
                                        '\U00011435-\U00011446\U0001145E\U000114B0-\U000114C3\U000115AF-\U000115B5'
                                        '\U000115B8-\U000115C0\U000115DC-\U000115DD\U00011630-\U00011640\U000116AB-\U000116B7'
                                        '\U0001171D-\U0001172B\U0001182C-\U0001183A\U00011930-\U00011935\U00011937-\U00011938'
                                        '\U0001193B-\U0001193E\U00011940\U00011942-\U00011943\U000119D1-\U000119D7'
                                        '\U000119DA-\U000119E0\U000119E4\U00011A01-\U00011A0A\U00011A33-\U00011A39'
                                        '\U00011A3B-\U00011A3E\U00011A47\U00011A51-\U00011A5B\U00011A8A-\U00011A99'
                                        '\U00011C2F-\U00011C36\U00011C38-\U00011C3F\U00011C92-\U00011CA7\U00011CA9-\U00011CB6'
                                        '\U00011D31-\U00011D36\U00011D3A\U00011D3C-\U00011D3D\U00011D3F-\U00011D45\U00011D47'
                                        '\U00011D8A-\U00011D8E\U00011D90-\U00011D91\U00011D93-\U00011D97\U00011EF3-\U00011EF6'
                                        '\U00016AF0-\U00016AF4\U00016B30-\U00016B36\U00016F4F\U00016F51-\U00016F87'
                                        '\U00016F8F-\U00016F92\U00016FE4\U00016FF0-\U00016FF1\U0001BC9D-\U0001BC9E'
                                        '\U0001CF00-\U0001CF2D\U0001CF30-\U0001CF46\U0001D165-\U0001D169\U0001D16D-\U0001D172'
                                        '\U0001D17B-\U0001D182\U0001D185-\U0001D18B\U0001D1AA-\U0001D1AD\U0001D242-\U0001D244'
                                        '\U0001DA00-\U0001DA36\U0001DA3B-\U0001DA6C\U0001DA75\U0001DA84\U0001DA9B-\U0001DA9F'
                                        '\U0001DAA1-\U0001DAAF\U0001E000-\U0001E006\U0001E008-\U0001E018\U0001E01B-\U0001E021'
                                        '\U0001E023-\U0001E024\U0001E026-\U0001E02A\U0001E130-\U0001E136\U0001E2AE'
                                        '\U0001E2EC-\U0001E2EF\U0001E8D0-\U0001E8D6\U0001E944-\U0001E94A\U000E0100-\U000E01EF'
                                     ']') THEN
                            v_err := 'invalid international domain name';
                            EXIT parse;
                        END IF;
                    END LOOP;
                    v_name := pg_catalog.lower(v_name COLLATE "C");
                END IF;
                IF v_name = '' THEN
                    v_err := 'empty host';
                    EXIT parse;
                END IF;

                -- The IPv4 parser, if the name ends in a number: its last
                -- label (a trailing dot aside) is all digits or a valid
                -- IPv4 number (here: 0x and hex digits; octal and decimal
                -- numbers are all digits). Each label is then a number,
                -- 0x hex, 0 octal or decimal, that fits in 32 bits; the last
                -- fills the bytes the others leave, the others one each.
                v_parts := pg_catalog.string_to_array(v_name, '.');
                v_n := pg_catalog.cardinality(v_parts);
                IF v_parts[v_n] = '' THEN
                    v_n := v_n - 1;
                END IF;
                IF v_n >= 1 AND v_parts[v_n] ~ '^(?:[0-9]+|0[xX][0-9a-fA-F]*)$' THEN
                    IF v_n > 4 THEN
                        v_err := 'invalid IPv4 address';
                        EXIT parse;
                    END IF;
                    v_nums := '{}';
                    FOR v_x IN 1..v_n LOOP
                        v_s := v_parts[v_x];
                        IF v_s ~ '^0[xX]' THEN
                            v_b := 16;
                            v_s := pg_catalog.substr(v_s, 3);
                        ELSIF v_s ~ '^0.' THEN
                            v_b := 8;
                            v_s := pg_catalog.substr(v_s, 2);
                        ELSE
                            v_b := 10;
                        END IF;
                        IF v_parts[v_x] = ''
                           OR v_s !~ (CASE v_b WHEN 16 THEN '^[0-9a-fA-F]*$' WHEN 10 THEN '^[0-9]*$' ELSE '^[0-7]*$' END) THEN
                            v_err := 'invalid IPv4 address';
                            EXIT parse;
                        END IF;
                        v_s := pg_catalog.ltrim(v_s, '0');
                        IF pg_catalog.length(v_s) > 11 THEN
                            v_err := 'invalid IPv4 address';    -- overflow
                            EXIT parse;
                        END IF;
                        v_a := 0;
                        FOREACH v_c IN ARRAY pg_catalog.string_to_array(pg_catalog.lower(v_s COLLATE "C"), NULL) LOOP
                            v_a := v_a * v_b + pg_catalog.strpos('0123456789abcdef', v_c) - 1;
                        END LOOP;
                        IF v_a > (CASE WHEN v_x = v_n THEN 4294967295 >> (8 * (v_n - 1)) ELSE 255 END) THEN
                            v_err := 'invalid IPv4 address';
                            EXIT parse;
                        END IF;
                        v_nums := v_nums || v_a;
                    END LOOP;
                    v_v4 := v_nums[v_n];
                    FOR v_x IN 1..v_n - 1 LOOP
                        v_v4 := v_v4 + (v_nums[v_x] << (8 * (4 - v_x)));
                    END LOOP;
                    v_host := (v_v4 >> 24) || '.' || ((v_v4 >> 16) & 255) || '.' || ((v_v4 >> 8) & 255) || '.' || (v_v4 & 255);
                    v_hkind := 'ipv4';
                ELSE
                    v_host := v_name;
                    v_hkind := 'domain';
                END IF;
            END IF;
        END IF;

        --------------------------------------------- port, path, query
        IF v_auth THEN
            IF v_kind = 'opaque' AND v_hkind IS NULL AND pg_catalog.left(v_rest, 1) = ':' THEN
                v_err := 'empty host';
                EXIT parse;
            END IF;
            IF pg_catalog.left(v_rest, 1) = ':' THEN
                v_m := pg_catalog.substring(v_rest, '^:[^/\\?#]*');
                v_rest := pg_catalog.substr(v_rest, pg_catalog.length(v_m) + 1);
                v_m := pg_catalog.substr(v_m, 2);
                IF v_m !~ '^[0-9]*$' THEN
                    v_err := 'invalid port number';
                    EXIT parse;
                END IF;
                IF v_m <> '' THEN
                    v_m := pg_catalog.ltrim(v_m, '0');
                    IF pg_catalog.length(v_m) > 5 OR pg_catalog.lpad(v_m, 5, '0') COLLATE "C" > '65535' THEN
                        v_err := 'invalid port number';
                        EXIT parse;
                    END IF;
                    v_port := ('0' || v_m)::integer;
                    IF v_port = (CASE v_scheme WHEN 'http' THEN 80 WHEN 'ws' THEN 80 WHEN 'https' THEN 443
                                               WHEN 'wss' THEN 443 WHEN 'ftp' THEN 21 END) THEN
                        v_port := NULL;
                    END IF;
                END IF;
            END IF;
            IF v_kind = 'opaque' AND v_hkind IS NULL AND v_cred THEN
                v_err := 'empty host';
                EXIT parse;
            END IF;
        END IF;
        -- Nothing after the port can fail. The rest matters only for
        -- http and https, whose normalized form is returned.
        IF v_scheme IN ('http', 'https') THEN
            v_frag := pg_catalog.strpos(v_rest, '#') > 0;
            v_m := pg_catalog.split_part(v_rest, '#', 1);
            v_i := pg_catalog.strpos(v_m, '?');
            IF v_i > 0 THEN
                v_path := pg_catalog.left(v_m, v_i - 1);
                v_query := pg_catalog.substr(v_m, v_i + 1);
            ELSE
                v_path := v_m;
            END IF;
        END IF;
    END;

    ------------------------------------------------------------ the rules
    v_value := v_shown;
    IF v_err IS NOT NULL THEN
        v_code := 'url_invalid';
        v_rule := 'webhook URL must be a valid absolute URL (' || v_err || ')';
    ELSIF NOT (v_scheme = 'https' OR (v_allow AND v_scheme = 'http')) THEN
        v_code := 'url_not_https';
        v_rule := CASE WHEN v_allow THEN 'webhook URL must use http or https' ELSE 'webhook URL must use https' END;
    ELSIF v_cred THEN
        v_code := 'url_has_credentials';
        v_rule := 'webhook URL must not contain a user name or password';
    ELSIF v_frag THEN
        v_code := 'url_has_fragment';
        v_rule := 'webhook URL must not contain a fragment';
    ELSIF v_port = 0 THEN
        v_code := 'url_port_not_allowed';
        v_rule := 'webhook URL port must be between 1 and 65535';
    ELSIF v_port < 1024 AND v_port <> 443 AND NOT (v_allow AND v_port = 80) THEN
        v_code := 'url_port_not_allowed';
        v_rule := CASE WHEN v_allow THEN 'webhook URL port must be 80, 443 or 1024 and above'
                       ELSE 'webhook URL port must be 443 or 1024 and above' END;
    ELSE
        -- The path and the query, percent-encoded (the path set, the
        -- special-query set; UTF-8, upper-case hex).
        FOR v_x IN 1..2 LOOP
            v_s := CASE v_x WHEN 1 THEN v_path ELSE v_query END;
            CONTINUE WHEN v_s IS NULL;
            IF v_s ~ (CASE v_x WHEN 1 THEN '[^!$-;=@-_a-z|~]' ELSE '[^!$-&(-;=?-~]' END) THEN
                v_m := CASE v_x WHEN 1 THEN '"#<>?`{}' ELSE '"#<>''' END;
                v_t := '';
                FOREACH v_c IN ARRAY pg_catalog.string_to_array(v_s, NULL) LOOP
                    IF pg_catalog.ascii(v_c) BETWEEN 33 AND 126 AND pg_catalog.strpos(v_m, v_c) = 0 THEN
                        v_t := v_t || v_c;
                    ELSE
                        v_t := v_t || pg_catalog.upper(pg_catalog.regexp_replace(
                            pg_catalog.encode(pg_catalog.convert_to(v_c, 'UTF8'), 'hex'), '(..)', '%\1', 'g') COLLATE "C");
                    END IF;
                END LOOP;
                v_s := v_t;
            END IF;
            IF v_x = 1 THEN
                v_path := v_s;
            ELSE
                v_query := v_s;
            END IF;
        END LOOP;
        -- Path segments: '\' is '/'; "." and ".." (or %2e forms) go, as
        -- the standard says (a last one leaves an empty segment).
        v_path := pg_catalog.replace(v_path, '\', '/');
        IF pg_catalog.left(v_path, 1) = '/' THEN
            v_path := pg_catalog.substr(v_path, 2);
        END IF;
        v_parts := CASE WHEN v_path = '' THEN ARRAY[''] ELSE pg_catalog.string_to_array(v_path, '/') END;
        v_n := pg_catalog.cardinality(v_parts);
        v_segs := '{}';
        FOR v_x IN 1..v_n LOOP
            v_s := pg_catalog.lower(v_parts[v_x] COLLATE "C");
            IF v_s IN ('..', '.%2e', '%2e.', '%2e%2e') THEN
                v_segs := v_segs[1:pg_catalog.cardinality(v_segs) - 1];
                IF v_x = v_n THEN
                    v_segs := v_segs || ''::text;
                END IF;
            ELSIF v_s IN ('.', '%2e') THEN
                IF v_x = v_n THEN
                    v_segs := v_segs || ''::text;
                END IF;
            ELSE
                v_segs := v_segs || v_parts[v_x];
            END IF;
        END LOOP;
        v_out := v_scheme || '://' || v_host || CASE WHEN v_port IS NULL THEN '' ELSE ':' || v_port END
              || '/' || pg_catalog.array_to_string(v_segs, '/')
              || CASE WHEN v_query IS NULL THEN '' ELSE '?' || v_query END;

        IF pg_catalog.octet_length(v_out) > 2048 THEN
            v_code := 'url_too_long';
            v_rule := 'webhook URL must be at most 2048 bytes once normalized';
            v_value := pg_catalog.left(v_shown, 64);
        ELSIF v_hkind IS NULL THEN
            v_code := 'url_invalid';
            v_rule := 'webhook URL must have a host';
        ELSIF v_allow THEN
            NULL;
        ELSIF v_hkind = 'domain' THEN
            v_s := CASE WHEN pg_catalog.right(v_host, 1) = '.' THEN pg_catalog.left(v_host, -1) ELSE v_host END;
            IF v_s = 'localhost' OR pg_catalog.right(v_s, 10) = '.localhost' THEN
                v_code := 'url_host_not_public';
                v_rule := 'webhook URL host must not be localhost';
            ELSIF pg_catalog.strpos(v_s, '.') = 0 THEN
                v_code := 'url_host_not_public';
                v_rule := 'webhook URL host must be a fully qualified domain name (it has no dot)';
            END IF;
        ELSE
            -- rules/src/ip.rs: IPv4 is a deny list; IPv6 an allow list
            -- (2000::/3), with the forms that carry an IPv4 address judged
            -- by it.
            IF v_hkind = 'ipv6' THEN
                v_v4 := NULL;
                IF v_v6[1:6] = '{0,0,0,0,0,65535}' OR v_v6[1:6] = '{100,65435,0,0,0,0}' THEN
                    v_v4 := v_v6[7]::bigint * 65536 + v_v6[8];      -- ::ffff:0:0/96, 64:ff9b::/96
                ELSIF v_v6[1] = 8194 THEN
                    v_v4 := v_v6[2]::bigint * 65536 + v_v6[3];      -- 2002::/16 (6to4)
                ELSIF v_v6[1] >> 13 <> 1 THEN                       -- outside 2000::/3
                    v_why := CASE
                        WHEN v_v6 = '{0,0,0,0,0,0,0,0}' THEN 'unspecified'
                        WHEN v_v6 = '{0,0,0,0,0,0,0,1}' THEN 'loopback'
                        WHEN v_v6[1] >> 9 = 126 THEN 'unique local (fc00::/7)'      -- fc00::/7
                        WHEN v_v6[1] >> 6 = 1018 THEN 'link-local'                  -- fe80::/10
                        WHEN v_v6[1] >> 8 = 255 THEN 'multicast'                    -- ff00::/8
                        ELSE 'non-global IPv6 (outside 2000::/3)' END;
                ELSE
                    v_why := CASE
                        WHEN v_v6[1] = 8193 AND v_v6[2] = 0 THEN 'Teredo tunnel (2001::/32)'
                        WHEN v_v6[1] = 8193 AND v_v6[2] = 2 AND v_v6[3] = 0 THEN 'benchmarking'   -- 2001:2::/48
                        WHEN v_v6[1] = 8193 AND v_v6[2] = 3512 THEN 'documentation'             -- 2001:db8::/32
                        WHEN v_v6[1] = 8193 AND v_v6[2] < 512 THEN 'reserved'                   -- 2001::/23
                        WHEN v_v6[1] = 16383 AND v_v6[2] < 4096 THEN 'documentation'            -- 3fff::/20
                        END;
                END IF;
            END IF;
            IF v_v4 IS NOT NULL THEN
                SELECT r.why INTO v_why
                FROM (VALUES (1, '0.0.0.0/8'::cidr, 'unspecified'),
                             (2, '10.0.0.0/8', 'private (RFC 1918)'),
                             (3, '100.64.0.0/10', 'carrier-grade NAT (RFC 6598)'),
                             (4, '127.0.0.0/8', 'loopback'),
                             (5, '169.254.0.0/16', 'link-local'),
                             (6, '172.16.0.0/12', 'private (RFC 1918)'),
                             (7, '192.0.0.0/24', 'reserved'),
                             (8, '192.0.2.0/24', 'documentation'),
                             (9, '192.88.99.0/24', 'reserved'),
                             (10, '192.168.0.0/16', 'private (RFC 1918)'),
                             (11, '198.18.0.0/15', 'benchmarking'),
                             (12, '198.51.100.0/24', 'documentation'),
                             (13, '203.0.113.0/24', 'documentation'),
                             (14, '224.0.0.0/4', 'multicast'),
                             (15, '255.255.255.255/32', 'broadcast'),
                             (16, '240.0.0.0/4', 'reserved')) AS r(o, net, why)
                WHERE ('0.0.0.0'::inet + v_v4) <<= r.net
                ORDER BY r.o
                LIMIT 1;
            END IF;
            IF v_why IS NOT NULL THEN
                v_code := 'url_host_not_public';
                v_rule := 'webhook URL host must be a public address, not a ' || v_why || ' one';
            END IF;
        END IF;
    END IF;

    IF v_code IS NOT NULL THEN
        PERFORM postbox._raise(v_code, 'url', 'postbox: ' || v_rule || ': ' || postbox._shown(v_value), NULL);
        RETURN NULL;
    END IF;
    RETURN v_out;
END
$fn$;
