//! The provisioner: converges the database hosts to the indexed Database services. An indexed
//! service without a database gets one; its state opens and closes it; past its quota it turns
//! read-only, far past it closes; a cancelled one is closed, backed up a last time and dropped
//! after the grace period. One replica runs a pass at a time; each database's changes run under
//! its own lock (a request rotating its password takes it too), and every step is idempotent, so
//! a pass cut off anywhere is finished by the next.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use decentraspace_db::locks::{Lock, lock_in, try_lead};
use futures::StreamExt;

use super::{
    DatabasesState,
    secrets::{self, Secret},
};
use crate::jobs::{Job, Schedule};

/// The longest between two passes (each indexed batch wakes one sooner).
const PERIOD: Duration = Duration::from_secs(10);

/// The provisioner's job: a pass after every indexed batch and at least every [`PERIOD`].
pub fn job(state: &DatabasesState) -> Job {
    let indexed = state.indexed.clone();
    let state = state.clone();
    Job::periodic(
        "database-provisioner",
        move || {
            Schedule::every(PERIOD).woken_by(
                tokio_stream::wrappers::BroadcastStream::new(indexed.subscribe()).map(|_| ()),
            )
        },
        move || {
            let state = state.clone();
            async move { pass(&state).await }
        },
    )
}

/// One pass: adopt new services, measure sizes, request the daily backups, converge every
/// database whose host differs from what its service says.
pub async fn pass(state: &DatabasesState) -> anyhow::Result<()> {
    let Some(lead) = try_lead(&state.db, Lock::DatabaseProvisioner).await? else { return Ok(()) };
    let result = async {
        adopt(state).await?;
        measure(state).await?;
        request_daily_backups(state).await?;
        let mut failed = 0usize;
        for id in out_of_line(state).await? {
            if let Err(err) = converge(state, id).await {
                failed += 1;
                tracing::warn!(target: "api::databases", service_id = id, error = format!("{err:#}"), "database not converged; retried next pass");
            }
        }
        anyhow::ensure!(failed == 0, "{failed} databases not converged");
        Ok(())
    }
    .await;
    drop(lead);
    result
}

/// Rows for the indexed Database services that have none: placed on a host, with a new password
/// and backup key. A service cancelled before it was ever made gets a row that says so.
async fn adopt(state: &DatabasesState) -> anyhow::Result<()> {
    let chain_id = state.chain_id() as i64;
    let new = sqlx::query!(
        r#"select s.service_id, s.owner, s.state from services s
           where s.chain_id = $1 and s.kind = 'database'
             and not exists (select 1 from managed_databases m
                             where m.chain_id = s.chain_id and m.service_id = s.service_id)
           order by s.service_id
           limit 100"#,
        chain_id
    )
    .fetch_all(&state.db)
    .await?;
    for service in new {
        ensure_row(state, service.service_id, &service.owner, service.state == "cancelled").await?;
    }
    Ok(())
}

