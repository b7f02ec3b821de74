//! Every advisory lock of the platform, in one key space. A key is
//! `0x6473` ("ds") `<< 48 | kind << 32 | item`: the kind names what is locked, the item which one
//! (0 for a lock taken for the whole database, else the low 32 bits of a hash of the item). Two
//! locks of different kinds can therefore never share a key, whatever their items; two items of
//! one kind may (once in 2^32), which only makes them wait for each other.
//!
//! Session locks elect the one replica that runs a job's pass ([`try_lead`]); transaction locks
//! serialize the writes of one item ([`lock_in`]).

use sqlx::{PgConnection, Postgres, Transaction};

const NAMESPACE: i64 = 0x6473 << 48;

/// An advisory lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// The indexer's writer for a chain (one indexer writes; others stand by).
    IndexerWriter {
        /// The chain indexed.
        chain_id: u64,
    },
    /// The relay tracker's pass (receipts, fee bumps).
    RelayTracker,
    /// One account's relay reservations (its hourly quota and idempotency keys).
    RelayAccount {
        /// The account's 20 address bytes.
        account: &'a [u8],
    },
    /// The billing meter's cycle.
    Meter,
    /// The meter's planning of a cycle's charges.
    MeterPlan,
    /// Suspending the services of accounts whose credit ran out.
    Depletion,
    /// One account's storage records and folders.
    StorageAccount {
        /// The account's 20 address bytes.
        account: &'a [u8],
    },
    /// Rebuilding folders' IPFS directories.
    StorageDirectories,
    /// One site's hosting service (opening it once).
    Site {
        /// The site's id.
        site_id: i64,
    },
    /// A deployment being worked: held by the worker's own connection while it works, so that
    /// a worker that died (its connection closed) is seen at once, before its lease runs out.
    /// In SQL, the key of deployment `id` is `Lock::Deployment { deployment_id: 0 }.key() |
    /// ((id # (id >> 32)) & 4294967295)`.
    Deployment {
        /// The deployment's id.
        deployment_id: i64,
    },
    /// One site's GitHub webhook (making it once).
    SiteWebhook {
        /// The site's id.
        site_id: i64,
    },
    /// The dynamic sites' reconciler.
    DynamicReconcile,
    /// The uptime prober.
    Uptime,
    /// One account's GitHub links (its link limit).
    GitHubAccount {
        /// The account's 20 address bytes.
        account: &'a [u8],
    },
    /// One GitHub identity's link on a chain.
    GitHubIdentity {
        /// The chain.
        chain_id: u64,
        /// GitHub's user id.
        github_id: i64,
    },
    /// One account's build minutes (its monthly allowance).
    BuildMinutes {
        /// The account's 20 address bytes.
        account: &'a [u8],
    },
    /// Settling interrupted domain purchases.
    DomainRecovery,
    /// Reminding owners of names ending soon.
    DomainReminders,
    /// Re-verifying linked domains' proofs.
    DomainReverify,
    /// Pointing bought names' zones at their sites.
    DomainZones,
    /// Renewing bought names before they end.
    DomainAutoRenew,
    /// The managed databases' provisioner pass.
    DatabaseProvisioner,
    /// One managed database's changes on its host (making, opening, closing, dropping it).
    Database {
        /// Its service id.
        service_id: i64,
    },
    /// Ordering linked domains' TLS certificates.
    TlsOrders,
    /// Pointing sites' IPNS names at their deployments.
    SiteNames,
    /// Registering bought `.eth` names at ENS (commit, wait, register).
    EthNames,
    /// One wallet's API tokens (counted and made one at a time).
    ApiTokens {
        /// The account's 20 address bytes.
        account: &'a [u8],
    },
    /// The one sender of a signing key's transactions (its outbox rows, its nonces).
    ChainSender {
        /// The chain.
        chain_id: u64,
        /// The key's 20 address bytes.
        signer: &'a [u8],
    },
}

impl Lock<'_> {
    /// The lock's kind: unique per variant.
    const fn kind(&self) -> i64 {
        match self {
            Self::IndexerWriter { .. } => 0x0001,
            Self::RelayTracker => 0x0101,
            Self::RelayAccount { .. } => 0x0102,
            Self::Meter => 0x0201,
            Self::MeterPlan => 0x0202,
            Self::Depletion => 0x0203,
            Self::StorageAccount { .. } => 0x0301,
            Self::StorageDirectories => 0x0302,
            Self::Site { .. } => 0x0401,
            Self::DynamicReconcile => 0x0402,
            Self::Uptime => 0x0403,
            Self::BuildMinutes { .. } => 0x0404,
            Self::SiteWebhook { .. } => 0x0405,
            Self::Deployment { .. } => 0x0406,
            Self::SiteNames => 0x0407,
            Self::GitHubAccount { .. } => 0x0501,
            Self::GitHubIdentity { .. } => 0x0502,
            Self::DomainRecovery => 0x0601,
            Self::DomainReminders => 0x0602,
            Self::DomainReverify => 0x0603,
            Self::DomainZones => 0x0604,
            Self::DomainAutoRenew => 0x0605,
            Self::TlsOrders => 0x0606,
            Self::EthNames => 0x0607,
            Self::ChainSender { .. } => 0x0701,
            Self::DatabaseProvisioner => 0x0801,
            Self::ApiTokens { .. } => 0x0901,
            Self::Database { .. } => 0x0802,
        }
    }

    /// Which item of the kind (0 for whole-database locks).
    fn item(&self) -> u32 {
        match *self {
            Self::IndexerWriter { chain_id } => fold(chain_id),
            Self::RelayAccount { account }
            | Self::StorageAccount { account }
            | Self::GitHubAccount { account }
            | Self::BuildMinutes { account }
            | Self::ApiTokens { account } => fnv1a(account),
            Self::Site { site_id } | Self::SiteWebhook { site_id } => fold(site_id as u64),
            Self::Database { service_id } => fold(service_id as u64),
            Self::Deployment { deployment_id } => fold(deployment_id as u64),
            Self::ChainSender { chain_id, signer } => fold(chain_id) ^ fnv1a(signer),
            Self::GitHubIdentity { chain_id, github_id } => {
                fold(chain_id) ^ fold(github_id as u64).rotate_left(16)
            }
            Self::RelayTracker
            | Self::Meter
            | Self::MeterPlan
            | Self::Depletion
            | Self::StorageDirectories
            | Self::DynamicReconcile
            | Self::Uptime
            | Self::DomainRecovery
            | Self::DomainReminders
            | Self::DomainReverify
            | Self::DomainZones
            | Self::DomainAutoRenew
            | Self::TlsOrders
            | Self::EthNames
            | Self::SiteNames
            | Self::DatabaseProvisioner => 0,
        }
    }

    /// The lock's key for `pg_advisory_lock(bigint)` and its kin.
    pub fn key(&self) -> i64 {
        NAMESPACE | self.kind() << 32 | i64::from(self.item())
    }
}

