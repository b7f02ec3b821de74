//! Confirms paid card payments and credits them on-chain, exactly once: each payment is claimed
//! with `FOR UPDATE SKIP LOCKED` (replicas share the work), confirmed with Paystack's verify
//! endpoint (retried with backoff while Paystack is down), checked against its initialization,
//! credited with `creditFiat` (which the ledger accepts once per reference), and marked `credited`
//! when the indexer has the credit.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use decentraspace_abi::{
    CreditLedger::{self, CreditLedgerErrors},
    PlatformRevert,
};
use decentraspace_clients::paystack::PaystackError;
use sqlx::PgConnection;

use super::card::payment_ref;
use crate::{
    billing::BillingState,
    chain::ChainError,
    jobs::{Job, Schedule},
    wakes::Wake,
};

/// How often due payments are looked for without a wake-up.
const INTERVAL: Duration = Duration::from_millis(500);
/// An initialized payment Paystack still does not show as paid after this is given up.
const ABANDONED_AFTER_SECS: f64 = 24.0 * 3600.0;
/// A credit sent but not indexed after this is sent again (the ledger refuses a second credit).
const RESEND_AFTER_SECS: f64 = 120.0;

struct Due {
    reference: String,
    account: Vec<u8>,
    currency: String,
    amount: i64,
    credits: String,
    status: String,
    attempts: i32,
    age_secs: f64,
}

/// The worker's job: a pass every [`INTERVAL`], and at once when a webhook queues a payment.
pub fn job(state: &BillingState) -> Job {
    let state = state.clone();
    let wake = state.wakes.of(Wake::CardPayments);
    Job::periodic(
        "card-payments",
        move || Schedule::every(INTERVAL).first_after(INTERVAL).woken_by_notify(wake.clone()),
        move || {
            let state = state.clone();
            async move { pass(&state).await.map(drop) }
        },
    )
}

