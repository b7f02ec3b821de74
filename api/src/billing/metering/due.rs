//! The services due a charge and what their time since their last charge costs, read by the meter
//! (which charges it) and by the available balance (which subtracts it before it is charged), so
//! both price the same time the same way.

use std::collections::HashMap;

use alloy::primitives::U256;
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::plan::{self, Change};

/// A service with time not charged yet: since when, its carried remainder, its price at the
/// owner's effective tier, a Free service's expiry (no time is charged past it) and its stored
/// bytes (a storage service's files, a managed database's last measured size).
#[derive(Debug)]
pub(crate) struct Due {
    pub service_id: i64,
    pub owner: Vec<u8>,
    pub since: DateTime<Utc>,
    pub carry: String,
    pub cap: Option<DateTime<Utc>>,
    pub price: Option<String>,
    pub stored_bytes: i64,
}

/// What a service's time since its last charge costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Priced {
    /// Whole credit units.
    pub credits: U256,
    /// The remainder carried to the next charge.
    pub carry: U256,
    /// Active seconds in the span.
    pub seconds: u64,
}

/// The services (of `owner`, or all) whose last charge ended before `until` and that were active
/// at some point since (active now, or changed state since).
pub(crate) async fn services(
    conn: &mut PgConnection,
    chain_id: i64,
    until: DateTime<Utc>,
    owner: Option<&[u8]>,
) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as!(
        Due,
        r#"with due as (
               select s.service_id, s.owner, s.kind, s.state, s.expires_at,
                      coalesce(m.metered_until, s.created_at) as since,
                      coalesce(m.carry, 0)::text as carry,
                      effective_tier(a.tier, a.tier_expires_at, $2) as tier
               from services s
               left join meter_services m on m.chain_id = s.chain_id and m.service_id = s.service_id
               left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
               where s.chain_id = $1 and coalesce(m.metered_until, s.created_at) < $2
                 and ($3::bytea is null or s.owner = $3)
           )
           select d.service_id as "service_id!", d.owner as "owner!", d.since as "since!",
                  d.carry as "carry!",
                  case when d.tier = 'free' then d.expires_at end as cap,
                  p.credits_per_hour::text as price,
                  ((select coalesce(sum(f.size_bytes), 0) from storage_files f
                    where f.chain_id = $1 and f.service_id = d.service_id
                      and f.deleted_at is null)
                   + (select coalesce(sum(md.size_bytes), 0) from managed_databases md
                      where md.chain_id = $1 and md.service_id = d.service_id
                        and md.dropped_at is null))::bigint as "stored_bytes!"
           from due d
           left join service_prices p on p.chain_id = $1 and p.kind = d.kind and p.tier = d.tier
           where d.state = 'active'
              or exists (select 1 from service_state_changes c
                         where c.chain_id = $1 and c.service_id = d.service_id and c.block_time > d.since)
           order by d.service_id"#,
        chain_id,
        until,
        owner
    )
    .fetch_all(conn)
    .await
}

/// The state changes of `ids` up to `until`, in chain order, by service.
pub(crate) async fn histories(
    conn: &mut PgConnection,
    chain_id: i64,
    ids: &[i64],
    until: DateTime<Utc>,
) -> sqlx::Result<HashMap<i64, Vec<Change>>> {
    let rows = sqlx::query!(
        r#"select service_id, state = 'active' as "active!", extract(epoch from block_time)::bigint as "at!"
           from service_state_changes
           where chain_id = $1 and service_id = any($2) and block_time <= $3
           order by service_id, block_number, log_index"#,
        chain_id,
        ids,
        until
    )
    .fetch_all(conn)
    .await?;
    let mut changes: HashMap<i64, Vec<Change>> = HashMap::new();
    for row in rows {
        changes.entry(row.service_id).or_default().push(Change { at: row.at, active: row.active });
    }
    Ok(changes)
}

/// What `due`'s active time from its last charge to `until` (unix seconds; a Free service's
/// expiry ends it sooner) costs, storage priced at `per_gib_hour`.
pub(crate) fn price(
    due: &Due,
    history: &[Change],
    until: i64,
    per_gib_hour: u64,
) -> anyhow::Result<Priced> {
    let end = due.cap.map_or(until, |cap| cap.timestamp().min(until));
    let seconds = plan::active_seconds(history, due.since.timestamp(), end);
    let per_hour: U256 = due.price.as_deref().unwrap_or("0").parse().context("price")?;
    let carry: U256 = due.carry.parse().context("carry")?;
    let rates = plan::Rates { per_hour, bytes: due.stored_bytes as u64, per_gib_hour };
    let (credits, carry) = plan::charge(rates, seconds, carry);
    Ok(Priced { credits, carry, seconds })
}
