//! Where indexed reads go: a streaming replica (`DATABASE_READ_URL`) when it has replayed every
//! indexed batch the primary announced so far, else the primary. The fence is the primary's WAL
//! position, taken when a batch's NOTIFY arrives and before the read caches are invalidated: a
//! replica that has replayed it holds that batch, so nothing read from it (and cached) is older
//! than what was announced. A replica that lags, or is down, costs a read on the primary, never a
//! stale answer.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use sqlx::{PgPool, Postgres, pool::PoolConnection};

/// The read side of the database (one `Arc`: it is cloned with every request's state).
#[derive(Debug, Clone)]
pub struct Reads(Arc<Shared>);

/// What [`Reads`] shares.
#[derive(Debug)]
pub struct Shared {
    primary: PgPool,
    replica: Option<PgPool>,
    /// The primary's WAL position (bytes) a replica must have replayed to serve reads.
    fence: Arc<AtomicU64>,
}

impl std::ops::Deref for Reads {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Where the replica stands, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// It has replayed every announced batch: reads go there.
    Current,
    /// It lags the announced batches: reads go to the primary meanwhile.
    Behind,
    /// It does not answer: reads go to the primary.
    Down,
}

impl Reads {
    /// Reads from `replica` when given (and current), else from `primary`.
    pub fn new(primary: PgPool, replica: Option<PgPool>) -> Self {
        // Until the first announcement, no position is known: reads go to the primary.
        Self(Arc::new(Shared { primary, replica, fence: Arc::new(AtomicU64::new(u64::MAX)) }))
    }

    /// Moves the fence to the primary's WAL insert position now (call before invalidating caches
    /// for a batch the indexer announced). The insert position, not the write position: with
    /// `synchronous_commit = off` a commit is announced before its record is written, and the
    /// fence must be past it.
    pub async fn announce(&self) -> Result<(), sqlx::Error> {
        if self.replica.is_none() {
            return Ok(());
        }
        let lsn: String =
            sqlx::query_scalar("select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text")
                .fetch_one(&self.primary)
                .await?;
        let lsn: u64 = lsn.parse().unwrap_or(u64::MAX);
        let _ = self.fence.fetch_update(Ordering::AcqRel, Ordering::Acquire, |fence| {
            Some(if fence == u64::MAX { lsn } else { fence.max(lsn) })
        });
        Ok(())
    }

    /// A connection to read indexed data from: the replica's when it has replayed the fence,
    /// else the primary's.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        if let Some(replica) = &self.replica {
            let fence = self.fence.load(Ordering::Acquire);
            match current(replica, fence).await {
                Ok(Some(conn)) => return Ok(conn),
                Ok(None) => metrics::counter!("read_replica_behind_total").increment(1),
                Err(err) => {
                    metrics::counter!("read_replica_errors_total").increment(1);
                    tracing::warn!(target: "api::reads", %err, "the read replica failed; reading from the primary");
                }
            }
        }
        self.primary.acquire().await
    }

    /// Where the replica stands (`None` without one).
    pub async fn replica_state(&self) -> Option<ReplicaState> {
        let replica = self.replica.as_ref()?;
        Some(match current(replica, self.fence.load(Ordering::Acquire)).await {
            Ok(Some(_)) => ReplicaState::Current,
            Ok(None) => ReplicaState::Behind,
            Err(_) => ReplicaState::Down,
        })
    }
}

/// A replica connection that has replayed `fence`, or `None` when the replica lags it (or is not
/// a replica at all: a primary has no replay position).
async fn current(
    replica: &PgPool,
    fence: u64,
) -> Result<Option<PoolConnection<Postgres>>, sqlx::Error> {
    let mut conn = replica.acquire().await?;
    let replayed: Option<bool> =
        sqlx::query_scalar("select pg_last_wal_replay_lsn() - '0/0'::pg_lsn >= $1::text::numeric")
            .bind(fence.to_string())
            .fetch_one(&mut *conn)
            .await?;
    Ok(replayed.unwrap_or(false).then_some(conn))
}