/// Handles every due payment once. Returns how many were handled.
pub async fn pass(state: &BillingState) -> anyhow::Result<usize> {
    let mut handled = 0;
    loop {
        let mut tx = state.db.begin().await?;
        let due = sqlx::query_as!(
            Due,
            r#"select reference, account, currency, amount, credits::text as "credits!", status, attempts,
                      extract(epoch from now() - updated_at)::float8 as "age_secs!"
               from card_payments
               where chain_id = $1 and status in ('initialized', 'paid', 'crediting') and next_attempt_at <= now()
               order by next_attempt_at
               limit 1
               for update skip locked"#,
            state.chain_id() as i64
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else { return Ok(handled) };
        let (reference, attempts) = (due.reference.clone(), due.attempts);
        match handle(state, &mut tx, due).await {
            Ok(()) => tx.commit().await?,
            Err(err) => {
                // One payment that keeps failing must not hold up the others: it waits its turn.
                drop(tx);
                tracing::warn!(target: "api::payments", reference, err = format!("{err:#}"), "payment step failed; retrying later");
                let mut conn = state.db.acquire().await?;
                retry_later(&mut conn, &reference, attempts).await?;
            }
        }
        handled += 1;
    }
}

async fn handle(state: &BillingState, conn: &mut PgConnection, due: Due) -> anyhow::Result<()> {
    if due.status == "crediting" {
        return follow_credit(state, conn, &due).await;
    }
    let Some(provider) = state.payments.as_ref() else {
        return retry_later(conn, &due.reference, due.attempts).await;
    };
    let initialized = due.status == "initialized";
    let confirmed = match provider.verify(&due.reference).await {
        Ok(transaction) => transaction,
        Err(PaystackError::Unknown(message)) => {
            if initialized && due.age_secs < ABANDONED_AFTER_SECS {
                return check_again_later(conn, &due.reference).await;
            }
            return end(
                conn,
                &due.reference,
                "failed",
                &format!("Paystack does not know the payment: {message}"),
            )
            .await;
        }
        // Anything else (down, rate-limited, a key being rotated) is tried again: the customer
        // may have paid.
        Err(err) => {
            tracing::warn!(target: "api::payments", reference = due.reference, %err, attempt = due.attempts + 1, "verification failed; retrying");
            return retry_later(conn, &due.reference, due.attempts).await;
        }
    };
    match confirmed.status.as_str() {
        "success" => {}
        "failed" | "abandoned" | "reversed"
            if !initialized
                || due.age_secs >= ABANDONED_AFTER_SECS
                || confirmed.status != "abandoned" =>
        {
            return end(
                conn,
                &due.reference,
                "failed",
                &format!("Paystack reports the payment {}", confirmed.status),
            )
            .await;
        }
        // Still in progress (or abandoned for now: the customer may come back to it).
        _ => return check_again_later(conn, &due.reference).await,
    }
    if confirmed.amount != due.amount as u64
        || !confirmed.currency.eq_ignore_ascii_case(&due.currency)
    {
        tracing::error!(target: "api::payments", reference = due.reference, "paid amount or currency differs from the initialization");
        return end(
            conn,
            &due.reference,
            "flagged",
            &format!(
                "paid {} {} but {} {} was initialized; not credited, needs review",
                confirmed.amount, confirmed.currency, due.amount, due.currency
            ),
        )
        .await;
    }
    credit(state, conn, &due).await
}

/// Sends `creditFiat`; the ledger credits a reference once, so a resend is harmless.
async fn credit(state: &BillingState, conn: &mut PgConnection, due: &Due) -> anyhow::Result<()> {
    let Some(oracle) = state.oracle.as_ref() else {
        tracing::error!(target: "api::payments", reference = due.reference, "paid, but no payment oracle key is configured");
        return retry_later(conn, &due.reference, due.attempts).await;
    };
    let account = Address::try_from(due.account.as_slice())?;
    let credits: U256 = due.credits.parse()?;
    let ledger =
        CreditLedger::new(state.deployment.contracts.credit_ledger, oracle.provider().clone());
    let call = ledger.creditFiat(account, credits, payment_ref(&due.reference));
    // One outbox row per payment: a retry finds the row an earlier attempt wrote.
    match oracle.send_once(format!("card:{}", due.reference), Some(account), call).await {
        Ok(outcome) if outcome.status != "failed" => {
            let tx_hash = outcome
                .tx_hash
                .as_deref()
                .map(str::parse::<alloy::primitives::B256>)
                .transpose()?;
            crediting(conn, &due.reference, tx_hash.as_ref().map(|h| h.as_slice())).await
        }
        // Already credited (a resend after a lost answer): the indexer will show it.
        Err(ChainError::Refused(PlatformRevert::CreditLedger(
            CreditLedgerErrors::CreditLedgerPaymentRefUsed(_),
        ))) => crediting(conn, &due.reference, None).await,
        // Paid but refused by the chain (a role not granted, say): a person must look.
        Err(err @ (ChainError::Refused(_) | ChainError::RefusedUnknown(_))) => {
            end(conn, &due.reference, "flagged", &err.to_string()).await
        }
        // Reverted: most likely an earlier credit of the same reference landed first; the
        // indexed credit decides (and a resend names the reason if it was something else).
        Ok(_) => crediting(conn, &due.reference, None).await,
        Err(_) => retry_later(conn, &due.reference, due.attempts).await,
    }
}

/// The payment's credit is on its way (its transaction, when known): the indexer will show it.
async fn crediting(
    conn: &mut PgConnection,
    reference: &str,
    tx_hash: Option<&[u8]>,
) -> anyhow::Result<()> {
    sqlx::query!(
        r#"update card_payments
           set status = 'crediting', tx_hash = coalesce($2, tx_hash), next_attempt_at = now(), updated_at = now()
           where reference = $1"#,
        reference,
        tx_hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A credit sent: `credited` once indexed; sent again if it never lands.
async fn follow_credit(
    state: &BillingState,
    conn: &mut PgConnection,
    due: &Due,
) -> anyhow::Result<()> {
    let reference = payment_ref(&due.reference);
    let indexed = sqlx::query_scalar!(
        r#"select exists(select 1 from credit_entries where chain_id = $1 and kind = 'fiat' and reference = $2) as "indexed!""#,
        state.chain_id() as i64,
        reference.as_slice()
    )
    .fetch_one(&mut *conn)
    .await?;
    if indexed {
        sqlx::query!(
            "update card_payments set status = 'credited', next_attempt_at = null, updated_at = now() where reference = $1",
            due.reference
        )
        .execute(&mut *conn)
        .await?;
        tracing::info!(target: "api::payments", reference = due.reference, "card payment credited");
        return Ok(());
    }
    if due.age_secs > RESEND_AFTER_SECS {
        return credit(state, conn, due).await;
    }
    sqlx::query!(
        "update card_payments set next_attempt_at = now() + interval '500 milliseconds' where reference = $1",
        due.reference
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An initialized payment is looked at again in a few minutes (its webhook may never come).
async fn check_again_later(conn: &mut PgConnection, reference: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "update card_payments set next_attempt_at = now() + interval '5 minutes' where reference = $1",
        reference
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn retry_later(
    conn: &mut PgConnection,
    reference: &str,
    attempts: i32,
) -> anyhow::Result<()> {
    // 1 s, 2 s, 4 s … up to a minute.
    let delay_ms = 1_000_i64.saturating_mul(1 << attempts.clamp(0, 6)).min(60_000);
    sqlx::query!(
        r#"update card_payments
           set attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2::float8 / 1000)
           where reference = $1"#,
        reference,
        delay_ms as f64
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn end(
    conn: &mut PgConnection,
    reference: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<()> {
    sqlx::query!(
        r#"update card_payments set status = $2, reason = $3, next_attempt_at = null, updated_at = now()
           where reference = $1"#,
        reference,
        status,
        reason
    )
    .execute(conn)
    .await?;
    Ok(())
}
