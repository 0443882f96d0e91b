//! The SQL flavour (postbox-sql, scripts/sql-flavour.py) beside the compiled
//! extension.
//!
//! - The differential test: every input of the rules crate's generated
//!   corpus (rules/tests/corpus, the same strategies the property tests
//!   draw from) goes through the compiled extension's Rust-backed functions
//!   and the SQL flavour's PL/pgSQL ones, and both must answer exactly as
//!   postbox-rules does: the same result, or the same SQLSTATE, message and
//!   DETAIL (code, field, item).
//! - The install: as a role that is not a superuser, and the settings that
//!   only the installing role can change.

#[path = "../../rules/tests/corpus/mod.rs"]
mod corpus;

use postbox_rules::headers::SignatureStyle;
use postbox_rules::{api_key, error, event, headers, options, secret, url, RuleError};
use postbox_tests::{pg_error, Cluster, Flavour, INSTALLER};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;

/// The database the SQL flavour is installed in, beside the extension's.
const SQL_DB: &str = "sqlflavour";

/// The database that holds the SQL flavour: [`SQL_DB`], made and installed
/// here beside the compiled extension's `postgres`; or `postgres` itself
/// when the suite runs against the SQL flavour (POSTBOX_FLAVOUR=sql).
async fn sql_flavour_db(pg: &Cluster) -> &'static str {
    if pg.flavour == Flavour::Sql {
        return "postgres";
    }
    pg.connect("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {SQL_DB}"))
        .await
        .unwrap();
    pg.install_sql_flavour(SQL_DB).await;
    SQL_DB
}

/// What a call answers: its result as JSON, or an error.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Value),
    Err {
        state: String,
        message: String,
        detail: String,
    },
}

impl Outcome {
    fn of<T>(r: Result<T, RuleError>, ok: impl FnOnce(T) -> Value) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(ok(v)),
            Err(e) => Outcome::Err {
                state: e.code.sqlstate().into(),
                message: e.to_string(),
                detail: e.detail(),
            },
        }
    }
}

/// One input: the SQL expression that calls the function under test (a
/// jsonb), and what postbox-rules answers for it.
struct Case {
    rule: &'static str,
    call: String,
    want: Outcome,
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn lit_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".into(), lit)
}

/// Text PostgreSQL can hold (no NUL); the rest never reaches SQL.
fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// `n` values of `strategy`, the same ones on every run.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| strategy.new_tree(runner).expect("a value").current())
        .collect()
}

/// Runs each case's call in its own subtransaction and reads what it
/// answered.
async fn answers(db: &Client, calls: &[String]) -> Vec<Outcome> {
    db.batch_execute(
        "CREATE OR REPLACE FUNCTION pg_temp.attempt(q text) RETURNS jsonb LANGUAGE plpgsql AS $$
         DECLARE r jsonb; s text; m text; d text;
         BEGIN
             EXECUTE q INTO r;
             RETURN jsonb_build_object('ok', r);
         EXCEPTION WHEN OTHERS THEN
             GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
             RETURN jsonb_build_object('state', s, 'message', m, 'detail', d);
         END $$;",
    )
    .await
    .unwrap();
    let mut out = Vec::with_capacity(calls.len());
    for chunk in calls.chunks(2000) {
        let queries: Vec<String> = chunk.iter().map(|c| format!("SELECT {c}")).collect();
        let rows = db
            .query(
                "SELECT pg_temp.attempt(q) FROM unnest($1::text[]) WITH ORDINALITY AS t(q, n) ORDER BY n",
                &[&queries],
            )
            .await
            .unwrap_or_else(|e| panic!("the calls: {}", pg_error(&e)));
        for row in rows {
            let v: Value = row.get(0);
            out.push(match v.get("ok") {
                Some(ok) => Outcome::Ok(ok.clone()),
                None => Outcome::Err {
                    state: v["state"].as_str().unwrap_or_default().into(),
                    message: v["message"].as_str().unwrap_or_default().into(),
                    // The DETAIL's first line is postbox's (a Rust backtrace may follow).
                    detail: v["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .into(),
                },
            });
        }
    }
    out
}

/// JSON values as the functions receive them: jsonb's own text (passed to
/// the call as it is), and that text parsed, as pgrx hands a jsonb argument
/// to Rust. (Parsing a float's long decimal form may move it by a unit in
/// the last place, so the expectation must come from the same text.)
async fn through_jsonb(db: &Client, values: &[Value]) -> Vec<(String, Value)> {
    let texts: Vec<String> = values.iter().map(Value::to_string).collect();
    db.query(
        "SELECT x::jsonb::text FROM unnest($1::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n",
        &[&texts],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let text: String = r.get(0);
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    })
    .collect()
}

