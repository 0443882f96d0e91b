//! The emit triggers `postbox.attach` creates. They run in every application
//! write, so they are Rust rather than PL/pgSQL: no interpreter, one kept
//! plan each.
//!
//! - `postbox.emit_statement`: statement-level AFTER INSERT / DELETE with a
//!   transition table. It writes ONE `postbox.emitted` row holding the
//!   statement's rows as a JSON array (one per 8 MiB of JSON); the worker
//!   makes one event per row at expansion.
//! - `postbox.emit_row_change`: row-level AFTER INSERT / UPDATE / DELETE
//!   (attach uses it for UPDATE, which needs OLD/NEW pairs). It hands the
//!   encoded row(s) to `postbox._emit_row` (sql/emit.sql), which picks the
//!   tenant, the payload and the changed columns and writes one event.
//!
//! # Rights
//! Both are SECURITY INVOKER. The application's rows are read and encoded
//! with the caller's rights, so a user-defined cast, output function or
//! view can never run as the extension's owner. Only the fixed statements
//! that write into postbox's tables run as the owner ([`as_owner`]), and they
//! take nothing but the encoded text and the trigger's arguments.
//!
//! # What a row may hold
//! Every row must fit `postbox.max_payload_bytes` (its JSON as encoded: the
//! tenant and payload columns, or the whole row for types `rowjson` does not
//! handle), and rows with `json` values must also be valid `jsonb`, which is
//! what expansion stores. Otherwise the application's statement fails with
//! 22023 naming the table, the resource and the reason, and nothing is written.

use crate::fail;
use crate::owner::as_owner;
use crate::rowjson::{check_jsonb, Encoder};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgMemoryContexts, PgOid};
use postbox_rules::Code;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::mem::ManuallyDrop;

/// Flush an `emitted` row once a statement's JSON grows past this, so memory
/// stays bounded and no value nears the 1 GB varlena limit.
const CHUNK_BYTES: usize = 8 << 20;

/// Also answers whether a worker waits, so the trigger makes one SPI call
/// per statement.
const INSERT: &str = "
INSERT INTO postbox.emitted (id, event_type, created_at, rows, trigger_args)
VALUES ($1, $2, pg_catalog.clock_timestamp(), $3, $4)
RETURNING (SELECT w.waiting FROM postbox.wakeup w)";

/// The row trigger's write: relation, operation, NEW, OLD, trigger arguments.
const EMIT_ROW: &str = "SELECT postbox._emit_row($1, $2, $3, $4, $5)";

thread_local! {
    // Kept for the backend's life; ManuallyDrop so no SPI call runs at exit.
    static PLAN: RefCell<Option<ManuallyDrop<OwnedPreparedStatement>>> = const { RefCell::new(None) };
    static ROW_PLAN: RefCell<Option<ManuallyDrop<OwnedPreparedStatement>>> = const { RefCell::new(None) };
    // Event types seen in the catalog. postbox never deletes one, so a name
    // once found stays valid; checking it per statement cost ~15% of the insert.
    static KNOWN: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    // The triggers' encoders, per trigger, with the columns they were made
    // for (see `Firing::encoder`).
    static ENCODERS: RefCell<HashMap<pg_sys::Oid, Kept>> = RefCell::new(HashMap::new());
}

/// What every emit trigger needs to know about its firing.
struct Firing {
    rel: pg_sys::Relation,
    trigger: *const pg_sys::Trigger,
    /// resource, tenant column, payload columns, "", key columns.
    args: Vec<String>,
    desc: pg_sys::TupleDesc,
}

impl Firing {
    fn new(trigger: &PgTrigger<'_>, function: &str) -> Firing {
        let data = trigger.trigger_data();
        let f = Firing {
            rel: data.tg_relation,
            trigger: data.tg_trigger,
            args: trigger.extra_args().unwrap_or_default(),
            // SAFETY: a trigger's relation is valid for the call.
            desc: unsafe { (*data.tg_relation).rd_att },
        };
        if f.args.len() < 2 {
            fail(
                Code::TriggerMisused,
                format!(
                    "postbox: {function} needs (resource, tenant_column [, columns...]) as trigger arguments: {}",
                    f.name()
                ),
            );
        }
        f
    }

    /// The trigger's name, for messages (made only for one).
    fn name(&self) -> String {
        // SAFETY: the trigger is valid for the call.
        unsafe { cstr((*self.trigger).tgname) }
    }

    /// `schema.table`, for messages (made only for one).
    fn table(&self) -> String {
        // SAFETY: the relation is valid for the call.
        unsafe {
            let rel = &*(*self.rel).rd_rel;
            format!(
                "{}.{}",
                cstr(pg_sys::get_namespace_name(rel.relnamespace)),
                cstr(rel.relname.data.as_ptr())
            )
        }
    }

