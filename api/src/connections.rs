//! The API's database connections: taken from the pool only once a
//! request's body is read (never while waiting on a client), waited for at
//! most `db_wait_timeout` (then 503), and at most `db_per_tenant` at a time
//! for any one tenant, so a tenant with many slow requests cannot take the
//! connections every other tenant and `/healthz` need.

use crate::error::ApiError;
use deadpool_postgres::{Object, Pool};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Connections {
    pub pool: Pool,
    wait: Duration,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A pool connection, and the tenant's share it counts against (none for
/// work that is not a tenant's: authentication, `/healthz`).
pub struct Conn {
    db: Object,
    _share: Option<OwnedSemaphorePermit>,
}

impl Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.db
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.db
    }
}

impl Connections {
    pub fn new(pool: Pool, wait: Duration, per_tenant: usize) -> Connections {
        Connections {
            pool,
            wait,
            per_tenant: per_tenant.max(1),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// A connection for work that is no tenant's, within the wait.
    pub async fn get(&self) -> Result<Conn, ApiError> {
        self.get_by(Instant::now() + self.wait, None).await
    }

    /// A connection for `tenant`'s work: one of its share, then one of the
    /// pool, both within the wait.
    pub async fn for_tenant(&self, tenant: &str) -> Result<Conn, ApiError> {
        let deadline = Instant::now() + self.wait;
        let share = self.share(tenant);
        let permit = tokio::time::timeout_at(deadline.into(), share.acquire_owned())
            .await
            .map_err(|_| {
                tracing::warn!("a tenant is at its share of database connections");
                ApiError::Busy
            })?
            .map_err(|_| ApiError::Internal)?;
        self.get_by(deadline, Some(permit)).await
    }

    async fn get_by(
        &self,
        deadline: Instant,
        share: Option<OwnedSemaphorePermit>,
    ) -> Result<Conn, ApiError> {
        let db = tokio::time::timeout_at(deadline.into(), self.pool.get())
            .await
            .map_err(|_| {
                tracing::warn!("no database connection within the wait");
                ApiError::Unavailable
            })??;
        Ok(Conn { db, _share: share })
    }

    fn share(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }

    /// Forgets the shares of tenants with nothing in use or waiting.
    pub fn sweep(&self) {
        let per_tenant = self.per_tenant;
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < per_tenant);
    }

    /// Tenants with a share in memory.
    pub fn tenants(&self) -> usize {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