/// The corpus, with what postbox-rules answers for each input. `db` turns
/// JSON inputs into what a jsonb argument reads as; `insecure` is the
/// setting the URL cases run with.
async fn corpus(db: &Client, insecure: bool) -> Vec<Case> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let r = &mut runner;
    let mut cases = Vec::new();

    // Webhook URLs: the SSRF corpus (every spelling of private and reserved
    // addresses), URL-shaped strings that vary each part, and anything.
    let urls = draw(r, corpus::url_like(), 3000)
        .into_iter()
        .chain(draw(r, ".{0,300}", 500))
        .chain(
            draw(r, (corpus::blocked_v4(), 0..14usize), 1000)
                .into_iter()
                .map(|(ip, i)| format!("https://{}/x", corpus::spellings(ip)[i])),
        );
    for u in urls.filter(|u| storable(u)) {
        cases.push(Case {
            rule: "validate_url",
            call: format!("to_jsonb(postbox.validate_url({}))", lit(&u)),
            want: Outcome::of(url::validate(&u, insecure), |n| json!(n.as_str())),
        });
    }
    if insecure {
        return cases; // the rest does not depend on the setting
    }

    // Custom headers, with and without a signature header of their own.
    let raw: Vec<(Value, Option<String>)> = draw(
        r,
        (
            corpus::headers_json(),
            proptest::option::weighted(0.3, corpus::odd_header_name()),
        ),
        3000,
    );
    let raw: Vec<_> = raw
        .into_iter()
        .filter(|(h, s)| !h.to_string().contains("\\u0000") && s.as_deref().is_none_or(storable))
        .collect();
    let headers_in =
        through_jsonb(db, &raw.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>()).await;
    for ((text, h), (_, sig)) in headers_in.into_iter().zip(&raw) {
        cases.push(Case {
            rule: "_validate_headers",
            call: format!(
                "postbox._validate_headers({}::jsonb, {})",
                lit(&text),
                lit_opt(sig.as_deref())
            ),
            want: Outcome::of(headers::validate(&h, sig.as_deref()), Value::Object),
        });
    }

    // Signature styles and headers.
    for (style, header) in draw(
        r,
        (
            corpus::style_like(),
            proptest::option::of(corpus::odd_header_name()),
        ),
        1500,
    ) {
        if !storable(&style) || !header.as_deref().is_none_or(storable) {
            continue;
        }
        let got = SignatureStyle::parse(&style)
            .and_then(|s| headers::validate_signature(s, header.as_deref()));
        cases.push(Case {
            rule: "_validate_signature",
            call: format!(
                "to_jsonb(postbox._validate_signature({}, {}))",
                lit(&style),
                lit_opt(header.as_deref())
            ),
            want: Outcome::of(got, |h| json!(h)),
        });
    }

    // Event names, filter lists against a catalog, close names.
    let names = draw(r, corpus::name_like(), 2000);
    let lists = draw(
        r,
        proptest::collection::vec(corpus::filter_like(), 0..6),
        2000,
    );
    let bulk = draw(
        r,
        proptest::prop_oneof![3 => proptest::strategy::Just(0usize), 1 => 94usize..=101],
        2000,
    );
    for ((name, mut filters), bulk) in names.into_iter().zip(lists).zip(bulk) {
        if !storable(&name) || !filters.iter().all(|f| storable(f)) {
            continue;
        }
        cases.push(Case {
            rule: "_event_match_keys",
            call: format!("to_jsonb(postbox._event_match_keys({}))", lit(&name)),
            want: Outcome::of(event::validate_name(&name), |()| {
                json!(event::match_keys(&name))
            }),
        });
        filters.extend((0..bulk).map(|i| format!("bulk{i}.*")));
        if bulk == 0 {
            filters.push(name.clone());
        }
        let catalog = vec![name.as_str(), "order.paid", "order.created", "invoice.paid"];
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let array = |items: &[&str]| {
            format!(
                "ARRAY[{}]::text[]",
                items.iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
            )
        };
        cases.push(Case {
            rule: "_validate_filters",
            call: format!(
                "to_jsonb(postbox._validate_filters({}, {}))",
                array(&refs),
                array(&catalog)
            ),
            want: Outcome::of(
                event::validate_filters(&refs, |n| catalog.contains(&n), || catalog.clone()),
                |v| json!(v),
            ),
        });
        cases.push(Case {
            rule: "_close_names",
            call: format!(
                "to_jsonb(postbox._close_names({}, {}))",
                lit(&name),
                array(&refs)
            ),
            want: Outcome::Ok(json!(event::close_names(&name, &refs))),
        });
    }

    // Delivery options.
    let raw = draw(r, corpus::options_json(), 3000);
    let raw: Vec<Value> = raw
        .into_iter()
        .filter(|v| !v.to_string().contains("\\u0000"))
        .collect();
    for (text, v) in through_jsonb(db, &raw).await {
        cases.push(Case {
            rule: "_validate_options",
            call: format!("postbox._validate_options({}::jsonb)", lit(&text)),
            want: Outcome::of(options::parse(&v), |_| v.clone()),
        });
    }

    // Secrets for each style.
    for (s, style) in draw(r, (corpus::secret_like(), corpus::style_like()), 3000) {
        if !storable(&s) || !storable(&style) {
            continue;
        }
        let got = SignatureStyle::parse(&style).and_then(|st| secret::validate_for(st, &s));
        cases.push(Case {
            rule: "_validate_secret",
            call: format!(
                // OFFSET 0 and pg_typeof keep the planner from dropping the call.
                "(SELECT 'null'::jsonb FROM (SELECT postbox._validate_secret({}, {}) AS r OFFSET 0) AS v WHERE pg_typeof(v.r) IS NOT NULL)",
                lit(&s),
                lit(&style)
            ),
            want: Outcome::of(got, |()| Value::Null),
        });
    }

    // How messages show values, and key lists show keys.
    for t in draw(r, corpus::text_like(), 1500) {
        if !storable(&t) {
            continue;
        }
        cases.push(Case {
            rule: "_shown",
            call: format!("to_jsonb(postbox._shown({}))", lit(&t)),
            want: Outcome::Ok(json!(error::shown(&t))),
        });
        cases.push(Case {
            rule: "_api_key_prefix",
            call: format!("to_jsonb(postbox._api_key_prefix({}))", lit(&t)),
            want: Outcome::Ok(json!(api_key::shown(&t))),
        });
    }
    cases
}

/// Runs `cases` in `db` and returns the ones answered otherwise, with what
/// each answered; counts what was run, per rule.
async fn differences(
    db: &Client,
    cases: &[Case],
    tally: &mut BTreeMap<&'static str, (usize, usize)>,
) -> Vec<String> {
    let calls: Vec<String> = cases.iter().map(|c| c.call.clone()).collect();
    let got = answers(db, &calls).await;
    let mut out = Vec::new();
    for (case, got) in cases.iter().zip(got) {
        let t = tally.entry(case.rule).or_default();
        match case.want {
            Outcome::Ok(_) => t.0 += 1,
            Outcome::Err { .. } => t.1 += 1,
        }
        if got != case.want {
            out.push(format!(
                "{}: {}\n    want {:?}\n    got  {:?}",
                case.rule, case.call, case.want, got
            ));
        }
    }
    out
}

/// Both flavours answer every input of the corpus exactly as postbox-rules
/// does.
#[tokio::test]
async fn both_flavours_give_the_rules_verdicts_and_messages() {
    // The compiled extension in `postgres`, the SQL flavour in SQL_DB,
    // installed as a role that is not a superuser.
    // (POSTBOX_FLAVOUR=sql: the SQL flavour alone, in `postgres`.)
    let pg = Cluster::start().await;
    let su = pg.connect("postgres").await;
    let beside = match sql_flavour_db(&pg).await {
        SQL_DB => Some(pg.connect_to("postgres", SQL_DB).await),
        _ => None,
    };
    let flavours: Vec<(&str, &Client)> = match &beside {
        Some(sql) => vec![("extension", &su), ("sql", sql)],
        None => vec![("sql", &su)],
    };

    let mut report = Vec::new();
    for insecure in [false, true] {
        let cases = corpus(&su, insecure).await;
        for (name, db) in &flavours {
            let setting = match (*name, insecure) {
                ("extension", v) => format!("SET postbox.allow_insecure_urls = {v}"),
                (_, v) => format!(
                    "UPDATE postbox.settings SET value = '{}' WHERE name = 'allow_insecure_urls'",
                    if v { "on" } else { "off" }
                ),
            };
            db.batch_execute(&setting).await.unwrap();
            let mut tally = BTreeMap::new();
            let diffs = differences(db, &cases, &mut tally).await;
            eprintln!("{name} (insecure URLs {insecure}): {tally:?} (accepted, refused)");
            for (rule, (ok, refused)) in &tally {
                assert!(
                    *ok > 0 && *refused > 0 || matches!(*rule, "_close_names" | "_shown" | "_api_key_prefix"),
                    "the corpus of {rule} must land on both sides: {ok} accepted, {refused} refused"
                );
            }
            report.extend(diffs.into_iter().map(|d| format!("[{name}] {d}")));
        }
    }
    // A few of each rule's differences, and how many each has.
    let mut by_rule: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for d in &report {
        let key = d.split(':').next().unwrap_or_default().to_string();
        by_rule.entry(key).or_default().push(d);
    }
    assert!(
        report.is_empty(),
        "{} answers differ from postbox-rules ({}):\n{}",
        report.len(),
        by_rule
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect::<Vec<_>>()
            .join(", "),
        by_rule
            .values()
            .flat_map(|v| v.iter().take(6))
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The installing role is what a managed service gives: not a superuser.
    let installer_is_superuser: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&INSTALLER],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!installer_is_superuser);
}

