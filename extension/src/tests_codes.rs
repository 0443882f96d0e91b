// Included in tests.rs's module: error codes (postbox_rules::codes). Every
// postbox error any test here sees is checked by `detail_of` to carry a
// listed code with the code's SQLSTATE; these tests check the channel
// itself and what a few rules say they are about.

/// `postbox._raise` raises every listed code with the code's SQLSTATE,
/// the message as given, and the code, field and item in DETAIL; an
/// unknown code is an internal error, never a silent success.
#[pg_test]
fn every_code_raises_with_its_sqlstate_and_its_detail() {
    use postbox_rules::Code;
    for code in Code::ALL {
        let (state, msg, d) = detail_of(&format!(
            "SELECT postbox._raise('{code}', 'url', 'postbox: a test: x', 'X-A')"
        ));
        assert_eq!(state, code.sqlstate(), "{code}");
        assert_eq!(msg, "postbox: a test: x", "{code}");
        let d = d.unwrap_or_else(|| panic!("{code}: no DETAIL"));
        assert_eq!(
            (d.code, d.field.as_deref(), d.item.as_deref()),
            (*code, Some("url"), Some("X-A"))
        );
    }
    let (state, msg, d) = detail_of("SELECT postbox._raise('no_such_code', NULL, 'postbox: m')");
    assert_eq!(
        (state.as_str(), d.map(|d| d.code)),
        ("XX000", Some(Code::Internal))
    );
    assert!(
        msg.contains("no_such_code") && msg.ends_with("postbox: m"),
        "{msg}"
    );
    // SQL reads the code as JSON, as docs/errors.md shows.
    run("DO $d$ BEGIN PERFORM postbox._raise('event_type_unknown', 'event_type', 'postbox: m', 'a.b');
         EXCEPTION WHEN invalid_parameter_value THEN
             DECLARE v text; BEGIN
                 GET STACKED DIAGNOSTICS v = PG_EXCEPTION_DETAIL;
                 PERFORM set_config('postbox_test.code', (split_part(v, E'\\n', 1)::jsonb ->> 'code') || ' ' || (split_part(v, E'\\n', 1)::jsonb ->> 'item'), true);
             END;
         END $d$");
    assert_eq!(
        one::<String>("SELECT current_setting('postbox_test.code')"),
        "event_type_unknown a.b"
    );
}

/// What a rule is about, as the rule (in Rust or SQL) names it.
#[pg_test]
fn rules_name_their_code_field_and_item() {
    catalog();
    let ep = endpoint("t", "'{*}'");
    let missing = "00000000-0000-7000-8000-000000000000";
    let create = |args: &str| {
        format!("SELECT postbox.create_endpoint('t', 'https://hooks.example.com/x'{args})")
    };
    // (a call, (its code, field, item))
    type Want<'a> = (&'a str, Option<&'a str>, Option<&'a str>);
    let cases: Vec<(String, Want)> = vec![
        // Rust rules (postbox_rules).
        (
            "SELECT postbox.create_endpoint('t', 'http://hooks.example.com/x')".into(),
            ("url_not_https", Some("url"), None),
        ),
        (
            "SELECT postbox.create_endpoint('t', NULL)".into(),
            ("required", Some("url"), None),
        ),
        (
            create(", headers => '{\"X-A\": \"1\", \"Host\": \"h\"}'"),
            ("header_name_reserved", Some("headers"), Some("Host")),
        ),
        (
            create(", headers => '{\"X A\": \"1\"}'"),
            ("header_name_invalid", Some("headers"), Some("X A")),
        ),
        (
            create(", headers => '{\"X-A\": \"caf\u{e9}\"}'"),
            ("header_value_invalid", Some("headers"), Some("X-A")),
        ),
        (
            create(", event_types => '{demo.viewd}'"),
            (
                "event_type_unknown",
                Some("event_types"),
                Some("demo.viewd"),
            ),
        ),
        (
            create(", event_types => '{Demo}'"),
            ("event_type_invalid", Some("event_types"), Some("Demo")),
        ),
        (
            create(", event_types => '{}'"),
            ("event_types_empty", Some("event_types"), None),
        ),
        (
            create(", signature_style => 'hex', signature_header => 'Host'"),
            ("header_name_reserved", Some("signature_header"), None),
        ),
        (
            create(", signature_style => 'pgp'"),
            ("signature_style_unknown", Some("signature_style"), None),
        ),
        (
            create(", own_secret => 'whsec_x'"),
            ("secret_invalid", Some("secret"), None),
        ),
        (
            create(", options => '{\"timeout_ms\": 1}'"),
            ("options_value_invalid", Some("options"), Some("timeout_ms")),
        ),
        (
            create(", options => '{\"nope\": 1}'"),
            ("options_unknown_key", Some("options"), Some("nope")),
        ),
        // SQL rules (postbox._raise).
        (
            create(", headers => '{\"X-A\": \"1\", \"x-a\": \"2\"}'"),
            ("header_name_duplicate", Some("headers"), Some("X-A")),
        ),
        (
            create(", envelope => 'soap'"),
            ("envelope_unknown", Some("envelope"), None),
        ),
        (
            format!("SELECT postbox.delete_endpoint('t', '{missing}')"),
            ("endpoint_not_found", Some("id"), None),
        ),
        (
            format!("SELECT postbox.delete_endpoint('other', '{ep}')"),
            ("endpoint_not_found", Some("id"), None),
        ),
        (
            "SELECT postbox.retry_delivery('t', 0)".into(),
            ("delivery_not_found", Some("id"), None),
        ),
        (
            format!("SELECT postbox.rotate_secret('t', '{ep}', interval '31 days')"),
            ("out_of_range", Some("grace"), None),
        ),
        (
            "SELECT postbox.emit('t', 'demo.viewd', '{}')".into(),
            ("event_type_unknown", Some("event_type"), Some("demo.viewd")),
        ),
        (
            "SELECT postbox.emit('t', 'demo.viewed', '[]')".into(),
            ("event_data_invalid", Some("data"), None),
        ),
        (
            "SELECT postbox.emit(NULL, 'demo.viewed', '{}')".into(),
            ("required", Some("tenant"), None),
        ),
    ];
    let mut failures = Vec::new();
    for (sql, (code, field, item)) in cases {
        let got = code_of(&sql);
        let want = (
            code.to_string(),
            field.map(String::from),
            item.map(String::from),
        );
        if got != want {
            failures.push(format!("{sql}\n   got {got:?}\n  want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
