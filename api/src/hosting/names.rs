//! Each static site's IPNS name: a key of its own on the platform's IPFS node, pointed at the
//! site's current deployment after every deploy and rollback. An ENS name linked to the site
//! sets its content hash to the IPNS name once (ENSIP-7, `GET /domain/ens/{name}/contenthash`)
//! and then follows every deploy without another transaction.
//!
//! One pass at a time (an advisory lock) publishes for every site whose name does not point at
//! its current deployment yet; it is woken when one goes live or is rolled back to, and runs at
//! least every [`PERIOD`], so a publication cut off is made again. A site whose publication
//! fails waits longer each time (up to an hour) while the others go on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use decentraspace_db::locks::{Lock, try_lead};

use super::HostingState;
use crate::{
    jobs::{Job, Schedule},
    wakes::Wake,
};

/// The longest between two passes.
const PERIOD: Duration = Duration::from_secs(30);
/// Sites published per pass.
const PER_PASS: i64 = 100;
/// The longest a site that keeps failing waits between tries.
const MAX_REST: Duration = Duration::from_secs(3_600);

/// The publisher (with an IPFS node configured).
pub(super) fn job(state: &HostingState) -> Option<Job> {
    state.ipfs.as_ref()?;
    let woken = state.wakes.of(Wake::SiteNames);
    let state = state.clone();
    let waiting = Arc::new(Mutex::new(HashMap::new()));
    Some(Job::periodic(
        "ipns-publisher",
        move || Schedule::every(PERIOD).woken_by_notify(woken.clone()),
        move || {
            let (state, waiting) = (state.clone(), waiting.clone());
            async move { pass(&state, &waiting).await }
        },
    ))
}

/// Sites whose publication failed, by id: failures in a row, and when to try again (so a site
/// that keeps failing does not hold up the others).
type Waiting = Mutex<HashMap<i64, (u32, Instant)>>;

/// The node's key of site `id` on this chain.
fn key_name(chain_id: u64, site_id: i64) -> String {
    format!("decentraspace-site-{chain_id}-{site_id}")
}

async fn pass(state: &HostingState, waiting: &Waiting) -> anyhow::Result<()> {
    let Some(ipfs) = &state.ipfs else { return Ok(()) };
    let Some(lock) = try_lead(&state.db, Lock::SiteNames).await? else { return Ok(()) };
    let now = Instant::now();
    let resting: Vec<i64> = waiting
        .lock()
        .map(|w| w.iter().filter(|(_, (_, until))| *until > now).map(|(id, _)| *id).collect())
        .unwrap_or_default();
    let due = sqlx::query!(
        r#"select s.id, d.content_id as "cid!"
           from sites s
           join deployments d on d.id = s.current_deployment_id
           left join site_names n on n.site_id = s.id
           where s.chain_id = $1 and s.kind = 'static' and d.content_id is not null
             and (n.site_id is null or n.published_cid <> d.content_id)
             and s.id <> all($3)
           order by s.id
           limit $2"#,
        state.chain_id() as i64,
        PER_PASS,
        &resting
    )
    .fetch_all(&state.db)
    .await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut keys = ipfs.keys().await?;
    let mut failed = 0usize;
    for site in due {
        let key = key_name(state.chain_id(), site.id);
        let published = async {
            let id = match keys.get(&key) {
                Some(id) => id.clone(),
                None => {
                    let id = ipfs.key_gen(&key).await?;
                    keys.insert(key.clone(), id.clone());
                    id
                }
            };
            let name = decentraspace_clients::ens::ipns_name(&id)?;
            ipfs.publish(&key, &site.cid).await?;
            anyhow::Ok(name)
        }
        .await;
        match published {
            Ok(name) => {
                sqlx::query!(
                    "insert into site_names (site_id, ipns_name, published_cid) values ($1, $2, $3)
                     on conflict (site_id) do update
                     set ipns_name = excluded.ipns_name, published_cid = excluded.published_cid,
                         published_at = now()",
                    site.id,
                    name,
                    site.cid
                )
                .execute(&state.db)
                .await?;
                tracing::info!(target: "api::hosting", site_id = site.id, ipns = name, cid = site.cid, "IPNS name published");
                if let Ok(mut waiting) = waiting.lock() {
                    waiting.remove(&site.id);
                }
            }
            Err(err) => {
                failed += 1;
                if let Ok(mut waiting) = waiting.lock() {
                    let failures = waiting.get(&site.id).map_or(0, |(n, _)| *n).saturating_add(1);
                    let rest = PERIOD.saturating_mul(1 << failures.min(7)).min(MAX_REST);
                    waiting.insert(site.id, (failures, Instant::now() + rest));
                }
                tracing::warn!(target: "api::hosting", site_id = site.id, error = format!("{err:#}"), "IPNS name not published; retried next pass");
            }
        }
    }
    drop(lock);
    anyhow::ensure!(failed == 0, "{failed} IPNS names not published");
    Ok(())
}
