//! Live notices: one task listens to the indexer's NOTIFY, loads the newly indexed events once,
//! and fans them out to every `/v1/stream` client, which filters them in memory. The platform's
//! own notices (services suspended for lack of credit) travel the same way, through NOTIFY on
//! [`channels::PLATFORM`], so that every replica's clients see what any replica did.

use std::{sync::Arc, time::Duration};

use decentraspace_db::channels::{self, IndexedBatch};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;

use super::PublicState;
use crate::{
    http::cache::Caches,
    jobs::Job,
    notices::PlatformNotice,
    public::v1::{EventView, load_events_in_blocks},
};

/// The most events one notice carries; a larger batch (a backfill) is announced without them.
pub const MAX_NOTICE_EVENTS: i64 = 2_000;

/// What `/v1/stream` fans out.
#[derive(Debug, Clone)]
pub enum Notice {
    /// The indexer committed blocks.
    Chain(ChainNotice),
    /// The platform did something an account's clients should hear of.
    Platform(Arc<PlatformNotice>),
}

/// What the indexer committed.
#[derive(Debug, Clone)]
pub struct ChainNotice {
    /// First block of the batch.
    pub from_block: u64,
    /// Last block of the batch (the new checkpoint).
    pub to_block: u64,
    /// Whether this is a rollback to `to_block` (a reorg).
    pub reorg: bool,
    /// The batch's events, unless it was larger than [`MAX_NOTICE_EVENTS`] (or empty).
    pub events: Option<Arc<Vec<EventView>>>,
    /// How many events the batch holds.
    pub count: u64,
}

/// The listener's job: listens until the process ends, reconnecting after database failures.
/// Cached reads are served only while it listens (a panic or a stop turns caching off).
pub fn job(state: &PublicState) -> Job {
    let (db, chain_id) = (state.db.clone(), state.chain_id());
    let (notices, reads) = (state.notices.clone(), state.caches.clone());
    let (fence, indexed) = (state.platform.reads.clone(), state.indexed.clone());
    Job::new("notices", move || {
        let (db, notices, reads, fence, indexed) =
            (db.clone(), notices.clone(), reads.clone(), fence.clone(), indexed.clone());
        async move {
            let _off = CachingOff(reads.clone());
            let mut attempt = 0u32;
            loop {
                let listened = listen(&db, chain_id, &notices, &indexed, &reads, &fence).await;
                // Without notices, cached reads could go stale: stop caching until listening again.
                reads.set_live(false);
                if let Err(err) = listened {
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(target: "api::stream", %err, attempt, "notice listener failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))))
                        .await;
                }
            }
        }
    })
}

/// Turns caching off when the listener ends, however it ends.
struct CachingOff(Caches);

impl Drop for CachingOff {
    fn drop(&mut self) {
        self.0.set_live(false);
    }
}

async fn listen(
    db: &PgPool,
    chain_id: u64,
    notices: &broadcast::Sender<Notice>,
    indexed: &broadcast::Sender<()>,
    reads: &Caches,
    fence: &crate::reads::Reads,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen_all([channels::INDEXED, channels::PLATFORM]).await?;
    // The read replica must hold everything committed before caching starts, and each batch
    // before its cached reads are dropped: the fence moves first.
    fence.announce().await?;
    reads.set_live(true);
    loop {
        // `None`: the connection dropped and notices may have been missed while it reconnects.
        let Some(notification) = listener.try_recv().await? else {
            fence.announce().await?;
            reads.invalidate();
            continue;
        };
        if notification.channel() == channels::PLATFORM {
            match serde_json::from_str::<PlatformNotice>(notification.payload()) {
                Ok(notice) if notice.chain_id == chain_id => {
                    let _ = notices.send(Notice::Platform(Arc::new(notice)));
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(target: "api::stream", %err, "unreadable platform notice")
                }
            }
            continue;
        }
        let payload: IndexedBatch = match serde_json::from_str(notification.payload()) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(target: "api::stream", %err, "unreadable indexer notice");
                continue;
            }
        };
        if payload.chain_id != chain_id {
            continue;
        }
        fence.announce().await?;
        reads.invalidate();
        let events =
            if payload.reorg || payload.events == 0 || payload.events > MAX_NOTICE_EVENTS as u64 {
                None
            } else {
                let events = load_events_in_blocks(
                    db,
                    chain_id,
                    payload.from_block,
                    payload.to_block,
                    MAX_NOTICE_EVENTS,
                )
                .await?;
                Some(Arc::new(events))
            };
        // No receiver is fine: nobody is streaming, or no job waits.
        let _ = notices.send(Notice::Chain(ChainNotice {
            from_block: payload.from_block,
            to_block: payload.to_block,
            reorg: payload.reorg,
            events,
            count: payload.events,
        }));
        // Jobs that follow the index run when it changed, not for every empty block.
        if payload.reorg || payload.events > 0 {
            let _ = indexed.send(());
        }
    }
}