    /// The columns to encode: the tenant and payload columns, and the key
    /// columns after the empty-string separator (`postbox.attach`); all of
    /// them when no payload columns are named. No column has an empty
    /// name, so the separator itself matches none.
    fn columns(&self) -> Option<&[String]> {
        let payload = self.args.get(2).is_some_and(|a| !a.is_empty());
        payload.then(|| &self.args[1..])
    }

    /// Raises 22023 unless one encoded row may be stored (see the header);
    /// its size counts only if it is `sent`.
    fn check_row(&self, json: &str, raw_json: bool, sent: bool) {
        let max = crate::max_payload_bytes();
        if sent && json.len() > max {
            fail(
                Code::EventDataTooLarge,
                format!(
                    "postbox: a row of {} is larger than postbox.max_payload_bytes ({max} bytes) allows for {} events: {} bytes",
                    self.table(),
                    self.args[0],
                    json.len()
                ),
            );
        }
        if raw_json {
            if let Err(why) = check_jsonb(json) {
                fail(
                    Code::EventDataInvalid,
                    format!(
                        "postbox: a row of {} cannot be sent as {} event data: {why}",
                        self.table(),
                        self.args[0]
                    ),
                );
            }
        }
    }

    /// The trigger's encoder: kept per trigger (its arguments never change)
    /// while the table's columns stay as they were, since making one looks
    /// up every column's type and output function (a fixed cost per
    /// statement, or per row for the row trigger). None for column types
    /// `rowjson` does not handle.
    fn encoder(&self) -> Option<Kept> {
        // SAFETY: the trigger and descriptor are valid for the call.
        let (oid, shape) = unsafe { ((*self.trigger).tgoid, Shape::of(self.desc)) };
        if let Some(kept) = ENCODERS.with(|e| e.borrow_mut().remove(&oid)) {
            if kept.shape == shape {
                return Some(kept);
            }
        }
        // In TopMemoryContext: the output functions' FmgrInfo outlive the statement.
        let encoder = unsafe {
            PgMemoryContexts::TopMemoryContext
                .switch_to(|_| Encoder::new(self.desc, self.columns()))
        };
        encoder.map(|encoder| Kept { shape, encoder })
    }

    /// Gives the encoder back for the trigger's next firing.
    fn keep(&self, kept: Kept) {
        // SAFETY: as in `encoder`.
        let oid = unsafe { (*self.trigger).tgoid };
        ENCODERS.with(|e| {
            let mut e = e.borrow_mut();
            // A bound on what a backend keeps; far above any application's triggers.
            if e.len() >= MAX_KEPT_ENCODERS {
                e.clear();
            }
            e.insert(oid, kept);
        });
    }
}

/// An encoder with the table columns it was made for.
struct Kept {
    shape: Shape,
    encoder: Encoder,
}

/// Encoders kept per backend at most (see `Firing::keep`).
const MAX_KEPT_ENCODERS: usize = 1024;

/// A table's columns as an encoder depends on them: type, dropped, name.
#[derive(PartialEq)]
struct Shape(Vec<(pg_sys::Oid, bool, [u8; pg_sys::NAMEDATALEN as usize])>);

impl Shape {
    unsafe fn of(desc: pg_sys::TupleDesc) -> Shape {
        let natts = (*desc).natts as usize;
        Shape(
            (*desc)
                .attrs
                .as_slice(natts)
                .iter()
                .map(|a| {
                    let name: [u8; pg_sys::NAMEDATALEN as usize] =
                        std::mem::transmute(a.attname.data);
                    (a.atttypid, a.attisdropped, name)
                })
                .collect(),
        )
    }
}

unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    CStr::from_ptr(p).to_string_lossy().into_owned()
}

#[pg_trigger(sql = "
CREATE FUNCTION postbox.emit_statement() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
")]
fn emit_statement<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, std::convert::Infallible> {
    let f = Firing::new(trigger, "emit_statement");
    let event = trigger.event();
    if !event.fired_for_statement()
        || !event.fired_after()
        || !(event.fired_by_insert() || event.fired_by_delete())
    {
        fail(
            Code::TriggerMisused,
            format!(
                "postbox: emit_statement is a statement-level AFTER INSERT or DELETE trigger (use postbox.attach): {}",
                f.name()
            ),
        );
    }
    let data = trigger.trigger_data();
    let (store, suffix) = if event.fired_by_insert() {
        (data.tg_newtable, "created")
    } else {
        (data.tg_oldtable, "deleted")
    };
    if store.is_null() {
        fail(
            Code::TriggerMisused,
            format!(
                "postbox: emit_statement needs a transition table (REFERENCING NEW/OLD TABLE; use postbox.attach): {}",
                f.name()
            ),
        );
    }
    let event_type = format!("{}.{suffix}", f.args[0]);
    // SAFETY: a statement-level AFTER trigger's transition table and relation
    // are valid for the whole call.
    unsafe { each_chunk(store, &f, |rows| emit(&event_type, &f.args, rows)) };
    Ok(None)
}

