//! The uptime prober: every `UPTIME_INTERVAL_SECS`, one replica (elected by an advisory lock)
//! fetches each served site's front page through the gateway, as a visitor would, and records
//! whether it answered with a success and how long it took.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use decentraspace_db::locks::{Lock, try_lead};
use futures::StreamExt;

use crate::{
    gateway::GatewayState,
    jobs::{Job, Schedule},
};

/// The longest a site may take to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Sites checked at once.
const PARALLEL: usize = 16;

/// The prober's job: every served site through the gateway at `gateway`, every `interval`. Best
/// effort: readiness does not depend on it.
pub fn job(state: &GatewayState, gateway: SocketAddr, interval: Duration) -> anyhow::Result<Job> {
    let http = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("DecentraSpace-Uptime/1")
        .build()?;
    let state = state.clone();
    Ok(Job::periodic(
        "uptime",
        move || Schedule::every(interval),
        move || {
            let (state, http) = (state.clone(), http.clone());
            async move { pass(&state, &http, gateway).await.map(drop) }
        },
    )
    .optional())
}

/// One pass over the served sites, when this replica leads.
pub async fn pass(
    state: &GatewayState,
    http: &reqwest::Client,
    gateway: SocketAddr,
) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::Uptime).await? else { return Ok(0) };
    let sites = sqlx::query!(
        r#"select s.id, s.name from sites s
           join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
           where s.chain_id = $1 and s.current_deployment_id is not null and v.state = 'active'"#,
        state.chain_id() as i64
    )
    .fetch_all(&state.db)
    .await?;
    let domain = &state.config.sites_domain;
    let checks = futures::stream::iter(sites)
        .map(|site| async move {
            let started = Instant::now();
            let answer = http
                .get(format!("http://{gateway}/"))
                .header(reqwest::header::HOST, format!("{}.{domain}", site.name))
                .send()
                .await;
            let latency_ms = started.elapsed().as_millis() as i32;
            match answer {
                Ok(r) => (
                    site.id,
                    r.status().is_success(),
                    Some(r.status().as_u16() as i16),
                    Some(latency_ms),
                    None,
                ),
                Err(err) => (site.id, false, None, None, Some(err.to_string())),
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
    let count = checks.len();
    let (mut ids, mut ups, mut statuses, mut latencies, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, up, status, latency, error) in checks {
        ids.push(id);
        ups.push(up);
        statuses.push(status);
        latencies.push(latency);
        errors.push(error);
    }
    sqlx::query!(
        "insert into uptime_checks (site_id, up, status, latency_ms, error)
         select * from unnest($1::bigint[], $2::bool[], $3::smallint[], $4::int[], $5::text[])",
        &ids,
        &ups,
        &statuses as &[Option<i16>],
        &latencies as &[Option<i32>],
        &errors as &[Option<String>]
    )
    .execute(&state.db)
    .await?;
    drop(lock);
    Ok(count)
}
