//! Build minutes. What a deployment's build ran (its steps in the sandbox, wall time, rounded up
//! to the minute) is recorded once per deployment, in the month it ran (UTC). Each account's
//! builds run a monthly allowance free, by tier ([`included`], the one place it is set); minutes
//! past it are charged at `BUILD_MINUTE_CREDITS` each, as usage of the site's hosting service
//! through the meter, referenced by the deployment, so a retried job never charges twice. A build
//! is refused up front ([`check`]) when the allowance is used up and the available balance could
//! not pay for a build that runs to its time limit.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use chrono::{Datelike, NaiveDate, Utc};
use decentraspace_abi::Tier;
use decentraspace_db::locks::{Lock, lock_in};

use crate::{billing::available, config::Config, http::error::ApiError, platform::Platform};

/// Build minutes an account of `tier` runs free each month.
pub(crate) fn included(config: &Config, tier: Tier) -> u64 {
    match tier {
        Tier::Free => config.build_minutes_free,
        Tier::Paid => config.build_minutes_paid,
    }
}

/// Whole minutes, rounded up (a build that ran at all ran a minute).
pub(crate) fn minutes(wall: Duration) -> u64 {
    wall.as_secs().div_ceil(60).max(1)
}

/// The first day of this month (UTC).
fn this_month() -> NaiveDate {
    let today = Utc::now().date_naive();
    NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today)
}

/// Why a build may not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MinutesError {
    /// The allowance is used up and the available balance is short by `shortfall`.
    #[error("{detail}")]
    InsufficientCredit {
        /// What the build needs and what is available.
        detail: String,
        /// The credit units missing.
        shortfall: U256,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The account's tier could not be read.
    #[error("the account's tier could not be read")]
    Tier,
    /// The available balance could not be read.
    #[error("the available balance could not be read: {0}")]
    Available(ApiError),
}

impl From<MinutesError> for crate::http::error::ApiError {
    fn from(err: MinutesError) -> Self {
        match err {
            MinutesError::InsufficientCredit { detail, shortfall } => {
                Self::CreditShort { detail, shortfall }
            }
            MinutesError::Db(err) => err.into(),
            MinutesError::Tier => {
                Self::Internal(anyhow::anyhow!("the account's tier could not be read"))
            }
            MinutesError::Available(err) => err,
        }
    }
}

/// The account's minutes this month and its allowance.
async fn month_of(state: &Platform, account: Address) -> Result<(u64, u64), MinutesError> {
    let tier = crate::accounts::tier::effective_tier(state, account)
        .await
        .map_err(|_| MinutesError::Tier)?;
    let used = sqlx::query_scalar!(
        r#"select coalesce(sum(minutes), 0)::bigint as "used!" from build_minutes
           where chain_id = $1 and account = $2 and month = $3"#,
        state.chain_id() as i64,
        account.as_slice(),
        this_month()
    )
    .fetch_one(&state.db)
    .await?;
    Ok((used.max(0) as u64, included(&state.config, tier)))
}

/// Whether `account` can pay for a build now: its allowance covers a build that runs to the
/// time limit, or its balance pays for the minutes past it.
pub(crate) async fn check(state: &Platform, account: Address) -> Result<(), MinutesError> {
    let (used, included) = month_of(state, account).await?;
    let longest = minutes(Duration::from_secs(state.config.build_time_limit_secs));
    let past = (used + longest).saturating_sub(included.max(used)).min(longest);
    if past == 0 {
        return Ok(());
    }
    let cost = past * state.config.build_minute_credits;
    let what = format!(
        "a build (this month's {included} included build minutes are used up, {used} run, and a \
         build may run {longest} minutes past them)"
    );
    match available::require(state, account, U256::from(cost), U256::ZERO, &what).await {
        Ok(()) => Ok(()),
        Err(ApiError::CreditShort { detail, shortfall }) => {
            Err(MinutesError::InsufficientCredit { detail, shortfall })
        }
        Err(other) => Err(MinutesError::Available(other)),
    }
}

/// What a build's minutes came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Minutes it ran.
    pub minutes: u64,
    /// Of those, past the month's allowance (charged).
    pub billed: u64,
    /// Credit units charged.
    pub credits: u64,
}

/// Records the build of deployment `id` of site `site_id` (which ran `wall`) and charges its
/// minutes past the owner's allowance. Once per deployment: a second call answers the first.
pub(crate) async fn record(
    state: &Platform,
    id: i64,
    site_id: i64,
    wall: Duration,
) -> Result<Recorded, MinutesError> {
    let site =
        sqlx::query!(r#"select s.account, s.service_id from sites s where s.id = $1"#, site_id)
            .fetch_one(&state.db)
            .await?;
    let account = Address::try_from(site.account.as_slice()).unwrap_or_default();
    let tier = crate::accounts::tier::effective_tier(state, account)
        .await
        .map_err(|_| MinutesError::Tier)?;
    let allowance = included(&state.config, tier);
    let ran = minutes(wall);
    let month = this_month();
    let mut tx = state.db.begin().await?;
    // One account's builds are counted one at a time, so two cannot both fit in what is left.
    lock_in(&mut tx, Lock::BuildMinutes { account: &site.account }).await?;
    let inserted = sqlx::query!(
        "insert into build_minutes (deployment_id, chain_id, account, month, minutes)
         values ($1, $2, $3, $4, $5) on conflict (deployment_id) do nothing",
        id,
        state.chain_id() as i64,
        &site.account,
        month,
        ran as i32
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        let first = sqlx::query!(
            "select minutes, billed_minutes from build_minutes where deployment_id = $1",
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        let (minutes, billed) = (first.minutes as u64, first.billed_minutes as u64);
        return Ok(Recorded {
            minutes,
            billed,
            credits: billed * state.config.build_minute_credits,
        });
    }
    let before = sqlx::query_scalar!(
        r#"select coalesce(sum(minutes), 0)::bigint as "before!" from build_minutes
           where chain_id = $1 and account = $2 and month = $3 and deployment_id <> $4"#,
        state.chain_id() as i64,
        &site.account,
        month,
        id
    )
    .fetch_one(&mut *tx)
    .await?
    .max(0) as u64;
    let billed = (before + ran).saturating_sub(allowance.max(before)).min(ran);
    let credits = billed * state.config.build_minute_credits;
    if billed > 0 {
        sqlx::query!(
            "update build_minutes set billed_minutes = $2 where deployment_id = $1",
            id,
            billed as i32
        )
        .execute(&mut *tx)
        .await?;
        if let Some(service) = site.service_id
            && credits > 0
        {
            crate::billing::usage::record_platform_usage(
                &mut tx,
                state.chain_id(),
                service,
                &site.account,
                credits,
                &format!("build:{id}"),
                &format!("{billed} build minutes past the month's {allowance} (deployment {id})"),
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Recorded { minutes: ran, billed, credits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_that_ran_at_all_ran_a_minute() {
        assert_eq!(minutes(Duration::from_millis(10)), 1);
        assert_eq!(minutes(Duration::from_secs(60)), 1);
        assert_eq!(minutes(Duration::from_secs(61)), 2);
        assert_eq!(minutes(Duration::from_secs(15 * 60)), 15);
    }
}
