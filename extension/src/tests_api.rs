// `#[pg_test]`s of what the HTTP API (postbox-api, 0.5.0) keeps in SQL: its
// keys and its stored responses. Included into `tests.rs`'s module, whose
// helpers it uses.

    /// A key as authenticate_api_key sees it: "tenant:role", or None.
    fn who(key: &str) -> Option<String> {
        Spi::get_one::<String>(&format!(
            "SELECT (SELECT coalesce(tenant, '-') || ':' || role FROM postbox.authenticate_api_key(sha256(convert_to('{key}', 'UTF8'))))"
        ))
        .unwrap()
    }

    fn new_key(tenant: &str, role: &str) -> (String, String) {
        let row = one::<String>(&format!(
            "SELECT id || ' ' || key FROM postbox.create_api_key({tenant}, '{role}', 'test')"
        ));
        let (id, key) = row.split_once(' ').unwrap();
        (id.to_string(), key.to_string())
    }

    /// Keys are shown once and kept as their SHA-256; each authenticates as
    /// its tenant and role until rotated (the old value stops at once, the
    /// id stays) or revoked. Another tenant's key id is an unknown id.
    #[pg_test]
    fn api_keys_authenticate_until_rotated_or_revoked() {
        let (id, key) = new_key("'t'", "admin");
        let (_, member) = new_key("'t'", "member");
        let (op_id, op) = new_key("NULL", "operator");
        assert!(postbox_rules::api_key::well_formed(&key), "{key}");
        assert_eq!(who(&key).as_deref(), Some("t:admin"));
        assert_eq!(who(&member).as_deref(), Some("t:member"));
        assert_eq!(who(&op).as_deref(), Some("-:operator"));
        assert_eq!(who("pbk_nope"), None);
        // Only the hash is stored: the key is nowhere in the table.
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM postbox.api_keys k WHERE k::text LIKE '%{}%'", &key[4..])),
            0
        );
        assert_eq!(
            one::<String>(&format!("SELECT key_prefix FROM postbox.api_key_list WHERE id = '{id}'")),
            key[..12]
        );
        // Used: recorded, once.
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM postbox.api_key_list WHERE id = '{id}' AND last_used_at IS NOT NULL")),
            1
        );

        let (state, msg) = error_of(&format!("SELECT postbox.rotate_api_key('other', '{id}')"));
        assert_eq!((state.as_str(), msg), ("22023", format!("postbox: no api key has this id: {id}")));
        let (_, msg) = error_of(&format!("SELECT postbox.revoke_api_key(NULL, '{id}')"));
        assert_eq!(msg, format!("postbox: no api key has this id: {id}"));
        let (_, msg) = error_of(&format!("SELECT postbox.revoke_api_key('t', '{op_id}')"));
        assert_eq!(msg, format!("postbox: no api key has this id: {op_id}"));
        assert_eq!(who(&key).as_deref(), Some("t:admin"), "a refused call changes nothing");

        let rotated = one::<String>(&format!("SELECT postbox.rotate_api_key('t', '{id}')"));
        assert_ne!(rotated, key);
        assert_eq!(who(&key), None, "the old value stops working");
        assert_eq!(who(&rotated).as_deref(), Some("t:admin"));
        let rotated_op = one::<String>(&format!("SELECT postbox.rotate_api_key(NULL, '{op_id}')"));
        assert_eq!(who(&op), None);
        assert_eq!(who(&rotated_op).as_deref(), Some("-:operator"));

        run(&format!("SELECT postbox.revoke_api_key('t', '{id}')"));
        assert_eq!(who(&rotated), None);
        run(&format!("SELECT postbox.revoke_api_key('t', '{id}')")); // again: nothing changes
        let (_, msg) = error_of(&format!("SELECT postbox.rotate_api_key('t', '{id}')"));
        assert_eq!(msg, format!("postbox: a revoked api key cannot be rotated: {id}"));
        assert_eq!(who(&member).as_deref(), Some("t:member"), "other keys are untouched");
    }

    /// Bad arguments are refused with the rule, and no key is made.
    #[pg_test]
    fn api_key_arguments_are_checked() {
        for (call, msg) in [
            ("'t', 'owner', 'x'", "postbox: role must be admin, member or operator: owner"),
            ("'t', 'operator', 'x'", "postbox: operator keys act for every tenant and take no tenant or session (pass NULL): t"),
            ("NULL, 'admin', 'x'", "postbox: tenant must be a non-empty string: NULL"),
            ("'t', 'admin', ''", "postbox: api key label must be 1 to 200 characters: "),
            ("'t', 'admin', repeat('a', 201)", "postbox: api key label must be 1 to 200 characters: aaaa"),
        ] {
            let (state, got) = error_of(&format!("SELECT postbox.create_api_key({call})"));
            assert_eq!(state, "22023", "{call}");
            assert!(got.starts_with(msg), "{call}: {got}");
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM postbox.api_keys"), 0);
        // At most 100 active keys per tenant; a revoked one makes room.
        run("SELECT postbox.create_api_key('t', 'member', 'k' || i) FROM generate_series(1, 100) i");
        let (state, msg) = error_of("SELECT postbox.create_api_key('t', 'member', 'one more')");
        assert_eq!((state.as_str(), msg.as_str()), ("22023", "postbox: a tenant has at most 100 active api keys (revoke one first): t"));
        new_key("'u'", "admin"); // other tenants are not affected
        run("SELECT postbox.revoke_api_key('t', (SELECT id FROM postbox.api_keys WHERE tenant = 't' ORDER BY id LIMIT 1))");
        new_key("'t'", "admin");
    }

    /// The roles have no way to the hashes but the functions.
    #[pg_test]
    fn api_keys_are_reachable_only_through_the_functions() {
        new_key("'t'", "admin");
        for role in ["postbox_admin", "postbox_emitter", "postbox_worker"] {
            for table in ["postbox.api_keys", "postbox.api_idempotency"] {
                assert!(
                    !one::<bool>(&format!("SELECT has_table_privilege('{role}', '{table}', 'SELECT, INSERT, UPDATE, DELETE')")),
                    "{role} {table}"
                );
            }
        }
        run("SET LOCAL ROLE postbox_admin");
        assert_eq!(one::<i64>("SELECT count(*) FROM postbox.api_key_list"), 1);
        let (state, _) = error_of("SELECT key_hash FROM postbox.api_keys");
        run("RESET ROLE");
        assert_eq!(state, "42501");
    }

    /// The first response to a key is stored and returned to repeats; the
    /// same key for another request is refused; an expired one is free
    /// again; purge removes expired ones.
    #[pg_test]
    fn api_requests_with_an_idempotency_key_are_answered_once() {
        let begin = |key: &str, req: &str| -> Option<String> {
            Spi::get_one::<String>(&format!(
                "SELECT (SELECT status || ' ' || body FROM postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000a', '{key}', sha256('{req}')))"
            ))
            .unwrap()
        };
        assert_eq!(begin("k1", "a"), None, "the first claims the key");
        run("SELECT postbox.api_request_end('t', '00000000-0000-0000-0000-00000000000a', 'k1', 201, '{\"id\": 1}')");
        assert_eq!(begin("k1", "a").as_deref(), Some("201 {\"id\": 1}"));
        let (state, msg) = error_of("SELECT postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000a', 'k1', sha256('b'))");
        assert_eq!(state, "22023");
        assert_eq!(msg, "postbox: this Idempotency-Key was used for another request (within 24:00:00): k1");
        assert_eq!(begin("k1", "a").as_deref(), Some("201 {\"id\": 1}"));
        // Per credential: another key or session of the tenant gets no
        // stored answer (it may hold a new secret); its request is its own.
        assert_eq!(
            Spi::get_one::<String>("SELECT (SELECT status || ' ' || body FROM postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000b', 'k1', sha256('a')))").unwrap(),
            None
        );
        // Per tenant.
        assert_eq!(
            Spi::get_one::<i16>("SELECT (SELECT status FROM postbox.api_request_begin('u', '00000000-0000-0000-0000-00000000000a', 'k1', sha256('b')))").unwrap(),
            None
        );
        for (call, msg) in [
            ("postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000a', 'a b', sha256('a'))", "postbox: Idempotency-Key must be 1 to 255 visible ASCII characters: a b"),
            ("postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000a', '', sha256('a'))", "postbox: Idempotency-Key must be 1 to 255 visible ASCII characters: "),
            ("postbox.api_request_begin('t', '00000000-0000-0000-0000-00000000000a', 'k', '\\x00')", "postbox: request_hash must be a SHA-256 (32 bytes)"),
            ("postbox.api_request_end('t', '00000000-0000-0000-0000-00000000000a', 'k1', 201, 'x')", "postbox: no request with this Idempotency-Key is under way: k1"),
            ("postbox.api_request_end('t', '00000000-0000-0000-0000-00000000000a', 'k9', 500, 'x')", "postbox: only a successful response is stored (status 200 to 299, a body): 500"),
        ] {
            let (state, got) = error_of(&format!("SELECT {call}"));
            assert_eq!((state.as_str(), got.as_str()), ("22023", msg), "{call}");
        }
        // Expired: free again (before purge), and purged.
        run("UPDATE postbox.api_idempotency SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'k1' AND tenant = 't'");
        assert_eq!(begin("k1", "b"), None);
        run("UPDATE postbox.api_idempotency SET created_at = now() - interval '25 hours'");
        assert_eq!(
            one::<i64>("SELECT deleted FROM postbox.purge() WHERE kind = 'api_requests'"),
            3,
            "t's k1 of each credential, and u's"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM postbox.api_idempotency"), 0);
    }

    /// A portal link opens one session, once, before it expires; the session
    /// authenticates until its end; bad arguments are refused.
    #[pg_test]
    fn portal_links_open_one_session_once() {
        let token = one::<String>("SELECT token FROM postbox.create_portal_session('t', 'member')");
        assert!(postbox_rules::api_key::has_form(postbox_rules::api_key::PORTAL_PREFIX, &token), "{token}");
        let open = |link: &str, cookie: &str| {
            Spi::get_one::<String>(&format!(
                "SELECT (SELECT tenant || ':' || role FROM postbox.open_portal_session(
                     sha256(convert_to('{link}', 'UTF8')), sha256(convert_to('{cookie}', 'UTF8')), '1 hour'))"
            ))
            .unwrap()
        };
        let who = |cookie: &str| {
            Spi::get_one::<String>(&format!(
                "SELECT (SELECT tenant || ':' || role FROM postbox.authenticate_portal_session(sha256(convert_to('{cookie}', 'UTF8'))))"
            ))
            .unwrap()
        };
        assert_eq!(who("c1"), None);
        assert_eq!(open(&token, "c1").as_deref(), Some("t:member"));
        assert_eq!(who("c1").as_deref(), Some("t:member"));
        assert_eq!(open(&token, "c2"), None, "a link works once");
        assert_eq!(who("c2"), None);
        // An expired link opens nothing; an ended session is gone.
        let late = one::<String>("SELECT token FROM postbox.create_portal_session('t', 'admin', '1 minute')");
        run("UPDATE postbox.portal_sessions SET link_expires_at = now() - interval '1 second' WHERE session_hash IS NULL");
        assert_eq!(open(&late, "c3"), None);
        run("UPDATE postbox.portal_sessions SET expires_at = now() - interval '1 second' WHERE session_hash IS NOT NULL");
        assert_eq!(who("c1"), None);
        // Only the hashes are kept.
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM postbox.portal_sessions s WHERE s::text LIKE '%{}%'", &token[4..])), 0);
        for (call, msg) in [
            ("postbox.create_portal_session('t', 'operator')", "postbox: portal role must be admin or member: operator"),
            ("postbox.create_portal_session('t', 'admin', '2 days')", "postbox: valid_for must be between 1 minute and 1 day: 2 days"),
            ("postbox.create_portal_session('', 'admin')", "postbox: tenant must be a non-empty string: ''"),
        ] {
            let (state, got) = error_of(&format!("SELECT {call}"));
            assert_eq!((state.as_str(), got.as_str()), ("22023", msg), "{call}");
        }
        // Purged a day after they end.
        run("UPDATE postbox.portal_sessions SET created_at = now() - interval '3 days', link_expires_at = now() - interval '2 days', expires_at = now() - interval '2 days'");
        assert_eq!(one::<i64>("SELECT deleted FROM postbox.purge() WHERE kind = 'portal_sessions'"), 2);
    }

    /// Defaults are written once, in SQL: a caller that passes NULL (the
    /// HTTP API, the page) gets what one that leaves the argument out gets.
    /// Key prefixes come from the rules crate (`api_key::shown`).
    #[pg_test]
    fn null_arguments_take_the_sql_defaults() {
        let ep = one::<String>(
            "SELECT id::text FROM postbox.create_endpoint('t', 'https://a.example.com/', '{*}')",
        );
        one::<String>(&format!("SELECT postbox.rotate_secret('t', '{ep}', NULL)"));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT round(extract(epoch FROM max(expires_at) - now()))::int8
                   FROM postbox.endpoint_secrets WHERE endpoint_id = '{ep}'"
            )),
            86_400,
            "the old secret keeps signing for the default 24 hours"
        );
        assert_eq!(
            one::<i64>(
                "SELECT round(extract(epoch FROM expires_at - now()))::int8
                   FROM postbox.create_portal_session('t', 'admin', NULL)"
            ),
            900,
            "a link works for the default 15 minutes"
        );
        let token = one::<String>("SELECT token FROM postbox.create_portal_session('t', 'member')");
        assert!(postbox_rules::api_key::has_form(postbox_rules::api_key::PORTAL_PREFIX, &token));
        one::<String>(&format!("SELECT postbox.send_test('t', '{ep}', NULL)::text"));
        assert_eq!(
            one::<String>("SELECT v.event_type FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id WHERE d.is_test"),
            "webhook.test"
        );
        let (_, key) = new_key("'t'", "admin");
        assert_eq!(
            one::<String>("SELECT key_prefix FROM postbox.api_key_list"),
            postbox_rules::api_key::shown(&key)
        );
    }
