//! The deploy job's part for a dynamic site: launch the deployment's machine (found again if an
//! earlier attempt launched it), wait for it to start, then in one commit make the deployment
//! live and current and its machine the site's running instance. The machine it replaces is
//! destroyed after the switch (blue/green: the site never serves nothing meanwhile); a machine
//! that does not start is destroyed and the deployment fails.

use super::{
    MachineSpec, Runtime, RuntimeError,
    instance::{self, Event, State},
};
use crate::hosting::HostingState;

/// How long a machine may take to start.
const START_TIMEOUT_SECS: u64 = 120;

/// An image deployment the job claimed.
pub(in crate::hosting) struct ImageJob<'a> {
    pub id: i64,
    pub attempts: i32,
    pub site_id: i64,
    pub image: &'a str,
    pub port: u16,
}

/// What the owner reads when the launch fails, or what to log along the way.
pub(in crate::hosting) enum Outcome {
    /// Live; the lines to log.
    Live(Vec<String>),
    /// Failed, and why.
    Failed(String),
    /// The job went to another worker meanwhile.
    Lost,
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn address(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

fn unavailable(err: RuntimeError) -> Outcome {
    tracing::warn!(target: "api::deploy", %err, "runtime call failed");
    match err {
        RuntimeError::Refused(reason) => Outcome::Failed(format!("the runtime refused: {reason}")),
        _ => Outcome::Failed("the runtime is unavailable; deploy again".into()),
    }
}

/// Launches and switches to the job's machine.
pub(in crate::hosting) async fn launch(state: &HostingState, job: ImageJob<'_>) -> Outcome {
    let Some(runtime) = state.runtime.clone() else {
        return Outcome::Failed("no runtime for dynamic sites is configured".into());
    };
    let site = match sqlx::query_scalar!("select name from sites where id = $1", job.site_id)
        .fetch_one(&state.db)
        .await
    {
        Ok(name) => name,
        Err(err) => return Outcome::Failed(format!("cannot read the site: {err}")),
    };
    let spec = MachineSpec { site: &site, deployment: job.id, image: job.image, port: job.port };
    let machine = match runtime.launch(&spec).await {
        Ok(machine) => machine,
        Err(err) => return unavailable(err),
    };
    let mut log = vec![format!("machine {} launched from {}", machine.id, job.image)];
    // Recorded before the wait, only while the job is this attempt's.
    let recorded = sqlx::query!(
        "update deployments set machine_id = $3, updated_at = now()
         where id = $1 and attempts = $2 and state = 'starting'",
        job.id,
        job.attempts,
        machine.id
    )
    .execute(&state.db)
    .await;
    match recorded {
        Ok(done) if done.rows_affected() == 1 => {}
        Ok(_) => return Outcome::Lost,
        Err(err) => return Outcome::Failed(format!("cannot record the machine: {err}")),
    }
    match runtime.wait_started(&machine.id, START_TIMEOUT_SECS).await {
        Ok(true) => {}
        Ok(false) => {
            let now = runtime.machine(&machine.id).await.map(|m| m.state).unwrap_or_default();
            discard(runtime.as_ref(), &machine.id).await;
            return Outcome::Failed(format!(
                "the machine did not start within {START_TIMEOUT_SECS} s (it is {now:?})"
            ));
        }
        Err(err) => {
            discard(runtime.as_ref(), &machine.id).await;
            return unavailable(err);
        }
    }
    let machine = match runtime.machine(&machine.id).await {
        Ok(machine) if !machine.private_ip.is_empty() => machine,
        Ok(_) => {
            discard(runtime.as_ref(), &machine.id).await;
            return Outcome::Failed("the runtime gave the machine no address".into());
        }
        Err(err) => {
            discard(runtime.as_ref(), &machine.id).await;
            return unavailable(err);
        }
    };
    let upstream = address(&machine.private_ip, job.port);
    log.push(format!("machine {} started at {upstream}", machine.id));
    let replaced = match switch(state, &job, &machine.id, &upstream).await {
        Ok(Some(replaced)) => replaced,
        // Another worker has the job (and this machine): it is left to it.
        Ok(None) => return Outcome::Lost,
        Err(err) => {
            tracing::warn!(target: "api::deploy", deployment = job.id, %err, "cannot switch");
            discard(runtime.as_ref(), &machine.id).await;
            return Outcome::Failed(
                "an internal error stopped the deployment; deploy again".into(),
            );
        }
    };
    if let Some(old) = replaced {
        discard(runtime.as_ref(), &old).await;
        log.push(format!("machine {old} it replaces destroyed"));
    }
    Outcome::Live(log)
}

/// Makes the deployment live and current and its machine the site's instance, in one commit, if
/// the job is still this attempt's: `None` when it is not; else the machine it replaced, if any.
async fn switch(
    state: &HostingState,
    job: &ImageJob<'_>,
    machine: &str,
    upstream: &str,
) -> anyhow::Result<Option<Option<String>>> {
    let mut tx = state.db.begin().await?;
    let live = sqlx::query!(
        "update deployments set state = 'live', log = log || $3, lease_until = null,
                                finished_at = now(), updated_at = now()
         where id = $1 and attempts = $2 and state = 'starting'",
        job.id,
        job.attempts,
        crate::hosting::log::stamped("live")
    )
    .execute(&mut *tx)
    .await?;
    if live.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query!("update sites set current_deployment_id = $2 where id = $1", job.site_id, job.id)
        .execute(&mut *tx)
        .await?;
    let previous = sqlx::query!(
        "select machine_id, state from site_instances where site_id = $1 for update",
        job.site_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let mut replaced = None;
    if let Some(previous) = previous.filter(|p| p.machine_id != machine) {
        if let Some(from) = State::parse(&previous.state).filter(|s| *s != State::Destroyed) {
            let reason = format!("replaced by deployment {}", job.id);
            instance::transition(
                &mut tx,
                job.site_id,
                &previous.machine_id,
                from,
                Event::Destroy,
                &reason,
            )
            .await?;
        }
        replaced = Some(previous.machine_id);
    }
    sqlx::query!(
        "insert into site_instances (site_id, deployment_id, machine_id, state, address)
         values ($1, $2, $3, 'running', $4)
         on conflict (site_id) do update
         set deployment_id = excluded.deployment_id, machine_id = excluded.machine_id,
             state = 'running', address = excluded.address, updated_at = now()",
        job.site_id,
        job.id,
        machine,
        upstream
    )
    .execute(&mut *tx)
    .await?;
    let reason = format!("deployment {} started", job.id);
    instance::record(&mut tx, job.site_id, machine, None, State::Running, &reason).await?;
    tx.commit().await?;
    Ok(Some(replaced))
}

/// Destroys a machine nobody serves from; a failure is logged (the machine costs, but serves
/// nothing).
async fn discard(runtime: &dyn Runtime, machine: &str) {
    if let Err(err) = runtime.destroy(machine).await {
        tracing::warn!(target: "api::deploy", machine, %err, "cannot destroy a machine");
    }
}
