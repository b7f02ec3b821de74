//! Where a request goes, from memory: a linked host to its site, a site to its deployment and
//! state, a deployment to its files. Each is read from Postgres once and kept until something
//! that could change it happens, which a listener of this replica hears: every indexed batch
//! (a service paused or suspended, a tier changed, a domain linked or unlinked, or only the
//! chain time that terms end by moving on) and every change to `sites`, `site_previews` and `site_instances` (a deployment going live, a
//! rollback, a preview, a machine), each announced by a NOTIFY. Either empties the cache, so the
//! next request reads again: a suspension or a new deployment shows on the next request.
//!
//! Should batches stop coming, time still ends terms (a Free site's service, a tier): an entry
//! is read again once the earliest such moment has passed, and at least every [`ENTRY_TTL`]. While
//! the listener is not connected (a restart, a lost connection) nothing is kept, and every
//! request reads the database as before. A lookup that started before a change is not kept
//! (the cache's generation moved on while it read).
//!
//! A deployment's file list never changes once it is live, so it is kept by deployment, bounded
//! in the number of files held.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use decentraspace_db::channels::{self, IndexedBatch};
use sqlx::postgres::PgListener;

use crate::{gateway::GatewayState, jobs::Job};

/// The longest an entry is used without reading it again.
pub(super) const ENTRY_TTL: Duration = Duration::from_secs(30);
/// What a barrier's payload starts with (a table's name never does).
const BARRIER: &str = "sync:";
/// How long an entry whose moment of change is past is used.
const SETTLING: Duration = Duration::from_secs(1);
/// Sites and hosts kept at most (the cache starts over past it).
const MAX_SITES: usize = 100_000;
/// Files of deployments kept at most.
const MAX_FILES: usize = 1_000_000;

/// A site as the gateway needs it.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) id: i64,
    /// `static` or `dynamic`.
    pub(super) kind: String,
    /// A dynamic site's running machine (`host:port`).
    pub(super) upstream: Option<String>,
    pub(super) spa_fallback: bool,
    pub(super) deployment: Option<i64>,
    pub(super) state: String,
    pub(super) expired: bool,
    /// The next moment time alone may change the above (its service's term, its owner's tier).
    pub(super) changes_at: Option<DateTime<Utc>>,
}

/// A file of a deployment.
#[derive(Debug, Clone)]
pub(super) struct File {
    pub(super) path: String,
    pub(super) cid: String,
    pub(super) size_bytes: i64,
    pub(super) content_type: String,
    /// Its brotli copy made at deploy: CID and size.
    pub(super) br_cid: Option<String>,
    pub(super) br_size: Option<i64>,
    /// Its gzip copy.
    pub(super) gz_cid: Option<String>,
    pub(super) gz_size: Option<i64>,
}

/// A linked domain's site.
struct Linked {
    site: String,
    expires_at: Option<DateTime<Utc>>,
}

struct Entry<T> {
    value: T,
    until: Instant,
}

/// A site's key: its name and the preview asked for.
type SiteKey = (String, Option<String>);
/// A deployment's files by path.
type Files = Arc<HashMap<String, Arc<File>>>;