/// Writes database `id`'s row if it has none (another writer's row stands).
pub(super) async fn ensure_row(
    state: &DatabasesState,
    id: i64,
    owner: &[u8],
    cancelled: bool,
) -> anyhow::Result<()> {
    let chain_id = state.chain_id() as i64;
    let host = state.hosts.place(&state.db, chain_id).await?;
    let password =
        secrets::seal(&state.sealer, chain_id, id, Secret::Password, &secrets::password());
    let key = secrets::seal(&state.sealer, chain_id, id, Secret::BackupKey, &secrets::backup_key());
    sqlx::query!(
        "insert into managed_databases
           (chain_id, service_id, owner, host, name, password_sealed, backup_key_sealed,
            applied, dropped_at)
         values ($1, $2, $3, $4, $5, $6, $7,
                 case when $8 then 'dropped' else 'new' end, case when $8 then now() end)
         on conflict (chain_id, service_id) do nothing",
        chain_id,
        id,
        owner,
        host.key,
        name_of(id),
        password,
        key,
        cancelled
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Database `id`'s name on its host, and its role's.
pub fn name_of(id: i64) -> String {
    format!("ds_{id}")
}

/// Measures every live database's size, host by host.
async fn measure(state: &DatabasesState) -> anyhow::Result<()> {
    let chain_id = state.chain_id() as i64;
    for host in state.hosts.all() {
        let names: Vec<String> = sqlx::query_scalar!(
            "select name from managed_databases
             where chain_id = $1 and host = $2 and dropped_at is null and applied <> 'new'",
            chain_id,
            host.key
        )
        .fetch_all(&state.db)
        .await?;
        if names.is_empty() {
            continue;
        }
        let sizes = match host.sizes(&names).await {
            Ok(sizes) => sizes,
            Err(err) => {
                // One unreachable host does not hold the others' changes back.
                tracing::warn!(target: "api::databases", host = host.key, error = format!("{err:#}"), "database host not measured");
                continue;
            }
        };
        let (names, sizes): (Vec<String>, Vec<i64>) = sizes.into_iter().unzip();
        sqlx::query!(
            "update managed_databases m set size_bytes = v.size, size_measured_at = now()
             from unnest($3::text[], $4::bigint[]) as v(name, size)
             where m.chain_id = $1 and m.host = $2 and m.name = v.name",
            chain_id,
            host.key,
            &names,
            &sizes
        )
        .execute(&state.db)
        .await?;
    }
    Ok(())
}

/// Requests a backup of every live database whose last one is older than the interval.
async fn request_daily_backups(state: &DatabasesState) -> anyhow::Result<()> {
    let requested = sqlx::query!(
        "insert into database_backups (chain_id, service_id, reason)
         select m.chain_id, m.service_id, 'daily' from managed_databases m
         where m.chain_id = $1 and m.applied in ('open', 'closed') and m.cancelled_at is null
           and m.ready_at < now() - make_interval(secs => $2)
           and not exists (select 1 from database_backups b
                           where b.chain_id = m.chain_id and b.service_id = m.service_id
                             and b.requested_at > now() - make_interval(secs => $2))",
        state.chain_id() as i64,
        state.config.database_backup_interval_secs as f64
    )
    .execute(&state.db)
    .await?;
    if requested.rows_affected() > 0 {
        state.work.notify_one();
    }
    Ok(())
}

/// Databases whose host differs from what their service and size say.
async fn out_of_line(state: &DatabasesState) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"select m.service_id as "id!"
           from managed_databases m
           join services s on s.chain_id = m.chain_id and s.service_id = m.service_id
           left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
           where m.chain_id = $1 and m.dropped_at is null
             and (m.applied = 'new' or not m.password_applied or s.state = 'cancelled'
                  or (m.applied = 'open') <> (s.state = 'active' and m.size_bytes <= $3
                      and not (s.expires_at is not null and s.expires_at <= chain_now($1)
                               and effective_tier(a.tier, a.tier_expires_at, chain_now($1)) = 'free'))
                  or m.read_only <> (m.size_bytes > $2))
           order by m.service_id
           limit 500"#,
        state.chain_id() as i64,
        state.quota(),
        state.hard_limit()
    )
    .fetch_all(&state.db)
    .await?)
}

