//! `/analytics/credit`: where a wallet's credits went, from the indexed ledger movements: spend
//! and recharges per day, week or month, per service and per kind, the top services, the burn rate
//! and the date the balance would run out at that rate.

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    billing::BillingState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// The window and its buckets.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CreditAnalyticsQuery {
    /// `day` (default), `week` or `month`.
    pub bucket: Option<String>,
    /// From (RFC 3339; default 30 days before `to`); before `to`, and at most three years
    /// (1,098 days) before it.
    pub from: Option<DateTime<Utc>>,
    /// Until (RFC 3339, exclusive; default now).
    pub to: Option<DateTime<Utc>>,
}

/// One bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBucket {
    /// Its start.
    pub start: DateTime<Utc>,
    /// Credit units spent (deductions).
    pub spent: String,
    /// Credit units bought (token and card recharges).
    pub recharged: String,
}

/// A service's spend.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceSpend {
    /// The service (null: charges not tied to a service).
    pub service_id: Option<i64>,
    /// Its kind, when known.
    pub kind: Option<String>,
    /// Credit units spent in the window.
    pub spent: String,
}

/// A kind's spend.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindSpend {
    /// `static_hosting`, `storage`, … (`other`: not tied to a service).
    pub kind: String,
    /// Credit units spent in the window.
    pub spent: String,
}

/// Credit analytics of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditAnalytics {
    /// `day`, `week` or `month`.
    pub bucket: String,
    /// The window's start.
    pub from: DateTime<Utc>,
    /// The window's end.
    pub to: DateTime<Utc>,
    /// Spend and recharges per bucket (buckets with movements only).
    pub buckets: Vec<CreditBucket>,
    /// Spend per service, largest first (at most 10).
    pub top_services: Vec<ServiceSpend>,
    /// Spend per kind of service, largest first.
    pub by_kind: Vec<KindSpend>,
    /// Credit units spent in the window.
    pub spent: String,
    /// Credit units bought in the window.
    pub recharged: String,
    /// Credit units spent per day over the last 7 days.
    pub burn_rate_per_day: String,
    /// The on-chain balance as indexed.
    pub balance: String,
    /// What can be spent now: the balance less what the services used since their last charge
    /// (the figure `/billing/balance` shows as `available`).
    pub available: String,
    /// When the available balance runs out at the burn rate; null when nothing is being spent, or
    /// when it would last more than 100 years at this rate (no date that far out is meaningful).
    pub projected_depletion: Option<DateTime<Utc>>,
}

/// Where the caller's credits went.
#[utoipa::path(get, path = "/analytics/credit", tag = "analytics", security(("bearer" = [])),
    params(CreditAnalyticsQuery),
    responses((status = 200, body = CreditAnalytics)))]