/// The gateway's memory of routes.
#[derive(Default)]
pub struct Sites {
    /// Whether the listener is connected (nothing is kept while it is not).
    live: AtomicBool,
    /// Moves on at every change heard; a lookup keeps its result only if it did not.
    generation: AtomicU64,
    sites: RwLock<HashMap<SiteKey, Entry<Option<Arc<Served>>>>>,
    hosts: RwLock<HashMap<String, Entry<Option<String>>>>,
    /// The files held in all, and each deployment's.
    files: RwLock<(usize, HashMap<i64, Files>)>,
    /// Barriers sent and not heard yet, by token.
    barriers: std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Sites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sites")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// When an entry read now stops being used: at the TTL, or at `changes_at` if sooner. Once that
/// moment is past, the index's chain time may still lag it (the database decides by chain
/// time): such an entry is read again every [`SETTLING`] until no moment is ahead.
fn until(changes_at: Option<DateTime<Utc>>) -> Instant {
    let now = Instant::now();
    match changes_at.map(|at| (at - Utc::now()).to_std()) {
        Some(Ok(left)) => now + left.min(ENTRY_TTL),
        Some(Err(_)) => now + SETTLING,
        None => now + ENTRY_TTL,
    }
}

fn get<K: std::hash::Hash + Eq, T: Clone>(
    map: &RwLock<HashMap<K, Entry<T>>>,
    key: &K,
) -> Option<T> {
    let map = map.read().ok()?;
    let entry = map.get(key)?;
    (Instant::now() < entry.until).then(|| entry.value.clone())
}

impl Sites {
    /// The generation a lookup starts at, when the cache is in use.
    fn begin(&self) -> Option<u64> {
        self.live.load(Ordering::Acquire).then(|| self.generation.load(Ordering::Acquire))
    }

    /// Whether nothing changed since `generation` (what was read may be kept).
    fn unchanged(&self, generation: u64) -> bool {
        self.live.load(Ordering::Acquire) && self.generation.load(Ordering::Acquire) == generation
    }

    fn keep<K: std::hash::Hash + Eq, T>(
        &self,
        map: &RwLock<HashMap<K, Entry<T>>>,
        generation: u64,
        key: K,
        entry: Entry<T>,
    ) {
        let Ok(mut map) = map.write() else { return };
        // Checked under the lock: an invalidation takes the same lock to empty the map.
        if !self.unchanged(generation) {
            return;
        }
        if map.len() >= MAX_SITES {
            map.clear();
        }
        map.insert(key, entry);
    }

