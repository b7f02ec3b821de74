//! An account's side of storage: what its tier lets it store, its storage service (opened
//! on-chain on its first upload), and the record of a stored file, written under a per-account
//! lock that checks the quota again, so parallel uploads cannot pass it together.

use alloy::primitives::{Address, keccak256};
use chrono::{DateTime, Utc};
use decentraspace_abi::{
    PlatformRevert, ServiceKind,
    ServiceRegistry::{self, ServiceRegistryErrors},
    Tier,
};
use decentraspace_db::locks::{Lock, lock_in};
use sqlx::PgConnection;

use crate::{
    accounts::tier::effective_tier,
    chain::ChainError,
    http::error::{ApiError, ApiResult},
    storage::StorageState,
};

/// Steps of 100 ms a request waits for a just-opened storage service to be indexed.
const INDEX_WAIT_STEPS: usize = 100;

/// What an account may still upload: its tier's file limit, or what is left of its quota.
pub(super) struct Allowance {
    /// Bytes the next upload may have.
    pub bytes: u64,
    /// The problem type past it.
    pub slug: &'static str,
    /// What the limit is.
    pub detail: String,
}

/// A tier's storage limits: the largest file and the quota.
fn limits(state: &StorageState, tier: Tier) -> (u64, u64) {
    let config = &state.config;
    if tier == Tier::Paid {
        (config.storage_max_file_paid, config.storage_quota_paid)
    } else {
        (config.storage_max_file_free, config.storage_quota_free)
    }
}

/// Bytes the account's files hold: its live files, and every Arweave file it ever stored
/// (Arweave keeps them for good, so deleting one frees no quota).
async fn used_bytes(
    conn: &mut PgConnection,
    state: &StorageState,
    account: Address,
) -> ApiResult<u64> {
    let used = sqlx::query_scalar!(
        r#"select coalesce(sum(size_bytes), 0)::bigint as "used!" from storage_files
           where chain_id = $1 and account = $2 and (deleted_at is null or backend = 'arweave')"#,
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_one(conn)
    .await?;
    Ok(used as u64)
}

/// A transaction holding the account's storage lock: recording files and changing folders run
/// one at a time per account, so what is checked inside still holds at the writes.
pub(super) async fn locked(
    state: &StorageState,
    account: Address,
) -> ApiResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = state.db.begin().await?;
    lock_in(&mut tx, Lock::StorageAccount { account: account.as_slice() }).await?;
    Ok(tx)
}

pub(super) async fn allowance(state: &StorageState, account: Address) -> ApiResult<Allowance> {
    let tier = effective_tier(state, account).await?;
    let used = used_bytes(&mut *state.db.acquire().await?, state, account).await?;
    let (max_file, quota) = limits(state, tier);
    let left = quota.saturating_sub(used);
    Ok(if left < max_file {
        Allowance {
            bytes: left,
            slug: "storage-quota-exceeded",
            detail: format!(
                "the {tier} tier stores {quota} bytes in all and {left} are left; delete files or upgrade"
            ),
        }
    } else {
        Allowance {
            bytes: max_file,
            slug: "file-too-large",
            detail: format!("the {tier} tier takes files up to {max_file} bytes"),
        }
    })
}

/// The account's storage service, opened on-chain (by the operator) when it has none yet. Paused
/// or suspended storage takes no uploads.
pub(super) async fn storage_service(state: &StorageState, account: Address) -> ApiResult<i64> {
    if let Some(id) = indexed_storage_service(state, account).await? {
        return Ok(id);
    }
    let operator = state.operator()?;
    let registry = ServiceRegistry::new(
        state.deployment.contracts.service_registry,
        operator.provider().clone(),
    );
    let reference = keccak256(format!("storage:{account}"));
    let created = operator
        .send_for_receipt(registry.createServiceFor(
            account,
            ServiceKind::Storage.into(),
            reference,
        ))
        .await;
    match created {
        Ok(receipt) => crate::services::opened(&receipt, "storage"),
        // Opened by an earlier request moments ago (the one storage service a tier allows),
        // and not indexed yet: wait for the index.
        Err(ChainError::Refused(PlatformRevert::ServiceRegistry(
            ServiceRegistryErrors::ServiceRegistryTierLimitExceeded(_),
        ))) => {
            for _ in 0..INDEX_WAIT_STEPS {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if let Some(id) = indexed_storage_service(state, account).await? {
                    return Ok(id);
                }
            }
            Err(ApiError::Conflict(
                "your storage service is being opened; try again in a moment".into(),
            ))
        }
        Err(err) => Err(err.into()),
    }
}

