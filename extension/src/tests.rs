//! `#[pg_test]`s: the SQL API as users call it, inside a real PostgreSQL.
//! Each test runs in its own transaction, which is rolled back afterwards.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(&format!("SELECT count(*) FROM ({sql}) AS q"))
    }

    /// Runs `sql` in a subtransaction and returns (SQLSTATE, message) of the
    /// error it raised; panics if it succeeded, or if a postbox error
    /// (`postbox: ...`) came without its code in DETAIL ([`detail_of`]).
    fn error_of(sql: &str) -> (String, String) {
        let (state, msg, _) = detail_of(sql);
        (state, msg)
    }

    /// [`error_of`] with the error's DETAIL read back: every postbox error
    /// carries a known code there (`postbox_rules::codes`).
    fn detail_of(sql: &str) -> (String, String, Option<postbox_rules::codes::Detail>) {
        // Created once per session, before any SET ROLE in a test.
        run("DO $d$ BEGIN
             IF to_regprocedure('pg_temp.try_sql(text)') IS NULL THEN
                 CREATE FUNCTION pg_temp.try_sql(q text, OUT state text, OUT msg text, OUT detail text)
                 LANGUAGE plpgsql AS $f$
                 BEGIN
                     EXECUTE q;
                     state := '00000';
                 EXCEPTION WHEN OTHERS THEN
                     GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                             detail = PG_EXCEPTION_DETAIL;
                 END $f$;
             END IF;
             END $d$");
        let (state, msg, detail) = Spi::get_three::<String, String, String>(&format!(
            "SELECT state, msg, detail FROM pg_temp.try_sql($sql_under_test${sql}$sql_under_test$)"
        ))
        .unwrap();
        let state = state.unwrap();
        assert_ne!(state, "00000", "expected an error from: {sql}");
        let msg = msg.unwrap_or_default();
        let detail = detail
            .as_deref()
            .and_then(postbox_rules::codes::Detail::parse);
        if msg.starts_with("postbox:") {
            let d = detail
                .as_ref()
                .unwrap_or_else(|| panic!("{sql}: a postbox error without its code: {msg}"));
            assert_eq!(state, d.code.sqlstate(), "{sql}: {msg}");
        }
        (state, msg, detail)
    }

    /// The code, field and item of the postbox error `sql` raises.
    fn code_of(sql: &str) -> (String, Option<String>, Option<String>) {
        let (_, msg, detail) = detail_of(sql);
        let d = detail.unwrap_or_else(|| panic!("{sql}: no postbox error: {msg}"));
        (d.code.as_str().to_string(), d.field, d.item)
    }

    /// Asserts `sql` fails with 22023 and a message containing `want`.
    fn rejects(sql: &str, want: &str) -> String {
        let (state, msg) = error_of(sql);
        assert_eq!(state, "22023", "{sql}: {msg}");
        assert!(msg.starts_with("postbox: "), "{msg}");
        assert!(msg.contains(want), "{sql}: expected {want:?} in {msg:?}");
        msg
    }

    /// An endpoint of `tenant`; the operator's notice of it
    /// (postbox.endpoint.created, pg_test `operator_events_...`) is
    /// dropped, so that tests count only their own events.
    fn endpoint(tenant: &str, filters: &str) -> String {
        let id = one::<String>(&format!(
            "SELECT id::text FROM postbox.create_endpoint('{tenant}', 'https://hooks.example.com/{tenant}', {filters})"
        ));
        drop_notices();
        id
    }

    /// Drops the operator's notices not yet expanded (see [`endpoint`]),
    /// where the current role may (a test acting as an admin may not).
    fn drop_notices() {
        run("DO $d$ BEGIN
             IF has_table_privilege('postbox.emitted', 'DELETE') THEN
                 DELETE FROM postbox.emitted WHERE tenant = postbox.operator_tenant();
             END IF;
             END $d$");
    }

    fn pending(id: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT pending FROM postbox.endpoint_status WHERE id = '{id}'"
        ))
    }

    fn catalog() {
        for name in [
            "demo.viewed",
            "demo.event_response_updated",
            "recording.transcription_postprocessed",
            "recording.processing.completed",
            "recording.created",
        ] {
            run(&format!("SELECT postbox.create_event_type('{name}')"));
        }
    }

    #[pg_test]
    fn event_catalog() {
        catalog();
        assert_eq!(
            count("SELECT FROM postbox.event_types WHERE name = 'webhook.test' AND builtin"),
            1
        );
        run("SELECT postbox.create_event_type('demo.viewed', 'A demo was viewed', '{\"type\": \"object\"}')");
        run("SELECT postbox.create_event_type('demo.viewed', 'A demo was viewed (v2)', '{\"type\": \"object\"}')");
        assert_eq!(
            one::<String>("SELECT description FROM postbox.event_types WHERE name = 'demo.viewed'"),
            "A demo was viewed (v2)"
        );
        assert_eq!(
            count("SELECT FROM postbox.event_types WHERE name = 'demo.viewed'"),
            1
        );
        for bad in [
            "demo",
            "Demo.viewed",
            "demo..viewed",
            "demo.viewed-now",
            "demo.*",
            "",
        ] {
            rejects(
                &format!("SELECT postbox.create_event_type('{bad}')"),
                "dot-separated segments",
            );
        }
        rejects(
            "SELECT postbox.create_event_type('demo.x', NULL, '[1]')",
            "JSON Schema",
        );
        assert_eq!(
            count("SELECT FROM postbox.event_types WHERE name = 'demo.x'"),
            0
        );
    }

    /// The configuration fence's visibility test (sql/citus.sql): a row
    /// committed before the snapshot is in it, one of this (open)
    /// transaction is not, and a 32-bit xmin takes its snapshot's epoch, or
    /// the one before when its bits are above the snapshot's.
    #[pg_test]
    fn committed_in_a_snapshot() {
        assert!(one::<bool>(
            "SELECT postbox._committed_in(xmin, pg_current_snapshot()) FROM pg_namespace WHERE nspname = 'postbox'"
        ));
        Spi::run("CREATE TEMP TABLE fresh AS SELECT 1 AS x").unwrap();
        assert!(!one::<bool>(
            "SELECT postbox._committed_in(xmin, pg_current_snapshot()) FROM fresh"
        ));
        // Epoch 1, xmax 2^32 + 4: xid 3 is 2^32 + 3 (before xmax: committed);
        // xid 2^32 - 6 is from epoch 0, committed unless in progress.
        for (xid, snap, want) in [
            ("3", "4294967300:4294967300:", true),
            ("5", "4294967300:4294967300:", true), // epoch 0: 5, long committed
            ("4294967290", "4294967300:4294967300:", true),
            ("4294967290", "4294967290:4294967300:4294967290", false),
            ("3", "4294967299:4294967300:4294967299", false),
        ] {
            assert_eq!(
                one::<bool>(&format!(
                    "SELECT postbox._committed_in('{xid}'::xid, '{snap}'::pg_snapshot)"
                )),
                want,
                "{xid} in {snap}"
            );
        }
    }

    #[pg_test]
    fn url_rules() {
        assert_eq!(
            one::<String>("SELECT postbox.validate_url('HTTPS://Hooks.Example.COM:8443/in?x=1')"),
            "https://hooks.example.com:8443/in?x=1"
        );
        let msg = rejects(
            "SELECT postbox.validate_url('http://example.com/hook')",
            "must use https",
        );
        assert_eq!(
            msg,
            "postbox: webhook URL must use https: http://example.com/hook"
        );
        for (url, want) in [
            ("https://2130706433/", "loopback"),
            ("https://0x7f.1/", "loopback"),
            ("https://[::ffff:127.0.0.1]/", "loopback"),
            ("https://[::1]/", "loopback"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://169.254.169.254/", "link-local"),
            ("https://10.1.2.3/", "private"),
            ("https://100.64.0.1/", "carrier-grade NAT"),
            ("https://[fd00::1]/", "unique local"),
            ("https://localhost/", "localhost"),
            ("https://intranet/", "no dot"),
            ("https://example.com/#x", "fragment"),
            ("https://[::ffff:0:7f00:1]/", "IPv6"),
            ("https://[fe80::1]/", "link-local"),
            ("https://example.com:22/", "port"),
            ("https://example.com:80/", "port"),
            ("not a url", "valid absolute URL"),
        ] {
            let msg = rejects(&format!("SELECT postbox.validate_url('{url}')"), want);
            // The URL as given, but never its user info.
            let shown = url.replace("user:pw@", "(hidden)@");
            assert!(msg.ends_with(&shown) && !msg.contains("pw@"), "{msg}");
        }
        rejects(
            &format!(
                "SELECT postbox.validate_url('https://example.com/{}')",
                "a".repeat(2048)
            ),
            "at most 2048 bytes",
        );
        // The development switch admits http and loopback, nothing else.
        run("SET LOCAL postbox.allow_insecure_urls = on");
        assert_eq!(
            one::<String>("SELECT postbox.validate_url('http://127.0.0.1:8080/hook')"),
            "http://127.0.0.1:8080/hook"
        );
        assert_eq!(
            one::<String>("SELECT postbox.validate_url('http://127.0.0.1:80/hook')"),
            "http://127.0.0.1/hook"
        );
        rejects(
            "SELECT postbox.validate_url('http://127.0.0.1:25/')",
            "port",
        );
        rejects(
            "SELECT postbox.validate_url('http://u:p@localhost/')",
            "user name",
        );
    }

    #[pg_test]
    fn header_rules() {
        assert_eq!(
            count("SELECT jsonb_object_keys(postbox.validate_headers('{\"Authorization\": \"Bearer x\", \"X-Tenant\": \"7\"}'))"),
            2
        );
        for (h, want) in [
            (r#"{"X-A": "a\u0001b"}"#, "visible ASCII"),
            (r#"{"X-A": "a\r\nX-B: c"}"#, "visible ASCII"),
            (r#"{"X-A": ""}"#, "header value must not be empty"),
            (r#"{"": "x"}"#, "must not be empty"),
            (r#"{"Bad Name": "x"}"#, "HTTP token"),
            (r#"{"content-type": "text/plain"}"#, "reserved"),
            (r#"{"Host": "evil.example"}"#, "reserved"),
            (r#"{"Proxy-Authorization": "x"}"#, "reserved"),
            (r#"{"Webhook-Id": "x"}"#, "reserved"),
            (r#"{"X-A": "1", "x-a": "2"}"#, "unique ignoring case"),
            (r#"{"X-A": 1}"#, "must be a string"),
        ] {
            rejects(&format!("SELECT postbox.validate_headers('{h}')"), want);
        }
        // Errors name the header and the rule, never its value.
        for h in [
            r#"{"Authorization": "Bearer tok3n\u0001"}"#,
            r#"{"Authorization": "Bearer tok3n\r\nX-B: c"}"#,
            r#"{"Authorization": "Bearer tok3n", "authorization": "Bearer tok3n"}"#,
            r#"{"Proxy-Authorization": "Basic tok3n"}"#,
        ] {
            let (state, msg) = error_of(&format!("SELECT postbox.validate_headers('{h}')"));
            assert_eq!(state, "22023", "{msg}");
            assert!(!msg.contains("tok3n"), "a header value in an error: {msg}");
        }
        rejects(
            r#"SELECT postbox.validate_headers('{"X-Hub-Signature": "x"}', 'x-hub-signature')"#,
            "signature header",
        );
    }

    #[pg_test]
    fn create_endpoint_returns_a_secret_once() {
        catalog();
        let (id, secret) = Spi::get_two::<pgrx::Uuid, String>(
            "SELECT id, secret FROM postbox.create_endpoint('t1', 'https://hooks.example.com/a', '{demo.viewed, recording.*}',
                 '{\"Authorization\": \"Bearer abc\"}', 'main hook')",
        )
        .unwrap();
        let (id, secret) = (id.unwrap(), secret.unwrap());
        assert!(
            secret.starts_with("whsec_") && secret.len() == 6 + 44,
            "{secret}"
        );
        let row = format!("SELECT * FROM postbox.endpoints WHERE id = '{id}'");
        assert_eq!(count(&row), 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT signature_style FROM postbox.endpoints WHERE id = '{id}'"
            )),
            "standard"
        );
        // The status view never shows the secret.
        assert_eq!(count("SELECT FROM information_schema.columns WHERE table_name = 'endpoint_status' AND column_name ILIKE '%secret%'"), 0);

        // An own secret, and sha256-hex with its default header.
        let own = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let got = one::<String>(&format!(
            "SELECT secret FROM postbox.create_endpoint('t1', 'https://hooks.example.com/b', own_secret => '{own}',
                 signature_style => 'sha256-hex')"
        ));
        assert_eq!(got, own);
        assert_eq!(
            count("SELECT FROM postbox.endpoints WHERE signature_header = 'X-Webhook-Signature'"),
            1
        );
    }

    #[pg_test]
    fn create_endpoint_validates_everything_and_writes_nothing_on_error() {
        catalog();
        let before = count("SELECT FROM postbox.endpoints");
        let cases = [
            ("'t', 'http://example.com/'", "must use https"),
            ("'t', 'https://[::1]/'", "loopback"),
            ("'', 'https://example.com/'", "tenant must be a non-empty string"),
            ("'t', 'https://example.com/', '{recording.creatd}'", "did you mean recording.created"),
            ("'t', 'https://example.com/', '{nothing.like_it}'", "create_event_type"),
            ("'t', 'https://example.com/', '{Recording.*}'", "'.*'"),
            ("'t', 'https://example.com/', '{}'", "at least one"),
            ("'t', 'https://example.com/', headers => '{\"X-A\": \"a\\u0007\"}'", "visible ASCII"),
            ("'t', 'https://example.com/', headers => '{\"User-Agent\": \"x\"}'", "reserved"),
            ("'t', 'https://example.com/', signature_style => 'md5'", "'standard', 'sha256-hex' or 'hex'"),
            ("'t', 'https://example.com/', signature_header => 'X-Sig'", "applies only to"),
            (
                "'t', 'https://example.com/', signature_style => 'sha256-hex', headers => '{\"x-webhook-signature\": \"v\"}'",
                "signature header",
            ),
            ("'t', 'https://example.com/', own_secret => 'whsec_AAAA'", "24 to 64 bytes"),
            ("'t', 'https://example.com/', own_secret => 'not-a-secret-at-all'", "start with whsec_"),
            ("'t', 'https://example.com/', options => '{\"timeout\": 5}'", "may hold only"),
            ("'t', 'https://example.com/', options => '{\"timeout_ms\": 10}'", "from 100 to 120000"),
            ("'t', 'https://example.com/', options => '{\"max_in_flight\": 0}'", "max_in_flight"),
            ("'t', 'https://example.com/', options => '{\"rate_limit_per_s\": -2}'", "rate_limit_per_s"),
            ("'t', 'https://example.com/', options => '{\"retry_schedule\": [\"soon\"]}'", "intervals"),
        ];
        for (args, want) in cases {
            let msg = rejects(&format!("SELECT postbox.create_endpoint({args})"), want);
            assert!(
                !msg.contains("AAAA") && !msg.contains("not-a-secret"),
                "secret leaked: {msg}"
            );
        }
        assert_eq!(count("SELECT FROM postbox.endpoints"), before);
        assert_eq!(count("SELECT FROM postbox.endpoint_secrets"), before);
        // Valid options and a prefix pattern for types that do not exist yet.
        endpoint("t", "'{future.*}', options => '{\"timeout_ms\": 2000, \"connect_timeout_ms\": 500, \"max_in_flight\": 2, \"rate_limit_per_s\": 0.5, \"retry_schedule\": [\"1s\", 30, \"2h\"]}'");
    }

    #[pg_test]
    fn tenant_limits() {
        run("SELECT postbox.set_tenant_limit('small', 1)");
        endpoint("small", "'{*}'");
        rejects(
            "SELECT postbox.create_endpoint('small', 'https://example.com/2')",
            "at most 1 endpoints",
        );
        run("SELECT postbox.set_tenant_limit('none', 0)");
        rejects(
            "SELECT postbox.create_endpoint('none', 'https://example.com/')",
            "not available",
        );
        rejects("SELECT postbox.set_tenant_limit('x', -1)", "0 or more");
        run("SELECT postbox.set_tenant_limit('small', NULL)");
        endpoint("small", "'{*}'");
        assert_eq!(
            count("SELECT FROM postbox.endpoints WHERE tenant = 'small'"),
            2
        );
    }

    #[pg_test]
    fn emit_validates_its_input() {
        catalog();
        rejects(
            "SELECT postbox.emit('t', 'recording.creatd', '{}')",
            "did you mean recording.created",
        );
        rejects("SELECT postbox.emit('t', 'no_dots', '{}')", "dot-separated");
        rejects(
            "SELECT postbox.emit('t', 'demo.viewed', '[1,2]')",
            "must be a JSON object",
        );
        rejects(
            "SELECT postbox.emit('t', 'demo.viewed', '\"x\"')",
            "must be a JSON object",
        );
        rejects(
            "SELECT postbox.emit(NULL, 'demo.viewed', '{}')",
            "tenant must not be NULL",
        );
        run("SET LOCAL postbox.max_payload_bytes = 1024");
        rejects(
            &format!(
                "SELECT postbox.emit('t', 'demo.viewed', '{{\"x\": \"{}\"}}')",
                "a".repeat(1100)
            ),
            "at most postbox.max_payload_bytes (1024)",
        );
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        let id = one::<pgrx::Uuid>("SELECT postbox.emit('t', 'demo.viewed', '{\"demo_id\": 1}')");
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.emitted WHERE id = '{id}' AND event_type = 'demo.viewed'"
            )),
            1
        );
        // The worker's expansion keeps the id emit returned.
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 1);
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.events WHERE id = '{id}' AND event_type = 'demo.viewed' AND data::jsonb = '{{\"demo_id\": 1}}'"
            )),
            1
        );
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
    }

    #[pg_test]
    fn routing_filters_and_tenants() {
        catalog();
        let all = endpoint("a", "'{*}'");
        let rec = endpoint("a", "'{recording.*}'");
        let rec_proc = endpoint("a", "'{recording.processing.*}'");
        let exact = endpoint("a", "'{demo.viewed}'");
        let other_tenant = endpoint("b", "'{*}'");
        run("SELECT postbox.emit('a', 'recording.processing.completed', '{}')");
        run("SELECT postbox.emit('a', 'demo.viewed', '{}')");
        run("SELECT postbox.emit('a', 'recording.created', '{}')");
        assert_eq!(pending(&all), 3);
        assert_eq!(pending(&rec), 2);
        assert_eq!(pending(&rec_proc), 1);
        assert_eq!(pending(&exact), 1);
        // Tenant A's events never count for tenant B.
        assert_eq!(pending(&other_tenant), 0);
        run("SELECT postbox.emit('b', 'demo.viewed', '{}')");
        assert_eq!(pending(&other_tenant), 1);
        assert_eq!(pending(&all), 3);
        // The same counts before expansion (endpoint_status reads emitted) and
        // after it (outbox rows that expand_events wrote), and exactly these
        // deliveries: the rule is one (_routes) for both.
        let before: Vec<i64> = [&all, &rec, &rec_proc, &exact, &other_tenant]
            .iter()
            .map(|id| pending(id))
            .collect();
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 4);
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        let routed = |id: &str| {
            count(&format!(
                "SELECT FROM postbox.outbox WHERE endpoint_id = '{id}' AND status = 'pending'"
            ))
        };
        let after: Vec<i64> = [&all, &rec, &rec_proc, &exact, &other_tenant]
            .iter()
            .map(|id| routed(id))
            .collect();
        assert_eq!(after, vec![3, 2, 1, 1, 1]);
        assert_eq!(before, after);
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id
                  WHERE d.endpoint_id = '{rec_proc}' AND v.event_type = 'recording.processing.completed'"
            )),
            1
        );
    }

    #[pg_test]
    fn idempotency_keys() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        let first =
            one::<String>("SELECT postbox.emit('t', 'demo.viewed', '{\"n\": 1}', 'key-1')::text");
        let again =
            one::<String>("SELECT postbox.emit('t', 'demo.viewed', '{\"n\": 2}', 'key-1')::text");
        assert_eq!(first, again);
        assert_eq!(count("SELECT FROM postbox.emitted WHERE tenant = 't'"), 1);
        assert_eq!(pending(&ep), 1);
        let other = one::<String>("SELECT postbox.emit('u', 'demo.viewed', '{}', 'key-1')::text");
        assert_ne!(first, other);
        let fresh = one::<String>("SELECT postbox.emit('t', 'demo.viewed', '{}', 'key-2')::text");
        assert_ne!(first, fresh);
        assert_eq!(pending(&ep), 2);
    }

    #[pg_test]
    fn pending_counts_through_expansion_and_test_sends() {
        catalog();
        let ep = endpoint("t", "'{demo.*}'");
        run("SELECT postbox.emit('t', 'demo.viewed', '{}') FROM generate_series(1, 3)");
        run("SELECT postbox.emit('t', 'recording.created', '{}')");
        assert_eq!(pending(&ep), 3);
        assert_eq!(one::<i32>("SELECT postbox.expand_events(2)"), 2);
        assert_eq!(pending(&ep), 3);
        // Every event is expanded, the unmatched one too (it routes nowhere).
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 2);
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 0);
        assert_eq!(pending(&ep), 3);
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.deliveries WHERE endpoint_id = '{ep}' AND status = 'pending'"
            )),
            3
        );
        // A test send goes to this endpoint only, whatever its filter.
        let other = endpoint("t", "'{recording.*}'");
        run(&format!(
            "SELECT postbox.send_test('t', '{ep}', 'recording.created')"
        ));
        assert_eq!(pending(&ep), 4);
        assert_eq!(pending(&other), 0);
    }

    #[pg_test]
    fn paused_endpoints_get_nothing_while_paused() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"before\": true}')");
        run("SELECT postbox.expand_events()");
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{ep}', enabled => false)"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM postbox.endpoint_status WHERE id = '{ep}'"
            )),
            "paused"
        );
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"during\": true}')");
        run("SELECT postbox.expand_events()");
        // Queued before the pause: held, not lost. Emitted during it: never queued.
        assert_eq!(pending(&ep), 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM postbox.deliveries WHERE endpoint_id = '{ep}'"
            )),
            "held"
        );
        // A test send still goes to a paused endpoint.
        run(&format!("SELECT postbox.send_test('t', '{ep}')"));
        assert_eq!(pending(&ep), 2);
        // Resume: held deliveries are pending again, failure streak and disable cleared.
        run(&format!("UPDATE postbox.endpoints SET consecutive_failures = 5, disabled_at = now(), disabled_reason = 'x' WHERE id = '{ep}'"));
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{ep}', enabled => true)"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT status || consecutive_failures FROM postbox.endpoint_status WHERE id = '{ep}'")),
            "healthy0"
        );
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.deliveries WHERE endpoint_id = '{ep}' AND status = 'pending'"
            )),
            2
        );
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"after\": true}')");
        assert_eq!(pending(&ep), 3);
    }

    #[pg_test]
    fn update_and_delete_endpoint() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{ep}', url => 'https://new.example.com/x', event_types => '{{demo.viewed}}',
                 headers => '{{\"X-Env\": \"prod\"}}', description => 'renamed', options => '{{\"timeout_ms\": 1000}}')"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT url || ' ' || description || ' ' || headers::text FROM postbox.endpoints WHERE id = '{ep}'")),
            "https://new.example.com/x renamed {\"X-Env\": \"prod\"}"
        );
        rejects(
            &format!("SELECT postbox.update_endpoint('t', '{ep}', url => 'https://10.0.0.1/')"),
            "private",
        );
        rejects(
            &format!("SELECT postbox.update_endpoint('t', '{ep}', options => '{{\"nope\": 1}}')"),
            "may hold only",
        );
        rejects("SELECT postbox.update_endpoint('t', '00000000-0000-0000-0000-000000000000', enabled => true)", "no endpoint");
        assert_eq!(
            one::<String>(&format!(
                "SELECT url FROM postbox.endpoints WHERE id = '{ep}'"
            )),
            "https://new.example.com/x"
        );

        run("SELECT postbox.emit('t', 'demo.viewed', '{}')");
        run("SELECT postbox.expand_events()");
        let delivery = one::<i64>(&format!(
            "SELECT id FROM postbox.outbox WHERE endpoint_id = '{ep}'"
        ));
        run(&format!(
            "INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at, duration_ms, status_code, outcome, queued_at)
             SELECT id, tenant, endpoint_id, event_id, 1, now(), 5, 500, 'retrying', created_at FROM postbox.outbox WHERE id = {delivery}"
        ));
        run(&format!("SELECT postbox.delete_endpoint('t', '{ep}')"));
        assert_eq!(
            count(&format!("SELECT FROM postbox.endpoints WHERE id = '{ep}'")),
            0
        );
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.endpoint_secrets WHERE endpoint_id = '{ep}'"
            )),
            0
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM postbox.deliveries WHERE id = {delivery}"
            )),
            "cancelled"
        );
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.attempts WHERE delivery_id = {delivery}"
            )),
            1
        );
        rejects(
            &format!("SELECT postbox.delete_endpoint('t', '{ep}')"),
            "no endpoint",
        );
        rejects(
            &format!("SELECT postbox.retry_delivery('t', {delivery})"),
            "deleted",
        );
    }

    #[pg_test]
    fn retry_delivery_requeues_failed_ones() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        run("SELECT postbox.emit('t', 'demo.viewed', '{}')");
        run("SELECT postbox.expand_events()");
        let d = one::<i64>(&format!(
            "SELECT id FROM postbox.outbox WHERE endpoint_id = '{ep}'"
        ));
        rejects(
            &format!("SELECT postbox.retry_delivery('t', {d})"),
            "still pending",
        );
        run(&format!(
            "UPDATE postbox.outbox SET status = 'failed', attempts = 8 WHERE id = {d}"
        ));
        assert_eq!(pending(&ep), 0);
        run(&format!("SELECT postbox.retry_delivery('t', {d})"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || attempts FROM postbox.deliveries WHERE id = {d}"
            )),
            "pending0"
        );
        assert_eq!(pending(&ep), 1);
        rejects(
            "SELECT postbox.retry_delivery('t', -1)",
            "no failed or cancelled delivery",
        );
    }

    #[pg_test]
    fn rotate_secret_keeps_the_old_one_for_the_grace_period() {
        let (id, first) = Spi::get_two::<String, String>(
            "SELECT id::text, secret FROM postbox.create_endpoint('t', 'https://example.com/')",
        )
        .unwrap();
        let (id, first) = (id.unwrap(), first.unwrap());
        let second = one::<String>(&format!(
            "SELECT postbox.rotate_secret('t', '{id}', '1 hour')"
        ));
        assert_ne!(first, second);
        let valid = format!("SELECT secret FROM postbox.endpoint_secrets WHERE endpoint_id = '{id}' AND (expires_at IS NULL OR expires_at > now())");
        assert_eq!(count(&valid), 2);
        assert_eq!(
            count(&format!("SELECT FROM postbox.endpoint_secrets WHERE endpoint_id = '{id}' AND secret = '{first}' AND expires_at BETWEEN now() + '59 min' AND now() + '61 min'")),
            1
        );
        let own = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(
            one::<String>(&format!(
                "SELECT postbox.rotate_secret('t', '{id}', '0', '{own}')"
            )),
            own
        );
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.endpoint_secrets WHERE endpoint_id = '{id}'"
            )),
            1
        );
        rejects(
            &format!("SELECT postbox.rotate_secret('t', '{id}', '-1 hour')"),
            "grace must be",
        );
        rejects(
            &format!("SELECT postbox.rotate_secret('t', '{id}', own_secret => 'whsec_short')"),
            "whsec_",
        );
    }

    fn app_table() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.recordings (id serial PRIMARY KEY, workspace_id text, title text, transcript text)");
        run("SELECT postbox.attach('app.recordings', 'recording', 'workspace_id')");
    }

    fn event_data(kind: &str) -> Vec<serde_json::Value> {
        run("SELECT postbox.expand_events(100000)");
        Spi::connect(|c| {
            c.select(
                &format!("SELECT data::jsonb FROM postbox.events WHERE event_type = 'recording.{kind}' ORDER BY id"),
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<pgrx::JsonB>(1).unwrap().unwrap().0)
            .collect()
        })
    }

    #[pg_test]
    fn attach_emits_row_changes() {
        app_table();
        let ep = endpoint("w1", "'{recording.*}'");
        run("INSERT INTO app.recordings (workspace_id, title) VALUES ('w1', 'standup'), (NULL, 'orphan')");
        run("UPDATE app.recordings SET title = 'daily standup' WHERE title = 'standup'");
        run("UPDATE app.recordings SET title = title WHERE workspace_id = 'w1'");
        run("DELETE FROM app.recordings WHERE workspace_id = 'w1'");
        let created = event_data("created");
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0]["recording"]["title"], "standup");
        assert_eq!(created[0]["recording"]["workspace_id"], "w1");
        let updated = event_data("updated");
        assert_eq!(
            updated.len(),
            1,
            "a no-op update emits nothing: {updated:?}"
        );
        assert_eq!(updated[0]["recording"]["title"], "daily standup");
        assert_eq!(updated[0]["changed"], serde_json::json!(["title"]));
        let deleted = event_data("deleted");
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0]["recording"]["title"], "daily standup");
        assert_eq!(pending(&ep), 3);
        // Attach is idempotent: attaching again leaves one set of triggers.
        run("SELECT postbox.attach('app.recordings', 'recording', 'workspace_id')");
        assert_eq!(count("SELECT FROM pg_trigger WHERE tgrelid = 'app.recordings'::regclass AND NOT tgisinternal"), 3);
        // A bulk insert emits one event per row.
        run("INSERT INTO app.recordings (workspace_id, title) SELECT 'w1', 'r' || i FROM generate_series(1, 500) i");
        assert_eq!(pending(&ep), 503);
        run("SELECT postbox.expand_events(100000)");
        assert_eq!(
            count("SELECT FROM postbox.events WHERE event_type = 'recording.created'"),
            501
        );
        assert_eq!(pending(&ep), 503);
    }

    #[pg_test]
    fn attach_works_whatever_the_column_names() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        // Columns named like the aliases a trigger might use for its rows.
        run("CREATE TABLE app.odd (n int, o int, j text, r text, tenant text, postbox_new int)");
        run("SELECT postbox.attach('app.odd', 'odd', 'tenant')");
        let ep = endpoint("w", "'{odd.*}'");
        run("INSERT INTO app.odd VALUES (1, 2, 'x', 'y', 'w', 3)");
        run("UPDATE app.odd SET n = 5");
        run("DELETE FROM app.odd");
        assert_eq!(pending(&ep), 3);
        run("SELECT postbox.expand_events()");
        assert_eq!(pending(&ep), 3);
        assert_eq!(
            one::<pgrx::JsonB>(
                "SELECT data::jsonb FROM postbox.events WHERE event_type = 'odd.created'"
            )
            .0,
            serde_json::json!({"odd": {"n": 1, "o": 2, "j": "x", "r": "y", "tenant": "w", "postbox_new": 3}})
        );
    }

    #[pg_test]
    fn attach_limits_payload_columns() {
        app_table();
        run("SELECT postbox.attach('app.recordings', 'recording', 'workspace_id', '{id, title}')");
        run("INSERT INTO app.recordings (workspace_id, title, transcript) VALUES ('w1', 'a', 'very long text')");
        run("UPDATE app.recordings SET transcript = 'changed, but not in the payload'");
        run("UPDATE app.recordings SET title = 'b'");
        let created = event_data("created");
        assert_eq!(
            created[0]["recording"],
            serde_json::json!({"id": 1, "title": "a"})
        );
        let updated = event_data("updated");
        assert_eq!(updated.len(), 1, "{updated:?}");
        assert_eq!(updated[0]["changed"], serde_json::json!(["title"]));
        rejects(
            "SELECT postbox.attach('app.recordings', 'recording', 'no_such_column')",
            "tenant_column must name a column of app.recordings",
        );
        rejects(
            "SELECT postbox.attach('app.recordings', 'Recording', 'workspace_id')",
            "dot-separated",
        );
    }

    /// The statuses of an endpoint's deliveries of `event_type`, by id.
    fn statuses(endpoint: &str, event_type: &str) -> String {
        one::<String>(&format!(
            "SELECT string_agg(d.status, ',' ORDER BY d.id) FROM postbox.outbox d
               JOIN postbox.events v ON v.id = d.event_id
              WHERE d.endpoint_id = '{endpoint}' AND v.event_type = '{event_type}'"
        ))
    }

    #[pg_test]
    fn ordering_keys_and_coalescing_at_expansion() {
        app_table();
        run("CREATE TABLE app.pairs (a int, b text, workspace_id text, note text, PRIMARY KEY (b, a))");
        // Payload columns that leave the key out: the key is still read.
        run("SELECT postbox.attach('app.pairs', 'pair', 'workspace_id', '{note}')");
        let ordered = one::<String>(
            r#"SELECT id::text FROM postbox.create_endpoint('w1', 'https://hooks.example.com/o',
                   '{recording.*, pair.*, demo.viewed}', options => '{"ordering": "key", "coalesce": true}')"#,
        );
        let plain = endpoint("w1", "'{recording.*, pair.*, demo.viewed}'");
        run("INSERT INTO app.recordings (workspace_id, title) VALUES ('w1', 'a'), ('w1', 'other')");
        run("UPDATE app.recordings SET title = 'b' WHERE id = 1");
        run("UPDATE app.recordings SET title = 'c' WHERE id = 1");
        run("INSERT INTO app.pairs VALUES (7, 'eu', 'w1', 'n')");
        run("SELECT postbox.emit('w1', 'demo.viewed', '{}', ordering_key => 'k1')");
        run("SELECT postbox.emit('w1', 'demo.viewed', '{}')");
        run("SELECT postbox.expand_events(1000)");
        let keys = one::<String>(
            "SELECT string_agg(coalesce(ordering_key, '-'), ' ' ORDER BY id) FROM postbox.events",
        );
        assert_eq!(
            keys,
            r#"recording:1 recording:2 recording:1 recording:1 pair:["eu", 7] k1 -"#
        );
        assert_eq!(
            one::<pgrx::JsonB>(
                "SELECT data::jsonb FROM postbox.events WHERE event_type = 'pair.created'"
            )
            .0,
            serde_json::json!({"pair": {"note": "n"}}),
            "the key columns are read, not sent"
        );
        // Keys (hashed) only for the endpoint that needs them; no key is
        // the empty key.
        assert_eq!(
            count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{plain}' AND ordering_key IS NOT NULL")),
            0
        );
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id
                  WHERE d.endpoint_id = '{ordered}' AND d.ordering_key = postbox._ordering_hash(v.ordering_key)"
            )),
            7
        );
        assert_eq!(
            one::<i64>("SELECT postbox._ordering_hash(NULL)"),
            one::<i64>("SELECT postbox._ordering_hash('')")
        );
        // Coalescing: of one key's updates only the newest waits; other
        // keys, types and endpoints are untouched.
        assert_eq!(statuses(&ordered, "recording.updated"), "coalesced,pending");
        assert_eq!(statuses(&ordered, "recording.created"), "pending,pending");
        assert_eq!(statuses(&plain, "recording.updated"), "pending,pending");
        // A later expansion coalesces what still waits from an earlier one,
        // but never a delivery in flight.
        run("UPDATE app.recordings SET title = 'd' WHERE id = 1");
        run("SELECT postbox.expand_events(1000)");
        assert_eq!(
            statuses(&ordered, "recording.updated"),
            "coalesced,coalesced,pending"
        );
        run(&format!(
            "UPDATE postbox.outbox SET lease_until = now() + interval '1 minute'
              WHERE endpoint_id = '{ordered}' AND status = 'pending'"
        ));
        run("UPDATE app.recordings SET title = 'e' WHERE id = 1");
        run("SELECT postbox.expand_events(1000)");
        assert_eq!(
            statuses(&ordered, "recording.updated"),
            "coalesced,coalesced,pending,pending"
        );
        let why = one::<String>(&format!(
            "SELECT last_error FROM postbox.deliveries WHERE endpoint_id = '{ordered}' AND status = 'coalesced' LIMIT 1"
        ));
        assert_eq!(
            why,
            "coalesced: a newer recording.updated event of its ordering key was queued"
        );
        // Turning ordering on keys what is queued.
        run(&format!("SELECT postbox.update_endpoint('w1', '{plain}', options => '{{\"ordering\": \"key\"}}')"));
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.outbox WHERE endpoint_id = '{plain}' AND ordering_key IS NULL"
            )),
            0
        );
        rejects(
            "SELECT postbox.emit('w1', 'demo.viewed', '{}', ordering_key => repeat('k', 100000))",
            "ordering_key",
        );
        // Coalescing without ordering; a coalesced delivery can be sent
        // after all.
        let coalescing = one::<String>(
            r#"SELECT id::text FROM postbox.create_endpoint('w1', 'https://hooks.example.com/c',
                   '{recording.*}', options => '{"coalesce": true}')"#,
        );
        run("UPDATE app.recordings SET title = 'f' WHERE id = 1");
        run("UPDATE app.recordings SET title = 'g' WHERE id = 1");
        run("SELECT postbox.expand_events(1000)");
        assert_eq!(
            statuses(&coalescing, "recording.updated"),
            "coalesced,pending"
        );
        run(&format!(
            "SELECT postbox.retry_delivery('w1', id) FROM postbox.outbox
              WHERE endpoint_id = '{coalescing}' AND status = 'coalesced'"
        ));
        assert_eq!(
            statuses(&coalescing, "recording.updated"),
            "pending,pending"
        );
        // ...or replayed, as a failed one is.
        run("UPDATE app.recordings SET title = 'h' WHERE id = 1");
        run("SELECT postbox.expand_events(1000)");
        assert_eq!(
            statuses(&coalescing, "recording.updated"),
            "coalesced,coalesced,pending"
        );
        run(&format!(
            "SELECT * FROM postbox.replay('w1', '{coalescing}', since => '-infinity')"
        ));
        assert_eq!(
            statuses(&coalescing, "recording.updated"),
            "pending,pending,pending"
        );
    }

    #[pg_test]
    fn row_trigger_used_directly_and_rolled_back_emits() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.demos (id int, workspace_id text, name text)");
        run("SELECT postbox.create_event_type(n) FROM unnest(ARRAY['demo.created', 'demo.updated', 'demo.deleted']) n");
        run("CREATE TRIGGER t AFTER INSERT OR UPDATE OR DELETE ON app.demos FOR EACH ROW EXECUTE FUNCTION postbox.emit_row_change('demo', 'workspace_id')");
        run("INSERT INTO app.demos VALUES (1, 'w', 'x'), (2, 'w', 'y')");
        run("SELECT postbox.expand_events()");
        assert_eq!(
            count("SELECT FROM postbox.events WHERE event_type = 'demo.created'"),
            2
        );
        // A write that rolls back (here a subtransaction) leaves nothing behind.
        let (state, _) = error_of("DO $$ BEGIN INSERT INTO app.demos VALUES (3, 'w', 'z'); RAISE EXCEPTION 'boom'; END $$");
        assert_eq!(state, "P0001");
        run("SELECT postbox.expand_events()");
        assert_eq!(
            count("SELECT FROM postbox.events WHERE event_type = 'demo.created'"),
            2
        );
        assert_eq!(count("SELECT FROM app.demos"), 2);
    }

    #[pg_test]
    fn roles_are_separated() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.things (id int, tenant text)");
        run("GRANT USAGE ON SCHEMA app TO postbox_emitter");
        run("GRANT INSERT, SELECT, TRIGGER ON app.things TO postbox_emitter");

        let _ = error_of("SELECT 1/0"); // creates the helper as the superuser
        run("SET LOCAL ROLE postbox_emitter");
        run("SELECT postbox.emit('t', 'demo.viewed', '{}')");
        run("SELECT postbox.attach('app.things', 'thing', 'tenant')");
        run("INSERT INTO app.things VALUES (1, 't')");
        for sql in [
            "SELECT * FROM postbox.endpoint_secrets",
            "SELECT * FROM postbox.endpoints",
            "SELECT postbox.create_endpoint('t', 'https://example.com/')",
            &format!("SELECT postbox.update_endpoint('t', '{ep}', enabled => false)"),
            &format!("SELECT postbox.rotate_secret('t', '{ep}')"),
            "SELECT postbox.create_event_type('x.y')",
            "SELECT postbox._generate_secret()",
            "INSERT INTO postbox.events (id, tenant, event_type, created_at, data) VALUES (gen_random_uuid(), 't', 'x.y', now(), '{}')",
            "INSERT INTO postbox.emitted (id, tenant, event_type, created_at, data) VALUES (gen_random_uuid(), 't', 'x.y', now(), '{}')",
        ] {
            assert_eq!(error_of(sql).0, "42501", "emitter: {sql}");
        }
        run("RESET ROLE");

        run("SET LOCAL ROLE postbox_admin");
        let other = endpoint("t", "'{*}'");
        run(&format!("SELECT postbox.rotate_secret('t', '{other}')"));
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{other}', enabled => false)"
        ));
        assert!(count("SELECT * FROM postbox.endpoint_status") >= 2);
        for sql in [
            "SELECT * FROM postbox.endpoint_secrets",
            "SELECT postbox.emit('t', 'demo.viewed', '{}')",
            "DELETE FROM postbox.outbox",
        ] {
            assert_eq!(error_of(sql).0, "42501", "admin: {sql}");
        }
        run("RESET ROLE");

        run("SET LOCAL ROLE postbox_worker");
        assert_eq!(
            count(&format!(
                "SELECT secret FROM postbox.endpoint_secrets WHERE endpoint_id = '{ep}'"
            )),
            1
        );
        assert!(one::<i32>("SELECT postbox.expand_events()") >= 2);
        for sql in [
            "SELECT postbox.create_endpoint('t', 'https://example.com/')",
            "SELECT postbox.emit('t', 'demo.viewed', '{}')",
            "UPDATE postbox.endpoints SET url = 'https://evil.example.com/'",
        ] {
            assert_eq!(error_of(sql).0, "42501", "worker: {sql}");
        }
        run("RESET ROLE");
    }

    #[pg_test]
    fn every_object_has_a_comment() {
        let missing: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT format('%s %s', kind, name) FROM (
                     SELECT 'relation' AS kind, c.oid::regclass::text AS name, obj_description(c.oid, 'pg_class') AS d
                       FROM pg_class c WHERE c.relnamespace = 'postbox'::regnamespace AND c.relkind IN ('r', 'v')
                     UNION ALL
                     SELECT 'function', p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc')
                       FROM pg_proc p WHERE p.pronamespace = 'postbox'::regnamespace
                     UNION ALL
                     SELECT 'schema', 'postbox', obj_description('postbox'::regnamespace, 'pg_namespace')
                 ) o WHERE d IS NULL ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        assert!(
            missing.is_empty(),
            "objects without COMMENT ON: {missing:?}"
        );
    }

    #[pg_test]
    fn emitted_while_paused_or_unmatched_is_never_queued_but_recorded() {
        catalog();
        let ep = endpoint("t", "'{recording.*}'");
        let id = one::<String>("SELECT postbox.emit('t', 'demo.viewed', '{\"x\": 1}')::text");
        assert_eq!(pending(&ep), 0);
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 1);
        assert_eq!(
            count(&format!("SELECT FROM postbox.events WHERE id = '{id}'")),
            1
        );
        assert_eq!(count("SELECT FROM postbox.outbox"), 0);
        assert_eq!(pending(&ep), 0);
    }

    /// Routing happens at expansion, but with the endpoints as they were at
    /// emit: not to one paused then (even if resumed before the expansion),
    /// nor to one created after the emit.
    #[pg_test]
    fn expansion_routes_as_of_emit() {
        catalog();
        let ep = endpoint("t", "'{*}'");
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"before\": true}')");
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{ep}', enabled => false)"
        ));
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"during\": true}')");
        assert_eq!(pending(&ep), 1);
        run(&format!(
            "SELECT postbox.update_endpoint('t', '{ep}', enabled => true)"
        ));
        run("SELECT postbox.emit('t', 'demo.viewed', '{\"after\": true}')");
        let late = endpoint("t", "'{*}'");
        assert_eq!(pending(&ep), 2);
        assert_eq!(pending(&late), 0);
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 3);
        assert_eq!(pending(&ep), 2);
        assert_eq!(pending(&late), 0);
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id
                  WHERE d.endpoint_id = '{ep}' AND v.data::jsonb ? 'during'"
            )),
            0
        );
        // Pause history survives a second pause.
        assert_eq!(count(&format!("SELECT FROM postbox.endpoint_pauses WHERE endpoint_id = '{ep}' AND resumed_at IS NOT NULL")), 1);
    }

    /// attach's INSERT/DELETE trigger (Rust) writes one emitted row per
    /// statement, none for a statement without rows; expansion makes one
    /// event per row, each with its own tenant and id.
    #[pg_test]
    fn statement_trigger_writes_one_row_per_statement() {
        app_table();
        let ep = endpoint("w1", "'{recording.*}'");
        run("INSERT INTO app.recordings (workspace_id, title) SELECT 'w' || (i % 2), 'r' || i FROM generate_series(1, 10) i");
        run("INSERT INTO app.recordings (workspace_id, title) SELECT 'w1', 'none' WHERE false");
        assert_eq!(count("SELECT FROM postbox.emitted"), 1);
        assert_eq!(pending(&ep), 5);
        run("DELETE FROM app.recordings WHERE workspace_id = 'w1'");
        assert_eq!(count("SELECT FROM postbox.emitted"), 2);
        assert_eq!(pending(&ep), 10);
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 15);
        assert_eq!(count("SELECT FROM postbox.events WHERE tenant = 'w1'"), 10);
        assert_eq!(count("SELECT DISTINCT id FROM postbox.events"), 15);
        assert_eq!(pending(&ep), 10);
    }

    /// A statement with more than 8 MiB of rows is split over emitted rows.
    #[pg_test]
    fn statement_trigger_splits_large_statements() {
        app_table();
        run("INSERT INTO app.recordings (workspace_id, transcript) SELECT 'w1', repeat('x', 100000) FROM generate_series(1, 100)");
        assert_eq!(count("SELECT FROM postbox.emitted"), 2);
        assert_eq!(
            one::<i64>("SELECT sum(json_array_length(rows))::int8 FROM postbox.emitted"),
            100
        );
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 100);
        assert_eq!(
            count("SELECT FROM postbox.events WHERE length(data -> 'recording' ->> 'transcript') = 100000"),
            100
        );
    }

    #[pg_test]
    fn statement_trigger_misuse_is_refused() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.t (id int, tenant text)");
        run("CREATE TRIGGER r AFTER INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION postbox.emit_statement('demo', 'tenant')");
        rejects(
            "INSERT INTO app.t VALUES (1, 'x')",
            "statement-level AFTER INSERT or DELETE",
        );
        run("DROP TRIGGER r ON app.t");
        run("CREATE TRIGGER s AFTER INSERT ON app.t FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement('demo', 'tenant')");
        rejects(
            "INSERT INTO app.t VALUES (1, 'x')",
            "needs a transition table",
        );
        run("DROP TRIGGER s ON app.t");
        run("CREATE TRIGGER a AFTER INSERT ON app.t REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement('demo')");
        rejects(
            "INSERT INTO app.t VALUES (1, 'x')",
            "needs (resource, tenant_column",
        );
        run("DROP TRIGGER a ON app.t");
        // A resource whose event types were never registered (attach does that).
        run("CREATE TRIGGER u AFTER INSERT ON app.t REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement('nothing', 'tenant')");
        rejects("INSERT INTO app.t VALUES (1, 'x')", "nothing.created");
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        assert_eq!(count("SELECT FROM app.t"), 0);
    }

    /// The triggers keep their encoders between firings; a change to the
    /// table's columns makes them encode the new shape at once.
    #[pg_test]
    fn triggers_follow_table_changes() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.shapes (id int, tenant text, a int)");
        run("SELECT postbox.attach('app.shapes', 'shape', 'tenant')");
        let last =
            || one::<String>("SELECT rows::text FROM postbox.emitted ORDER BY id DESC LIMIT 1");
        let last_data =
            || one::<String>("SELECT data::text FROM postbox.emitted ORDER BY id DESC LIMIT 1");
        run("INSERT INTO app.shapes VALUES (1, 't', 1)");
        assert_eq!(last(), r#"[{"id":1,"tenant":"t","a":1}]"#);
        // The row trigger (UPDATE) keeps its encoder the same way.
        run("UPDATE app.shapes SET a = 4 WHERE id = 1");
        assert_eq!(
            last_data(),
            r#"{"shape": {"a": 4, "id": 1, "tenant": "t"}, "changed": ["a"]}"#
        );
        run("ALTER TABLE app.shapes RENAME COLUMN a TO b");
        run("UPDATE app.shapes SET b = 5 WHERE id = 1");
        assert_eq!(
            last_data(),
            r#"{"shape": {"b": 5, "id": 1, "tenant": "t"}, "changed": ["b"]}"#
        );
        run("DELETE FROM app.shapes WHERE id = 1");
        run("INSERT INTO app.shapes VALUES (2, 't', 2)");
        assert_eq!(last(), r#"[{"id":2,"tenant":"t","b":2}]"#);
        run("ALTER TABLE app.shapes ALTER COLUMN b TYPE text");
        run("INSERT INTO app.shapes VALUES (3, 't', 'x')");
        assert_eq!(last(), r#"[{"id":3,"tenant":"t","b":"x"}]"#);
        run("ALTER TABLE app.shapes DROP COLUMN id, ADD COLUMN c bool");
        run("INSERT INTO app.shapes VALUES ('t', 'y', true)");
        assert_eq!(last(), r#"[{"tenant":"t","b":"y","c":true}]"#);
    }

    #[pg_test]
    fn row_trigger_misuse_is_refused() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.t (id int, tenant text)");
        run("SELECT postbox.attach('app.t', 'demo', 'tenant')");
        run("DROP TRIGGER postbox_insert ON app.t");
        // As a statement trigger: once it named transition tables through the
        // caller's search_path; now it refuses to run at all.
        run("CREATE TRIGGER s AFTER INSERT ON app.t REFERENCING NEW TABLE AS postbox_new FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_row_change('demo', 'tenant')");
        rejects("INSERT INTO app.t VALUES (1, 'x')", "row-level AFTER");
        run("DROP TRIGGER s ON app.t");
        run("CREATE TRIGGER s AFTER INSERT ON app.t FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_row_change('demo', 'tenant')");
        rejects("INSERT INTO app.t VALUES (1, 'x')", "row-level AFTER");
        run("DROP TRIGGER s ON app.t");
        // BEFORE: its NULL result would silently drop the application's row.
        run("CREATE TRIGGER b BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION postbox.emit_row_change('demo', 'tenant')");
        rejects("INSERT INTO app.t VALUES (1, 'x')", "row-level AFTER");
        run("DROP TRIGGER b ON app.t");
        run("CREATE TRIGGER a AFTER INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION postbox.emit_row_change('demo')");
        rejects(
            "INSERT INTO app.t VALUES (1, 'x')",
            "needs (resource, tenant_column",
        );
        run("DROP TRIGGER a ON app.t");
        run("CREATE TRIGGER b BEFORE INSERT ON app.t FOR EACH STATEMENT EXECUTE FUNCTION postbox.emit_statement('demo', 'tenant')");
        rejects("INSERT INTO app.t VALUES (1, 'x')", "statement-level AFTER");
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        assert_eq!(count("SELECT FROM app.t"), 0);
    }

    /// Every SECURITY DEFINER function, each with the reason it needs the
    /// owner's rights. A new one fails this test until it is reviewed and
    /// listed here (and in docs/security.md).
    #[pg_test]
    fn security_definer_functions_are_reviewed() {
        const REVIEWED: &[(&str, &str)] = &[
            ("create_event_type(text,text,jsonb,jsonb)", "admin API: writes the catalog, which admins cannot write directly"),
            ("create_endpoint(text,text,text[],json,text,text,text,text,jsonb,boolean,text)", "admin API: writes endpoints and secrets, which admins cannot read or write directly"),
            ("create_endpoint(text,jsonb)", "admin API: the same from a configuration (checked key by key)"),
            ("register_endpoint(text,text,text[],json,text,text,text,text,jsonb,boolean,text)", "admin API: creates (returning the new secret), or sets event types; never reads a stored secret"),
            ("unregister_endpoint(text,text)", "admin API: deletes the tenant's endpoints with a URL"),
            ("update_endpoint(text,uuid,text,text[],json,text,boolean,jsonb,text)", "admin API: writes one of the tenant's endpoints and the pause history"),
            ("delete_endpoint(text,uuid)", "admin API: deletes one of the tenant's endpoints and cancels its outbox rows"),
            ("rotate_secret(text,uuid,interval,text)", "admin API: writes endpoint_secrets, which no caller can read"),
            ("endpoint_config(text,uuid)", "admin API: reads endpoints, without secrets"),
            ("set_tenant_limit(text,integer)", "admin API: writes tenant_limits, suspends or resumes the tenant's endpoints"),
            ("send_test(text,uuid,text,jsonb)", "admin API: writes events and outbox"),
            ("retry_delivery(text,bigint)", "admin API: writes outbox"),
            ("replay(text,uuid,timestamp with time zone,timestamp with time zone,integer)", "admin API: writes outbox, a bounded batch per call"),
            ("emit(text,text,jsonb,text,text)", "emitter API: writes emitted and idempotency_keys; takes only text and jsonb"),
            ("_register_resource(text)", "attach (invoker) registers event types through it; takes only a name"),
            ("_check_tenant_limit(text)", "called by create_endpoint; reads limits and counts endpoints"),
            ("_catalog_names()", "called by validation; reads the catalog"),
            ("_unknown_event_type(text)", "called by emit and the triggers' owner step; reads the catalog for the message"),
            ("expand_events(integer)", "worker API: moves emitted rows into events and outbox; reads only postbox's own tables"),
            ("_operator_events(text,jsonb[])", "acknowledge (the worker's role) reports endpoint health through it: writes emitted, only postbox.* types for the operator tenant"),
            ("set_retention(interval,interval,interval,interval,interval,interval)", "admin API: writes the retention row"),
            ("purge(integer)", "worker and admin API: deletes expired rows of postbox's own tables, which neither may delete directly"),
            ("create_api_key(text,text,text,uuid)", "admin API: writes api_keys (key hashes), which no role can read or write; reads the portal session's grant"),
            ("rotate_api_key(text,uuid,uuid)", "admin API: writes api_keys; a session only its own keys"),
            ("revoke_api_key(text,uuid,uuid)", "admin API: writes api_keys; a session only its own keys"),
            ("list_api_keys(text,uuid,uuid,integer)", "admin API: reads api_keys (never the hashes) and the portal session's grant"),
            ("authenticate_api_key(bytea)", "postbox-api: reads key_hash, which no role may read, and writes last_used_at; takes only a hash"),
            ("api_request_begin(text,uuid,text,bytea)", "postbox-api: api_idempotency holds responses with secrets and is granted to no one"),
            ("api_request_end(text,uuid,text,integer,text)", "postbox-api: writes api_idempotency"),
            ("create_portal_session(text,text,interval,boolean,text)", "admin API: writes portal_sessions (token hashes), granted to no one"),
            ("revoke_portal_sessions(text,text)", "admin API: ends sessions in portal_sessions, granted to no one"),
            ("end_portal_session(bytea)", "postbox-api: sign-out, ends one session in portal_sessions; takes only a hash"),
            ("open_portal_session(bytea,bytea,interval)", "postbox-api: uses a link once and opens its session in portal_sessions; takes only hashes"),
            ("authenticate_portal_session(bytea)", "postbox-api: reads portal_sessions; takes only a hash"),
        ];
        let found: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')'
                   FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'postbox'::regnamespace AND p.prosecdef
                  ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap().replace(", ", ","))
            .collect()
        });
        for f in &found {
            assert!(
                REVIEWED.iter().any(|(name, _)| name == f),
                "SECURITY DEFINER function not reviewed: postbox.{f}"
            );
        }
        for (name, _) in REVIEWED {
            assert!(
                found.contains(&name.to_string()),
                "listed but not SECURITY DEFINER: {name}"
            );
        }
        // The triggers read the caller's rows: never with the owner's rights.
        assert_eq!(
            count(
                "SELECT FROM pg_proc WHERE pronamespace = 'postbox'::regnamespace AND prosecdef
                    AND prorettype = 'trigger'::regtype"
            ),
            0
        );
    }

    /// Rows postbox cannot store as jsonb, or larger than
    /// postbox.max_payload_bytes, fail the application's statement with
    /// 22023 naming the table, the resource and the reason.
    #[pg_test]
    fn rows_postbox_cannot_send_fail_the_statement() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.docs (id int, tenant text, body json, note text)");
        run("SELECT postbox.attach('app.docs', 'doc', 'tenant', '{id, body}')");
        for bad in [
            r#"{"a": "\u0000"}"#,
            r#"{"a": 1e999999}"#,
            r#"{"a": "\ud800"}"#,
        ] {
            let msg = rejects(
                &format!("INSERT INTO app.docs VALUES (1, 't', '{bad}'), (2, 't', '{{}}')"),
                "a row of app.docs cannot be sent as doc event data",
            );
            assert!(!msg.contains("CONTEXT"), "{msg}");
        }
        run(r#"INSERT INTO app.docs VALUES (1, 't', '{"ok": 1}', 'n')"#);
        rejects(
            r#"UPDATE app.docs SET body = '{"a": "\u0000"}'"#,
            "a row of app.docs cannot be sent as doc event data",
        );
        run("DELETE FROM postbox.emitted");
        // The payload columns are what counts: a large note is not sent.
        run("SET LOCAL postbox.max_payload_bytes = 1024");
        run("INSERT INTO app.docs VALUES (2, 't', '{}', repeat('x', 5000))");
        let msg = rejects(
            "INSERT INTO app.docs VALUES (3, 't', json_build_object('x', repeat('y', 2000)), 'n')",
            "a row of app.docs is larger than postbox.max_payload_bytes (1024 bytes) allows for doc events",
        );
        assert!(msg.contains("bytes"), "{msg}");
        rejects(
            "UPDATE app.docs SET body = json_build_object('x', repeat('y', 2000)) WHERE id = 1",
            "larger than postbox.max_payload_bytes",
        );
        rejects(
            "INSERT INTO app.docs SELECT 9, 't', json_build_object('x', repeat('y', 2000))",
            "larger than postbox.max_payload_bytes",
        );
        // DELETE events carry the old row, with the same limit.
        run("SET LOCAL postbox.max_payload_bytes = 8192");
        run("INSERT INTO app.docs VALUES (4, 't', json_build_object('x', repeat('y', 2000)))");
        run("SET LOCAL postbox.max_payload_bytes = 1024");
        rejects(
            "DELETE FROM app.docs WHERE id = 4",
            "larger than postbox.max_payload_bytes",
        );
        // An update that shrinks it goes through: the old row is not sent.
        run("UPDATE app.docs SET body = '{}' WHERE id = 4");
        assert_eq!(count("SELECT FROM app.docs"), 3);
        // The note row, the 8 KiB one and the shrinking update; nothing of
        // the refused statements.
        assert_eq!(count("SELECT FROM postbox.emitted"), 3);
    }

    /// A row expansion cannot turn into events (here written by hand, as a
    /// 0.2.0 trigger could) is set aside with its reason; the rest goes on.
    #[pg_test]
    fn expansion_sets_aside_rows_it_cannot_expand() {
        catalog();
        let ep = endpoint("t1", "'{*}'");
        run("SELECT postbox.emit('t1', 'demo.viewed', '{\"n\": 1}')");
        run(
            r#"INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
               VALUES (postbox._uuid7(), 'demo.viewed', clock_timestamp(),
                       '[{"tenant": "t1", "x": "\u0000"}]', '{demo, tenant}')"#,
        );
        run("SELECT postbox.emit('t1', 'demo.viewed', '{\"n\": 2}')");
        assert_eq!(one::<i32>("SELECT postbox.expand_events()"), 2);
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.outbox WHERE endpoint_id = '{ep}'"
            )),
            2
        );
        let reason = one::<String>("SELECT reason FROM postbox.emitted_rejects");
        assert!(
            reason.contains("Unicode") || reason.contains("\\u0000"),
            "{reason}"
        );
        assert_eq!(
            one::<String>("SELECT rows::text FROM postbox.emitted_rejects"),
            r#"[{"tenant": "t1", "x": "\u0000"}]"#
        );
    }

    /// The statement trigger writes row_to_json's text byte for byte: with
    /// its own encoder for the types it handles, with row_to_json for others.
    #[pg_test]
    fn statement_trigger_json_is_row_to_json() {
        catalog();
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE DOMAIN app.positive AS int CHECK (VALUE > 0)");
        run("CREATE TABLE app.kinds (id serial, tenant text, b bool, i2 int2, i8 int8, f4 real, f8 float8,
             n numeric, t text, v varchar(40), c char(4), nm name, u uuid, j json, jb jsonb, d date,
             ts timestamp, tz timestamptz, p app.positive, gone int)");
        run("ALTER TABLE app.kinds DROP COLUMN gone");
        run("CREATE TABLE app.other (id serial, tenant text, a int[], ip inet, iv interval)");
        for t in ["kinds", "other"] {
            run(&format!(
                "SELECT postbox.attach('app.{t}', 'rj{t}', 'tenant')"
            ));
        }
        run(
            r#"INSERT INTO app.kinds (tenant, b, i2, i8, f4, f8, n, t, v, c, nm, u, j, jb, d, ts, tz, p) VALUES
            ('w', true, -32768, 9223372036854775807, 1.5, 'NaN', 123.4500,
             E'tab\there "q" back\\slash \x01 \x1f é 😀 </script>', 'v', 'ab', 'nm',
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2],  "b": null}', '{"z": 1, "a": "x"}',
             '2026-11-25', '2026-11-25 23:37:30.123456', '2026-11-25 23:37:30+02', 7),
            ('w', false, 0, -1, '-Infinity', 1e100, 'NaN', '', NULL, NULL, NULL, NULL, 'null', '[]',
             'infinity', '-infinity', 'infinity', NULL),
            (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#,
        );
        run("INSERT INTO app.other (tenant, a, ip, iv) VALUES ('w', '{1,NULL,3}', '10.0.0.1/8', '1 day 2 hours'), ('w', NULL, NULL, NULL)");
        for t in ["kinds", "other"] {
            let written = one::<String>(&format!(
                "SELECT rows::text FROM postbox.emitted WHERE event_type = 'rj{t}.created'"
            ));
            let expected = one::<String>(&format!(
                "SELECT '[' || string_agg(row_to_json(k)::text, ',' ORDER BY id) || ']' FROM app.{t} k"
            ));
            assert_eq!(written, expected, "app.{t}");
        }
    }

    include!("tests_settings.rs");
    include!("tests_api.rs");
    include!("tests_codes.rs");
    include!("tests_notices.rs");
}
