//! The on-chain registration of a wallet at its first login. The login records the request in the
//! transaction that issues its session, so a signed-in wallet always has one; writing the
//! transaction (which estimates it on the chain node) follows right after the login commits, and a
//! sweep every few seconds writes what that missed (a node or database error, a replica killed in
//! between). The outbox row's reference is the account's, so however many times it is written
//! there is one row, and one transaction.

use std::time::Duration;

use alloy::primitives::Address;
use decentraspace_abi::AccountRegistry;
use sqlx::PgConnection;

use super::AccountsState;
use crate::{
    chain::{ChainError, Operator},
    jobs::{Job, Schedule},
};

/// How often the sweep looks for requests without a transaction.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A request this young is left to its login, which is writing it.
const LOGIN_GRACE_SECS: f64 = 2.0;
/// Requests written per sweep.
const SWEEP_BATCH: i64 = 100;

/// Records, in the login's transaction, that `account` is to be registered: unless it is indexed
/// already or was requested before, and within `per_hour` requests per hour (each costs the
/// operator gas, and a new wallet costs nothing to make; past it, a later login records it).
/// True when this call recorded it.
pub(super) async fn request(
    conn: &mut PgConnection,
    chain_id: u64,
    account: Address,
    per_hour: u32,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query!(
        r#"insert into account_registrations (chain_id, account)
           select $1, $2
           where not exists (select 1 from accounts where chain_id = $1 and address = $2)
             and (select count(*) from account_registrations
                  where chain_id = $1 and requested_at > now() - interval '1 hour') < $3
           on conflict do nothing"#,
        chain_id as i64,
        account.as_slice(),
        i64::from(per_hour)
    )
    .execute(conn)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Writes `account`'s registration to the outbox (or finds the row written before) and links it
/// to the request. The sender sends it; nothing here waits for the chain beyond the estimate.
pub(super) async fn write(
    state: &AccountsState,
    operator: &Operator,
    account: Address,
) -> Result<(), ChainError> {
    let registry = AccountRegistry::new(
        state.deployment.contracts.account_registry,
        operator.provider().clone(),
    );
    let id = operator
        .enqueue(registry.registerFor(account), format!("register:{account}"), Some(account))
        .await?;
    sqlx::query!(
        "update account_registrations set outbox_id = $3
         where chain_id = $1 and account = $2 and outbox_id is null",
        state.chain_id() as i64,
        account.as_slice(),
        id
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// The sweep: every few seconds, on every replica (the outbox reference makes a second writer
/// harmless), writes the requests older than the login's grace that have no row yet.
pub(super) fn job(state: &AccountsState) -> Option<Job> {
    state.operator.as_ref()?;
    let state = state.clone();
    Some(Job::periodic(
        "account-registrations",
        move || Schedule::every(SWEEP_EVERY),
        move || {
            let state = state.clone();
            async move { sweep(&state).await.map(drop) }
        },
    ))
}

/// One sweep; how many requests it wrote. A request the chain node refuses to estimate (the
/// account registered itself meanwhile, say) is logged and tried again next time, until the index
/// shows the account.
pub async fn sweep(state: &AccountsState) -> anyhow::Result<usize> {
    let Some(operator) = state.operator.as_ref() else { return Ok(0) };
    let unsent = sqlx::query_scalar!(
        r#"select r.account from account_registrations r
           where r.chain_id = $1 and r.outbox_id is null
             and r.requested_at < now() - make_interval(secs => $2)
             and not exists (select 1 from accounts a where a.chain_id = r.chain_id and a.address = r.account)
           order by r.requested_at limit $3"#,
        state.chain_id() as i64,
        LOGIN_GRACE_SECS,
        SWEEP_BATCH
    )
    .fetch_all(&state.db)
    .await?;
    let mut written = 0;
    for account in unsent {
        let account = Address::try_from(account.as_slice())?;
        match write(state, operator, account).await {
            Ok(()) => written += 1,
            Err(ChainError::Database(err)) => return Err(err.into()),
            // The node is down: the next sweep tries them all again.
            Err(err @ ChainError::Unreachable(_)) => {
                tracing::warn!(target: "api::auth", %err, "the chain node is unreachable; registrations wait for the next sweep");
                break;
            }
            Err(err) => {
                tracing::warn!(target: "api::auth", %err, %account, "cannot write the on-chain registration yet");
            }
        }
    }
    if written > 0 {
        tracing::info!(target: "api::auth", written, "wrote registrations their logins left unwritten");
    }
    Ok(written)
}