/// The account's open storage service as indexed; paused or suspended storage is a conflict.
pub(super) async fn indexed_storage_service(
    state: &StorageState,
    account: Address,
) -> ApiResult<Option<i64>> {
    let existing = sqlx::query!(
        "select service_id, state from services
         where chain_id = $1 and owner = $2 and kind = 'storage' and state <> 'cancelled'
         order by service_id limit 1",
        state.chain_id() as i64,
        account.as_slice()
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(service) = existing else { return Ok(None) };
    if service.state != "active" {
        return Err(ApiError::Conflict(format!(
            "your storage service {} is {}: resume it before uploading",
            service.service_id, service.state
        )));
    }
    Ok(Some(service.service_id))
}

/// A stored file's record.
pub(super) struct Recorded {
    /// Its id.
    pub id: i64,
    /// The secret of its shareable link.
    pub access_token: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Unpins the IPFS content no live file refers to any more. Content is addressed by its bytes,
/// so another file (of any account) may hold the same CID: its pin must stay. Arweave content
/// is permanent: there is nothing to release.
pub(super) async fn release(state: &StorageState, cids: &[String]) -> ApiResult<()> {
    let Some(ipfs) = &state.ipfs else { return Ok(()) };
    let unused = sqlx::query_scalar!(
        r#"select c as "cid!" from unnest($1::text[]) as c
           where not exists (select 1 from storage_files
                             where content_id = c and deleted_at is null)
             and not exists (select 1 from storage_files where content_id = c and backend = 'arweave')"#,
        cids
    )
    .fetch_all(&state.db)
    .await?;
    for cid in unused {
        if let Err(err) = ipfs.unpin(&cid).await {
            tracing::warn!(target: "api::storage", %cid, %err, "cannot unpin");
        }
    }
    Ok(())
}

/// A new secret for a shareable link: 128 random bits, hex.
pub(super) fn access_token() -> String {
    alloy::hex::encode(crate::random::reference())
}

/// A file a backend stored, to record.
pub(super) struct NewFile<'a> {
    /// The account's storage service.
    pub service_id: i64,
    pub name: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    /// `ipfs` or `arweave`.
    pub backend: &'a str,
    /// The CID or the Arweave transaction id.
    pub content_id: &'a str,
}

/// Records a file a backend stored, unless the account's quota no longer has room for it (an
/// upload that ran alongside took it): then `None`, and the caller unpins the content.
pub(super) async fn record(
    state: &StorageState,
    account: Address,
    file: NewFile<'_>,
) -> ApiResult<Option<Recorded>> {
    let mut tx = locked(state, account).await?;
    let (_, quota) = limits(state, effective_tier(state, account).await?);
    if used_bytes(&mut tx, state, account).await? + file.size > quota {
        return Ok(None);
    }
    let token = access_token();
    let row = sqlx::query!(
        r#"insert into storage_files
               (chain_id, account, service_id, name, content_type, size_bytes, backend, content_id,
                access_token)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           returning id, created_at"#,
        state.chain_id() as i64,
        account.as_slice(),
        file.service_id,
        file.name,
        file.content_type,
        file.size as i64,
        file.backend,
        file.content_id,
        token
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Recorded { id: row.id, access_token: token, created_at: row.created_at }))
}
