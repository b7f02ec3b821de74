//! Per-minute request budgets shared by every API replica. A replica leases blocks of a key's
//! budget for the current minute from Postgres (`lease_rate_budget`, one row per key and minute)
//! and spends them locally, so the replicas together never admit more than the budget; what a
//! replica leased and did not spend (at most a twentieth of the budget each) is the only
//! shortfall. A key whose budget is gone is refused locally until the minute ends, without a
//! database call.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::PgPool;

/// Leases per key and minute, at most: a lease is a twentieth of the budget.
const LEASES_PER_WINDOW: u32 = 20;

/// What this replica holds of one key's budget for one minute.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// The minute (Unix time / 60).
    window: i64,
    /// Requests left of what was leased.
    left: u32,
    /// The shared budget is spent: refuse until the window ends.
    spent: bool,
}

/// The shared budgets of one kind (per IP, per account).
#[derive(Debug)]
pub(crate) struct SharedBudgets {
    db: PgPool,
    /// The kind, prefixed to keys (`ip`, `account`).
    kind: &'static str,
    per_minute: u32,
    leases: Mutex<HashMap<String, Lease>>,
    /// One lease at a time: requests that find no lease wait for the one being asked for
    /// instead of each leasing a block (a burst on a cold key would otherwise take the whole
    /// budget into this replica).
    leasing: tokio::sync::Mutex<()>,
}

/// A key over its shared budget: seconds until the minute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    pub(crate) retry_after_secs: u64,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl SharedBudgets {
    /// Budgets of `per_minute` requests per key of `kind`, shared through `db`.
    pub(crate) fn new(db: PgPool, kind: &'static str, per_minute: u32) -> Self {
        Self {
            db,
            kind,
            per_minute: per_minute.max(1),
            leases: Mutex::default(),
            leasing: tokio::sync::Mutex::new(()),
        }
    }

    /// Spends one request of `key`'s budget for this minute.
    pub(crate) async fn spend(&self, key: &str) -> Result<(), OverBudget> {
        let now = now_secs();
        let window = now / 60;
        let over = OverBudget { retry_after_secs: (60 - now % 60).max(1) as u64 };
        match self.take_local(key, window) {
            Some(true) => return Ok(()),
            Some(false) => return Err(over),
            None => {}
        }
        let _leasing = self.leasing.lock().await;
        // A lease another request asked for while this one waited may cover it.
        match self.take_local(key, window) {
            Some(true) => return Ok(()),
            Some(false) => return Err(over),
            None => {}
        }
        let want = (self.per_minute / LEASES_PER_WINDOW).max(1);
        let leased = sqlx::query_scalar::<_, i32>("select lease_rate_budget($1, $2, $3, $4)")
            .bind(format!("{}:{key}", self.kind))
            .bind(window)
            .bind(want as i32)
            .bind(self.per_minute as i32)
            .fetch_one(&self.db)
            .await;
        let granted = match leased {
            Ok(granted) => granted.max(0) as u32,
            Err(err) => {
                // The database is what fails, not the client: requests go through (and most
                // will fail on the same database anyway).
                tracing::warn!(target: "api::limits", %err, "cannot lease a request budget");
                return Ok(());
            }
        };
        let Ok(mut leases) = self.leases.lock() else { return Ok(()) };
        let lease = leases.entry(key.to_owned()).or_insert(Lease { window, left: 0, spent: false });
        if lease.window != window {
            *lease = Lease { window, left: 0, spent: false };
        }
        lease.left += granted;
        lease.spent = granted < want;
        if lease.left == 0 {
            return Err(over);
        }
        lease.left -= 1;
        Ok(())
    }

    /// Spends from this replica's lease: `Some(true)` spent, `Some(false)` the budget is gone,
    /// `None` a new lease is needed.
    fn take_local(&self, key: &str, window: i64) -> Option<bool> {
        let mut leases = self.leases.lock().ok()?;
        let lease = leases.get_mut(key)?;
        if lease.window != window {
            return None;
        }
        if lease.left > 0 {
            lease.left -= 1;
            return Some(true);
        }
        if lease.spent { Some(false) } else { None }
    }

    /// Forgets leases of past minutes, and (on one replica's turn, any is fine) past minutes'
    /// rows.
    pub(crate) async fn prune(&self) {
        let window = now_secs() / 60;
        if let Ok(mut leases) = self.leases.lock() {
            leases.retain(|_, lease| lease.window >= window);
        }
        let pruned = sqlx::query("delete from rate_budgets where window_start < $1")
            .bind(window - 1)
            .execute(&self.db)
            .await;
        if let Err(err) = pruned {
            tracing::warn!(target: "api::limits", %err, "cannot prune past request budgets");
        }
    }
}
