//! Wake-ups between replicas: a job that has new work (a card payment queued by a webhook, a
//! folder changed) is woken on every replica at once, by a NOTIFY sent in (or after) the
//! transaction that made the work, instead of waiting for its next poll on replicas other than
//! the one that took the request. Only the replica that wins the job's lock does the pass; the
//! others find nothing to do.

use std::{collections::HashMap, sync::Arc, time::Duration};

use decentraspace_db::channels;
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio::sync::Notify;

use crate::jobs::Job;

/// A job that can be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wake {
    /// The card payment worker (a webhook queued a payment).
    CardPayments,
    /// The folders' directory builder (a folder or file changed).
    FolderDirectories,
    /// Every replica's TLS certificates (one was issued or renewed).
    Certificates,
    /// The IPNS publisher (a site's current deployment changed).
    SiteNames,
    /// The `.eth` registrations (a name was bought and paid for).
    EthNames,
}

impl Wake {
    const ALL: [Self; 5] = [
        Self::CardPayments,
        Self::FolderDirectories,
        Self::Certificates,
        Self::SiteNames,
        Self::EthNames,
    ];

    /// The NOTIFY payload naming it.
    fn name(self) -> &'static str {
        match self {
            Self::CardPayments => "card-payments",
            Self::FolderDirectories => "folder-directories",
            Self::Certificates => "certificates",
            Self::SiteNames => "site-names",
            Self::EthNames => "eth-names",
        }
    }
}

/// This replica's wake-ups, one [`Notify`] per job, fed by [`Wakes::listener`].
#[derive(Debug, Clone)]
pub struct Wakes {
    notifies: Arc<HashMap<Wake, Arc<Notify>>>,
}

impl Default for Wakes {
    fn default() -> Self {
        Self {
            notifies: Arc::new(Wake::ALL.iter().map(|w| (*w, Arc::new(Notify::new()))).collect()),
        }
    }
}

impl Wakes {
    /// What `job` waits on (its schedule's `woken_by_notify`).
    pub fn of(&self, job: Wake) -> Arc<Notify> {
        self.notifies.get(&job).cloned().unwrap_or_default()
    }

    /// Wakes `job` on every replica (this one too) when the caller's transaction (`conn`)
    /// commits; nothing if it rolls back.
    pub async fn after_commit(
        &self,
        conn: &mut PgConnection,
        job: Wake,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("select pg_notify($1, $2)")
            .bind(channels::WAKE_JOB)
            .bind(job.name())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Wakes `job` here now and on every other replica (for work already committed). A failed
    /// notification is logged: the other replicas' polls find the work.
    pub async fn now(&self, db: &PgPool, job: Wake) {
        self.of(job).notify_one();
        let sent = sqlx::query("select pg_notify($1, $2)")
            .bind(channels::WAKE_JOB)
            .bind(job.name())
            .execute(db)
            .await;
        if let Err(err) = sent {
            tracing::warn!(target: "api::jobs", %err, job = job.name(), "cannot wake the other replicas");
        }
    }

    /// The listener's job: wakes this replica's jobs as the notifications arrive, reconnecting
    /// after database failures.
    pub fn listener(&self, db: &PgPool) -> Job {
        let (wakes, db) = (self.clone(), db.clone());
        Job::new("wake-listener", move || {
            let (wakes, db) = (wakes.clone(), db.clone());
            async move {
                let mut attempt = 0u32;
                loop {
                    if let Err(err) = wakes.listen(&db).await {
                        attempt = attempt.saturating_add(1);
                        tracing::warn!(target: "api::jobs", %err, attempt, "wake listener failed; reconnecting");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))))
                            .await;
                    }
                }
            }
        })
    }

    async fn listen(&self, db: &PgPool) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(db).await?;
        listener.listen(channels::WAKE_JOB).await?;
        loop {
            // `None`: the connection dropped and was made again; the jobs' polls cover the gap.
            let Some(notification) = listener.try_recv().await? else { continue };
            if let Some(job) = Wake::ALL.iter().find(|w| w.name() == notification.payload()) {
                self.of(*job).notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_has_its_own_name_and_notify() {
        let names: std::collections::HashSet<_> = Wake::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names.len(), Wake::ALL.len());
        let wakes = Wakes::default();
        assert!(!Arc::ptr_eq(&wakes.of(Wake::CardPayments), &wakes.of(Wake::FolderDirectories)));
    }
}
