//! The one privileged step of the emit triggers: writing into postbox's own
//! tables as the extension's owner.
//!
//! The triggers are SECURITY INVOKER: reading and encoding the application's
//! rows runs with the caller's rights, so a cast, output function or view the
//! caller made can never run as the owner. Only the fixed, schema-qualified
//! SPI statements inside [`as_owner`] run with the owner's rights, and they
//! take nothing but already-encoded text and the trigger's arguments as data.
//! This is what PostgreSQL itself does for SECURITY DEFINER functions
//! (`fmgr_security_definer`), narrowed to those statements.

use crate::fail;
use pgrx::prelude::*;
use postbox_rules::Code;
use std::cell::Cell;

thread_local! {
    // The owner of postbox.emitted, looked up once per backend.
    static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

fn owner() -> pg_sys::Oid {
    if let Some(oid) = OWNER.get() {
        return oid;
    }
    // A qualified name and catalog columns only: nothing here resolves through
    // the caller's search_path or calls the caller's code.
    let oid = Spi::get_one::<pg_sys::Oid>(
        "SELECT c.relowner FROM pg_catalog.pg_class c \
          WHERE c.oid OPERATOR(pg_catalog.=) 'postbox.emitted'::pg_catalog.regclass",
    )
    .unwrap_or_else(|e| {
        fail(
            Code::Internal,
            format!("postbox: cannot find postbox.emitted: {e}"),
        )
    })
    .unwrap_or_else(|| fail(Code::Internal, "postbox: cannot find postbox.emitted"));
    OWNER.set(Some(oid));
    oid
}

/// Restores the caller's user id, also when an error unwinds through it.
struct Restore {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as the owner of postbox's tables. `f` must run only postbox's
/// own fixed statements over plain text, never anything the caller typed,
/// named or chose.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = owner();
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    let _restore = Restore { user, context };
    unsafe {
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32)
    };
    f()
}
