//! The list of error codes (`postbox_rules::codes`) is the only one. Rust
//! cannot name a code that is not in it (`Code` is an enum); these tests
//! hold the other places to it: every error postbox's SQL raises goes
//! through `postbox._raise` with a listed code, the portal's words are for
//! listed codes, and docs/errors.md shows the list as it is
//! (`POSTBOX_BLESS=1` rewrites its table).

use postbox_rules::codes::Code;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The SQL the extension installs now: sql/ and its folders, without the
/// frozen install scripts (sql/released) and the upgrade scripts.
fn current_sql() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "released" {
                    walk(&path, out);
                }
            } else if name.ends_with(".sql") && !name.starts_with("postbox--") {
                out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("sql"), &mut out);
    out.sort();
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Punct(char),
}

/// SQL as words, string literals and punctuation, without comments.
/// Dollar-quoted bodies are read as SQL too (PL/pgSQL is inside them).
fn tokens(sql: &str) -> Vec<(usize, Token)> {
    let b = sql.as_bytes();
    let line = |i: usize| sql[..i].matches('\n').count() + 1;
    let (mut i, mut out) = (0, Vec::new());
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2 + sql[i + 2..].find("*/").expect("an unclosed comment") + 2;
        } else if c == b'\'' {
            let start = i;
            let mut text = String::new();
            i += 1;
            loop {
                match b[i] {
                    b'\'' if b.get(i + 1) == Some(&b'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    b'\'' => break,
                    _ => {
                        let ch = sql[i..].chars().next().unwrap();
                        text.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            i += 1;
            out.push((line(start), Token::Text(text)));
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((line(start), Token::Word(sql[start..i].to_string())));
        } else {
            if !c.is_ascii_whitespace() {
                out.push((line(i), Token::Punct(c as char)));
            }
            i += sql[i..].chars().next().unwrap().len_utf8();
        }
    }
    out
}

fn word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.eq_ignore_ascii_case(w))
}

