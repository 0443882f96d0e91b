// `#[pg_test]`s of what a settings page needs (0.4.0): tenant-scoped forms,
// registration by URL, readable configuration and logs, statistics through
// indexes, replay, plans, examples, signature styles and event order.
// Included into `tests.rs`'s module, whose helpers it uses.

    fn ep_at(tenant: &str, path: &str) -> String {
        one::<String>(&format!(
            "SELECT id::text FROM postbox.create_endpoint('{tenant}', 'https://hooks.example.com/{path}')"
        ))
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
    fn register_endpoint_creates_once_per_url_and_returns_the_current_secret() {
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
                    r.get::<String>(2).unwrap().unwrap(),
                    r.get::<bool>(3).unwrap().unwrap(),
                )
            })
        };
        let (id, secret, created) = reg("{order.paid}");
        assert!(created && secret.starts_with("whsec_"));
        let (id2, secret2, created2) = reg("{order.*}");
        assert_eq!((id2.as_str(), secret2.as_str(), created2), (id.as_str(), secret.as_str(), false));
        assert_eq!(one::<String>(&format!("SELECT event_types::text FROM postbox.endpoints WHERE id = '{id}'")), "{order.*}");
        let rotated = one::<String>(&format!("SELECT postbox.rotate_secret('t', '{id}'::uuid)"));
        assert_eq!(reg("{order.paid}").1, rotated, "the current secret, after a rotation");
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
            one::<pgrx::JsonB>(&format!("SELECT data FROM postbox.events WHERE id = '{event}'")).0
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
        assert_eq!(one::<i32>(&format!("SELECT postbox.replay('t', '{ep}', now() - interval '2 hours')")), 2);
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(status || attempts, ',' ORDER BY id) FROM postbox.outbox WHERE endpoint_id = '{ep}'"
            )),
            "pending0,failed5,pending0,pending5"
        );
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{other}' AND status = 'failed'")), 4);
        assert_eq!(one::<i32>(&format!("SELECT postbox.replay('t', '{ep}', '-infinity', now() - interval '2 hours')")), 1);
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

    /// The delivery log shows the event as sent and the request's headers
    /// except the signature.
    #[pg_test]
    fn the_delivery_log_shows_what_was_sent() {
        orders_catalog();
        let std_ep = one::<String>(r#"SELECT id::text FROM postbox.create_endpoint('t', 'https://hooks.example.com/l', headers => '{"X-Env": "prod"}')"#);
        let hex_ep = one::<String>("SELECT id::text FROM postbox.create_endpoint('t', 'https://hooks.example.com/m', signature_style => 'hex')");
        run(r#"SELECT postbox.emit('t', 'order.paid', '{"order_id": 42}')"#);
        run("SELECT postbox.expand_events()");
        run(r#"INSERT INTO postbox.attempt_log (delivery_id, tenant, endpoint_id, event_id, attempt, started_at, duration_ms,
                   status_code, response_excerpt, outcome, queued_at, request_headers)
               SELECT d.id, d.tenant, d.endpoint_id, d.event_id, 1, '2026-11-30 10:00:05.75+00', 12, 204, 'ok', 'succeeded', d.created_at,
                      CASE WHEN e.headers <> '{}' THEN e.headers END
                 FROM postbox.outbox d JOIN postbox.endpoints e ON e.id = d.endpoint_id"#);
        let row = |id: &str| {
            one::<pgrx::JsonB>(&format!(
                "SELECT jsonb_build_object('type', event_type, 'data', data, 'headers', request_headers,
                                           'code', status_code, 'excerpt', response_excerpt, 'ms', duration_ms, 'event', event_id)
                   FROM postbox.attempts WHERE endpoint_id = '{id}'"
            ))
            .0
        };
        let r = row(&std_ep);
        let event = r["event"].as_str().unwrap().to_string();
        let version = one::<String>("SELECT extversion FROM pg_extension WHERE extname = 'postbox'");
        assert_eq!(
            r,
            serde_json::json!({
                "type": "order.paid", "data": {"order_id": 42}, "code": 204, "excerpt": "ok", "ms": 12, "event": event,
                "headers": {"content-type": "application/json", "user-agent": format!("postbox/{version}"),
                            "webhook-id": event, "webhook-timestamp": "1796032805", "X-Env": "prod"}
            })
        );
        assert_eq!(
            row(&hex_ep)["headers"],
            serde_json::json!({"content-type": "application/json", "user-agent": format!("postbox/{version}")})
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