pub async fn credit_analytics(
    State(state): State<BillingState>,
    user: AuthUser,
    Query(q): Query<CreditAnalyticsQuery>,
) -> ApiResult<Json<CreditAnalytics>> {
    let bucket = q.bucket.unwrap_or_else(|| "day".into());
    if !["day", "week", "month"].contains(&bucket.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "bucket must be day, week or month, got {bucket:?}"
        )));
    }
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(30));
    if from >= to || to - from > Duration::days(3 * 366) {
        return Err(ApiError::BadRequest(
            "the window must run forwards and span at most three years".into(),
        ));
    }
    let (chain, account) = (state.chain_id() as i64, user.address.as_slice());
    let buckets = sqlx::query!(
        r#"select date_trunc($4, block_time) as "start!",
                  coalesce(sum(credits) filter (where kind = 'deduction'), 0)::text as "spent!",
                  coalesce(sum(credits) filter (where kind in ('recharge', 'fiat')), 0)::text as "recharged!"
           from credit_entries
           where chain_id = $1 and account = $2 and block_time >= $3 and block_time < $5
           group by 1 order by 1"#,
        chain,
        account,
        from,
        bucket,
        to
    )
    .fetch_all(&state.db)
    .await?;
    let services = sqlx::query!(
        r#"select c.service_id, s.kind as "kind?", sum(c.credits)::text as "spent!"
           from credit_entries c
           left join services s on s.chain_id = c.chain_id and s.service_id = c.service_id
           where c.chain_id = $1 and c.account = $2 and c.kind = 'deduction'
             and c.block_time >= $3 and c.block_time < $4
           group by c.service_id, s.kind
           order by sum(c.credits) desc, c.service_id
           limit 10"#,
        chain,
        account,
        from,
        to
    )
    .fetch_all(&state.db)
    .await?;
    let kinds = sqlx::query!(
        r#"select coalesce(s.kind, 'other') as "kind!", sum(c.credits)::text as "spent!"
           from credit_entries c
           left join services s on s.chain_id = c.chain_id and s.service_id = c.service_id
           where c.chain_id = $1 and c.account = $2 and c.kind = 'deduction'
             and c.block_time >= $3 and c.block_time < $4
           group by 1 order by sum(c.credits) desc"#,
        chain,
        account,
        from,
        to
    )
    .fetch_all(&state.db)
    .await?;
    let totals = sqlx::query!(
        r#"with t as (
               select coalesce(sum(credits) filter (where kind = 'deduction' and block_time >= $3 and block_time < $4), 0) as spent,
                      coalesce(sum(credits) filter (where kind in ('recharge', 'fiat') and block_time >= $3 and block_time < $4), 0) as recharged,
                      round(coalesce(sum(credits) filter (where kind = 'deduction' and block_time >= now() - interval '7 days'), 0) / 7) as burn,
                      coalesce((select balance from credit_balances where chain_id = $1 and account = $2), 0) as balance
               from credit_entries where chain_id = $1 and account = $2)
           select spent::text as "spent!", recharged::text as "recharged!", burn::text as "burn!", balance::text as "balance!"
           from t"#,
        chain,
        account,
        from,
        to
    )
    .fetch_one(&state.db)
    .await?;
    let available = super::available::of(&state, user.address)
        .await
        .map_err(ApiError::Internal)?
        .available
        .to_string();
    Ok(Json(CreditAnalytics {
        bucket,
        from,
        to,
        buckets: buckets
            .into_iter()
            .map(|b| CreditBucket { start: b.start, spent: b.spent, recharged: b.recharged })
            .collect(),
        top_services: services
            .into_iter()
            .map(|s| ServiceSpend { service_id: s.service_id, kind: s.kind, spent: s.spent })
            .collect(),
        by_kind: kinds.into_iter().map(|k| KindSpend { kind: k.kind, spent: k.spent }).collect(),
        spent: totals.spent,
        recharged: totals.recharged,
        projected_depletion: projected_depletion(&available, &totals.burn, Utc::now()),
        burn_rate_per_day: totals.burn,
        balance: totals.balance,
        available,
    }))
}

/// The furthest depletion date projected; past it the answer is null.
const MAX_PROJECTION_DAYS: f64 = 100.0 * 365.25;

/// When `balance` runs out at `burn_per_day` from `now`: none without spend, or further out than
/// [`MAX_PROJECTION_DAYS`] (a tiny spend against a large balance would otherwise name a year
/// beyond any date type, or beyond RFC 3339's four digits).
fn projected_depletion(
    balance: &str,
    burn_per_day: &str,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let balance: f64 = balance.parse().ok()?;
    let burn: f64 = burn_per_day.parse().ok()?;
    if burn <= 0.0 || !balance.is_finite() {
        return None;
    }
    let days = balance.max(0.0) / burn;
    if days > MAX_PROJECTION_DAYS {
        return None;
    }
    now.checked_add_signed(Duration::milliseconds((days * 86_400_000.0) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depletion_is_projected_within_a_century_only() {
        let now = Utc::now();
        assert_eq!(projected_depletion("700", "100", now), Some(now + Duration::days(7)));
        assert_eq!(projected_depletion("0", "100", now), Some(now));
        assert_eq!(projected_depletion("700", "0", now), None);
        // A balance far beyond any spend: no date, rather than one past what dates can hold.
        let huge = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(projected_depletion(huge, "1", now), None);
        assert_eq!(projected_depletion("3660000", "100", now), None);
        assert!(projected_depletion("3650000", "100", now).is_some());
    }
}