    /// Forgets every site and host (a deployment's files stay: they never change).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut sites) = self.sites.write() {
            sites.clear();
        }
        if let Ok(mut hosts) = self.hosts.write() {
            hosts.clear();
        }
    }

    fn set_live(&self, live: bool) {
        self.invalidate();
        self.live.store(live, Ordering::Release);
        self.invalidate();
        if !live && let Ok(mut barriers) = self.barriers.lock() {
            // Their notifications may be lost with the connection; their waiters return.
            barriers.clear();
        }
    }

    /// Returns once this replica has heard every change committed before the call (a NOTIFY of
    /// its own on the same channel comes back after them: notifications arrive in commit
    /// order), so the next request sees them. At once when nothing is kept. For callers that
    /// must read their own writes through the gateway, such as tests.
    pub async fn sync(&self, db: &sqlx::PgPool) -> anyhow::Result<()> {
        if !self.live.load(Ordering::Acquire) {
            return Ok(());
        }
        let token: u64 = rand::random();
        let (heard, hearing) = tokio::sync::oneshot::channel();
        self.barriers
            .lock()
            .map_err(|_| anyhow::anyhow!("barriers poisoned"))?
            .insert(token, heard);
        let sent = sqlx::query("select pg_notify($1, $2)")
            .bind(channels::SITE_CHANGED)
            .bind(format!("{BARRIER}{token}"))
            .execute(db)
            .await;
        // A listener that lost its connection stopped keeping anything: nothing to wait for.
        let heard = match sent {
            Ok(_) => tokio::time::timeout(Duration::from_secs(10), hearing).await.is_ok(),
            Err(_) => false,
        };
        if let Ok(mut barriers) = self.barriers.lock() {
            barriers.remove(&token);
        }
        sent?;
        anyhow::ensure!(
            heard || !self.live.load(Ordering::Acquire),
            "the route listener did not hear its barrier"
        );
        Ok(())
    }

    /// A barrier was heard: everything before it too.
    fn heard(&self, payload: &str) -> bool {
        let Some(token) = payload.strip_prefix(BARRIER).and_then(|t| t.parse::<u64>().ok()) else {
            return false;
        };
        if let Some(waiter) = self.barriers.lock().ok().and_then(|mut b| b.remove(&token)) {
            waiter.send(()).ok();
        }
        true
    }

    /// The site a linked domain serves (the `Host` without its port).
    pub(super) async fn linked(
        &self,
        state: &GatewayState,
        host: &str,
    ) -> sqlx::Result<Option<String>> {
        let generation = self.begin();
        if generation.is_some()
            && let Some(site) = get(&self.hosts, &host.to_owned())
        {
            return Ok(site);
        }
        let found = sqlx::query_as!(
            Linked,
            "select s.name as site,
                    case when d.expires_at > chain_now(d.chain_id) then d.expires_at end as expires_at
             from domains d
             join sites s on s.chain_id = d.chain_id and s.service_id = d.service_id
             where d.chain_id = $1 and d.name = $2
               and (d.expires_at is null or d.expires_at > chain_now(d.chain_id))",
            state.chain_id() as i64,
            host
        )
        .fetch_optional(&state.db)
        .await?;
        let (site, changes_at) = match found {
            Some(linked) => (Some(linked.site), linked.expires_at),
            None => (None, None),
        };
        if let Some(generation) = generation {
            let entry = Entry { value: site.clone(), until: until(changes_at) };
            self.keep(&self.hosts, generation, host.to_owned(), entry);
        }
        Ok(site)
    }

    /// The site `name` as the gateway serves it; with `preview`, the deployment is that
    /// preview's (none when it has no such preview, or none live yet).
    pub(super) async fn site(
        &self,
        state: &GatewayState,
        name: &str,
        preview: Option<&str>,
    ) -> sqlx::Result<Option<Arc<Served>>> {
        let key = (name.to_owned(), preview.map(str::to_owned));
        let generation = self.begin();
        if generation.is_some()
            && let Some(site) = get(&self.sites, &key)
        {
            return Ok(site);
        }
        let site = sqlx::query_as!(
            Served,
            r#"select s.id, s.kind, i.address as "upstream?", s.spa_fallback,
                      case when $3::text is null then s.current_deployment_id
                           else (select p.deployment_id from site_previews p
                                 where p.site_id = s.id and p.label = $3 and p.closed_at is null) end as deployment,
                      coalesce(v.state, 'opening') as "state!",
                      coalesce(v.expires_at <= chain_now(s.chain_id)
                               and effective_tier(a.tier, a.tier_expires_at, chain_now(s.chain_id)) = 'free',
                               false) as "expired!",
                      least(case when v.expires_at > chain_now(s.chain_id) then v.expires_at end,
                            case when a.tier_expires_at > chain_now(s.chain_id) then a.tier_expires_at end)
                        as changes_at
               from sites s
               left join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
               left join accounts a on a.chain_id = s.chain_id and a.address = s.account
               left join site_instances i on i.site_id = s.id and i.state = 'running'
               where s.chain_id = $1 and s.name = $2"#,
            state.chain_id() as i64,
            name,
            preview
        )
        .fetch_optional(&state.db)
        .await?
        .map(Arc::new);
        if let Some(generation) = generation {
            let changes_at = site.as_ref().and_then(|s| s.changes_at);
            let entry = Entry { value: site.clone(), until: until(changes_at) };
            self.keep(&self.sites, generation, key, entry);
        }
        Ok(site)
    }

    /// Those of `paths` that deployment `deployment` has.
    pub(super) async fn files(
        &self,
        state: &GatewayState,
        deployment: i64,
        paths: &[String],
    ) -> sqlx::Result<Vec<Arc<File>>> {
        let known = self.files.read().ok().and_then(|held| held.1.get(&deployment).cloned());
        let all = match known {
            Some(all) => all,
            None => {
                let all = Arc::new(all_files(state, deployment).await?);
                if let Ok(mut held) = self.files.write() {
                    if held.0 + all.len() > MAX_FILES {
                        *held = (0, HashMap::new());
                    }
                    if held.1.insert(deployment, all.clone()).is_none() {
                        held.0 += all.len();
                    }
                }
                all
            }
        };
        Ok(paths.iter().filter_map(|path| all.get(path).cloned()).collect())
    }
}

