//! `/analytics/site`: what the gateway and the uptime prober recorded for a site over a
//! window: requests, bytes and unique visitors per day, status codes, load times and uptime.
//! Traffic is counted by the minute (`hosting/traffic.rs`): a window takes the minutes that
//! start in it, and a day's visitors whole.

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    status::visible_site,
    traffic::{LATENCY_BUCKETS, quantile_ms},
};
use crate::{
    hosting::HostingState,
    http::{
        auth::AuthUser,
        error::{ApiError, ApiResult},
    },
};

/// The longest window one request may ask for.
const MAX_WINDOW_DAYS: i64 = 366;

/// The site and the window.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SiteAnalyticsQuery {
    /// The site's name.
    pub site: String,
    /// From (RFC 3339; default 7 days before `to`); before `to`, and at most 366 days before it.
    pub from: Option<DateTime<Utc>>,
    /// Until (RFC 3339, exclusive; default now).
    pub to: Option<DateTime<Utc>>,
}

/// One day of traffic (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficDay {
    /// The day.
    pub day: NaiveDate,
    /// Requests served.
    pub requests: i64,
    /// Bytes sent.
    pub bytes: i64,
    /// Distinct visitors (address and user agent, per day).
    pub visitors: i64,
}

/// How many requests got a status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    /// The HTTP status.
    pub status: i16,
    /// Requests answered with it.
    pub requests: i64,
}

/// The gateway's time to answer, in milliseconds, estimated from a histogram whose buckets are
/// 19 % wide.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadTimes {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
}

/// Uptime over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uptime {
    /// Checks made.
    pub checks: i64,
    /// Checks that found the site up.
    pub up: i64,
    /// `up / checks` (none without checks).
    pub ratio: Option<f64>,
}

/// A site's analytics.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteAnalytics {
    /// The site's name.
    pub site: String,
    /// The window's start.
    pub from: DateTime<Utc>,
    /// The window's end (exclusive).
    pub to: DateTime<Utc>,
    /// Requests in the window.
    pub requests: i64,
    /// Bytes sent in the window.
    pub bytes: i64,
    /// Distinct visitors over the window (a visitor counts once per day).
    pub visitors: i64,
    /// Per day, oldest first; days without traffic are left out.
    pub days: Vec<TrafficDay>,
    /// Per status, most frequent first.
    pub status_codes: Vec<StatusCount>,
    /// Load times.
    pub load_time: LoadTimes,
    /// Uptime.
    pub uptime: Uptime,
}

/// A site's traffic, load times and uptime (the owner's or, for an admin, any site's).
#[utoipa::path(get, path = "/analytics/site", tag = "analytics", security(("bearer" = [])),
    params(SiteAnalyticsQuery),
    responses((status = 200, body = SiteAnalytics),
        crate::http::openapi::NotFound))]
pub(super) async fn site_analytics(
    State(state): State<HostingState>,
    State(auth): State<crate::http::auth::Auth>,
    user: AuthUser,
    Query(query): Query<SiteAnalyticsQuery>,
) -> ApiResult<Json<SiteAnalytics>> {
    let to = query.to.unwrap_or_else(Utc::now);
    let from = match query.from {
        Some(from) => from,
        None => to
            .checked_sub_signed(Duration::days(7))
            .ok_or_else(|| ApiError::BadRequest("`to` is out of range".into()))?,
    };
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    if to.signed_duration_since(from) > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::BadRequest(format!("the window is at most {MAX_WINDOW_DAYS} days")));
    }
    let name = query.site;
    let (site_id, _) = visible_site(&state, &auth, &user, &name).await?;
    let days = sqlx::query_as!(
        TrafficDay,
        r#"with t as (
             select (minute at time zone 'utc')::date as day, sum(requests)::bigint as requests,
                    sum(bytes)::bigint as bytes
             from site_traffic where site_id = $1 and minute >= $2 and minute < $3
             group by 1),
           v as (
             select day, count(*) as visitors from site_visitors
             where site_id = $1 and day >= ($2 at time zone 'utc')::date
               and day <= ($3 at time zone 'utc')::date
             group by day)
           select t.day as "day!", t.requests as "requests!", t.bytes as "bytes!",
                  coalesce(v.visitors, 0) as "visitors!"
           from t left join v using (day) order by 1"#,
        site_id,
        from,
        to
    )
    .fetch_all(&state.db)
    .await?;
    let status_codes = sqlx::query_as!(
        StatusCount,
        r#"select status, sum(requests)::bigint as "requests!" from site_traffic
           where site_id = $1 and minute >= $2 and minute < $3
           group by status order by 2 desc, 1"#,
        site_id,
        from,
        to
    )
    .fetch_all(&state.db)
    .await?;
    let latency = sqlx::query_scalar!(
        r#"select coalesce(sum(u.count), 0)::bigint as "count!"
           from generate_series(1, $4::int) as b(i)
           left join (select l.count, l.i from site_traffic t,
                             unnest(t.latency) with ordinality as l(count, i)
                      where t.site_id = $1 and t.minute >= $2 and t.minute < $3) u on u.i = b.i
           group by b.i order by b.i"#,
        site_id,
        from,
        to,
        LATENCY_BUCKETS as i32
    )
    .fetch_all(&state.db)
    .await?;
    let load_time =
        LoadTimes { p50_ms: quantile_ms(&latency, 0.5), p95_ms: quantile_ms(&latency, 0.95) };
    let uptime = sqlx::query!(
        r#"select count(*) as "checks!", count(*) filter (where up) as "up!"
           from uptime_checks where site_id = $1 and at >= $2 and at < $3"#,
        site_id,
        from,
        to
    )
    .fetch_one(&state.db)
    .await?;
    // A visitor is one (address, agent) per day: across days the same person counts again.
    let visitors = days.iter().map(|d| d.visitors).sum();
    Ok(Json(SiteAnalytics {
        site: name,
        from,
        to,
        requests: days.iter().map(|d| d.requests).sum(),
        bytes: days.iter().map(|d| d.bytes).sum(),
        visitors,
        days,
        status_codes,
        load_time,
        uptime: Uptime {
            checks: uptime.checks,
            up: uptime.up,
            ratio: (uptime.checks > 0).then(|| uptime.up as f64 / uptime.checks as f64),
        },
    }))
}