/// What the catalog holds about postbox's objects, one line per fact:
/// relations and their columns, constraints, indexes, triggers and
/// options; functions with their signatures, results, attributes, settings
/// and languages; views' definitions; comments; grants, with the owner
/// written as OWNER (the extension's owner is the superuser that created it,
/// the SQL flavour's the role that installed it).
const CATALOG: &str = r#"
WITH owner AS (SELECT n.nspowner AS oid FROM pg_namespace n WHERE n.nspname = 'postbox'),
facts(object, fact) AS (
    SELECT 'schema postbox', 'comment: ' || coalesce(obj_description('postbox'::regnamespace, 'pg_namespace'), '-')
    UNION ALL
    SELECT 'schema postbox', 'acl: ' || coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text)
        FROM unnest((SELECT nspacl FROM pg_namespace WHERE nspname = 'postbox')) a), '-')
    UNION ALL
    SELECT 'relation ' || c.relname, f
      FROM pg_class c, LATERAL (VALUES
          ('kind: ' || c.relkind::text),
          ('options: ' || coalesce(array_to_string(c.reloptions, ','), '-')),
          ('comment: ' || coalesce(obj_description(c.oid, 'pg_class'), '-')),
          ('acl: ' || coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(c.relacl) a), '-')),
          ('view: ' || CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) ELSE '-' END)) AS v(f)
     WHERE c.relnamespace = 'postbox'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'S')
    UNION ALL
    SELECT 'relation ' || c.relname,
           format('column %s: %s%s%s acl %s', a.attname, format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                  coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''),
                  coalesce((SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(a.attacl) x), '-'))
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'postbox'::regnamespace AND c.relkind IN ('r', 'v', 'p')
    UNION ALL
    SELECT 'relation ' || c.relname, 'constraint ' || k.conname || ': ' || pg_get_constraintdef(k.oid)
      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     WHERE c.relnamespace = 'postbox'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname, 'index: ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'postbox'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname, 'trigger: ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'postbox'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, f
      FROM pg_proc p, LATERAL (VALUES
          ('result: ' || coalesce(pg_get_function_result(p.oid), '-')),  -- none: a procedure
          ('arguments: ' || pg_get_function_arguments(p.oid)),
          ('attributes: ' || concat_ws(' ', p.prokind, p.provolatile, p.proparallel,
                                       -- STRICT decides only calls with a NULL argument:
                                       -- none without arguments (postbox-sql's _uuid7 is not,
                                       -- so that it is inlined).
                                       CASE WHEN p.proisstrict AND p.pronargs > 0 THEN 'strict' END,
                                       CASE WHEN p.prosecdef THEN 'definer' END,
                                       CASE WHEN p.proretset THEN 'setof' END)),
          ('language: ' || (SELECT l.lanname FROM pg_language l WHERE l.oid = p.prolang)),
          ('settings: ' || coalesce(array_to_string(p.proconfig, ','), '-')),
          ('comment: ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')),
          ('acl: ' || coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(p.proacl) a), '-'))) AS v(f)
     WHERE p.pronamespace = 'postbox'::regnamespace
)
SELECT object, replace(fact, (SELECT rolname FROM pg_roles WHERE oid = (SELECT oid FROM owner)), 'OWNER')
  FROM facts ORDER BY 1, 2
"#;

/// The [`CATALOG`] facts of a database's postbox. Grants are sorted once
/// the owner is written OWNER: the owners' names sort differently among the
/// roles'.
async fn catalog(db: &Client) -> BTreeMap<(String, String), ()> {
    db.query(CATALOG, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let (object, fact): (String, String) = (r.get(0), r.get(1));
            let fact = match fact.strip_prefix("acl: ") {
                Some(items) => {
                    let mut items: Vec<&str> = items.split(' ').collect();
                    items.sort();
                    format!("acl: {}", items.join(" "))
                }
                None => fact,
            };
            ((object, fact), ())
        })
        .collect()
}

/// [`catalog`] and each function's whole definition (`pg_get_functiondef`:
/// its body too), for comparing two installs of the same flavour, whose
/// bodies must match where the flavours' need not.
async fn catalog_and_bodies(db: &Client) -> BTreeMap<(String, String), ()> {
    let mut facts = catalog(db).await;
    for r in db
        .query(
            "SELECT 'function ' || p.oid::regprocedure::text, 'definition: ' || md5(pg_get_functiondef(p.oid))
               FROM pg_proc p WHERE p.pronamespace = 'postbox'::regnamespace",
            &[],
        )
        .await
        .unwrap()
    {
        facts.insert((r.get(0), r.get(1)), ());
    }
    facts
}

/// The facts only one of two catalogs has, each marked with its side.
fn catalog_difference(
    a: (&str, &BTreeMap<(String, String), ()>),
    b: (&str, &BTreeMap<(String, String), ()>),
) -> Vec<String> {
    let mut differ = Vec::new();
    for ((side, mine), (_, theirs)) in [(a, b), (b, a)] {
        for (object, fact) in mine.keys() {
            if !theirs.contains_key(&(object.clone(), fact.clone())) {
                differ.push(format!("only in {side}: {object}: {fact}"));
            }
        }
    }
    differ
}

/// The facts about the objects the SQL flavour has and the extension does
/// not: what its SQL does where the extension switches user in C or keeps a
/// server setting (sql/flavour/settings.sql, triggers.sql), and, installed
/// with psql, its version, which an extension keeps in pg_extension.
const SQL_ONLY: &[&str] = &[
    "relation settings",
    "function postbox._emit_statement_write(oid,text,text[],text[])",
    "function postbox._emit_row_write(oid,text,json,json,text[])",
    "function postbox._jsonb_may_refuse(text)",
    "function postbox._row_encoding(oid,text[])",
    "function postbox._refuse_unsendable(oid,text,text[],text[])",
    "function postbox._table_name(oid)",
    "function postbox._random_bytes()",
    "function postbox._sql_flavour_version()",
];

/// The facts of a Rust-backed function that may differ: how it is written.
fn how_written(fact: &str) -> bool {
    fact.starts_with("language: ") || fact.starts_with("settings: ")
}

