//! `postbox.emit_statement`: the statement-level INSERT / DELETE trigger
//! `postbox.attach` creates. It runs in every application write, so it is
//! Rust rather than PL/pgSQL: no interpreter, no function-level SET (its SQL
//! is schema-qualified throughout, operators included), one kept plan.
//!
//! It reads the statement's transition table, turns each row into JSON (as
//! `row_to_json` would, see `rowjson.rs`) and writes ONE `postbox.emitted`
//! row holding them all (one per 8 MiB of JSON); the worker makes one event
//! per row at expansion.

use crate::raise;
use crate::rowjson::Encoder;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashSet;
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

thread_local! {
    // Kept for the backend's life; ManuallyDrop so no SPI call runs at exit.
    static PLAN: RefCell<Option<ManuallyDrop<OwnedPreparedStatement>>> = const { RefCell::new(None) };
    // Event types seen in the catalog. postbox never deletes one, so a name
    // once found stays valid; checking it per statement cost ~15% of the insert.
    static KNOWN: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

#[pg_trigger(sql = "
CREATE FUNCTION postbox.emit_statement() RETURNS trigger
LANGUAGE c SECURITY DEFINER
AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
")]
fn emit_statement<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    let name = unsafe { std::ffi::CStr::from_ptr((*data.tg_trigger).tgname) }
        .to_string_lossy()
        .into_owned();
    let args = trigger.extra_args().unwrap_or_default();
    if args.len() < 2 {
        raise(format!(
            "postbox: emit_statement needs (resource, tenant_column [, columns...]) as trigger arguments: {name}"
        ));
    }
    let event = trigger.event();
    if !event.fired_for_statement() || !(event.fired_by_insert() || event.fired_by_delete()) {
        raise(format!(
            "postbox: emit_statement is a statement-level INSERT or DELETE trigger (use postbox.attach): {name}"
        ));
    }
    let (store, suffix) = if event.fired_by_insert() {
        (data.tg_newtable, "created")
    } else {
        (data.tg_oldtable, "deleted")
    };
    if store.is_null() {
        raise(format!(
            "postbox: emit_statement needs a transition table (REFERENCING NEW/OLD TABLE; use postbox.attach): {name}"
        ));
    }
    let event_type = format!("{}.{suffix}", args[0]);
    // SAFETY: a statement-level AFTER trigger's transition table and relation
    // are valid for the whole call.
    unsafe {
        each_chunk(store, (*data.tg_relation).rd_att, |rows| {
            emit(&event_type, &args, rows)
        })
    };
    Ok(None)
}

/// Calls `f` with the statement's rows as JSON arrays of at most about
/// CHUNK_BYTES each (none when the statement touched no row).
unsafe fn each_chunk(
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
    mut f: impl FnMut(String),
) {
    // Our own read pointer: other triggers may read the same transition table.
    let ptr = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(store, ptr);
    pg_sys::tuplestore_rescan(store);
    let slot = pg_sys::MakeSingleTupleTableSlot(desc, &raw const pg_sys::TTSOpsMinimalTuple);
    let mut encoder = Encoder::new(desc);
    let mut rows = String::new();
    while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
        rows.push(if rows.is_empty() { '[' } else { ',' });
        if let Some(encoder) = encoder.as_mut() {
            encoder.push(slot, &mut rows);
        } else {
            // A column type rowjson does not handle: PostgreSQL's own, per row.
            let record = pg_sys::ExecFetchSlotHeapTupleDatum(slot);
            let json = pgrx::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(record)])
                .expect("row_to_json of a row is never NULL");
            rows.push_str(pgrx::varlena::text_to_rust_str_unchecked(
                json.cast_mut_ptr(),
            ));
            pg_sys::pfree(json.cast_mut_ptr());
            pg_sys::pfree(record.cast_mut_ptr());
        }
        if rows.len() >= CHUNK_BYTES {
            rows.push(']');
            f(std::mem::take(&mut rows));
        }
    }
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    if !rows.is_empty() {
        rows.push(']');
        f(rows);
    }
}

/// Raises the catalog error (with the closest names) unless `event_type`
/// exists; the statement is undone.
fn check_known(event_type: &str) {
    if KNOWN.with(|k| k.borrow().contains(event_type)) {
        return;
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM postbox.event_types t WHERE t.name OPERATOR(pg_catalog.=) $1)",
        &[DatumWithOid::from(event_type)],
    )
    .unwrap_or_else(|e| raise(format!("postbox: emit_statement failed: {e}")));
    if exists == Some(true) {
        KNOWN.with(|k| k.borrow_mut().insert(event_type.to_owned()));
    } else {
        Spi::run_with_args(
            "SELECT postbox._unknown_event_type($1)",
            &[DatumWithOid::from(event_type)],
        )
        .unwrap_or_else(|e| raise(format!("postbox: unknown event type: {event_type} ({e})")));
    }
}

/// Writes one `emitted` row; NOTIFYs if a worker waits.
fn emit(event_type: &str, args: &[String], rows: String) {
    check_known(event_type);
    let waiting = Spi::connect_mut(|client| {
        PLAN.with(|plan| {
            let mut plan = plan.borrow_mut();
            let plan = plan.get_or_insert_with(|| ManuallyDrop::new(prepare(client)));
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
                .unwrap_or_else(|e| raise(format!("postbox: emit_statement failed: {e}")))
                .unwrap_or(false)
        })
    });
    if waiting {
        // Rare: only while a worker sleeps, and it clears the flag at once.
        Spi::run("SELECT pg_catalog.pg_notify('postbox_wakeup', '')")
            .unwrap_or_else(|e| raise(format!("postbox: pg_notify failed: {e}")));
    }
}

fn prepare(client: &SpiClient<'_>) -> OwnedPreparedStatement {
    let types = [
        PgOid::from(pg_sys::UUIDOID),
        PgOid::from(pg_sys::TEXTOID),
        PgOid::from(pg_sys::JSONOID),
        PgOid::from(pg_sys::TEXTARRAYOID),
    ];
    client
        .prepare_mut(INSERT, &types)
        .unwrap_or_else(|e| raise(format!("postbox: emit_statement could not prepare: {e}")))
        .keep()
}
