//! The NOTIFY channels between the indexer and the API replicas, and what each carries.
//! A notification is delivered when its transaction commits, so one sent inside a transaction
//! that rolls back is never seen.

use serde::{Deserialize, Serialize};

/// The indexer announces every committed batch (and every rollback) here; the payload is an
/// [`IndexedBatch`] as JSON.
pub const INDEXED: &str = "decentraspace_events";

/// Wakes the indexer to look at the chain now (the API's chain-event listener sends it; the
/// payload names a block but is not trusted).
pub const WAKE_INDEXER: &str = "decentraspace_wake";

/// Platform notices for the live stream of every replica (the API sends and listens; the payload
/// is the API's `PlatformNotice` as JSON).
pub const PLATFORM: &str = "decentraspace_platform";

/// A deployment's log or state changed (a trigger on `deployments` sends it; the payload is the
/// deployment's id): wakes the log streams of every replica.
pub const DEPLOYMENT_LOG: &str = "decentraspace_deployment_log";

/// A deployment was queued (a trigger on `deployments` sends it; the payload is its id): wakes
/// the deploy workers of every replica.
pub const DEPLOYMENT_QUEUED: &str = "decentraspace_deployment_queued";

/// A chain write was queued in the outbox (a trigger on `chain_outbox` sends it; the payload is
/// the signing key's address, hex without `0x`): wakes that key's sender on every replica.
pub const OUTBOX_QUEUED: &str = "decentraspace_outbox_queued";

/// An outbox row changed state (a trigger on `chain_outbox` sends it; the payload is its id):
/// wakes the callers that wait for it, on every replica.
pub const OUTBOX_MOVED: &str = "decentraspace_outbox_moved";

/// A job has new work (the payload names it: `card-payments`, `folder-directories`,
/// `certificates`, `site-names`): wakes it on every replica.
pub const WAKE_JOB: &str = "decentraspace_wake_job";

/// A site's routing changed: its row (a deployment went live, a rollback), a preview or a
/// dynamic site's machine (statement triggers on `sites`, `site_previews`, `site_instances` send
/// it; the payload is the table's name): the gateways forget the routes they keep.
pub const SITE_CHANGED: &str = "decentraspace_site_changed";

/// What the indexer committed: a batch of blocks, or a rollback to a fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedBatch {
    /// The chain.
    pub chain_id: u64,
    /// First block of the batch (after a rollback: the first block rolled back).
    pub from_block: u64,
    /// Last block of the batch.
    pub to_block: u64,
    /// Events committed.
    pub events: u64,
    /// Whether blocks were rolled back.
    pub reorg: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_distinct_and_batches_round_trip() {
        let names = [
            INDEXED,
            WAKE_INDEXER,
            PLATFORM,
            DEPLOYMENT_LOG,
            DEPLOYMENT_QUEUED,
            OUTBOX_QUEUED,
            OUTBOX_MOVED,
            WAKE_JOB,
            SITE_CHANGED,
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let batch =
            IndexedBatch { chain_id: 137, from_block: 5, to_block: 9, events: 3, reorg: false };
        let text = serde_json::to_string(&batch).expect("serialises");
        assert_eq!(
            text,
            r#"{"chain_id":137,"from_block":5,"to_block":9,"events":3,"reorg":false}"#
        );
        assert_eq!(serde_json::from_str::<IndexedBatch>(&text).expect("parses"), batch);
    }
}
