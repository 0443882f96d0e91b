// `#[pg_test]`s of postbox's own events (operator notifications, 0.9.0):
// what admin changes tell the operator, and that no emitter can send them.
// Included into `tests.rs`'s module, whose helpers it uses. The worker's
// part (failing, disabled, recovered, exhausted) is in
// worker/tests/notifications.rs.

    /// The operator's events as expanded: "type tenant reason", oldest first.
    fn notices() -> Vec<String> {
        run("SELECT postbox.expand_events()");
        Spi::connect(|c| {
            c.select(
                "SELECT event_type || ' ' || tenant || ' ' || reason FROM postbox.operator_events ORDER BY id",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        })
    }

    /// Creating, changing, pausing, resuming, rotating and deleting a
    /// tenant's endpoint each tells the operator once, with what changed by
    /// name (never a header's value); a call that changes nothing tells
    /// nothing, and the operator tenant's own endpoints are not announced.
    #[pg_test]
    fn operator_events_follow_admin_changes() {
        run("SELECT postbox.create_endpoint(postbox.operator_tenant(), 'https://ops.example.com/h', '{postbox.*}')");
        let ep = one::<String>("SELECT id::text FROM postbox.create_endpoint('acme', 'https://hooks.example.com/a')");
        run(&format!(r#"SELECT postbox.update_endpoint('acme', '{ep}', url => 'https://hooks.example.com/b', headers => '{{"X-Token": "s3cret-value"}}')"#));
        run(&format!("SELECT postbox.update_endpoint('acme', '{ep}', description => NULL)"));
        run(&format!("SELECT postbox.update_endpoint('acme', '{ep}', enabled => false)"));
        run(&format!("SELECT postbox.update_endpoint('acme', '{ep}', enabled => true)"));
        run(&format!("SELECT postbox.rotate_secret('acme', '{ep}')"));
        run("SELECT postbox.register_endpoint('acme', 'https://hooks.example.com/b', '{webhook.*}')");
        run("SELECT postbox.register_endpoint('acme', 'https://hooks.example.com/b', '{webhook.*}')");
        run(&format!("SELECT postbox.delete_endpoint('acme', '{ep}')"));
        assert_eq!(
            notices(),
            [
                "postbox.endpoint.created acme created",
                "postbox.endpoint.updated acme changed: url, headers",
                "postbox.endpoint.updated acme paused",
                "postbox.endpoint.updated acme resumed",
                "postbox.endpoint.updated acme secret rotated",
                "postbox.endpoint.updated acme changed: event_types",
                "postbox.endpoint.deleted acme deleted",
            ]
        );
        assert_eq!(count("SELECT FROM postbox.operator_events WHERE data::text LIKE '%s3cret%'"), 0);
        // Each about the endpoint, with its URL, keyed by it for ordered delivery.
        assert_eq!(
            count(&format!(
                "SELECT FROM postbox.operator_events v JOIN postbox.events e USING (id)
                  WHERE v.endpoint_id = '{ep}' AND v.data ->> 'url' LIKE 'https://hooks.example.com/%'
                    AND e.ordering_key = '{ep}'"
            )),
            7
        );
        // All seven routed to the operator's endpoint, made before them.
        assert_eq!(
            count("SELECT FROM postbox.outbox d JOIN postbox.endpoints e ON e.id = d.endpoint_id WHERE e.tenant = postbox.operator_tenant()"),
            7
        );
    }

    /// postbox's own events cannot be sent by anyone but postbox: not by
    /// emit (type or tenant), not by a type made with create_event_type or
    /// attach, and a table row whose tenant is the operator's routes nowhere.
    #[pg_test]
    fn no_one_but_postbox_sends_its_events() {
        run("SELECT postbox.create_event_type('order.paid')");
        let ops = one::<String>("SELECT id::text FROM postbox.create_endpoint(postbox.operator_tenant(), 'https://ops.example.com/h', '{*}')");
        let acme = one::<String>("SELECT id::text FROM postbox.create_endpoint('acme', 'https://hooks.example.com/a', '{*}')");
        drop_notices();
        for (sql, code, want) in [
            ("SELECT postbox.emit('acme', 'postbox.endpoint.disabled', '{}')", "event_type_reserved", "postbox's own"),
            ("SELECT postbox.emit('acme', 'postbox.endpoint.nope', '{}')", "event_type_reserved", "postbox's own"),
            ("SELECT postbox.emit('postbox:operator', 'order.paid', '{}')", "tenant_reserved", "operator tenant"),
            ("SELECT postbox.create_event_type('postbox.endpoint.failing', 'mine')", "event_type_reserved", "postbox's own"),
            ("SELECT postbox.create_event_type('postbox.other.thing')", "event_type_reserved", "postbox's own"),
            ("SELECT postbox._register_resource('postbox.endpoint')", "event_type_reserved", "postbox's own"),
        ] {
            let (state, msg, detail) = detail_of(sql);
            assert_eq!(state, "22023", "{sql}: {msg}");
            assert!(msg.contains(want), "{sql}: {msg}");
            assert_eq!(detail.map(|d| d.code.as_str()), Some(code), "{sql}");
        }
        assert_eq!(count("SELECT FROM postbox.emitted"), 0);
        // A table whose tenant column says "postbox:operator": its rows are
        // events of that tenant, which the operator's endpoints never get.
        run("CREATE TABLE public.things (id int PRIMARY KEY, tenant text)");
        run("SELECT postbox.create_event_type('thing.created')");
        run("SELECT postbox.attach('public.things', 'thing', 'tenant')");
        run("INSERT INTO public.things VALUES (1, 'postbox:operator'), (2, 'acme')");
        run("UPDATE public.things SET id = id + 10");
        run("SELECT postbox.expand_events()");
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{ops}'")), 0);
        assert_eq!(count(&format!("SELECT FROM postbox.outbox WHERE endpoint_id = '{acme}'")), 2);
        assert_eq!(count("SELECT FROM postbox.operator_events"), 0);
    }