/// Brings database `id` on its host in line with its service, under its lock.
pub(super) async fn converge(state: &DatabasesState, id: i64) -> anyhow::Result<()> {
    let chain_id = state.chain_id() as i64;
    let mut tx = state.db.begin().await?;
    lock_in(&mut tx, Lock::Database { service_id: id }).await?;
    let Some(row) = sqlx::query!(
        r#"select m.owner, m.host, m.name, m.applied, m.password_applied, m.password_sealed, m.read_only,
                  m.size_bytes, m.cancelled_at, s.state as "service_state!",
                  (s.expires_at is not null and s.expires_at <= chain_now($1)
                   and effective_tier(a.tier, a.tier_expires_at, chain_now($1)) = 'free') as "expired!",
                  (select b.state from database_backups b
                   where b.chain_id = m.chain_id and b.service_id = m.service_id and b.reason = 'final') as final_backup
           from managed_databases m
           join services s on s.chain_id = m.chain_id and s.service_id = m.service_id
           left join accounts a on a.chain_id = s.chain_id and a.address = s.owner
           where m.chain_id = $1 and m.service_id = $2"#,
        chain_id,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    if row.applied == "dropped" {
        return Ok(());
    }
    let host = state
        .hosts
        .get(&row.host)
        .with_context(|| format!("database {id}'s host {} is not configured", row.host))?
        .clone();
    if row.service_state == "cancelled" {
        let now = Utc::now();
        match row.cancelled_at {
            None => {
                if row.applied != "new" {
                    host.set_open(&row.name, false).await?;
                    sqlx::query!(
                        "insert into database_backups (chain_id, service_id, reason)
                         values ($1, $2, 'final') on conflict do nothing",
                        chain_id,
                        id
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query!(
                    "update managed_databases
                     set cancelled_at = $3, applied = case when applied = 'new' then 'new' else 'closed' end
                     where chain_id = $1 and service_id = $2",
                    chain_id,
                    id,
                    now
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                state.work.notify_one();
            }
            Some(cancelled_at) => {
                let never_made = row.applied == "new";
                let kept_until = drops_at(state, cancelled_at);
                if never_made || (row.final_backup.as_deref() == Some("done") && now >= kept_until)
                {
                    host.drop_database(&row.name).await?;
                    sqlx::query!(
                        "update managed_databases set applied = 'dropped', dropped_at = now()
                         where chain_id = $1 and service_id = $2",
                        chain_id,
                        id
                    )
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    tracing::info!(target: "api::databases", service_id = id, "cancelled database dropped");
                }
            }
        }
        return Ok(());
    }
    let want_open =
        row.service_state == "active" && !row.expired && row.size_bytes <= state.hard_limit();
    let want_read_only = row.size_bytes > state.quota();
    let mut applied = row.applied.clone();
    if applied == "new" {
        let password =
            secrets::open(&state.sealer, chain_id, id, Secret::Password, &row.password_sealed)?;
        host.create(&row.name, &password, state.limits(), want_open).await?;
        applied = if want_open { "open" } else { "closed" }.to_owned();
        sqlx::query!(
            "update managed_databases
             set applied = $3, password_applied = true, ready_at = coalesce(ready_at, now())
             where chain_id = $1 and service_id = $2",
            chain_id,
            id,
            applied
        )
        .execute(&mut *tx)
        .await?;
        tracing::info!(target: "api::databases", service_id = id, host = host.key, "database made");
    } else if !row.password_applied {
        let password =
            secrets::open(&state.sealer, chain_id, id, Secret::Password, &row.password_sealed)?;
        host.set_password(&row.name, &password).await?;
        sqlx::query!(
            "update managed_databases set password_applied = true
             where chain_id = $1 and service_id = $2",
            chain_id,
            id
        )
        .execute(&mut *tx)
        .await?;
    }
    if (applied == "open") != want_open {
        host.set_open(&row.name, want_open).await?;
        if row.service_state == "active" && !row.expired && !want_open {
            tell(state, &row.owner, id, "database_locked", row.size_bytes).await;
        }
        sqlx::query!(
            "update managed_databases set applied = $3 where chain_id = $1 and service_id = $2",
            chain_id,
            id,
            if want_open { "open" } else { "closed" }
        )
        .execute(&mut *tx)
        .await?;
    }
    if row.read_only != want_read_only {
        host.set_read_only(&row.name, want_read_only).await?;
        sqlx::query!(
            "update managed_databases set read_only = $3 where chain_id = $1 and service_id = $2",
            chain_id,
            id,
            want_read_only
        )
        .execute(&mut *tx)
        .await?;
        if want_read_only {
            tracing::info!(target: "api::databases", service_id = id, size = row.size_bytes, "database past its quota: read-only");
            tell(state, &row.owner, id, "database_over_quota", row.size_bytes).await;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Tells database `id`'s owner (a notice on `GET /notices` and the live stream) that it turned
/// read-only (`database_over_quota`) or closed (`database_locked`) at `size` bytes; once a day
/// at most for each. A notice that cannot be written is logged: the change stands.
async fn tell(state: &DatabasesState, owner: &[u8], id: i64, kind: &str, size: i64) {
    let Ok(owner) = alloy::primitives::Address::try_from(owner) else { return };
    let data = serde_json::json!({
        "database": id,
        "size_bytes": size,
        "quota_bytes": state.quota(),
        "detail": if kind == "database_locked" {
            "past 125% of its quota: connections are refused until it is restored smaller or cancelled"
        } else {
            "past its quota: transactions are read-only; delete rows in a session that sets default_transaction_read_only = off"
        },
    });
    let dedupe = format!("{id}:{}", Utc::now().date_naive());
    if let Err(err) = crate::notices::post(state, owner, kind, &dedupe, data).await {
        tracing::warn!(target: "api::databases", service_id = id, error = format!("{err:#}"), "database notice not written");
    }
}

/// When a database cancelled at `cancelled_at` is dropped.
pub fn drops_at(state: &DatabasesState, cancelled_at: DateTime<Utc>) -> DateTime<Utc> {
    cancelled_at
        + chrono::Duration::seconds(
            i64::try_from(state.config.database_drop_grace_secs).unwrap_or(i64::MAX / 2),
        )
}