#[pg_trigger(sql = "
CREATE FUNCTION postbox.emit_row_change() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
")]
fn emit_row_change<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, std::convert::Infallible> {
    let f = Firing::new(trigger, "emit_row_change");
    let event = trigger.event();
    let op = if event.fired_by_insert() {
        "INSERT"
    } else if event.fired_by_update() {
        "UPDATE"
    } else if event.fired_by_delete() {
        "DELETE"
    } else {
        ""
    };
    if !event.fired_for_row() || !event.fired_after() || op.is_empty() {
        fail(
            Code::TriggerMisused,
            format!(
                "postbox: emit_row_change is a row-level AFTER INSERT, UPDATE or DELETE trigger (use postbox.attach): {}",
                f.name()
            ),
        );
    }
    let data = trigger.trigger_data();
    // tg_trigtuple is NEW for INSERT and OLD for UPDATE and DELETE.
    let (new, old) = match op {
        "INSERT" => (data.tg_trigtuple, std::ptr::null_mut()),
        "UPDATE" => (data.tg_newtuple, data.tg_trigtuple),
        _ => (std::ptr::null_mut(), data.tg_trigtuple),
    };
    // SAFETY: the trigger's tuples and descriptor are valid for the call.
    // An UPDATE's old row is only compared, never sent: its size does not
    // count (an update that shrinks an oversized row must go through).
    let mut kept = f.encoder();
    let (new, old) = unsafe {
        (
            encode_tuple(&f, kept.as_mut(), new, true),
            encode_tuple(&f, kept.as_mut(), old, op == "DELETE"),
        )
    };
    if let Some(kept) = kept {
        f.keep(kept);
    }
    let relid = unsafe { (*data.tg_relation).rd_id };
    as_owner(|| {
        Spi::connect_mut(|client| {
            ROW_PLAN.with(|plan| {
                let mut plan = plan.borrow_mut();
                let plan = plan.get_or_insert_with(|| {
                    ManuallyDrop::new(prepare(
                        client,
                        EMIT_ROW,
                        &[
                            pg_sys::OIDOID,
                            pg_sys::TEXTOID,
                            pg_sys::JSONOID,
                            pg_sys::JSONOID,
                            pg_sys::TEXTARRAYOID,
                        ],
                    ))
                });
                let json = |s: Option<String>| match s {
                    Some(s) => unsafe { DatumWithOid::new(s, pg_sys::JSONOID) },
                    None => DatumWithOid::null_oid(pg_sys::JSONOID),
                };
                let params = [
                    DatumWithOid::from(relid),
                    DatumWithOid::from(op),
                    json(new),
                    json(old),
                    DatumWithOid::from(f.args.clone()),
                ];
                client.update(&**plan, None, &params).unwrap_or_else(|e| {
                    fail(
                        Code::Internal,
                        format!("postbox: emit_row_change failed: {e}"),
                    )
                });
            })
        })
    });
    Ok(None)
}

/// One row as JSON (the tenant and payload columns), checked (its size only
/// if `sent`); None for no row. `kept` is `f.encoder()`.
unsafe fn encode_tuple(
    f: &Firing,
    kept: Option<&mut Kept>,
    tuple: pg_sys::HeapTuple,
    sent: bool,
) -> Option<String> {
    if tuple.is_null() {
        return None;
    }
    let mut out = String::new();
    let raw = match kept.map(|k| &mut k.encoder) {
        Some(encoder) => {
            let slot = pg_sys::MakeSingleTupleTableSlot(f.desc, &raw const pg_sys::TTSOpsHeapTuple);
            pg_sys::ExecStoreHeapTuple(tuple, slot, false);
            encoder.push(slot, &mut out);
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            encoder.raw_json()
        }
        None => {
            let record = pg_sys::heap_copy_tuple_as_datum(tuple, f.desc);
            push_row_to_json(record, &mut out);
            true
        }
    };
    f.check_row(&out, raw, sent);
    Some(out)
}

/// Appends `row_to_json(record)`: PostgreSQL's own encoding, for column types
/// `rowjson` does not handle. Runs as the caller, like everything that reads
/// the caller's rows.
unsafe fn push_row_to_json(record: pg_sys::Datum, out: &mut String) {
    let json = pgrx::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(record)])
        .expect("row_to_json of a row is never NULL");
    out.push_str(pgrx::varlena::text_to_rust_str_unchecked(
        json.cast_mut_ptr(),
    ));
    pg_sys::pfree(json.cast_mut_ptr());
    pg_sys::pfree(record.cast_mut_ptr());
}