/// Both installs hold the same objects, columns, signatures, attributes,
/// grants and comments; the only differences are the languages of the
/// functions written in Rust, and the SQL flavour's own objects (SQL_ONLY).
#[tokio::test]
async fn both_installs_have_the_same_catalog() {
    let pg = Cluster::start().await;
    if pg.flavour == Flavour::Sql {
        return; // the comparison needs the compiled extension beside it
    }
    let su = pg.connect("postgres").await;
    let sql = pg.connect_to("postgres", sql_flavour_db(&pg).await).await;
    let ext = catalog(&su).await;
    let flavour = catalog(&sql).await;
    // The Rust-backed functions: C in the extension.
    let rust: Vec<String> = ext
        .keys()
        .filter(|(_, f)| f == "language: c")
        .map(|(o, _)| o.clone())
        .collect();
    assert!(rust.len() >= 20, "{rust:?}");
    let mut differ = Vec::new();
    for (side, mine, theirs) in [
        ("only in the extension", &ext, &flavour),
        ("only in postbox-sql", &flavour, &ext),
    ] {
        for (object, fact) in mine.keys() {
            if theirs.contains_key(&(object.clone(), fact.clone())) {
                continue;
            }
            if SQL_ONLY.contains(&object.as_str()) && side == "only in postbox-sql" {
                continue;
            }
            if rust.contains(object) && how_written(fact) {
                continue;
            }
            differ.push(format!("{side}: {object}: {fact}"));
        }
    }
    assert!(
        differ.is_empty(),
        "the installs differ:\n{}",
        differ.join("\n")
    );
    // The worker and the API tell them apart from the catalog.
    let (e, s) = (
        postbox_runtime::installed(&su).await.unwrap(),
        postbox_runtime::installed(&sql).await.unwrap(),
    );
    assert_eq!(e.flavour, postbox_runtime::Flavour::Extension);
    assert_eq!(s.flavour, postbox_runtime::Flavour::Sql);
    assert_eq!(e.version, s.version);
    // Each SQL-only object exists (the list is not stale).
    for object in SQL_ONLY {
        assert!(
            flavour.keys().any(|(o, _)| o == object),
            "{object} is listed as the SQL flavour's own but is not installed"
        );
    }
}

/// A cluster with pg_tle, in target/pg/15-tle (a copy of Debian's
/// PostgreSQL 15 without the compiled postbox beside it: pg_tle refuses a
/// name that a file-based extension has, made by scripts/setup.sh once it
/// has built pg_tle from its source), and [`INSTALLER`] with `pgtle_admin`
/// and CREATEROLE, no superuser. None, said, where pg_tle is not built.
async fn tle_cluster(test: &str) -> Option<Cluster> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/pg/15-tle/usr/lib/postgresql/15/bin");
    if !bin.join("../lib/pg_tle.so").exists() {
        eprintln!(
            "{test}: not run: pg_tle is not built (scripts/setup.sh builds it from PG_TLE_SRC)"
        );
        return None;
    }
    let pg = Cluster::start_bare(bin, &[("shared_preload_libraries", "'pg_tle'")]).await;
    pg.connect("postgres")
        .await
        .batch_execute(&format!(
            "CREATE EXTENSION pg_tle; -- makes the role pgtle_admin
             CREATE ROLE {INSTALLER} LOGIN CREATEROLE;
             GRANT pgtle_admin TO {INSTALLER};"
        ))
        .await
        .unwrap();
    Some(pg)
}

/// Registers postbox-sql `version` (its pg_tle `script`) with pg_tle in
/// `admin`'s database and creates the extension at that version.
async fn tle_install(admin: &Client, version: &str, script: &str) {
    assert!(!script.contains("$postbox_sql$"));
    admin
        .batch_execute(&format!(
            "SELECT pgtle.install_extension('postbox', '{version}', 'postbox: signed webhooks straight out of PostgreSQL (SQL only)', $postbox_sql${script}$postbox_sql$);
             CREATE EXTENSION postbox VERSION '{version}';"
        ))
        .await
        .unwrap_or_else(|e| panic!("pg_tle install of {version}: {}", pg_error(&e)));
}

/// The current postbox-sql as a pg_tle script.
fn tle_script() -> String {
    std::fs::read_to_string(postbox_tests::sql_flavour_script().with_extension("tle.sql")).unwrap()
}