/// Every file of a deployment, by path.
async fn all_files(
    state: &GatewayState,
    deployment: i64,
) -> sqlx::Result<HashMap<String, Arc<File>>> {
    let files = sqlx::query_as!(
        File,
        r#"select f.path, f.cid, f.size_bytes, f.content_type,
                  b.cid as "br_cid?", b.size_bytes as "br_size?",
                  g.cid as "gz_cid?", g.size_bytes as "gz_size?"
           from deployment_files f
           left join deployment_file_encodings b
             on b.deployment_id = f.deployment_id and b.path = f.path and b.encoding = 'br'
           left join deployment_file_encodings g
             on g.deployment_id = f.deployment_id and g.path = f.path and g.encoding = 'gzip'
           where f.deployment_id = $1"#,
        deployment
    )
    .fetch_all(&state.db)
    .await?;
    Ok(files.into_iter().map(|file| (file.path.clone(), Arc::new(file))).collect())
}

/// The job that empties this replica's route cache at every change, and keeps it unused while
/// it cannot hear them.
pub(super) fn listener(state: &GatewayState) -> Job {
    let state = state.clone();
    Job::new("gateway-route-listener", move || {
        let state = state.clone();
        async move {
            let mut attempt = 0u32;
            loop {
                let err = listen(&state).await.err();
                state.sites.set_live(false);
                attempt = attempt.saturating_add(1);
                tracing::warn!(target: "api::gateway", error = ?err, attempt, "route listener lost its connection; reading routes from the database meanwhile");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25)))).await;
            }
        }
    })
}

/// Listens until the connection is lost.
async fn listen(state: &GatewayState) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(&state.db).await?;
    listener.listen_all([channels::SITE_CHANGED, channels::INDEXED]).await?;
    state.sites.set_live(true);
    let chain_id = state.chain_id();
    loop {
        // `None`: the connection dropped (notifications may have been missed).
        let Some(notification) = listener.try_recv().await? else {
            anyhow::bail!("the connection dropped");
        };
        if notification.channel() == channels::SITE_CHANGED
            && state.sites.heard(notification.payload())
        {
            continue;
        }
        // Every batch, even without events: it moves the chain time expiries are judged by.
        if notification.channel() == channels::INDEXED
            && serde_json::from_str::<IndexedBatch>(notification.payload())
                .is_ok_and(|batch| batch.chain_id != chain_id)
        {
            continue;
        }
        state.sites.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_a_change_is_not_kept() {
        let sites = Sites::default();
        assert_eq!(sites.begin(), None, "nothing is kept before the listener is connected");
        sites.set_live(true);
        let before = sites.begin().expect("live");
        sites.invalidate();
        let entry = Entry { value: Some("blog".to_owned()), until: until(None) };
        sites.keep(&sites.hosts, before, "shop.test".to_owned(), entry);
        assert!(get(&sites.hosts, &"shop.test".to_owned()).is_none());
        let now = sites.begin().expect("live");
        let entry = Entry { value: Some("blog".to_owned()), until: until(None) };
        sites.keep(&sites.hosts, now, "shop.test".to_owned(), entry);
        assert_eq!(get(&sites.hosts, &"shop.test".to_owned()), Some(Some("blog".to_owned())));
        sites.set_live(false);
        assert!(get(&sites.hosts, &"shop.test".to_owned()).is_none(), "emptied when deaf");
    }

    #[test]
    fn an_entry_ends_when_time_may_change_it() {
        let soon = Utc::now() + chrono::Duration::milliseconds(50);
        assert!(until(Some(soon)) <= Instant::now() + Duration::from_millis(60));
        let past = Utc::now() - chrono::Duration::seconds(5);
        assert!(until(Some(past)) <= Instant::now() + SETTLING);
        assert!(until(None) > Instant::now() + ENTRY_TTL - Duration::from_secs(1));
    }
}
