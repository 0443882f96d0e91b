//! Rows as JSON text, byte for byte as `row_to_json` writes them, for the
//! statement trigger's hot loop. `row_to_json` looks up each column's type
//! and output function again for every row and builds the text through
//! several allocations; here that is done once per statement, so a bulk
//! write pays little more than the output functions themselves.
//!
//! Only column types whose JSON form is plain are handled (see [`Kind`]);
//! for a table with any other type `encoder` returns None and the caller
//! uses `row_to_json`. A pg_test compares both on every handled type.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::fmt::Write;

/// How a column's value becomes JSON (PostgreSQL's `json_categorize_type`).
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// float and numeric: the output text, quoted unless it is a JSON number (NaN, Infinity).
    Number,
    /// text-like: the output text, escaped.
    Text,
    /// json, jsonb: the output text as is.
    Raw,
    /// date, timestamp, timestamptz: ISO 8601, as JSON writes them.
    DateTime(pg_sys::Oid),
}

struct Column {
    /// `"name":`, escaped.
    key: String,
    kind: Kind,
    out: pg_sys::FmgrInfo,
}

pub struct Encoder {
    /// One per attribute; None for dropped ones and those not asked for.
    columns: Vec<Option<Column>>,
    /// A `json` column's text is passed through as stored, and `json` accepts
    /// what `jsonb` refuses (`\u0000`, lone surrogates, numbers out of
    /// numeric's range): such rows must be checked with [`check_jsonb`].
    raw_json: bool,
}

impl Encoder {
    /// An encoder for rows of `desc` (only the columns named in `only`, when
    /// given), or None if a column has a type this module does not handle.
    ///
    /// # Safety
    /// `desc` must be a valid tuple descriptor.
    pub unsafe fn new(desc: pg_sys::TupleDesc, only: Option<&[String]>) -> Option<Encoder> {
        // Output functions write the server encoding; Rust strings are UTF-8.
        if pg_sys::GetDatabaseEncoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
            return None;
        }
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        let mut columns = Vec::with_capacity(natts);
        let mut raw_json = false;
        for att in attrs {
            let name = CStr::from_ptr(att.attname.data.as_ptr()).to_string_lossy();
            if att.attisdropped || only.is_some_and(|o| !o.iter().any(|c| *c == name)) {
                columns.push(None);
                continue;
            }
            let base = pg_sys::getBaseType(att.atttypid);
            let kind = match base {
                pg_sys::BOOLOID => Kind::Bool,
                pg_sys::INT2OID => Kind::Int2,
                pg_sys::INT4OID => Kind::Int4,
                pg_sys::INT8OID => Kind::Int8,
                pg_sys::FLOAT4OID | pg_sys::FLOAT8OID | pg_sys::NUMERICOID => Kind::Number,
                pg_sys::TEXTOID
                | pg_sys::VARCHAROID
                | pg_sys::BPCHAROID
                | pg_sys::NAMEOID
                | pg_sys::UUIDOID => Kind::Text,
                pg_sys::JSONOID | pg_sys::JSONBOID => Kind::Raw,
                pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                    Kind::DateTime(base)
                }
                _ => return None,
            };
            raw_json |= base == pg_sys::JSONOID;
            let mut out = pg_sys::FmgrInfo::default();
            let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(base, &mut func, &mut varlena);
            pg_sys::fmgr_info(func, &mut out);
            let mut key = String::with_capacity(name.len() + 3);
            escape(&mut key, &name);
            key.push(':');
            columns.push(Some(Column { key, kind, out }));
        }
        Some(Encoder { columns, raw_json })
    }

    /// Whether rows must pass [`check_jsonb`] before postbox stores them.
    pub fn raw_json(&self) -> bool {
        self.raw_json
    }

    /// Appends the slot's row as a JSON object.
    ///
    /// # Safety
    /// `slot` must hold a row of the descriptor this encoder was made for.
    pub unsafe fn push(&mut self, slot: *mut pg_sys::TupleTableSlot, out: &mut String) {
        pg_sys::slot_getallattrs(slot);
        let n = self.columns.len();
        let values = std::slice::from_raw_parts((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, n);
        out.push('{');
        let mut first = true;
        for (i, col) in self.columns.iter_mut().enumerate() {
            let Some(col) = col else { continue };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&col.key);
            if nulls[i] {
                out.push_str("null");
                continue;
            }
            let v = values[i];
            match col.kind {
                Kind::Bool => out.push_str(if v.value() != 0 { "true" } else { "false" }),
                Kind::Int2 => write!(out, "{}", v.value() as i16).unwrap(),
                Kind::Int4 => write!(out, "{}", v.value() as i32).unwrap(),
                Kind::Int8 => write!(out, "{}", v.value() as i64).unwrap(),
                Kind::Number => with_output(&mut col.out, v, |s| {
                    if is_json_number(s) {
                        out.push_str(s)
                    } else {
                        escape(out, s)
                    }
                }),
                Kind::Text => with_output(&mut col.out, v, |s| escape(out, s)),
                Kind::Raw => with_output(&mut col.out, v, |s| out.push_str(s)),
                Kind::DateTime(typid) => {
                    let s = pg_sys::JsonEncodeDateTime(
                        std::ptr::null_mut(),
                        v,
                        typid,
                        std::ptr::null(),
                    );
                    out.push('"');
                    out.push_str(&CStr::from_ptr(s).to_string_lossy());
                    out.push('"');
                    pg_sys::pfree(s.cast());
                }
            }
        }
        out.push('}');
    }
}

/// Checks that `json` is also valid `jsonb`, which expansion and the
/// delivery log store; returns PostgreSQL's reason otherwise. Runs
/// `jsonb_in`, a built-in, so the rule is exactly PostgreSQL's.
pub fn check_jsonb(json: &str) -> Result<(), String> {
    let Ok(c) = std::ffi::CString::new(json) else {
        return Err("the JSON contains a NUL byte".into());
    };
    pgrx::PgTryBuilder::new(|| {
        let d = unsafe {
            pgrx::direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(pg_sys::Datum::from(c.as_ptr()))],
            )
        };
        if let Some(d) = d {
            unsafe { pg_sys::pfree(d.cast_mut_ptr()) };
        }
        Ok(())
    })
    .catch_others(|e| match e {
        pgrx::pg_sys::panic::CaughtError::PostgresError(r)
        | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => Err(match r.detail() {
            Some(d) => format!("{} ({d})", r.message()),
            None => r.message().to_string(),
        }),
        other => other.rethrow(),
    })
    .execute()
}

unsafe fn with_output(out: &mut pg_sys::FmgrInfo, v: pg_sys::Datum, f: impl FnOnce(&str)) {
    let s = pg_sys::OutputFunctionCall(out, v);
    f(&CStr::from_ptr(s).to_string_lossy());
    pg_sys::pfree(s.cast());
}

/// A JSON string literal, escaped exactly as PostgreSQL's `escape_json` does.
pub fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_json_sees_them() {
        for ok in ["0", "-0", "12", "1.5", "-1.25e+100", "1e-7", "3E5"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "NaN",
            "Infinity",
            "-Infinity",
            "",
            "-",
            "1.",
            ".5",
            "01",
            "1e",
            "1e+",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn escapes_as_postgres_does() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\n\t\u{1}é/");
        assert_eq!(s, r#""a\"b\\c\n\t\u0001é/""#);
    }
}