/// 64 bits folded into 32 (a chain id, a row id: small values stay themselves).
fn fold(value: u64) -> u32 {
    (value ^ (value >> 32)) as u32
}

/// FNV-1a over bytes (an address): stable across processes and versions, unlike `Hash`.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Takes `lock` for the one replica that runs a pass, on a connection of its own, or `None` when
/// another holds it. The lock lasts as long as the connection: close it (or drop it) when the pass
/// ends; a pass cut short (a crash, a cancelled task) closes it too, so the lock is never left
/// behind on a pooled connection.
pub async fn try_lead(
    db: &sqlx::PgPool,
    lock: Lock<'_>,
) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let leader: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(lock.key())
        .fetch_one(&mut *conn)
        .await?;
    // Taken: the connection leaves the pool with its lock. Not taken: it holds nothing and goes
    // back to the pool (closing it would cost the server a backend per try, and standby
    // replicas try often).
    Ok(leader.then(|| conn.detach()))
}

/// Takes `lock` until `tx` ends (waiting for whoever holds it).
pub async fn lock_in(
    tx: &mut Transaction<'_, Postgres>,
    lock: Lock<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(lock.key()).execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn one_of_each(account: &[u8]) -> Vec<Lock<'_>> {
        vec![
            Lock::IndexerWriter { chain_id: 137 },
            Lock::RelayTracker,
            Lock::RelayAccount { account },
            Lock::Meter,
            Lock::MeterPlan,
            Lock::Depletion,
            Lock::StorageAccount { account },
            Lock::StorageDirectories,
            Lock::Site { site_id: 1 },
            Lock::DynamicReconcile,
            Lock::Uptime,
            Lock::BuildMinutes { account },
            Lock::SiteWebhook { site_id: 1 },
            Lock::Deployment { deployment_id: 1 },
            Lock::GitHubAccount { account },
            Lock::GitHubIdentity { chain_id: 137, github_id: 1 },
            Lock::DomainRecovery,
            Lock::DomainReminders,
            Lock::DomainReverify,
            Lock::DomainZones,
            Lock::DomainAutoRenew,
            Lock::TlsOrders,
            Lock::EthNames,
            Lock::SiteNames,
            Lock::ChainSender { chain_id: 137, signer: account },
            Lock::DatabaseProvisioner,
            Lock::Database { service_id: 1 },
            Lock::ApiTokens { account },
        ]
    }

    #[test]
    fn every_kind_has_its_own_key_space() {
        let account = [7u8; 20];
        let locks = one_of_each(&account);
        let kinds: HashSet<i64> = locks.iter().map(Lock::kind).collect();
        assert_eq!(kinds.len(), locks.len(), "two variants share a kind");
        // Whatever the item, the kind is in the key: no lock of one kind meets another kind's.
        for chain_id in [0, 1, 137, 80_002, u64::from(u32::MAX) + 5, u64::MAX] {
            let key = Lock::IndexerWriter { chain_id }.key();
            assert_eq!(key >> 32, NAMESPACE >> 32 | 0x0001, "{chain_id}");
        }
        let keys: HashSet<i64> = locks.iter().map(Lock::key).collect();
        assert_eq!(keys.len(), locks.len());
        // The keys the platform used before this registry (a chain id added to a base) are gone:
        // every key carries the namespace.
        assert!(keys.iter().all(|k| k >> 48 == 0x6473));
    }

    #[test]
    fn items_of_one_kind_are_told_apart() {
        let (a, b) = ([1u8; 20], [2u8; 20]);
        assert_ne!(
            Lock::StorageAccount { account: &a }.key(),
            Lock::StorageAccount { account: &b }.key()
        );
        assert_ne!(
            Lock::IndexerWriter { chain_id: 137 }.key(),
            Lock::IndexerWriter { chain_id: 80_002 }.key()
        );
        assert_ne!(Lock::Site { site_id: 1 }.key(), Lock::Site { site_id: 2 }.key());
        assert_ne!(
            Lock::ChainSender { chain_id: 137, signer: &a }.key(),
            Lock::ChainSender { chain_id: 137, signer: &b }.key()
        );
        assert_ne!(
            Lock::GitHubIdentity { chain_id: 137, github_id: 5 }.key(),
            Lock::GitHubIdentity { chain_id: 137, github_id: 6 }.key()
        );
        // Stable: a replica of another build computes the same key.
        assert_eq!(Lock::Meter.key(), 0x6473_0201_0000_0000);
        assert_eq!(Lock::IndexerWriter { chain_id: 137 }.key(), 0x6473_0001_0000_0089);
    }
}
