//! The request log, counted in memory and written every second: per site, minute and status,
//! the requests, bytes and a histogram of times to answer (`site_traffic`), and each day's
//! distinct visitors (`site_visitors`). A request adds to a count under a lock held for a few
//! additions, so the log never makes a request wait and never drops one: however fast requests
//! come, memory grows with the sites, statuses and visitors of a second, not with the requests.
//! A write that fails is counted in again and retried with the next; the last write happens
//! after the gateway's listeners closed (see `serve_gateway`).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::hosting::traffic::{LATENCY_BUCKETS, latency_bucket};

/// How often the counts are written.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// One request answered for a site.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hit {
    pub(super) site_id: i64,
    pub(super) at: DateTime<Utc>,
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) latency_us: u64,
    pub(super) visitor: i64,
}

/// A site's requests of one minute and status.
#[derive(Debug, Clone)]
struct Counts {
    requests: i64,
    bytes: i64,
    latency: [i64; LATENCY_BUCKETS],
}

impl Default for Counts {
    fn default() -> Self {
        Self { requests: 0, bytes: 0, latency: [0; LATENCY_BUCKETS] }
    }
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.bytes = self.bytes.saturating_add(other.bytes);
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine += theirs;
        }
    }
}

/// (site, minute as a Unix time, status).
type Key = (i64, i64, u16);

/// What was answered since the last write.
#[derive(Debug, Default)]
struct Gathered {
    counts: HashMap<Key, Counts>,
    visitors: HashSet<(i64, NaiveDate, i64)>,
}

impl Gathered {
    fn merge(&mut self, other: Gathered) {
        for (key, counts) in other.counts {
            self.counts.entry(key).or_default().add(&counts);
        }
        self.visitors.extend(other.visitors);
    }
}

/// The gateway's request log.
#[derive(Debug, Default)]
pub(super) struct Traffic(Mutex<Gathered>);

impl Traffic {
    /// Counts `hit` in.
    pub(super) fn record(&self, hit: Hit) {
        let minute = hit.at.timestamp().div_euclid(60) * 60;
        let day = hit.at.date_naive();
        let mut gathered = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = gathered.counts.entry((hit.site_id, minute, hit.status)).or_default();
        counts.requests += 1;
        counts.bytes = counts.bytes.saturating_add(i64::try_from(hit.bytes).unwrap_or(i64::MAX));
        counts.latency[latency_bucket(hit.latency_us)] += 1;
        gathered.visitors.insert((hit.site_id, day, hit.visitor));
    }

    fn take(&self) -> Gathered {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn put_back(&self, gathered: Gathered) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).merge(gathered);
    }

    /// Writes what was counted every second until `finish` is cancelled, then once more.
    pub(super) async fn write_until(&self, db: PgPool, finish: CancellationToken) {
        loop {
            let last = tokio::select! {
                () = tokio::time::sleep(WRITE_EVERY) => false,
                () = finish.cancelled() => true,
            };
            let gathered = self.take();
            if !(gathered.counts.is_empty() && gathered.visitors.is_empty())
                && let Err(err) = write(&db, &gathered).await
            {
                tracing::warn!(target: "api::gateway", %err, "cannot record requests now; kept for the next write");
                metrics::counter!("gateway_request_log_write_failures_total").increment(1);
                self.put_back(gathered);
            }
            if last {
                return;
            }
        }
    }
}

/// Adds `gathered` to the stored counts, in one transaction.
async fn write(db: &PgPool, gathered: &Gathered) -> sqlx::Result<()> {
    let n = gathered.counts.len();
    let (mut sites, mut minutes, mut statuses) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut requests, mut bytes, mut latencies) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (&(site, minute, status), counts) in &gathered.counts {
        sites.push(site);
        minutes.push(DateTime::from_timestamp(minute, 0).unwrap_or_default());
        statuses.push(status as i16);
        requests.push(counts.requests);
        bytes.push(counts.bytes);
        // One array per row; Postgres takes no ragged two-dimensional arrays, so each goes as
        // its literal.
        let literal: Vec<String> = counts.latency.iter().map(i64::to_string).collect();
        latencies.push(format!("{{{}}}", literal.join(",")));
    }
    let (mut visitor_sites, mut days, mut visitors) = (Vec::new(), Vec::new(), Vec::new());
    for &(site, day, visitor) in &gathered.visitors {
        visitor_sites.push(site);
        days.push(day);
        visitors.push(visitor);
    }
    let mut tx = db.begin().await?;
    sqlx::query!(
        "insert into site_traffic as t (site_id, minute, status, requests, bytes, latency)
         select site, minute, status, requests, bytes, latency::bigint[]
         from unnest($1::bigint[], $2::timestamptz[], $3::smallint[], $4::bigint[], $5::bigint[],
                     $6::text[]) as u(site, minute, status, requests, bytes, latency)
         on conflict (site_id, minute, status) do update
         set requests = t.requests + excluded.requests,
             bytes = t.bytes + excluded.bytes,
             latency = array(select x.a + x.b
                             from unnest(t.latency, excluded.latency) with ordinality as x(a, b, n)
                             order by x.n)",
        &sites,
        &minutes,
        &statuses,
        &requests,
        &bytes,
        &latencies
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into site_visitors (site_id, day, visitor)
         select * from unnest($1::bigint[], $2::date[], $3::bigint[])
         on conflict do nothing",
        &visitor_sites,
        &days,
        &visitors
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(site_id: i64, second: i64, status: u16, visitor: i64) -> Hit {
        Hit {
            site_id,
            at: DateTime::from_timestamp(1_800_000_000 + second, 0).expect("time"),
            status,
            bytes: 100,
            latency_us: 1_000,
            visitor,
        }
    }

    #[test]
    fn requests_are_counted_per_site_minute_and_status() {
        let traffic = Traffic::default();
        for _ in 0..10_000 {
            traffic.record(hit(1, 0, 200, 7));
        }
        traffic.record(hit(1, 1, 404, 8));
        traffic.record(hit(1, 61, 200, 7));
        traffic.record(hit(2, 0, 200, 7));
        let gathered = traffic.take();
        assert_eq!(gathered.counts.len(), 4, "ten thousand requests of one kind are one count");
        let minute = 1_800_000_000 / 60 * 60;
        let counts = &gathered.counts[&(1, minute, 200)];
        assert_eq!((counts.requests, counts.bytes), (10_000, 1_000_000));
        assert_eq!(counts.latency[latency_bucket(1_000)], 10_000);
        assert_eq!(gathered.visitors.len(), 3, "site 1's two visitors and site 2's one");
        assert!(traffic.take().counts.is_empty(), "taken once");
    }

    #[test]
    fn counts_not_written_are_added_to_what_came_since() {
        let traffic = Traffic::default();
        traffic.record(hit(1, 0, 200, 7));
        let failed = traffic.take();
        traffic.record(hit(1, 0, 200, 9));
        traffic.put_back(failed);
        let gathered = traffic.take();
        let minute = 1_800_000_000 / 60 * 60;
        assert_eq!(gathered.counts[&(1, minute, 200)].requests, 2);
        assert_eq!(gathered.visitors.len(), 2);
    }
}