/// postbox-sql installs as a pg_tle extension (what RDS, Aurora and
/// Supabase offer), as a role that is not a superuser: `pgtle_admin`,
/// CREATEROLE and CREATE on the database ([`tle_cluster`]).
#[tokio::test]
async fn installs_as_a_pg_tle_extension() {
    let Some(pg) = tle_cluster("installs_as_a_pg_tle_extension").await else {
        return;
    };
    let su = pg.connect("postgres").await;
    su.batch_execute(&format!("GRANT CREATE ON DATABASE postgres TO {INSTALLER}"))
        .await
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let admin = pg.connect(INSTALLER).await;
    tle_install(&admin, version, &tle_script()).await;
    // What the worker and the API see.
    let installed = postbox_runtime::installed(&su).await.unwrap();
    assert_eq!(installed.flavour, postbox_runtime::Flavour::SqlTle);
    assert_eq!(installed.version, version);
    // It works: an endpoint, an attached table written by an emitter, expansion.
    su.batch_execute(
        "CREATE ROLE app LOGIN IN ROLE postbox_emitter;
         CREATE SCHEMA s AUTHORIZATION app;
         SET ROLE app;
         CREATE TABLE s.orders (id int, tenant text);
         SELECT postbox.attach('s.orders', 'order', 'tenant');
         RESET ROLE;
         SELECT postbox.create_endpoint('t1', 'https://hooks.example.com/in', '{order.*}');
         SET ROLE app;
         INSERT INTO s.orders VALUES (1, 't1'), (2, 't1');
         RESET ROLE;",
    )
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let expanded: i32 = su
        .query_one("SELECT postbox.expand_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(expanded, 2);
    // Its objects belong to the extension: DROP EXTENSION takes them all.
    admin
        .batch_execute("DROP EXTENSION postbox CASCADE")
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    let left: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'postbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// International domain names, the one documented difference of the URL
/// rule (docs/managed.md): a host that normalizes to ASCII is judged as
/// that ASCII (fullwidth digits spelling the loopback address are refused in
/// both flavours); one that stays non-ASCII is refused by the SQL flavour,
/// where the extension accepts it, and its xn-- form is accepted by both.
#[tokio::test]
async fn international_names_are_the_documented_difference() {
    let pg = Cluster::start().await;
    if pg.flavour == Flavour::Sql {
        return; // the comparison needs the compiled extension beside it
    }
    let su = pg.connect("postgres").await;
    let sql = pg.connect_to("postgres", sql_flavour_db(&pg).await).await;
    let call = |u: &str| format!("to_jsonb(postbox.validate_url({}))", lit(u));
    let urls = [
        "https://１２７．０．０．１/hook",
        "https://ｅｘａｍｐｌｅ．ｃｏｍ/hook",
        "https://bücher.example/hook",
        "https://xn--bcher-kva.example/hook",
    ];
    let calls: Vec<String> = urls.iter().map(|u| call(u)).collect();
    let ext = answers(&su, &calls).await;
    let flavour = answers(&sql, &calls).await;
    let want = |u: &str| Outcome::of(url::validate(u, false), |n| json!(n.as_str()));
    // The same in both, and as postbox-rules says.
    for i in [0, 1, 3] {
        assert_eq!(ext[i], want(urls[i]), "{}", urls[i]);
        assert_eq!(flavour[i], want(urls[i]), "{}", urls[i]);
    }
    assert!(matches!(&ext[0], Outcome::Err { message, .. } if message.contains("loopback")));
    assert_eq!(ext[1], Outcome::Ok(json!("https://example.com/hook")));
    assert_eq!(
        ext[3],
        Outcome::Ok(json!("https://xn--bcher-kva.example/hook"))
    );
    // The difference: accepted by the extension, refused by the SQL flavour.
    assert_eq!(
        ext[2],
        Outcome::Ok(json!("https://xn--bcher-kva.example/hook"))
    );
    match &flavour[2] {
        Outcome::Err {
            message, detail, ..
        } => {
            assert_eq!(
                message,
                "postbox: webhook URL must be a valid absolute URL (invalid international domain name): https://bücher.example/hook"
            );
            assert_eq!(detail, r#"{"code":"url_invalid","field":"url"}"#);
        }
        other => panic!("the SQL flavour accepted a non-ASCII host: {other:?}"),
    }
}

/// The SQL flavour's two settings (postbox.settings): only the installing
/// role, which owns them, changes them, within the compiled extension's
/// ranges; postbox_admin, the emitters and the worker cannot, and a
/// session's SET of the server setting's name changes nothing.
#[tokio::test]
async fn only_the_owner_changes_the_settings() {
    let pg = Cluster::start().await;
    let db = sql_flavour_db(&pg).await;
    let sql = pg.connect_to("postgres", db).await;
    sql.batch_execute(
        "SELECT postbox.create_event_type('order.paid');
         CREATE ROLE ops LOGIN IN ROLE postbox_admin;
         CREATE ROLE app LOGIN IN ROLE postbox_emitter;
         CREATE ROLE courier LOGIN IN ROLE postbox_worker;",
    )
    .await
    .unwrap();
    for role in ["ops", "app", "courier"] {
        let c = pg.connect_to(role, db).await;
        for change in [
            "UPDATE postbox.settings SET value = 'on' WHERE name = 'allow_insecure_urls'",
            "INSERT INTO postbox.settings VALUES ('allow_insecure_urls', 'on')",
            "DELETE FROM postbox.settings",
            "ALTER TABLE postbox.settings DROP CONSTRAINT allow_insecure_urls_is_on_or_off",
        ] {
            let e = c.batch_execute(change).await.unwrap_err();
            assert_eq!(
                e.code().map(|c| c.code()),
                Some("42501"),
                "{role}: {change}: {e:?}"
            );
        }
        // The server setting's name, set in the session, is not postbox's setting here.
        c.batch_execute(
            "SET postbox.allow_insecure_urls = on; SET postbox.max_payload_bytes = 67108864",
        )
        .await
        .unwrap();
        if role != "app" {
            let insecure: bool = c
                .query_one("SELECT postbox._allow_insecure_urls()", &[])
                .await
                .unwrap()
                .get(0);
            assert!(!insecure, "{role}");
        }
        if role == "ops" {
            let e = c
                .batch_execute("SELECT postbox.create_endpoint('t', 'http://127.0.0.1:8080/hook')")
                .await
                .unwrap_err();
            assert!(pg_error(&e).contains("must use https"), "{}", pg_error(&e));
        }
    }
    // The owner: within the ranges, and the change holds for every session.
    let owner = pg.connect_to(INSTALLER, db).await;
    for bad in [
        "UPDATE postbox.settings SET value = 'yes' WHERE name = 'allow_insecure_urls'",
        "UPDATE postbox.settings SET value = '1023' WHERE name = 'max_payload_bytes'",
        "UPDATE postbox.settings SET value = '67108865' WHERE name = 'max_payload_bytes'",
        "INSERT INTO postbox.settings VALUES ('max_payload', '1')",
    ] {
        let e = owner.batch_execute(bad).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{bad}: {e:?}");
    }
    owner
        .batch_execute(
            "UPDATE postbox.settings SET value = '1024' WHERE name = 'max_payload_bytes'",
        )
        .await
        .unwrap();
    let app = pg.connect_to("app", db).await;
    let e = app
        .batch_execute(&format!(
            "SELECT postbox.emit('t', 'order.paid', '{{\"pad\": \"{}\"}}')",
            "x".repeat(1100)
        ))
        .await
        .unwrap_err();
    assert!(
        pg_error(&e).contains("at most postbox.max_payload_bytes (1024) bytes"),
        "{}",
        pg_error(&e)
    );
    owner
        .batch_execute(
            "UPDATE postbox.settings SET value = 'on' WHERE name = 'allow_insecure_urls'",
        )
        .await
        .unwrap();
    let ops = pg.connect_to("ops", db).await;
    ops.batch_execute("SELECT postbox.create_endpoint('t', 'http://127.0.0.1:8080/hook')")
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
}

/// In the SQL flavour, a role that writes to an attached table must be a
/// member of postbox_emitter (docs/managed.md): the emit triggers' write as
/// the owner is a function granted to it. Any other writer is refused with
/// 42501 and its statement is undone. (A role without USAGE on the schema
/// postbox gets PostgreSQL's own "permission denied for schema postbox":
/// the trigger cannot reach postbox._raise to name the rule.)
#[tokio::test]
async fn writers_of_attached_tables_must_be_emitters() {
    let pg = Cluster::start().await;
    let db = sql_flavour_db(&pg).await;
    let sql = pg.connect_to("postgres", db).await;
    sql.batch_execute(
        "CREATE ROLE outsider LOGIN;
         CREATE ROLE app LOGIN IN ROLE postbox_emitter;
         CREATE SCHEMA s;
         CREATE TABLE s.orders (id int, tenant text);
         GRANT USAGE ON SCHEMA s TO outsider, app;
         GRANT INSERT, UPDATE, DELETE, SELECT ON s.orders TO outsider, app;
         SELECT postbox.attach('s.orders', 'order', 'tenant');",
    )
    .await
    .unwrap();
    let outsider = pg.connect_to("outsider", db).await;
    let app = pg.connect_to("app", db).await;
    outsider
        .batch_execute("INSERT INTO s.orders VALUES (1, 't')")
        .await
        .expect_err("an outsider's insert into an attached table");
    app.batch_execute("INSERT INTO s.orders VALUES (2, 't')")
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    // The outsider's UPDATE and DELETE reach the row the emitter wrote.
    for write in [
        "INSERT INTO s.orders VALUES (1, 't')",
        "UPDATE s.orders SET tenant = 'u'",
        "DELETE FROM s.orders",
    ] {
        let e = outsider.batch_execute(write).await.unwrap_err();
        assert_eq!(
            e.code().map(|c| c.code()),
            Some("42501"),
            "{write}: {}",
            pg_error(&e)
        );
    }
    let (rows, emitted): (i64, i64) = sql
        .query_one(
            "SELECT (SELECT count(*) FROM s.orders WHERE tenant = 't'), (SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (rows, emitted),
        (1, 1),
        "only the emitter's insert and its event"
    );
}

/// A session on each install the cluster has: the SQL flavour's, then,
/// unless the suite runs against the SQL flavour alone, the extension's.
async fn installs(pg: &Cluster) -> Vec<Client> {
    let mut installs = vec![pg.connect_to("postgres", sql_flavour_db(pg).await).await];
    if pg.flavour != Flavour::Sql {
        installs.push(pg.connect("postgres").await);
    }
    installs
}

/// A statement as a message shows it: its start.
fn shown(statement: &str) -> String {
    statement.chars().take(120).collect()
}

/// What a statement on an attached table comes to: written, or refused
/// with a SQLSTATE and message.
async fn outcome(db: &Client, statement: &str) -> Result<(), (String, String)> {
    let result = db.batch_execute(&format!("BEGIN; {statement}")).await;
    db.batch_execute("ROLLBACK").await.unwrap();
    result.map_err(|e| {
        let d = e
            .as_db_error()
            .unwrap_or_else(|| panic!("{statement}: {e}"));
        (d.code().code().to_string(), d.message().to_string())
    })
}

/// The emit triggers refuse the same rows in both flavours, for the same
/// reasons, and let through what only looks like a refusal: rows that are
/// valid json but not jsonb (a json column can hold them), rows larger than
/// postbox.max_payload_bytes, and statements whose rows together are larger
/// but each within it. The SQL flavour checks a statement's rows only when a
/// check could fail (sql/flavour/triggers.sql): the cases on either side of
/// each shortcut are here. Run against each install the cluster has, and
/// compared when it has both.
#[tokio::test]
async fn both_flavours_refuse_the_same_rows() {
    let pg = Cluster::start().await;
    let installs = installs(&pg).await;
    let digits = format!("1{}", "0".repeat(300));
    let large = "x".repeat(300_000);
    // (statement, refused with this message start, or written)
    let cases: Vec<(String, Option<&str>)> = vec![
        (r#"INSERT INTO app.docs VALUES (1, 't', '{"ok": 1}')"#.into(), None),
        (r#"INSERT INTO app.docs VALUES (1, 't', '{"a": "\u00e9\u0001"}')"#.into(), None),
        (r#"INSERT INTO app.docs VALUES (1, 't', '{"a": 1e1000}')"#.into(), None),
        (format!(r#"INSERT INTO app.docs VALUES (1, 't', '{{"a": {digits}}}')"#), None),
        (r#"INSERT INTO app.docs VALUES (1, 't', '{"a": "\u0000"}'), (2, 't', '{}')"#.into(),
         Some("postbox: a row of app.docs cannot be sent as doc event data: ")),
        (r#"INSERT INTO app.docs VALUES (1, 't', '{"a": 1e999999}')"#.into(),
         Some("postbox: a row of app.docs cannot be sent as doc event data: ")),
        (r#"INSERT INTO app.docs VALUES (2, 't', '{}'), (1, 't', '{"a": "\ud800"}')"#.into(),
         Some("postbox: a row of app.docs cannot be sent as doc event data: ")),
        (format!(r#"INSERT INTO app.docs VALUES (1, 't', '{{"a": "{large}"}}')"#),
         Some("postbox: a row of app.docs is larger than postbox.max_payload_bytes (262144 bytes) allows for doc events: 300038 bytes")),
        // 400 rows of about 1 KB: the statement is larger than the limit, no row is.
        ("INSERT INTO app.docs SELECT i, 't', json_build_object('a', repeat('y', 1000)) FROM generate_series(1, 400) i".into(), None),
        // The first row too large is named, in the statement's order.
        ("INSERT INTO app.docs SELECT i, 't', json_build_object('a', repeat('y', CASE i WHEN 3 THEN 300000 WHEN 5 THEN 400000 ELSE 1000 END)) FROM generate_series(1, 400) i".into(),
         Some("postbox: a row of app.docs is larger than postbox.max_payload_bytes (262144 bytes) allows for doc events: 300039 bytes")),
        (r#"UPDATE app.docs SET body = '{"a": "\u0000"}'"#.into(),
         Some("postbox: a row of app.docs cannot be sent as doc event data: ")),
        (r#"UPDATE app.docs SET body = '{"a": 1e1000}'"#.into(), None),
        ("DELETE FROM app.docs".into(), None),
    ];
    let mut seen = Vec::new();
    for db in &installs {
        db.batch_execute(
            r#"CREATE SCHEMA app;
               CREATE TABLE app.docs (id int, tenant text, body json);
               SELECT postbox.attach('app.docs', 'doc', 'tenant', '{id, body}');
               INSERT INTO app.docs VALUES (9, 't', '{"kept": true}');"#,
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
        let mut outcomes = Vec::new();
        for (statement, refused) in &cases {
            let got = outcome(db, statement).await;
            match (refused, &got) {
                (None, Ok(())) => {}
                (Some(start), Err((state, message)))
                    if state == "22023" && message.starts_with(start) => {}
                _ => panic!("{statement}: {got:?}, expected {refused:?}"),
            }
            outcomes.push(got);
        }
        seen.push(outcomes);
    }
    if let [sql, ext] = &seen[..] {
        for ((statement, _), (s, e)) in cases.iter().zip(sql.iter().zip(ext)) {
            assert_eq!(
                s,
                e,
                "{}: the SQL flavour, then the extension",
                shown(statement)
            );
        }
    }
}

/// The owner's writes behind the SQL flavour's triggers are functions an
/// emitter may call: called by hand, with what the triggers would never
/// pass, they write nothing postbox.emit could not. Each forged call is
/// refused (22023, naming the rule) and leaves postbox.emitted as it was;
/// what a trigger would pass is written.
#[tokio::test]
async fn direct_calls_of_the_writes_write_nothing_emit_could_not() {
    let pg = Cluster::start().await;
    let db = sql_flavour_db(&pg).await;
    let owner = pg.connect_to("postgres", db).await;
    owner
        .batch_execute(
            "CREATE ROLE app LOGIN IN ROLE postbox_emitter;
             CREATE SCHEMA s;
             CREATE TABLE s.orders (id int, tenant text);
             GRANT USAGE ON SCHEMA s TO app;
             SELECT postbox.attach('s.orders', 'order', 'tenant');",
        )
        .await
        .unwrap();
    let app = pg.connect_to("app", db).await;
    let count = || async {
        owner
            .query_one("SELECT count(*) FROM postbox.emitted WHERE tenant IS DISTINCT FROM 'postbox:operator'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let statement = |ty: &str, rows: &str, args: &str| {
        format!("SELECT postbox._emit_statement_write('s.orders'::regclass, {ty}, {rows}, {args})")
    };
    let big = format!("'{{\"a\": \"{}\"}}'", "x".repeat(300_000));
    let forged = [
        (statement("'x.created'", "ARRAY['{\"id\":1}']", "'{order,tenant}'"), "emit_statement encoded"),
        (statement("'order.created'", "ARRAY['{\"id\":1}']", "'{order}'"), "emit_statement encoded"),
        (statement("'order.created'", "ARRAY['{\"id\":1}']", "ARRAY['order', NULL]"), "emit_statement encoded"),
        (statement("'order.created'", "NULL", "'{order,tenant}'"), "emit_statement encoded"),
        (statement("'order.created'", "'{}'::text[]", "'{order,tenant}'"), "emit_statement encoded"),
        (statement("'order.created'", "'{{\"{}\"},{\"{}\"}}'::text[]", "'{order,tenant}'"), "emit_statement encoded"),
        (statement("'order.created'", "ARRAY['{}', NULL]", "'{order,tenant}'"), "emit_statement encoded"),
        (statement("'order.created'", &format!("ARRAY['{{}}', {big}]"), "'{order,tenant}'"), "larger than postbox.max_payload_bytes"),
        (statement("'order.created'", "ARRAY['{\"a\": \"\\u0000\"}']", "'{order,tenant}'"), "cannot be sent as order event data"),
        (statement("'order.created'", "ARRAY['{\"id\":1}]', '[{\"id\":2}']", "'{order,tenant}'"), "invalid input syntax for type json"),
        (statement("'nope.created'", "ARRAY['{\"id\":1}']", "'{nope,tenant}'"), "unknown event type"),
        // postbox's own events, which only postbox writes (a row whose
        // tenant is the operator's would otherwise reach its endpoints).
        (statement("'postbox.endpoint.created'", "ARRAY['{\"id\":1,\"tenant\":\"postbox:operator\"}']", "'{postbox.endpoint,tenant}'"), "postbox's own"),
        ("SELECT postbox._emit_row_write('s.orders'::regclass, 'INSERT', '{\"tenant\":\"postbox:operator\"}', NULL, '{postbox.endpoint,tenant}')".into(), "postbox's own"),
        (statement("'order.created'", "ARRAY['{}']", "'{{order,tenant},{a,b}}'"), "emit_statement encoded"),
        ("SELECT postbox._emit_row_write('s.orders'::regclass, 'TRUNCATE', '{}', NULL, '{order,tenant}')".into(), "emit_row_change encoded"),
        ("SELECT postbox._emit_row_write('s.orders'::regclass, 'INSERT', '{}', NULL, '{{order,tenant},{a,b}}')".into(), "emit_row_change encoded"),
        ("SELECT postbox._emit_row_write('s.orders'::regclass, 'INSERT', '[1]', NULL, '{order,tenant}')".into(), "emit_row_change encoded"),
        ("SELECT postbox._emit_row_write('s.orders'::regclass, 'UPDATE', '{}', NULL, '{order,tenant}')".into(), "emit_row_change encoded"),
        (format!("SELECT postbox._emit_row_write('s.orders'::regclass, 'INSERT', {big}, NULL, '{{order,tenant}}')"), "larger than postbox.max_payload_bytes"),
    ];
    for (call, rule) in &forged {
        let e = app.batch_execute(call).await.expect_err(&shown(call));
        let d = e.as_db_error().unwrap();
        assert!(
            d.message().contains(rule) && ["22023", "22P02"].contains(&d.code().code()),
            "{}: {} {}",
            shown(call),
            d.code().code(),
            d.message()
        );
        assert_eq!(count().await, 0, "{}: nothing written", shown(call));
    }
    // What the triggers pass is written: an event emit could send too.
    app.batch_execute(&statement(
        "'order.created'",
        "ARRAY['{\"id\":1,\"tenant\":\"t\"}']",
        "'{order,tenant}'",
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
    assert_eq!(count().await, 1);
}

/// A released version, its frozen install, and the upgrade steps (each the
/// version it reaches and its script) to the current version.
type Chain = (String, PathBuf, Vec<(String, PathBuf)>);

/// Each released postbox-sql version (its frozen install in
/// sql/released/flavour), oldest first, with the upgrade scripts that take
/// it to the current version: frozen ones into released versions, then the
/// one scripts/sql-flavour.py makes into this one. `form` is "sql" (psql)
/// or "tle.sql" (pg_tle).
fn upgrade_chains(form: &str) -> Vec<Chain> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let released = root.join("sql/released/flavour");
    let generated = postbox_tests::sql_flavour_script()
        .parent()
        .unwrap()
        .to_path_buf();
    let current = env!("CARGO_PKG_VERSION");
    let step_from = |at: &str| -> (String, PathBuf) {
        for dir in [&released, &generated] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let next = name
                    .strip_prefix(&format!("postbox-sql--{at}--"))
                    .and_then(|n| n.strip_suffix(&format!(".{form}")))
                    .filter(|n| n.split('.').count() == 3);
                if let Some(next) = next {
                    return (next.to_string(), dir.join(&name));
                }
            }
        }
        panic!("no postbox-sql upgrade ({form}) from {at} toward {current}")
    };
    let mut chains = Vec::new();
    for entry in std::fs::read_dir(&released).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(v) = name
            .strip_prefix("postbox-sql--")
            .and_then(|n| n.strip_suffix(&format!(".{form}")))
            .filter(|v| !v.contains("--") && v.split('.').count() == 3)
        else {
            continue;
        };
        let mut steps = Vec::new();
        let mut at = v.to_string();
        while at != current {
            let (next, path) = step_from(&at);
            steps.push((next.clone(), path));
            at = next;
        }
        chains.push((v.to_string(), released.join(&name), steps));
    }
    chains.sort();
    chains
}

/// Data an upgrade must keep: an endpoint, an attached table and an event
/// it emitted, not yet expanded.
const KEPT: &str = "CREATE SCHEMA s;
     CREATE TABLE s.orders (id int, tenant text);
     SELECT postbox.attach('s.orders', 'order', 'tenant');
     SELECT postbox.create_endpoint('t1', 'https://hooks.example.com/in', '{order.*}');
     INSERT INTO s.orders VALUES (1, 't1');";

/// What [`KEPT`] left, after an upgrade: the endpoint, and the event, which
/// expands to one delivery.
async fn assert_kept(db: &Client) {
    let endpoints: i64 = db
        .query_one("SELECT count(*) FROM postbox.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(endpoints, 1);
    let expanded: i32 = db
        .query_one("SELECT postbox.expand_events()", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)))
        .get(0);
    assert_eq!(expanded, 1, "the event emitted before the upgrade");
}

/// postbox-sql installed with psql upgrades like the extension: each
/// released version, installed from its frozen script by the installing
/// role and holding data, then upgraded with psql along its scripts, has
/// the catalog of a fresh install (every object, column, grant, comment)
/// and its data.
#[tokio::test]
async fn psql_upgrades_match_a_fresh_install() {
    let pg = Cluster::start().await;
    let fresh_db = sql_flavour_db(&pg).await;
    let fresh = catalog_and_bodies(&pg.connect_to("postgres", fresh_db).await).await;
    let chains = upgrade_chains("sql");
    assert!(
        !chains.is_empty(),
        "no released postbox-sql in sql/released/flavour"
    );
    let su = pg.connect("postgres").await;
    for (version, install, steps) in chains {
        let db = format!("up_{}", version.replace('.', "_"));
        su.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        pg.install_sql_flavour_from(&db, &install).await;
        let old = pg.connect_to("postgres", &db).await;
        old.batch_execute(KEPT)
            .await
            .unwrap_or_else(|e| panic!("{version}: {}", pg_error(&e)));
        for (_, script) in &steps {
            pg.run_as_installer(&db, script).await;
        }
        let upgraded = catalog_and_bodies(&old).await;
        let differ =
            catalog_difference(("a fresh install", &fresh), ("the upgraded one", &upgraded));
        assert!(
            differ.is_empty(),
            "postbox-sql {version} upgraded differs:\n{}",
            differ.join("\n")
        );
        assert_kept(&old).await;
        // Each script checks what it upgrades: run again, it refuses.
        if let Some((_, last)) = steps.last() {
            let sql = std::fs::read_to_string(last).unwrap();
            let e = pg
                .connect_to(INSTALLER, &db)
                .await
                .batch_execute(&sql)
                .await
                .expect_err("an upgrade script run twice");
            assert!(
                pg_error(&e).contains("this script upgrades"),
                "{}",
                pg_error(&e)
            );
        }
    }
}

/// A new database `name` with pg_tle, for one install (pg_tle keeps its
/// extensions per database); a session in it as [`INSTALLER`].
async fn tle_database(pg: &Cluster, name: &str) -> Client {
    let su = pg.connect("postgres").await;
    // Statements of their own: CREATE DATABASE cannot run in a transaction block.
    su.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    su.batch_execute(&format!("GRANT CREATE ON DATABASE {name} TO {INSTALLER}"))
        .await
        .unwrap();
    pg.connect_to("postgres", name)
        .await
        .batch_execute("CREATE EXTENSION pg_tle")
        .await
        .unwrap();
    pg.connect_to(INSTALLER, name).await
}

/// postbox-sql as a pg_tle extension upgrades through
/// pgtle.install_update_path and ALTER EXTENSION ... UPDATE: each released
/// version, installed from its frozen pg_tle script by a role that is not a
/// superuser, ends up with the catalog of a fresh pg_tle install of the
/// current version, and its data.
#[tokio::test]
async fn pg_tle_upgrades_match_a_fresh_install() {
    let Some(pg) = tle_cluster("pg_tle_upgrades_match_a_fresh_install").await else {
        return;
    };
    let current = env!("CARGO_PKG_VERSION");
    tle_install(&tle_database(&pg, "fresh").await, current, &tle_script()).await;
    let fresh = catalog_and_bodies(&pg.connect_to("postgres", "fresh").await).await;
    let chains = upgrade_chains("tle.sql");
    assert!(!chains.is_empty());
    for (version, install, steps) in chains {
        let db = format!("up_{}", version.replace('.', "_"));
        let admin = tle_database(&pg, &db).await;
        tle_install(
            &admin,
            &version,
            &std::fs::read_to_string(&install).unwrap(),
        )
        .await;
        let old = pg.connect_to("postgres", &db).await;
        old.batch_execute(KEPT)
            .await
            .unwrap_or_else(|e| panic!("{version}: {}", pg_error(&e)));
        let mut at = version.clone();
        for (next, path) in &steps {
            let script = std::fs::read_to_string(path).unwrap();
            admin
                .batch_execute(&format!(
                    "SELECT pgtle.install_update_path('postbox', '{at}', '{next}', $postbox_sql${script}$postbox_sql$);"
                ))
                .await
                .unwrap_or_else(|e| panic!("{at} -> {next}: {}", pg_error(&e)));
            at = next.clone();
        }
        admin
            .batch_execute(&format!("ALTER EXTENSION postbox UPDATE TO '{current}'"))
            .await
            .unwrap_or_else(|e| panic!("{version} -> {current}: {}", pg_error(&e)));
        let installed = postbox_runtime::installed(&old).await.unwrap();
        assert_eq!(installed.version, current);
        let upgraded = catalog_and_bodies(&old).await;
        let differ =
            catalog_difference(("a fresh install", &fresh), ("the upgraded one", &upgraded));
        assert!(
            differ.is_empty(),
            "postbox-sql {version} upgraded through pg_tle differs:\n{}",
            differ.join("\n")
        );
        assert_kept(&old).await;
    }
}

/// A statement whose rows are larger together than one chunk (8 MiB,
/// CHUNK_BYTES in extension/src/trigger.rs) is written as several emitted
/// rows, in both flavours alike: each row once, in the statement's order,
/// and every event expanded.
#[tokio::test]
async fn large_statements_are_split_into_chunks_alike() {
    let pg = Cluster::start().await;
    let installs = installs(&pg).await;
    let mut seen = Vec::new();
    for db in &installs {
        // 3,000 rows of about 4 KB: about 12 MB, more than one chunk.
        db.batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.docs (n int, tenant text, body text);
             SELECT postbox.attach('app.docs', 'doc', 'tenant');
             SELECT postbox.create_endpoint('t', 'https://hooks.example.com/in', '{doc.*}');
             INSERT INTO app.docs SELECT i, 't', repeat('x', 4000) FROM generate_series(1, 3000) i;",
        )
        .await
        .unwrap_or_else(|e| panic!("{}", pg_error(&e)));
        let chunks: Vec<(i64, i32, i32)> = db
            .query(
                "SELECT json_array_length(rows)::int8, (rows -> 0 ->> 'n')::int,
                        (rows -> (json_array_length(rows) - 1) ->> 'n')::int
                   FROM postbox.emitted WHERE rows IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert!(chunks.len() >= 2, "{chunks:?}");
        assert_eq!(chunks.iter().map(|c| c.0).sum::<i64>(), 3000);
        // In order: each chunk starts where the one before ended.
        assert_eq!(chunks[0].1, 1);
        assert_eq!(chunks.last().unwrap().2, 3000);
        for pair in chunks.windows(2) {
            assert_eq!(pair[1].1, pair[0].2 + 1, "{chunks:?}");
        }
        let mut expanded = 0;
        loop {
            let n: i32 = db
                .query_one("SELECT postbox.expand_events(10000)", &[])
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            expanded += n;
        }
        assert_eq!(
            expanded,
            3000 + 1,
            "the rows, and the operator's notice of the endpoint"
        );
        seen.push(chunks);
    }
    if let [sql, ext] = &seen[..] {
        assert_eq!(sql, ext, "the SQL flavour's chunks, then the extension's");
    }
}