/// Calls `emit` with the statement's rows as JSON arrays of at most about
/// CHUNK_BYTES each (none when the statement touched no row). Each row is
/// checked before anything is written.
unsafe fn each_chunk(
    store: *mut pg_sys::Tuplestorestate,
    f: &Firing,
    mut emit: impl FnMut(String),
) {
    // Our own read pointer: other triggers may read the same transition table.
    let ptr = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(store, ptr);
    pg_sys::tuplestore_rescan(store);
    let slot = pg_sys::MakeSingleTupleTableSlot(f.desc, &raw const pg_sys::TTSOpsMinimalTuple);
    let mut kept = f.encoder();
    // Rows of types rowjson does not handle may hold json anywhere.
    let raw = kept.as_ref().is_none_or(|k| k.encoder.raw_json());
    let mut rows = String::new();
    while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
        rows.push(if rows.is_empty() { '[' } else { ',' });
        let start = rows.len();
        if let Some(kept) = kept.as_mut() {
            kept.encoder.push(slot, &mut rows);
        } else {
            push_row_to_json(pg_sys::ExecFetchSlotHeapTupleDatum(slot), &mut rows);
        }
        f.check_row(&rows[start..], raw, true);
        if rows.len() >= CHUNK_BYTES {
            rows.push(']');
            emit(std::mem::take(&mut rows));
        }
    }
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    if let Some(kept) = kept {
        f.keep(kept);
    }
    if !rows.is_empty() {
        rows.push(']');
        emit(rows);
    }
}

/// Raises the catalog error (with the closest names) unless `event_type`
/// exists and is not one of postbox's builtin types (its own `postbox.*`,
/// which only postbox emits; `webhook.test` no trigger can name). The
/// column, not `postbox._reserved_type`: this library also runs under the
/// SQL of older versions until `ALTER EXTENSION postbox UPDATE`. The
/// statement is undone. Runs as the owner.
fn check_known(event_type: &str) {
    if KNOWN.with(|k| k.borrow().contains(event_type)) {
        return;
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name OPERATOR(pg_catalog.=) $1 \
         AND NOT t.builtin)",
        &[DatumWithOid::from(event_type)],
    )
    .unwrap_or_else(|e| {
        fail(
            Code::Internal,
            format!("postbox: emit_statement failed: {e}"),
        )
    });
    if exists == Some(true) {
        KNOWN.with(|k| k.borrow_mut().insert(event_type.to_owned()));
    } else {
        Spi::run_with_args(
            "SELECT postbox._unknown_event_type($1)",
            &[DatumWithOid::from(event_type)],
        )
        .unwrap_or_else(|e| {
            fail(
                Code::EventTypeUnknown,
                format!("postbox: unknown event type: {event_type} ({e})"),
            )
        });
    }
}

/// Writes one `emitted` row as the owner; NOTIFYs if a worker waits.
fn emit(event_type: &str, args: &[String], rows: String) {
    as_owner(|| {
        check_known(event_type);
        let waiting = Spi::connect_mut(|client| {
            PLAN.with(|plan| {
                let mut plan = plan.borrow_mut();
                let plan = plan.get_or_insert_with(|| {
                    ManuallyDrop::new(prepare(
                        client,
                        INSERT,
                        &[
                            pg_sys::UUIDOID,
                            pg_sys::TEXTOID,
                            pg_sys::JSONOID,
                            pg_sys::TEXTARRAYOID,
                        ],
                    ))
                });
                let params = [
                    DatumWithOid::from(crate::_uuid7()),
                    DatumWithOid::from(event_type),
                    // json is text on disk: the array is passed as is, not re-parsed.
                    unsafe { DatumWithOid::new(rows, pg_sys::JSONOID) },
                    DatumWithOid::from(args.to_vec()),
                ];
                client
                    .update(&**plan, None, &params)
                    .and_then(|t| t.first().get_one::<bool>())
                    .unwrap_or_else(|e| {
                        fail(
                            Code::Internal,
                            format!("postbox: emit_statement failed: {e}"),
                        )
                    })
                    .unwrap_or(false)
            })
        });
        if waiting {
            // Rare: only while a worker sleeps, and it clears the flag at once.
            Spi::run("SELECT pg_catalog.pg_notify('postbox_wakeup', '')").unwrap_or_else(|e| {
                fail(Code::Internal, format!("postbox: pg_notify failed: {e}"))
            });
        }
    })
}

fn prepare(client: &SpiClient<'_>, sql: &str, types: &[pg_sys::Oid]) -> OwnedPreparedStatement {
    let types: Vec<PgOid> = types.iter().map(|t| PgOid::from(*t)).collect();
    client
        .prepare_mut(sql, &types)
        .unwrap_or_else(|e| {
            fail(
                Code::Internal,
                format!("postbox: emit trigger could not prepare: {e}"),
            )
        })
        .keep()
}