/// Every error in the SQL is raised by `postbox._raise` with a literal,
/// listed code: no `RAISE EXCEPTION` (which carries no code), and nothing
/// in a code's place that is not a listed code.
fn check_sql(name: &str, sql: &str) -> (Vec<String>, usize) {
    let t = tokens(sql);
    let mut failures = Vec::new();
    let mut calls = 0;
    // The SQL flavour's postbox._raise itself (sql/flavour/native.sql) is
    // the one place that raises: from its CREATE to the end of its body.
    let own = (0..t.len()).find(|&k| {
        word(&t[k].1, "CREATE")
            && t.get(k + 1).is_some_and(|(_, w)| word(w, "FUNCTION"))
            && t.get(k + 2).is_some_and(|(_, w)| word(w, "postbox"))
            && t.get(k + 4).is_some_and(|(_, w)| word(w, "_raise"))
    });
    let own = own.map(|start| {
        // The body is between the first two `$fn$`.
        let quotes: Vec<usize> = (start..t.len().saturating_sub(2))
            .filter(|&k| {
                t[k].1 == Token::Punct('$')
                    && word(&t[k + 1].1, "fn")
                    && t[k + 2].1 == Token::Punct('$')
            })
            .take(2)
            .collect();
        start..quotes.get(1).copied().unwrap_or(t.len())
    });
    // The literal codes a variable is given (`v_code := 'code'`), for a
    // call that raises with the variable.
    let assigned = |var: &str| -> Vec<String> {
        t.windows(4)
            .filter(|w| {
                word(&w[0].1, var) && w[1].1 == Token::Punct(':') && w[2].1 == Token::Punct('=')
            })
            .filter_map(|w| match &w[3].1 {
                Token::Text(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    for (k, (line, tok)) in t.iter().enumerate() {
        let at = format!("{name}:{line}");
        if own.as_ref().is_some_and(|r| r.contains(&k)) {
            continue;
        }
        if word(tok, "RAISE") {
            let next = t.get(k + 1).map(|(_, n)| n);
            let fine = matches!(next, Some(Token::Punct(';')))
                || ["NOTICE", "WARNING", "INFO", "LOG", "DEBUG"]
                    .iter()
                    .any(|l| next.is_some_and(|n| word(n, l)));
            if !fine {
                failures.push(format!(
                    "{at}: RAISE of an error: use PERFORM postbox._raise(code, field, message)"
                ));
            }
        }
        if word(tok, "ERRCODE") {
            failures.push(format!(
                "{at}: ERRCODE: postbox._raise sets the SQLSTATE from the code"
            ));
        }
        // A call, not the function named in COMMENT ON or GRANT ON FUNCTION.
        let named = k > 0 && word(&t[k - 1].1, "FUNCTION");
        let is_call = !named
            && word(tok, "postbox")
            && matches!(t.get(k + 1), Some((_, Token::Punct('.'))))
            && t.get(k + 2).is_some_and(|(_, n)| word(n, "_raise"))
            && matches!(t.get(k + 3), Some((_, Token::Punct('('))));
        if !is_call {
            continue;
        }
        calls += 1;
        // The first argument: up to the first comma outside parentheses.
        let mut depth = 0;
        let mut codes = Vec::new();
        let mut first = Vec::new();
        for (_, a) in &t[k + 4..] {
            match a {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') if depth == 0 => break,
                Token::Punct(')') => depth -= 1,
                Token::Punct(',') if depth == 0 => break,
                Token::Text(s) => codes.push(s.clone()),
                _ => {}
            }
            first.push(a);
        }
        // A variable: every literal it is given must be a listed code.
        if let [Token::Word(var)] = first.as_slice() {
            codes = assigned(var);
        }
        if codes.is_empty() {
            failures.push(format!("{at}: postbox._raise without a literal code"));
        }
        for c in codes {
            if Code::parse(&c).is_none() {
                failures.push(format!(
                    "{at}: the code '{c}' is not in postbox_rules::codes (add it there, with its line)"
                ));
            }
        }
    }
    (failures, calls)
}

#[test]
fn every_error_in_the_sql_is_raised_with_a_listed_code() {
    let files = current_sql();
    assert!(files.len() >= 5, "{files:?}");
    let (mut failures, mut calls) = (Vec::new(), 0);
    for (path, sql) in &files {
        let name = path.strip_prefix(repo()).unwrap().display().to_string();
        let (f, n) = check_sql(&name, sql);
        failures.extend(f);
        calls += n;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(calls >= 60, "only {calls} calls of postbox._raise found");
}

#[test]
fn the_check_finds_what_it_must() {
    let bad = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            -- RAISE EXCEPTION in a comment is fine, as is 'RAISE EXCEPTION' in a text
            RAISE NOTICE 'fine';
            PERFORM postbox._raise('required', 'x', format('postbox: %s, %s', 'a', 'b'));
            PERFORM postbox._raise(CASE WHEN true THEN 'required' ELSE 'out_of_range' END, NULL, 'm');
            PERFORM postbox._raise('no_such_code', 'x', 'postbox: m');
            PERFORM postbox._raise(v_code, 'x', 'postbox: m');
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'postbox: m';
            RAISE 'postbox: m';
        EXCEPTION WHEN OTHERS THEN
            RAISE;
        END $fn$;
    COMMENT ON FUNCTION postbox._raise(text, text, text, text) IS 'x';";
    let (failures, calls) = check_sql("bad.sql", bad);
    assert_eq!(calls, 4);
    let want = [
        "bad.sql:7: the code 'no_such_code' is not in",
        "bad.sql:8: postbox._raise without a literal code",
        "bad.sql:9: RAISE of an error",
        "bad.sql:9: ERRCODE",
        "bad.sql:10: RAISE of an error",
    ];
    assert_eq!(failures.len(), want.len(), "{failures:#?}");
    for (f, w) in failures.iter().zip(want) {
        assert!(f.starts_with(w), "{f} should start with {w}");
    }
}

/// The portal's words for people: one table in app.js, keyed by code.
#[test]
fn the_portals_words_are_for_listed_codes() {
    let js = std::fs::read_to_string(repo().join("api/portal/app.js")).unwrap();
    let start = js
        .find("const RULE_WORDS = {")
        .expect("app.js holds its words in `const RULE_WORDS = {`");
    let table = &js[start..start + js[start..].find("\n};").unwrap()];
    let mut keys = 0;
    for line in table.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let key = line.split(':').next().unwrap().trim();
        assert!(
            Code::parse(key).is_some(),
            "app.js RULE_WORDS: '{key}' is not a code in postbox_rules::codes"
        );
        keys += 1;
    }
    assert!(keys >= 10, "{keys} words");
}

/// The table docs/errors.md shows, from the list.
fn table() -> String {
    let mut t = String::from("| Code | SQLSTATE | What broke |\n|---|---|---|\n");
    for c in Code::ALL {
        let about = c.about().replace('|', "\\|");
        t.push_str(&format!("| `{c}` | {} | {about} |\n", c.sqlstate()));
    }
    t
}

#[test]
fn docs_show_the_list_as_it_is() {
    const START: &str = "<!-- codes: rules/tests/codes.rs writes this table from postbox_rules::codes (POSTBOX_BLESS=1) -->\n";
    const END: &str = "<!-- /codes -->";
    let path = repo().join("docs/errors.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let a = doc
        .find(START)
        .expect("docs/errors.md has the codes marker")
        + START.len();
    let b = a + doc[a..].find(END).unwrap();
    if std::env::var_os("POSTBOX_BLESS").is_some() {
        std::fs::write(&path, format!("{}{}{}", &doc[..a], table(), &doc[b..])).unwrap();
        return;
    }
    assert_eq!(
        doc[a..b],
        table(),
        "docs/errors.md's table differs from postbox_rules::codes: run with POSTBOX_BLESS=1"
    );
}
