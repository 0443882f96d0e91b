// `#[pg_test]`s of what a settings page needs (0.4.0): tenant-scoped forms,
// registration by URL, readable configuration and logs, statistics through
// indexes, replay, plans, examples, signature styles and event order.
// Included into `tests.rs`'s module, whose helpers it uses.

    /// An endpoint of `tenant` at `path`, its operator's notice dropped (as
    /// `endpoint`'s).
    fn ep_at(tenant: &str, path: &str) -> String {
        let id = one::<String>(&format!(
            "SELECT id::text FROM postbox.create_endpoint('{tenant}', 'https://hooks.example.com/{path}')"
        ));
        drop_notices();
        id
    }

    fn orders_catalog() {
        run("SELECT postbox.create_event_type('order.paid')");
        run("SELECT postbox.create_event_type('order.refunded')");
    }

    /// Each tenant-scoped form: the tenant's own id works; another tenant's
    /// id gets exactly the error of an id that does not exist, and changes
    /// nothing.
    #[pg_test]
    fn tenant_forms_treat_another_tenants_ids_as_unknown() {
        orders_catalog();
        let mine = ep_at("a", "a");
        let theirs = ep_at("b", "b");
        let unknown = "00000000-0000-7000-8000-000000000000";
        run("SELECT postbox.emit('b', 'order.paid', '{}')");
        run("SELECT postbox.expand_events()");
        let delivery = one::<i64>(&format!("SELECT id FROM postbox.outbox WHERE endpoint_id = '{theirs}'"));
        run(&format!("UPDATE postbox.outbox SET status = 'failed' WHERE id = {delivery}"));
        let row = format!("SELECT e::text FROM postbox.endpoints e WHERE id = '{theirs}'");
        let before = one::<String>(&row);

        let calls = [
            "SELECT postbox.update_endpoint(tenant => 'a', id => '{id}', description => 'x')",
            "SELECT postbox.update_endpoint('a', '{id}'::uuid, enabled => false)",
            "SELECT postbox.delete_endpoint('a', '{id}')",
            "SELECT postbox.rotate_secret(tenant => 'a', id => '{id}')",
            "SELECT postbox.send_test(tenant => 'a', id => '{id}')",
            "SELECT postbox.endpoint_config('a', '{id}')",
            "SELECT postbox.replay('a', '{id}', '-infinity')",
        ];
        for call in calls {
            let (s1, m1) = error_of(&call.replace("{id}", &theirs));
            let (s2, m2) = error_of(&call.replace("{id}", unknown));
            assert_eq!(s1, "22023", "{call}: {m1}");
            assert_eq!((s1, m1.replace(&theirs, "ID")), (s2, m2.replace(unknown, "ID")), "{call}");
            assert!(m1.contains("no endpoint has this id"), "{m1}");
            // The tenant's own id works.
            let own = call.replace("{id}", &mine);
            if !own.contains("delete_endpoint") {
                run(&own);
            }
        }
        let (s1, m1) = error_of(&format!("SELECT postbox.retry_delivery('a', {delivery})"));
        let (s2, m2) = error_of("SELECT postbox.retry_delivery('a', 987654321)");
        assert_eq!((s1, m1.replace(&delivery.to_string(), "ID")), (s2, m2.replace("987654321", "ID")));
        assert_eq!(one::<String>(&row), before, "the other tenant's endpoint is untouched");
        run(&format!("SELECT postbox.retry_delivery('b', {delivery})"));
        run(&format!("SELECT postbox.delete_endpoint('a', '{mine}')"));
        assert_eq!(count("SELECT FROM postbox.endpoints WHERE tenant = 'a'"), 0);
        for sql in [
            format!("SELECT postbox.delete_endpoint(NULL, '{theirs}')"),
            format!("SELECT postbox.update_endpoint(tenant => '', id => '{theirs}')"),
        ] {
            rejects(&sql, "tenant must be a non-empty string");
        }
        assert_eq!(count("SELECT FROM postbox.endpoints WHERE tenant = 'b'"), 1);
    }

    #[pg_test]
    fn register_endpoint_creates_once_per_url_and_returns_only_a_new_secret() {
        orders_catalog();
        let reg = |types: &str| {
            Spi::connect(|c| {
                let r = c
                    .select(
                        &format!("SELECT id::text, secret, created FROM postbox.register_endpoint('t', 'https://Hooks.Example.com/in', '{types}')"),
                        None,
                        &[],
                    )
                    .unwrap()
                    .first();
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<String>(2).unwrap(),
                    r.get::<bool>(3).unwrap().unwrap(),
                )
            })
        };
        let (id, secret, created) = reg("{order.paid}");
        assert!(created && secret.unwrap().starts_with("whsec_"));
        // An endpoint that was there: its stored secret is never read back.
        let (id2, secret2, created2) = reg("{order.*}");
        assert_eq!((id2.as_str(), secret2, created2), (id.as_str(), None, false));
        assert_eq!(one::<String>(&format!("SELECT event_types::text FROM postbox.endpoints WHERE id = '{id}'")), "{order.*}");
        run(&format!("SELECT postbox.rotate_secret('t', '{id}'::uuid)"));
        assert_eq!(reg("{order.paid}").1, None, "not after a rotation either");
        run(&format!("SELECT postbox.rotate_secret('t', '{id}'::uuid, own_secret => 'whsec_b3duLXNlY3JldC1pbi1sb2ctdGVzdC0zMi1ieXRlcyE=')"));
        assert_eq!(reg("{order.paid}").1, None, "nor a customer's own");
        rejects("SELECT postbox.register_endpoint('t', 'https://hooks.example.com/in', '{nope.x}')", "unknown");
        assert_eq!(count("SELECT FROM postbox.endpoints"), 1);
        // Another tenant's endpoint at the same URL is its own.
        run("SELECT postbox.register_endpoint('u', 'https://hooks.example.com/in')");
        assert_eq!(one::<i32>("SELECT postbox.unregister_endpoint('t', 'https://hooks.example.com/in')"), 1);
        assert_eq!(one::<i32>("SELECT postbox.unregister_endpoint('t', 'https://hooks.example.com/in')"), 0);
        assert_eq!(count("SELECT FROM postbox.endpoints WHERE tenant = 'u'"), 1);
    }

    #[pg_test]
    fn configuration_reads_back_without_secrets_and_creates_an_equal_endpoint() {
        orders_catalog();
        let id = one::<String>(
            r#"SELECT id::text FROM postbox.create_endpoint('t', 'https://hooks.example.com/cfg', '{order.*}',
                 headers => '{"Authorization": "Bearer abc"}', description => 'orders',
                 signature_style => 'hex', signature_header => 'x-supademo-signature', own_secret => 'my own secret 16',
                 options => '{"timeout_ms": 2000}', enabled => false, envelope => 'flat')"#,
        );
        let config = one::<pgrx::JsonB>(&format!("SELECT postbox.endpoint_config('t', '{id}')")).0;
        assert_eq!(
            config,
            serde_json::json!({
                "url": "https://hooks.example.com/cfg", "event_types": ["order.*"],
                "headers": {"Authorization": "Bearer abc"}, "description": "orders",
                "signature_style": "hex", "signature_header": "x-supademo-signature",
                "options": {"timeout_ms": 2000}, "enabled": false, "envelope": "flat"
            })
        );
        assert!(!config.to_string().contains("my own secret"));
        let copy = one::<String>(&format!(
            "SELECT id::text FROM postbox.create_endpoint('t', config => postbox.endpoint_config('t', '{id}'))"
        ));
        assert_eq!(
            one::<pgrx::JsonB>(&format!("SELECT postbox.endpoint_config('t', '{copy}')")).0,
            config
        );
        // The settings view: everything an edit form shows, no secret.
        let row = one::<String>(&format!("SELECT s::text FROM postbox.endpoint_settings s WHERE id = '{id}'"));
        for want in ["Bearer abc", "orders", "x-supademo-signature", "timeout_ms", "flat", "paused", "created_at", "expires_at"] {
            assert!(row.contains(want), "{want} in {row}");
        }
        assert!(!row.contains("my own secret"), "{row}");
        assert_eq!(one::<i32>(&format!("SELECT jsonb_array_length(secrets) FROM postbox.endpoint_settings WHERE id = '{id}'")), 1);
        for (config, want) in [
            ("'[]'", "JSON object"),
            (r#"'{"url": "https://x.example.com/", "event_types": ["*"], "secret": "x"}'"#, "does not take"),
            (r#"'{"url": "https://x.example.com/", "event_types": "*"}'"#, "array of strings"),
            (r#"'{"url": "https://x.example.com/", "event_types": ["*"], "enabled": "yes"}'"#, "true or false"),
            (r#"'{"url": 5, "event_types": ["*"]}'"#, "must be a string"),
            (r#"'{"url": "https://x.example.com/", "event_types": ["*"], "envelope": "soap"}'"#, "envelope must be"),
        ] {
            rejects(&format!("SELECT postbox.create_endpoint('t', config => {config}::jsonb)"), want);
        }
        assert_eq!(count("SELECT FROM postbox.endpoints"), 2);
    }

    #[pg_test]
    fn an_endpoint_created_disabled_gets_nothing_until_enabled() {
        orders_catalog();
        let id = one::<String>("SELECT id::text FROM postbox.create_endpoint('t', 'https://hooks.example.com/off', enabled => false)");
        run("SELECT postbox.emit('t', 'order.paid', '{}')");
        run("SELECT postbox.expand_events()");
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{id}'")), 0);
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.endpoint_status WHERE id = '{id}'")), "paused");
        run(&format!("SELECT postbox.update_endpoint('t', '{id}'::uuid, enabled => true)"));
        run("SELECT postbox.emit('t', 'order.paid', '{}')");
        run("SELECT postbox.expand_events()");
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{id}'")), 1);
    }

    /// Keys follow the plan: a tenant at limit 0 has its live API keys
    /// refused with tenant_suspended (not taken for unknown), and may not
    /// make or rotate keys, until the limit is raised; operator keys, which
    /// belong to no tenant, go on.
    #[pg_test]
    fn a_tenant_at_limit_zero_has_its_keys_refused() {
        let key = one::<String>("SELECT key FROM postbox.create_api_key('t', 'admin', 'ci')");
        let id = one::<String>("SELECT id::text FROM postbox.api_keys WHERE tenant = 't'");
        let other = one::<String>("SELECT id::text FROM postbox.create_api_key('t', 'member', 'to revoke')");
        let auth = format!("SELECT tenant FROM postbox.authenticate_api_key(sha256(convert_to('{key}', 'UTF8')))");
        assert_eq!(one::<String>(&auth), "t");
        run("SELECT postbox.set_tenant_limit('t', 0)");
        let (_, msg) = error_of(&auth);
        assert!(msg.contains("not available"), "{msg}");
        assert_eq!(code_of(&auth).0, "tenant_suspended");
        rejects("SELECT postbox.create_api_key('t', 'member', 'more')", "not available");
        rejects(&format!("SELECT postbox.rotate_api_key('t', '{id}')"), "not available");
        // Revoking stays allowed: it only takes access away.
        run(&format!("SELECT postbox.revoke_api_key('t', '{other}')"));
        run("SELECT postbox.create_api_key('other', 'admin', 'ci')");
        run("SELECT postbox.create_api_key(NULL, 'operator', 'the product')");
        assert_eq!(count("SELECT FROM postbox.api_keys WHERE tenant = 't'"), 2, "nothing made for t");
        run("SELECT postbox.set_tenant_limit('t', 3)");
        assert_eq!(one::<String>(&auth), "t", "the same key works again");
    }

    /// A tenant at limit 0 has no webhooks: its endpoints are suspended
    /// (events emitted meanwhile never go out, queued ones wait) until the
    /// limit is raised; an admin's own pause outlives it.
    #[pg_test]
    fn a_tenant_at_limit_zero_is_suspended_until_raised() {
        orders_catalog();
        let ep = ep_at("t", "plan");
        let paused = ep_at("t", "paused");
        run(&format!("SELECT postbox.update_endpoint('t', '{paused}', enabled => false)"));
        run("SELECT postbox.emit('t', 'order.paid', '{\"n\": 1}')");
        run("SELECT postbox.expand_events()");
        run("SELECT postbox.set_tenant_limit('t', 0)");
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.endpoint_status WHERE id = '{ep}'")), "suspended");
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.deliveries WHERE endpoint_id = '{ep}'")), "held");
        run("SELECT postbox.emit('t', 'order.paid', '{\"n\": 2}')");
        run("SELECT postbox.expand_events()");
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{ep}'")), 1, "n=2 is never sent");
        rejects(&format!("SELECT postbox.send_test('t', '{ep}'::uuid)"), "not available");
        rejects("SELECT postbox.create_endpoint('t', 'https://hooks.example.com/new')", "not available");
        run("SELECT postbox.set_tenant_limit('t', 5)");
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.endpoint_status WHERE id = '{ep}'")), "healthy");
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.deliveries WHERE endpoint_id = '{ep}'")), "pending");
        assert_eq!(one::<String>(&format!("SELECT status FROM postbox.endpoint_status WHERE id = '{paused}'")), "paused", "the admin's pause stays");
        run("SELECT postbox.emit('t', 'order.paid', '{\"n\": 3}')");
        run("SELECT postbox.expand_events()");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(v.data ->> 'n', ',' ORDER BY v.data ->> 'n') FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id WHERE d.endpoint_id = '{ep}'"
            )),
            "1,3"
        );
        assert_eq!(count("SELECT FROM postbox.endpoint_pauses WHERE reason = 'plan' AND resumed_at IS NOT NULL"), 2);
    }

    #[pg_test]
    fn headers_given_twice_are_refused() {
        orders_catalog();
        for headers in [r#"{"X-A": "1", "X-A": "2"}"#, r#"{"X-A": "1", "x-a": "2"}"#] {
            let msg = rejects(&format!("SELECT postbox.create_endpoint('t', 'https://hooks.example.com/h', headers => '{headers}')"), "only once: X-A");
            assert!(!msg.contains('1') && !msg.contains('2'), "no values: {msg}");
        }
        let id = ep_at("t", "h");
        rejects(&format!(r#"SELECT postbox.update_endpoint('t', '{id}', headers => '{{"Authorization": "a", "Authorization": "b"}}')"#), "only once");
        rejects(r#"SELECT postbox.register_endpoint('t', 'https://hooks.example.com/r', headers => '{"X-B": "1", "X-B": "1"}')"#, "only once");
        assert_eq!(count("SELECT FROM postbox.endpoints"), 1);
    }

    #[pg_test]
    fn send_test_sends_the_event_types_example() {
        orders_catalog();
        run(r#"SELECT postbox.create_event_type('order.shipped', example => '{"order_id": 7, "carrier": "ups"}')"#);
        rejects("SELECT postbox.create_event_type('order.lost', example => '[1]')", "JSON object");
        let id = ep_at("t", "x");
        let sent = |ty: &str| {
            let event = one::<pgrx::Uuid>(&format!("SELECT postbox.send_test('t', '{id}', '{ty}')"));
            one::<pgrx::JsonB>(&format!("SELECT data::jsonb FROM postbox.events WHERE id = '{event}'")).0
        };
        assert_eq!(sent("order.shipped"), serde_json::json!({"order_id": 7, "carrier": "ups"}));
        assert_eq!(sent("order.paid")["message"], "This is a test event from postbox.");
    }

    #[pg_test]
    fn replay_requeues_failed_and_cancelled_deliveries_in_the_window() {
        orders_catalog();
        let ep = ep_at("t", "r");
        let other = ep_at("t", "other");
        for _ in 0..4 {
            run("SELECT postbox.emit('t', 'order.paid', '{}')");
        }
        run("SELECT postbox.expand_events()");
        // Four deliveries to ep: failed an hour ago, failed a day ago,
        // cancelled now, pending. Four to other, all failed.
        run(&format!(
            "WITH r AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM postbox.outbox WHERE endpoint_id = '{ep}')
             UPDATE postbox.outbox d SET
                    status = (ARRAY['failed', 'failed', 'cancelled', 'pending'])[r.n],
                    attempts = 5,
                    created_at = now() - (ARRAY[interval '1 hour', '1 day', '0', '0'])[r.n]
               FROM r WHERE d.id = r.id"
        ));
        run(&format!("UPDATE postbox.outbox SET status = 'failed' WHERE endpoint_id = '{other}'"));
        assert_eq!(one::<i32>(&format!("SELECT queued FROM postbox.replay('t', '{ep}', now() - interval '2 hours')")), 2);
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(status || attempts, ',' ORDER BY id) FROM postbox.outbox WHERE endpoint_id = '{ep}'"
            )),
            "pending0,failed5,pending0,pending5"
        );
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{other}' AND status = 'failed'")), 4);
        assert_eq!(one::<i32>(&format!("SELECT queued FROM postbox.replay('t', '{ep}', '-infinity', now() - interval '2 hours')")), 1);
        rejects(&format!("SELECT postbox.replay('t', '{ep}', now(), now() - interval '1 hour')"), "since <= until");
    }

    /// Filtered by tenant (and endpoint), the views and the statistics read
    /// through indexes, never the whole table: shown by the plan, with other
    /// tenants' rows making a scan the planner would otherwise pick.
    #[pg_test]
    fn views_filter_by_tenant_and_stats_through_indexes() {
        orders_catalog();
        let ep = ep_at("t", "s");
        let noisy = ep_at("noisy", "n");
        let log = |tenant: &str, id: &str, n: i64, outcome: &str, ago: &str| {
            run(&format!(
                "INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at, duration_ms, status_code, outcome, queued_at)
                 SELECT i, '{tenant}', '{id}', gen_random_uuid(), 1, now() - interval '{ago}', 5, 200, '{outcome}', now()
                   FROM generate_series(1, {n}) i"
            ))
        };
        log("noisy", &noisy, 20_000, "succeeded", "1 minute");
        // Other tenants' endpoints and deliveries, pending and failed.
        run("INSERT INTO postbox.endpoints (id, tenant, url, event_types, signature_style)
             SELECT gen_random_uuid(), 'other-' || i, 'https://x.example.com/', '{*}', 'standard'
               FROM generate_series(1, 5000) i");
        run(&format!(
            "INSERT INTO postbox.outbox (tenant, endpoint_id, event_id, next_attempt_at, status)
             SELECT 'noisy', '{noisy}', gen_random_uuid(), now(), CASE WHEN i % 2 = 0 THEN 'failed' ELSE 'pending' END
               FROM generate_series(1, 20000) i"
        ));
        log("t", &ep, 3, "succeeded", "10 minutes");
        log("t", &ep, 1, "retrying", "10 minutes");
        log("t", &ep, 2, "failed", "3 hours");
        log("t", &ep, 4, "succeeded", "3 days");
        log("t", &ep, 9, "succeeded", "8 days");
        run("UPDATE postbox.attempt_log SET is_test = true WHERE delivery_id = 1 AND tenant = 't' AND outcome = 'failed'");
        run("ANALYZE postbox.attempt_log, postbox.endpoints, postbox.outbox");
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', succeeded_1h, failed_1h, success_rate_1h, succeeded_24h, failed_24h,
                                  success_rate_24h, succeeded_7d, failed_7d, success_rate_7d)
                   FROM postbox.endpoint_stats WHERE tenant = 't' AND id = '{ep}'"
            )),
            "3 1 0.7500 3 2 0.6000 7 2 0.7778"
        );
        for sql in [
            "SELECT * FROM postbox.endpoint_stats WHERE tenant = 't'".to_string(),
            format!("SELECT * FROM postbox.endpoint_stats WHERE tenant = 't' AND id = '{ep}'"),
            "SELECT * FROM postbox.attempts WHERE tenant = 't' ORDER BY started_at DESC LIMIT 50".to_string(),
            format!("SELECT * FROM postbox.attempts WHERE tenant = 't' AND endpoint_id = '{ep}' AND started_at > now() - interval '1 day'"),
            "SELECT * FROM postbox.deliveries WHERE tenant = 't'".to_string(),
            "SELECT * FROM postbox.endpoint_settings WHERE tenant = 't'".to_string(),
            "SELECT * FROM postbox.endpoint_status WHERE tenant = 't'".to_string(),
        ] {
            let plan = Spi::connect(|c| {
                c.select(&format!("EXPLAIN {sql}"), None, &[])
                    .unwrap()
                    .map(|r| r.get::<String>(1).unwrap().unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            for table in ["attempt_log", "outbox", "endpoints"] {
                assert!(
                    !plan.contains(&format!("Seq Scan on {table}")),
                    "{sql} scans {table}:\n{plan}"
                );
            }
        }
        assert_eq!(count("SELECT FROM postbox.attempts WHERE tenant = 't'"), 19);
    }

    /// The delivery log shows the headers an attempt sent as the worker
    /// recorded them (worker/src/request.rs: all but the signature, custom
    /// values masked), not rebuilt from the endpoint as it is now: a change
    /// of the endpoint's style later does not rewrite the log.
    #[pg_test]
    fn the_delivery_log_shows_what_was_sent() {
        orders_catalog();
        let ep = one::<String>(r#"SELECT id::text FROM postbox.create_endpoint('t', 'https://hooks.example.com/l', headers => '{"X-Env": "prod"}')"#);
        run(r#"SELECT postbox.emit('t', 'order.paid', '{"order_id": 42}')"#);
        run("SELECT postbox.expand_events()");
        let sent = r#"{"content-type": "application/json", "user-agent": "postbox/0.7.0", "X-Env": "********",
                       "webhook-id": "x", "webhook-timestamp": "1796032805"}"#;
        run(&format!(
            r#"INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at, duration_ms,
                   status_code, response_excerpt, outcome, queued_at, request_headers)
               SELECT d.id, d.tenant, d.endpoint_id, d.event_id, 1, '2026-11-30 10:00:05.75+00', 12, 204, 'ok', 'succeeded',
                      d.created_at, '{sent}'
                 FROM postbox.outbox d"#
        ));
        run(&format!("UPDATE postbox.endpoints SET signature_style = 'hex', signature_header = 'X-Sig' WHERE id = '{ep}'"));
        let r = one::<pgrx::JsonB>(&format!(
            "SELECT jsonb_build_object('type', event_type, 'data', data, 'headers', request_headers,
                                       'code', status_code, 'excerpt', response_excerpt, 'ms', duration_ms)
               FROM postbox.attempts WHERE endpoint_id = '{ep}'"
        ))
        .0;
        let sent: serde_json::Value = serde_json::from_str(sent).unwrap();
        assert_eq!(
            r,
            serde_json::json!({"type": "order.paid", "data": {"order_id": 42}, "code": 204, "excerpt": "ok", "ms": 12,
                               "headers": sent})
        );
        // An attempt that ended before its request (nothing sent): {}.
        run("UPDATE postbox.attempt_log SET request_headers = NULL");
        assert_eq!(
            one::<pgrx::JsonB>("SELECT request_headers FROM postbox.attempts").0,
            serde_json::json!({})
        );
    }

    /// Event ids sort in emit order, also across a statement's rows and the
    /// row trigger's events in between.
    #[pg_test]
    fn event_ids_sort_in_emit_order() {
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.orders (id int, tenant text, total int)");
        run("SELECT postbox.attach('app.orders', 'order', 'tenant')");
        run("SELECT postbox.create_endpoint('t', 'https://hooks.example.com/o')");
        run("INSERT INTO app.orders VALUES (1, 't', 10), (2, 't', 20), (3, 't', 30)");
        run("UPDATE app.orders SET total = 11 WHERE id = 1");
        run("SELECT postbox.emit('t', 'order.created', '{\"order\": {\"id\": 99}}')");
        run("INSERT INTO app.orders VALUES (4, 't', 40), (5, NULL, 50), (6, 't', 60)");
        run("DELETE FROM app.orders WHERE id = 2");
        run("SELECT postbox.expand_events()");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(split_part(event_type, '.', 2) || ':' || (data -> 'order' ->> 'id'), ' ' ORDER BY id) FROM postbox.events"
            ),
            "created:1 created:2 created:3 updated:1 created:99 created:4 created:6 deleted:2"
        );
    }

    #[pg_test]
    fn signature_styles_take_their_own_secrets() {
        orders_catalog();
        let own = "my own secret 16";
        for style in ["hex", "sha256-hex"] {
            assert_eq!(
                one::<String>(&format!(
                    "SELECT secret FROM postbox.create_endpoint('t', 'https://hooks.example.com/{style}', signature_style => '{style}',
                         signature_header => 'x-supademo-signature', own_secret => '{own}')"
                )),
                own
            );
        }
        for (args, want) in [
            ("own_secret => 'my own secret 16'", "whsec_"),
            ("signature_style => 'hex', own_secret => 'too short'", "16 to 256"),
            ("signature_style => 'hex', own_secret => E'tab\\there secret!!'", "printable"),
            ("envelope => 'soap'", "envelope must be"),
        ] {
            let msg = rejects(&format!("SELECT postbox.create_endpoint('t', 'https://hooks.example.com/bad', {args})"), want);
            assert!(!msg.contains("secret 16") && !msg.contains("too short") && !msg.contains("there"), "secret leaked: {msg}");
        }
        let id = one::<String>("SELECT id::text FROM postbox.endpoints WHERE signature_style = 'hex'");
        assert_eq!(one::<String>(&format!("SELECT postbox.rotate_secret('t', '{id}'::uuid, '0', 'another own secret')")), "another own secret");
        rejects(&format!("SELECT postbox.update_endpoint('t', '{id}', envelope => 'x')"), "envelope must be");
        run(&format!("SELECT postbox.update_endpoint('t', '{id}', envelope => 'standard')"));
        assert_eq!(one::<String>(&format!("SELECT envelope FROM postbox.endpoints WHERE id = '{id}'")), "standard");
    }

    /// purge deletes exactly what outlived its window, in batches, and never
    /// what is still needed: pending or failed deliveries and their events.
    #[pg_test]
    fn purge_deletes_only_what_outlived_its_retention() {
        orders_catalog();
        let ep = ep_at("t", "p");
        let gone = ep_at("t", "gone");
        // Everything two days old: the endpoints older still, the events
        // emitted two days ago (their time-ordered ids too, as emit makes them).
        run("UPDATE postbox.endpoints SET created_at = created_at - interval '3 days'");
        for i in 0..6 {
            run(&format!("SELECT postbox.emit('t', 'order.paid', '{{\"n\": {i}}}', idempotency_key => 'k{i}')"));
        }
        run("UPDATE postbox.emitted SET created_at = created_at - interval '2 days',
                    id = encode(overlay(uuid_send(id) PLACING substring(uuid_send(postbox._uuid7_floor(created_at - interval '2 days')) FROM 1 FOR 6) FROM 1 FOR 6), 'hex')::uuid");
        run("UPDATE postbox.idempotency_keys SET created_at = created_at - interval '2 days'");
        run("SELECT postbox.expand_events()");
        assert_eq!(count("SELECT FROM postbox.outbox WHERE created_at < now() - interval '1 day'"), 12);
        run(&format!("SELECT postbox.update_endpoint('t', '{ep}', enabled => false)"));
        run(&format!("SELECT postbox.update_endpoint('t', '{ep}', enabled => true)"));
        run("UPDATE postbox.endpoint_pauses SET paused_at = paused_at - interval '2 days', resumed_at = resumed_at - interval '2 days'");
        // The deliveries to ep: n=0 pending (still queued), n=1 failed, n=2
        // cancelled, the rest delivered (their outbox rows gone, one attempt
        // each in the log).
        run(&format!(
            "INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at, duration_ms, outcome, queued_at)
             SELECT d.id, d.tenant, d.endpoint_id, d.event_id, 1, now() - interval '2 days', 5,
                    CASE WHEN v.data ->> 'n' = '1' THEN 'failed' ELSE 'succeeded' END, d.created_at
               FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id WHERE d.endpoint_id = '{ep}'"
        ));
        run(&format!(
            "WITH s AS (SELECT d.id, v.data ->> 'n' AS n FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id WHERE d.endpoint_id = '{ep}')
             UPDATE postbox.outbox d SET status = CASE s.n WHEN '1' THEN 'failed' ELSE 'cancelled' END
               FROM s WHERE d.id = s.id AND s.n IN ('1', '2')"
        ));
        run(&format!(
            "DELETE FROM postbox.outbox d USING postbox.events v
              WHERE v.id = d.event_id AND d.endpoint_id = '{ep}' AND v.data ->> 'n' NOT IN ('0', '1', '2')"
        ));
        // gone's deliveries: all failed, then the endpoint is deleted.
        run(&format!("UPDATE postbox.outbox SET status = 'failed' WHERE endpoint_id = '{gone}'"));
        run(&format!("SELECT postbox.delete_endpoint('t', '{gone}')"));

        let purge = |max: i64| -> Vec<(String, i64)> {
            Spi::connect(|c| {
                c.select(&format!("SELECT kind, deleted FROM postbox.purge({max}) ORDER BY kind"), None, &[])
                    .unwrap()
                    .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<i64>(2).unwrap().unwrap()))
                    .collect()
            })
        };
        let n = |got: &[(String, i64)], kind: &str| got.iter().find(|(k, _)| k == kind).unwrap().1;
        // In the default windows only the keys (kept 24 hours) are old enough.
        let got = purge(100);
        assert_eq!(got.iter().map(|(_, d)| d).sum::<i64>(), 6, "{got:?}");
        assert_eq!(n(&got, "idempotency_keys"), 6);
        run("SELECT postbox.set_retention(succeeded_attempts => '1 day', failed_attempts => '1 day', events => '1 day', cancelled_deliveries => '1 day')");
        // In batches of 2, until a call finds less than 2 of every kind.
        let got = purge(2);
        assert_eq!((n(&got, "attempts"), n(&got, "deliveries"), n(&got, "pauses")), (2, 2, 1), "{got:?}");
        assert!(got.iter().all(|(_, d)| *d <= 2), "{got:?}");
        let mut total: std::collections::BTreeMap<String, i64> = got.into_iter().collect();
        loop {
            let got = purge(2);
            let more = got.iter().any(|(_, d)| *d == 2);
            for (k, d) in got {
                *total.entry(k).or_default() += d;
            }
            if !more {
                break;
            }
        }
        // 6 attempts; 7 deliveries (ep's cancelled one and gone's 6 failed,
        // which can never be retried); the 4 events nothing refers to now;
        // the one ended pause.
        assert_eq!(
            total.into_iter().filter(|(_, d)| *d > 0).collect::<Vec<_>>(),
            [("attempts", 6), ("deliveries", 7), ("events", 4), ("pauses", 1)].map(|(k, d)| (k.to_string(), d))
        );
        assert!(purge(100).iter().all(|(_, d)| *d == 0));
        // Kept: the pending delivery and the failed one to ep, and their events.
        assert_eq!(
            one::<String>(
                "SELECT string_agg(d.status || ':' || (v.data ->> 'n'), ' ' ORDER BY d.status) FROM postbox.outbox d JOIN postbox.events v ON v.id = d.event_id"
            ),
            "failed:1 pending:0"
        );
        assert_eq!(count("SELECT FROM postbox.events"), 2);
        rejects("SELECT postbox.set_retention(idempotency_keys => '1 hour')", "at least 24 hours");
        rejects("SELECT postbox.set_retention(events => '-1 day')", "between 1 second and 10 years");
        rejects("SELECT postbox.purge(0)", "max_rows");
    }

    /// The heartbeat's rules (worker_heartbeat): the same worker id under a
    /// new instance releases the old process's claims; a worker seen without
    /// a gap for stale_after releases the claims of workers not seen for
    /// that long and removes them; one back from a gap judges nobody yet.
    /// Time is moved by editing the registry (now() is fixed in a test).
    #[pg_test]
    fn heartbeats_release_the_claims_of_dead_workers() {
        orders_catalog();
        ep_at("t", "hb");
        run("SELECT postbox.emit('t', 'order.paid', '{}') FROM generate_series(1, 6)");
        run("SELECT postbox.expand_events()");
        let lease = |n: i32, who: &str| {
            run(&format!(
                "UPDATE postbox.outbox SET leased_by = '{who}', lease_until = now() + interval '10 minutes'
                  WHERE id IN (SELECT id FROM postbox.outbox WHERE leased_by IS NULL ORDER BY id LIMIT {n})"
            ))
        };
        let beat = |who: &str, instance: &str| {
            one::<i64>(&format!(
                "SELECT postbox.worker_heartbeat('{who}', '{instance}', interval '5 seconds')"
            ))
        };
        const A: &str = "00000000-0000-4000-8000-00000000000a";
        const B: &str = "00000000-0000-4000-8000-00000000000b";
        assert_eq!(beat("w1", A), 0, "registered");
        lease(2, "w1");
        assert_eq!(beat("w1", A), 0, "alive: its claims stay");
        // Another live instance of w1 is refused (55006), and changes nothing.
        let (state, msg) = error_of(&format!(
            "SELECT postbox.worker_heartbeat('w1', '{B}', interval '5 seconds')"
        ));
        assert_eq!(state, "55006", "{msg}");
        assert!(msg.contains("worker_id w1 is in use"), "{msg}");
        assert_eq!(count("SELECT FROM postbox.outbox WHERE leased_by = 'w1'"), 2);
        // Once it is stale, a new instance is that worker restarted.
        run("UPDATE postbox.workers SET seen_at = now() - interval '6 seconds' WHERE worker_id = 'w1'");
        assert_eq!(beat("w1", B), 2, "restarted: the old process's claims are released");
        assert_eq!(count("SELECT FROM postbox.outbox WHERE leased_by IS NOT NULL"), 0);
        // w2 has not been seen for a minute.
        lease(1, "w2");
        run(&format!("INSERT INTO postbox.workers (worker_id, instance, seen_at) VALUES ('w2', '{A}', now() - interval '1 minute')"));
        assert_eq!(beat("w1", B), 0, "w1 has not been alive for stale_after itself yet");
        run("UPDATE postbox.workers SET alive_since = now() - interval '1 minute' WHERE worker_id = 'w1'");
        assert_eq!(beat("w1", B), 1, "w2's claim released");
        assert_eq!(count("SELECT FROM postbox.workers WHERE worker_id = 'w2'"), 0, "and w2 removed");
        // w1 was cut off for a minute (a database outage): back, it judges
        // nobody until it has been seen for stale_after again.
        lease(1, "w3");
        run(&format!("INSERT INTO postbox.workers (worker_id, instance, seen_at) VALUES ('w3', '{A}', now() - interval '1 minute')"));
        run("UPDATE postbox.workers SET seen_at = now() - interval '1 minute' WHERE worker_id = 'w1'");
        assert_eq!(beat("w1", B), 0, "back from a gap");
        assert_eq!(count("SELECT FROM postbox.outbox WHERE leased_by = 'w3'"), 1);
        assert!(one::<bool>("SELECT alive_since = now() FROM postbox.workers WHERE worker_id = 'w1'"), "its grace period starts anew");
        // A clean stop leaves the registry, only for its own instance.
        run(&format!("SELECT postbox.worker_stopped('w1', '{A}')"));
        assert_eq!(count("SELECT FROM postbox.workers WHERE worker_id = 'w1'"), 1);
        run(&format!("SELECT postbox.worker_stopped('w1', '{B}')"));
        assert_eq!(count("SELECT FROM postbox.workers WHERE worker_id = 'w1'"), 0);
        rejects("SELECT postbox.worker_heartbeat('w1', gen_random_uuid(), interval '0')", "stale_after");
        rejects(&format!("SELECT postbox.worker_heartbeat('{}', gen_random_uuid(), interval '5 seconds')", "w".repeat(257)), "worker_id must be 1 to 256 bytes");
    }

    /// What the sweeps below call every public function with: an event
    /// catalog, a table to attach, and tenant t's endpoint (its URL is the
    /// sample URL) with a failed delivery; and the functions themselves,
    /// from the catalog.
    struct Sweep {
        ep: String,
        delivery: i64,
        functions: Vec<PublicFunction>,
    }

    /// A public function: its name, a role granted EXECUTE on it (the sweeps
    /// call it as that role) and its (argument, type) pairs.
    struct PublicFunction {
        name: String,
        role: String,
        args: Vec<(String, String)>,
    }

    impl Sweep {
        fn new() -> Self {
            orders_catalog();
            run("CREATE SCHEMA IF NOT EXISTS app");
            run("CREATE TABLE app.things (id int, tenant text)");
            run("GRANT USAGE ON SCHEMA app TO postbox_emitter");
            run("GRANT INSERT, SELECT, TRIGGER ON app.things TO postbox_emitter");
            let _ = error_of("SELECT 1/0"); // creates its helper as the superuser, before any SET ROLE
            let ep = ep_at("t", "sweep");
            run("SELECT postbox.emit('t', 'order.paid', '{}')");
            run("SELECT postbox.expand_events()");
            let delivery = one::<i64>("SELECT id FROM postbox.outbox");
            run(&format!("UPDATE postbox.outbox SET status = 'failed' WHERE id = {delivery}"));
            // Every function a role may call: EXECUTE granted to one of the
            // three roles, not internal (_), not a trigger. Not the queue's
            // functions (sql/queue.sql): they are the worker's own
            // statements, SECURITY INVOKER and granted to postbox_worker
            // only, so a call can do nothing the role could not do with the
            // statement itself, and their arguments are what the worker
            // computed (checking each array on the hot path would cost every
            // claim and acknowledgement). Receivers' text reaches them only as
            // values, never as code.
            let functions: Vec<PublicFunction> = Spi::connect(|c| {
                c.select(
                    "SELECT * FROM (
                     SELECT p.proname::text,
                            CASE WHEN has_function_privilege('postbox_admin', p.oid, 'EXECUTE') THEN 'postbox_admin'
                                 WHEN has_function_privilege('postbox_emitter', p.oid, 'EXECUTE') THEN 'postbox_emitter'
                                 WHEN has_function_privilege('postbox_worker', p.oid, 'EXECUTE') THEN 'postbox_worker'
                            END AS role,
                            array_to_string(p.proargnames[1:p.pronargs], ',') AS args,
                            (SELECT string_agg(format_type(t, NULL), ',' ORDER BY o)
                               FROM unnest(p.proargtypes) WITH ORDINALITY a(t, o))
                       FROM pg_proc p
                      WHERE p.pronamespace = 'postbox'::regnamespace AND p.proname !~ '^_'
                        AND p.prorettype <> 'trigger'::regtype AND p.pronargs > 0
                        AND p.proname NOT IN ('claim', 'claimed_endpoints', 'release_claims', 'release_lost',
                                              'next_due', 'acknowledge', 'queue_gauges', 'set_waiting')) f
                      WHERE role IS NOT NULL
                      ORDER BY 1, args",
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| {
                    let name = r.get::<String>(1).unwrap().unwrap();
                    let role = r.get::<String>(2).unwrap().unwrap();
                    let args: Vec<String> = r.get::<String>(3).unwrap().unwrap().split(',').map(str::to_string).collect();
                    let types: Vec<String> = r.get::<String>(4).unwrap().unwrap().split(',').map(str::to_string).collect();
                    PublicFunction { name, role, args: args.into_iter().zip(types).collect() }
                })
                .collect()
            });
            assert!(functions.len() >= 20, "{} functions", functions.len());
            Sweep { ep, delivery, functions }
        }

        /// A valid value for an argument, by name, else by type.
        fn sample(&self, arg: &str, ty: &str) -> String {
            match (arg, ty) {
                ("tenant", _) => "'t'".into(),
                ("url", _) => "'https://hooks.example.com/sweep'".into(),
                ("id", "uuid") | ("endpoint_id", _) => format!("'{}'", self.ep),
                ("id", "bigint") => self.delivery.to_string(),
                ("event_type", _) | ("name", _) => "'order.paid'".into(),
                ("resource", _) => "'thing'".into(),
                ("tenant_column", _) => "'tenant'".into(),
                ("columns", _) => "'{tenant}'".into(),
                ("tbl", _) => "'app.things'".into(),
                ("config", _) => "postbox.endpoint_config('t', (SELECT id FROM postbox.endpoints LIMIT 1))".into(),
                ("since", _) => "'-infinity'".into(),
                ("until", _) => "'infinity'".into(),
                ("signature_style", _) => "'standard'".into(),
                ("envelope", _) => "'postbox'".into(),
                ("grace", _) => "'1 hour'".into(),
                ("worker_id", _) => "'sweeper'".into(),
                ("instance", _) => "gen_random_uuid()".into(),
                ("stale_after", _) => "'5 seconds'".into(),
                ("role", _) => "'admin'".into(),
                ("label", _) => "'sweep'".into(),
                ("key_hash", _) | ("request_hash", _) | ("link_hash", _) | ("session_hash", _) => "sha256('sweep')".into(),
                ("valid_for", _) | ("lasts", _) => "'15 minutes'".into(),
                ("status", _) => "201".into(),
                ("body", _) => "'{}'".into(),
                ("idempotency_key", _) | ("ordering_key", _) => "'sweep'".into(),
                ("credential", _) => "gen_random_uuid()".into(),
                // No portal session (a key, or SQL), from the first page.
                ("session", _) | ("after", _) => "NULL".into(),
                ("user_id", _) => "'u1'".into(),
                (_, "interval") => "'30 days'".into(),
                (_, "integer") | (_, "bigint") => "10".into(),
                (_, "boolean") => "true".into(),
                (_, "text[]") => "'{*}'".into(),
                (_, "jsonb") | (_, "json") => "'{}'".into(),
                (_, "timestamp with time zone") => "now()".into(),
                ("signature_header", _) | ("own_secret", _) | ("description", _) => "NULL".into(),
                (a, t) => panic!("no sample for {a} {t}: add one"),
            }
        }

        /// Calls `f` as `role` with the SQL expression `value` as its `i`th
        /// argument and samples for the others; returns the call and the
        /// SQLSTATE and message it ended with. Dividing by zero after the
        /// call makes a successful call fail too (22012): each call runs in a
        /// subtransaction that is rolled back, so no call sees another's
        /// writes.
        fn call(&self, f: &str, role: &str, args: &[(String, String)], i: usize, value: &str) -> (String, String, String) {
            let call = args
                .iter()
                .enumerate()
                .map(|(j, (a, t))| format!("{a} => {}", if i == j { value.to_string() } else { self.sample(a, t) }))
                .collect::<Vec<_>>()
                .join(", ");
            run(&format!("SET LOCAL ROLE {role}"));
            let (state, msg) = error_of(&format!(
                "SELECT x.n / 0 FROM (SELECT count(*) AS n FROM postbox.{f}({call})) x"
            ));
            run("RESET ROLE");
            (format!("SELECT postbox.{f}({call})"), state, msg)
        }
    }

    /// Every public function, generated from the catalog and called as a role
    /// granted it, with NULL in each argument in turn (the others valid):
    /// either NULL is one of the documented "leave it / default" values and
    /// the call succeeds, or it fails with 22004 or 22023 and a message that
    /// names the argument. Never another error (and an error undoes the
    /// call's writes).
    #[pg_test]
    fn every_public_function_refuses_null_clearly() {
        // Arguments whose NULL means "unchanged" or "the default".
        const NULL_IS_FINE: &[&str] = &[
            "create_event_type.description", "create_event_type.schema", "create_event_type.example",
            "create_endpoint.event_types", "create_endpoint.headers", "create_endpoint.description",
            "create_endpoint.signature_style", "create_endpoint.signature_header", "create_endpoint.own_secret",
            "create_endpoint.options", "create_endpoint.enabled", "create_endpoint.envelope",
            "register_endpoint.event_types", "register_endpoint.headers", "register_endpoint.description",
            "register_endpoint.signature_style", "register_endpoint.signature_header", "register_endpoint.own_secret",
            "register_endpoint.options", "register_endpoint.enabled", "register_endpoint.envelope",
            "update_endpoint.url", "update_endpoint.event_types", "update_endpoint.headers",
            "update_endpoint.description", "update_endpoint.enabled", "update_endpoint.options",
            "update_endpoint.envelope", "rotate_secret.own_secret", "set_tenant_limit.max_endpoints",
            "emit.idempotency_key", "emit.ordering_key", "attach.columns", "send_test.data", "validate_headers.signature_header",
            "set_retention.succeeded_attempts", "set_retention.failed_attempts", "set_retention.events",
            "set_retention.cancelled_deliveries", "set_retention.idempotency_keys",
            // No key has a NULL hash: no row, as for any unknown key (or link, or session).
            "authenticate_api_key.key_hash", "authenticate_portal_session.session_hash",
            "open_portal_session.link_hash",
            // 0.6.0: the revoked-keys window; no portal session (a key, or
            // SQL); operator keys' list (no tenant) and its first page; no
            // user named; no session signs out.
            "set_retention.revoked_api_keys",
            "create_api_key.session",
            "list_api_keys.tenant", "list_api_keys.session", "list_api_keys.after",
            "create_portal_session.user_id", "revoke_portal_sessions.user_id",
            "end_portal_session.session_hash",
            // 0.7.0: NULL is the default, written once in SQL (callers pass
            // NULL): the grace period, the link lifetime, the test event.
            "rotate_secret.grace", "create_portal_session.valid_for", "send_test.event_type",
        ];
        // How an argument's NULL error may name it, besides its own name.
        let names = |arg: &str| -> Vec<String> {
            let mut n = vec![arg.to_string(), arg.replace('_', " "), arg.replace('_', "-")];
            match arg {
                "name" => n.push("event type name".into()),
                "data" => n.push("event data".into()),
                "tbl" => n.push("table".into()),
                "since" | "until" => n.push("since <= until".into()),
                "endpoint_id" => n.push("no endpoint has this id".into()),
                // NULL is an operator key's tenant: there is none with the id.
                "tenant" => n.push("no api key has this id".into()),
                // NULL is no session; the sweep's id is no key's (its sample
                // is an endpoint's), so the call fails on the id.
                "session" => n.push("no api key has this id".into()),
                _ => {}
            }
            n
        };
        let sweep = Sweep::new();
        let mut checked = 0;
        for PublicFunction { name: f, role, args } in &sweep.functions {
            for (i, (arg, _)) in args.iter().enumerate() {
                let (sql, state, msg) = sweep.call(f, role, args, i, "NULL");
                let key = format!("{f}.{arg}");
                if NULL_IS_FINE.contains(&key.as_str()) {
                    assert_eq!(state, "22012", "{sql}: NULL should be accepted here: {msg}");
                } else {
                    assert!(state == "22023" || state == "22004", "{sql}: {state} {msg}");
                    let lower = msg.to_lowercase();
                    assert!(
                        names(arg).iter().any(|n| lower.contains(n.as_str())),
                        "{sql}: the message does not name {arg}: {msg}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked >= 60, "{checked} calls");
    }

    /// A hostile value for the hostile-input sweep: `label` names it (and its
    /// kind, before the first dot), `sql` is the SQL expression, `shown`
    /// (where set) a part of it an error must not show where the argument is
    /// a secret or a header value.
    struct Hostile {
        label: String,
        sql: String,
        shown: Option<String>,
    }

    fn hostile(label: &str, sql: &str, shown: Option<&str>) -> Hostile {
        Hostile { label: label.into(), sql: sql.into(), shown: shown.map(str::to_string) }
    }

    /// Hostile text: oversized (a 100 KiB value is shown by its first 32
    /// characters, as a message echoing it would), empty, shaped like an
    /// injection, and odd characters. NUL is not among them: PostgreSQL's
    /// text cannot hold it (see the sweep).
    fn hostile_texts() -> Vec<Hostile> {
        let a32 = "a".repeat(32);
        let e32 = "é".repeat(32);
        vec![
            hostile("text.long.1mib", "repeat('a', 1048576)", Some(&a32)),
            hostile("text.long.100kib", "repeat('a', 102400)", Some(&a32)),
            hostile("text.long.multibyte", "repeat('é', 100000)", Some(&e32)),
            // For attach's resource: a name it refuses before the name rules.
            hostile("text.long.suffixed", "repeat('a', 102400) || '.created'", Some(&a32)),
            hostile("text.empty", "''", None),
            hostile("text.inject.quote", "'''; DROP TABLE postbox.events; --'", Some("'; DROP TABLE postbox.events; --")),
            hostile("text.inject.dollar", "'$$; DROP TABLE postbox.events; $$'", Some("$$; DROP TABLE postbox.events; $$")),
            hostile("text.inject.format", "'%s%n%x'", Some("%s%n%x")),
            hostile("text.inject.or", "''' OR ''1''=''1'", Some("' OR '1'='1")),
            hostile("text.inject.backslash_x00", r"'\x00'", Some(r"\x00")),
            hostile("text.inject.quoted", r#"'"quoted"'"#, Some(r#""quoted""#)),
            hostile("text.inject.backslash", r"'\'", Some(r"\")),
            hostile("text.odd.rtl_override", r"E'order\u202Epaid'", Some("order\u{202E}paid")),
            hostile("text.odd.control", r"E'\x01\x1b[31m'", Some("\u{1}\u{1b}[31m")),
        ]
    }

    /// The keys a JSON argument documents, with the JSON types each takes.
    fn documented_keys(arg: &str) -> &'static [(&'static str, &'static [&'static str])] {
        match arg {
            // A header's name is free, its value a string.
            "headers" => &[("X-Secret", &["string"])],
            "options" => &[
                ("timeout_ms", &["number"]),
                ("connect_timeout_ms", &["number"]),
                ("max_in_flight", &["number"]),
                ("rate_limit_per_s", &["number"]),
                ("retry_schedule", &["array"]),
            ],
            "config" => &[
                ("url", &["string"]),
                ("event_types", &["array"]),
                ("headers", &["object"]),
                ("description", &["string", "null"]),
                ("signature_style", &["string"]),
                ("signature_header", &["string", "null"]),
                ("options", &["object"]),
                ("enabled", &["boolean"]),
                ("envelope", &["string"]),
            ],
            _ => &[],
        }
    }

    /// The hostile values of an argument of type `ty` (its sample `sample`).
    fn hostile_values(arg: &str, ty: &str, sample: &str) -> Vec<Hostile> {
        let a32 = "a".repeat(32);
        match ty {
            "text" => hostile_texts(),
            "json" | "jsonb" => {
                let mut v = vec![
                    hostile("json.array", "'[1]'", None),
                    hostile("json.empty_array", "'[]'", None),
                    hostile("json.string", r#"'"s"'"#, None),
                    hostile("json.number", "'1'", None),
                    hostile("json.true", "'true'", None),
                    hostile("json.null", "'null'", None),
                    hostile("json.deep_array", &format!("(repeat('[', 10000) || repeat(']', 10000))::{ty}"), None),
                    hostile(
                        "json.deep_object",
                        &format!(r#"(repeat('{{"a": ', 10000) || '1' || repeat('}}', 10000))::{ty}"#),
                        None,
                    ),
                    hostile("json.long_string", &format!(r#"('{{"a": "' || repeat('a', 1048576) || '"}}')::{ty}"#), Some(&a32)),
                    hostile(
                        "json.long_key",
                        &format!(r#"('{{"' || repeat('a', 102400) || '": "v"}}')::{ty}"#),
                        None,
                    ),
                    hostile("json.duplicate_key", r#"'{"a": 1, "a": 2}'"#, None),
                ];
                if ty == "json" {
                    // json keeps the text as given; jsonb refuses both.
                    v.push(hostile("json.nul_escape", r#"'{"a": "\u0000"}'"#, None));
                    v.push(hostile("json.huge_number", r#"'{"a": 1e999999}'"#, None));
                    v.push(hostile("json.lone_surrogate", r#"'{"a": "\ud800"}'"#, None));
                }
                // Each documented key with every JSON type it does not take,
                // and a 100 KiB string (for a string key: too long).
                let base = if arg == "config" { sample } else { "'{}'" };
                for (key, types) in documented_keys(arg) {
                    for (kind, value) in [
                        ("null", "'null'::jsonb"),
                        ("boolean", "'true'::jsonb"),
                        ("number", "'1'::jsonb"),
                        ("array", "'[]'::jsonb"),
                        ("object", "'{}'::jsonb"),
                        ("long_string", "to_jsonb(repeat('a', 102400))"),
                        ("deep", "(repeat('[', 10000) || repeat(']', 10000))::jsonb"),
                    ] {
                        if types.contains(&kind) {
                            continue;
                        }
                        let shown = (kind == "long_string").then_some(a32.as_str());
                        v.push(hostile(
                            &format!("key.{key}.{kind}"),
                            &format!("(({base})::jsonb || jsonb_build_object('{key}', {value}))::{ty}"),
                            shown,
                        ));
                    }
                }
                match arg {
                    // Every hostile text as a header's value.
                    "headers" => v.extend(hostile_texts().into_iter().map(|h| Hostile {
                        label: h.label.replacen("text.", "header_value.", 1),
                        sql: format!("json_build_object('X-Secret', {})::{ty}", h.sql),
                        shown: h.shown,
                    })),
                    "options" => {
                        for key in ["timeout_ms", "connect_timeout_ms", "max_in_flight", "rate_limit_per_s"] {
                            for (kind, value) in [("negative", "-1"), ("huge", "1e300")] {
                                v.push(hostile(&format!("key.{key}.{kind}"), &format!(r#"'{{"{key}": {value}}}'"#), None));
                            }
                        }
                        v.push(hostile(
                            "key.retry_schedule.long_entry",
                            "jsonb_build_object('retry_schedule', jsonb_build_array(repeat('a', 102400)))",
                            Some(&a32),
                        ));
                    }
                    "config" => v.push(hostile(
                        "key.event_types.long_entry",
                        &format!("({sample})::jsonb || jsonb_build_object('event_types', jsonb_build_array(repeat('a', 102400)))"),
                        Some(&a32),
                    )),
                    _ => {}
                }
                v
            }
            "text[]" => vec![
                hostile("array.empty", "'{}'", None),
                hostile("array.null_element", "'{NULL}'", None),
                hostile("array.empty_string", r#"'{""}'"#, None),
                hostile("array.10000", &format!("array_fill(({sample}::text[])[1], ARRAY[10000])"), None),
                hostile("array.long_element", "ARRAY[repeat('a', 102400)]", Some(&a32)),
            ],
            "interval" => vec![
                hostile("interval.negative", "'-1 day'", None),
                hostile("interval.zero", "'0'", None),
                hostile("interval.huge", "'1000000 years'", None),
            ],
            "integer" | "bigint" => vec![
                hostile("int.negative", "-1", None),
                hostile("int.zero", "0", None),
                hostile("int.huge", "2147483647", None),
                hostile("int.min", "-2147483648", None),
            ],
            "bytea" => vec![
                hostile("bytes.empty", "''::bytea", None),
                hostile("bytes.1mib", "convert_to(repeat('a', 1048576), 'UTF8')", None),
            ],
            "timestamp with time zone" => vec![
                hostile("time.infinity", "'infinity'", None),
                hostile("time.minus_infinity", "'-infinity'", None),
            ],
            _ => vec![],
        }
    }

    /// The postbox relations (and app's, which attach writes triggers on),
    /// every row of their tables, and the triggers on app tables.
    fn database_state() -> (String, Vec<(String, String)>) {
        let relations = one::<String>(
            "SELECT string_agg(c.relnamespace::regnamespace || '.' || c.relname || ':' || c.relkind::text, ' '
                               ORDER BY c.relnamespace::regnamespace::text, c.relname)
               FROM pg_class c WHERE c.relnamespace IN ('postbox'::regnamespace, 'app'::regnamespace)",
        );
        let tables: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT c.oid::regclass::text FROM pg_class c
                  WHERE c.relnamespace IN ('postbox'::regnamespace, 'app'::regnamespace) AND c.relkind IN ('r', 'p')
                  ORDER BY 1",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        let mut rows: Vec<(String, String)> = tables
            .into_iter()
            .map(|t| {
                let digest = one::<String>(&format!(
                    "SELECT count(*) || ' rows, ' || md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM {t} r"
                ));
                (t, digest)
            })
            .collect();
        rows.push((
            "triggers".into(),
            one::<String>(
                "SELECT count(*)::text FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'app'::regnamespace)",
            ),
        ));
        (relations, rows)
    }

    /// Every public function, generated from the catalog and called as a role
    /// granted it, with a hostile value in each argument in turn (the others
    /// valid): oversized and injection-shaped text, every wrong JSON shape
    /// and wrong-typed key, odd arrays, out-of-range numbers and times. Each
    /// call either succeeds where the value is legitimately valid
    /// (HOSTILE_IS_FINE) or fails with 22023 or 22004 and a message under
    /// 1,000 characters (starting postbox: for 22023) that never shows a
    /// secret or a header value; never an internal error or another code.
    /// (No value here is one PostgreSQL itself refuses before the call; NUL,
    /// which it does refuse, is shown apart.) Every call is rolled back;
    /// afterwards every relation is still there and no row changed, and the
    /// accepted text is stored verbatim.
    #[pg_test]
    fn every_public_function_refuses_hostile_input_clearly() {
        // "function.argument:label prefix" (an empty prefix for every
        // value): calls that must succeed, the value being legitimately valid.
        const HOSTILE_IS_FINE: &[&str] = &[
            // A tenant is any non-empty string of at most 256 bytes, stored as
            // given; where it creates or finds nothing the call succeeds (an
            // endpoint, an event, a limit, zero endpoints unregistered).
            "create_endpoint.tenant:text.inject", "create_endpoint.tenant:text.odd",
            "register_endpoint.tenant:text.inject", "register_endpoint.tenant:text.odd",
            "unregister_endpoint.tenant:text.inject", "unregister_endpoint.tenant:text.odd",
            "set_tenant_limit.tenant:text.inject", "set_tenant_limit.tenant:text.odd",
            "emit.tenant:text.inject", "emit.tenant:text.odd",
            // A description is free text, stored verbatim (checked below),
            // with no documented length limit (in config too).
            "create_event_type.description:text", "create_endpoint.description:text",
            "update_endpoint.description:text", "create_endpoint.config:key.description.long_string",
            // An idempotency key is any string of at most 256 bytes, '' too.
            "emit.idempotency_key:text.inject", "emit.idempotency_key:text.odd", "emit.idempotency_key:text.empty",
            // So is an ordering key: stored as given, and hashed for the
            // outbox; '' is the empty key, an event without one.
            "emit.ordering_key:text.inject", "emit.ordering_key:text.odd", "emit.ordering_key:text.empty",
            // A worker id of 1 to 256 bytes; worker_stopped removes the row of
            // a registered worker, and any other id matches nothing.
            "worker_heartbeat.worker_id:text.inject", "worker_heartbeat.worker_id:text.odd",
            "worker_stopped.worker_id:text",
            // validate_headers only compares header names with the signature
            // header; it checks the header where the endpoint is created.
            "validate_headers.signature_header:text",
            // register_endpoint finds the sample URL's endpoint: the other
            // arguments apply only when it creates one (documented), so they
            // are not read.
            "register_endpoint.headers:", "register_endpoint.description:", "register_endpoint.signature_style:",
            "register_endpoint.signature_header:", "register_endpoint.own_secret:", "register_endpoint.options:",
            "register_endpoint.envelope:",
            // A header value of visible ASCII, whatever it looks like.
            "create_endpoint.headers:header_value.inject", "update_endpoint.headers:header_value.inject",
            "validate_headers.headers:header_value.inject",
            // jsonb keeps the last of a duplicate key before postbox sees it
            // ({"a": 2}): valid data, a valid example, a valid JSON Schema.
            "emit.data:json.duplicate_key", "send_test.data:json.duplicate_key",
            "create_event_type.example:json.duplicate_key", "create_event_type.schema:json.duplicate_key",
            // Any object is valid event data (at most max_payload_bytes).
            "emit.data:json.deep_object", "send_test.data:json.deep_object", "create_event_type.example:json.deep_object",
            "emit.data:json.long_key", "send_test.data:json.long_key", "create_event_type.example:json.long_key",
            // A JSON Schema is an object or a boolean, stored as given.
            "create_event_type.schema:json.true", "create_event_type.schema:json.deep_object",
            "create_event_type.schema:json.long_string", "create_event_type.schema:json.long_key",
            // Nulls in config mean the default, as NULL arguments do.
            "create_endpoint.config:key.signature_style.null", "create_endpoint.config:key.envelope.null",
            // columns '{}' is every column, as NULL.
            "attach.columns:array.empty",
            // Limits: 0 suspends the tenant, 2147483647 is no limit in effect.
            "set_tenant_limit.max_endpoints:int.zero", "set_tenant_limit.max_endpoints:int.huge",
            // A grace of 0: the old secrets stop working now.
            "rotate_secret.grace:interval.zero",
            // Any window; an empty one replays nothing.
            "replay.since:time", "replay.until:time",
            // API keys: any tenant (as above) and any label of 1 to 200
            // characters, stored verbatim as descriptions are.
            "create_api_key.tenant:text.inject", "create_api_key.tenant:text.odd",
            "create_api_key.label:text.inject", "create_api_key.label:text.odd",
            "api_request_begin.tenant:text.inject", "api_request_begin.tenant:text.odd",
            // An Idempotency-Key is any visible ASCII without spaces.
            "api_request_begin.idempotency_key:text.inject.format",
            "api_request_begin.idempotency_key:text.inject.backslash_x00",
            "api_request_begin.idempotency_key:text.inject.quoted",
            "api_request_begin.idempotency_key:text.inject.backslash",
            // Any bytes are a hash no key has: no row.
            "authenticate_api_key.key_hash:bytes",
            "authenticate_portal_session.session_hash:bytes", "open_portal_session.link_hash:bytes",
            // Portal links: any tenant, as above; intervals within their bounds.
            "create_portal_session.tenant:text.inject", "create_portal_session.tenant:text.odd",
            // 0.6.0: any tenant, as above; a user id is any text of 1 to 200
            // characters, stored verbatim as labels are (and matching none
            // when revoking); any bytes are a hash no session has.
            "list_api_keys.tenant:text.inject", "list_api_keys.tenant:text.odd",
            "revoke_portal_sessions.tenant:text.inject", "revoke_portal_sessions.tenant:text.odd",
            "create_portal_session.user_id:text.inject", "create_portal_session.user_id:text.odd",
            "revoke_portal_sessions.user_id:text.inject", "revoke_portal_sessions.user_id:text.odd",
            "end_portal_session.session_hash:bytes",
        ];
        let allowed = |f: &str, arg: &str, label: &str| -> Option<&'static str> {
            HOSTILE_IS_FINE.iter().copied().find(|e| {
                let (fa, prefix) = e.split_once(':').unwrap();
                fa == format!("{f}.{arg}")
                    && (prefix.is_empty() || label == prefix || label.starts_with(&format!("{prefix}.")))
            })
        };
        // Arguments whose value an error must never show.
        let secret = |arg: &str| matches!(arg, "own_secret" | "headers");

        // NUL cannot reach postbox: PostgreSQL refuses it in text, in its
        // literals (a syntax error), from chr() and in jsonb.
        for (sql, state) in [
            (r"SELECT postbox.emit('t', E'\u0000', '{}')", "42601"),
            ("SELECT postbox.emit(chr(0), 'order.paid', '{}')", "54000"),
            (r"SELECT postbox.emit(convert_from('\x00'::bytea, 'UTF8'), 'order.paid', '{}')", "22021"),
            (r#"SELECT postbox.emit('t', 'order.paid', '{"a": "\u0000"}')"#, "22P05"),
        ] {
            assert_eq!(error_of(sql).0, state, "{sql}");
        }

        let sweep = Sweep::new();
        let before = database_state();
        let mut used = std::collections::BTreeSet::new();
        let mut failures = Vec::new();
        let mut checked = 0;
        for PublicFunction { name: f, role, args } in &sweep.functions {
            for (i, (arg, ty)) in args.iter().enumerate() {
                for h in hostile_values(arg, ty, &sweep.sample(arg, ty)) {
                    let (sql, state, msg) = sweep.call(f, role, args, i, &h.sql);
                    let what = format!("{f}.{arg} = {} ({}): {state} {}", h.label, sql.chars().take(300).collect::<String>(), msg.chars().take(300).collect::<String>());
                    checked += 1;
                    if let Some(entry) = allowed(f, arg, &h.label) {
                        used.insert(entry);
                        if state != "22012" {
                            failures.push(format!("should be accepted: {what}"));
                        }
                        continue;
                    }
                    if state != "22023" && state != "22004" {
                        failures.push(format!("not 22023: {what}"));
                    }
                    if state == "22023" && !msg.starts_with("postbox: ") {
                        failures.push(format!("not postbox's message: {what}"));
                    }
                    if msg.chars().count() >= 1000 {
                        failures.push(format!("message of {} characters: {what}", msg.chars().count()));
                    }
                    if let (true, Some(shown)) = (secret(arg), &h.shown) {
                        if msg.contains(shown.as_str()) {
                            failures.push(format!("the message shows the value: {what}"));
                        }
                    }
                }
            }
        }
        assert!(checked >= 900, "{checked} calls");
        for entry in HOSTILE_IS_FINE.iter().filter(|e| !used.contains(*e)) {
            failures.push(format!("HOSTILE_IS_FINE entry that matched no call: {entry}"));
        }
        // The injections did nothing, and no call left a row behind.
        let after = database_state();
        if before.0 != after.0 {
            failures.push(format!("the relations changed:\n{}\n{}", before.0, after.0));
        }
        for (table, digest) in &before.1 {
            let now = after.1.iter().find(|(t, _)| t == table).map(|(_, d)| d);
            if now != Some(digest) {
                failures.push(format!("rows of {table} changed: {digest} -> {now:?}"));
            }
        }

        // Accepted text is stored verbatim: as a description, a tenant, an
        // idempotency key, a header value.
        for h in hostile_texts() {
            // In a subtransaction (error_of's pg_temp.try_sql), so that a
            // refusal is reported with the rest.
            let stored = |set: &str, check: &str| -> bool {
                one::<String>(&format!("SELECT state FROM pg_temp.try_sql($sql_under_test${set}$sql_under_test$)")) == "00000"
                    && one::<bool>(check)
            };
            let ep = &sweep.ep;
            let v = &h.sql;
            if !stored(
                &format!("SELECT postbox.update_endpoint('t', '{ep}', description => {v})"),
                &format!("SELECT description = {v} FROM postbox.endpoints WHERE id = '{ep}'"),
            ) {
                failures.push(format!("description not stored verbatim: {}", h.label));
            }
            if (h.label.starts_with("text.inject") || h.label.starts_with("text.odd"))
                && !stored(
                    &format!("SELECT postbox.emit({v}, 'order.paid', '{{}}', {v})"),
                    &format!(
                        "SELECT m.tenant = {v} AND k.key = {v} FROM postbox.emitted m
                           JOIN postbox.idempotency_keys k ON k.event_id = m.id AND k.tenant = m.tenant
                          WHERE m.tenant = {v}"
                    ),
                )
            {
                failures.push(format!("tenant or key not stored verbatim: {}", h.label));
            }
            if h.label.starts_with("text.inject")
                && !stored(
                    &format!("SELECT postbox.update_endpoint('t', '{ep}', headers => json_build_object('X-Secret', {v}))"),
                    &format!("SELECT headers ->> 'X-Secret' = {v} FROM postbox.endpoints WHERE id = '{ep}'"),
                )
            {
                failures.push(format!("header value not stored verbatim: {}", h.label));
            }
        }
        assert!(failures.is_empty(), "{} of {checked} calls:\n{}", failures.len(), failures.join("\n"));
    }

    /// A tenant or idempotency key longer than 256 bytes is refused with
    /// 22023 where it enters (emit, the row trigger, management), and the
    /// emitted row of a statement that carried one is set aside at
    /// expansion (with the statement's other rows) while the rest goes on:
    /// one long value could otherwise fail every acknowledgement batch it is
    /// in (the tenant is indexed).
    #[pg_test]
    fn tenants_and_keys_longer_than_256_bytes_are_refused() {
        orders_catalog();
        let long = "t".repeat(257);
        rejects(&format!("SELECT postbox.emit('{long}', 'order.paid', '{{}}')"), "tenant must be at most 256 bytes");
        rejects(&format!("SELECT postbox.emit('t', 'order.paid', '{{}}', '{long}')"), "idempotency_key must be at most 256 bytes");
        rejects(&format!("SELECT postbox.create_endpoint('{long}', 'https://hooks.example.com/x')"), "tenant must be at most 256 bytes");
        run(&format!("SELECT postbox.emit('{}', 'order.paid', '{{}}')", "t".repeat(256)));
        run("CREATE SCHEMA IF NOT EXISTS app");
        run("CREATE TABLE app.orders (id int, tenant text)");
        run("SELECT postbox.attach('app.orders', 'order', 'tenant')");
        rejects(&format!("INSERT INTO app.orders VALUES (1, 't'); UPDATE app.orders SET tenant = '{long}'"), "tenant must be at most 256 bytes");
        run(&format!("INSERT INTO app.orders VALUES (2, 'ok'), (3, '{long}')"));
        run("SELECT postbox.expand_events()");
        assert_eq!(count("SELECT FROM postbox.emitted_rejects WHERE reason LIKE '%tenant must be at most 256 bytes%'"), 1);
        assert_eq!(count("SELECT FROM postbox.events WHERE length(tenant) = 256"), 1);
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
    }
