//! Keeps every dynamic site's instance where its hosting service says it should be: running
//! while the service is active (and not expired), stopped while it is paused, suspended or
//! expired, destroyed once it is cancelled. Each pass first reads the machine from the runtime
//! (a machine that died moves its instance to `crashed`, and the next pass starts it again),
//! then acts. One replica at a time (an advisory lock); every move goes through the instance
//! state machine.

use std::time::Duration;

use decentraspace_db::locks::{Lock, try_lead};

use super::{
    Runtime, RuntimeError,
    instance::{Event, State, transition},
};
use crate::{
    hosting::HostingState,
    jobs::{Job, Schedule},
};

/// Where an instance should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desired {
    Running,
    Stopped,
    Destroyed,
}

/// Runs passes every `interval` until the task is dropped.
pub fn job(state: &HostingState, interval: Duration) -> Option<Job> {
    let runtime = state.runtime.clone()?;
    let state = state.clone();
    Some(Job::periodic(
        "dynamic-reconcile",
        move || Schedule::every(interval),
        move || {
            let (state, runtime) = (state.clone(), runtime.clone());
            async move { pass(&state, runtime.as_ref()).await.map(drop) }
        },
    ))
}

/// One pass over every instance; answers how many moved.
pub async fn pass(state: &HostingState, runtime: &dyn Runtime) -> anyhow::Result<usize> {
    let Some(lock) = try_lead(&state.db, Lock::DynamicReconcile).await? else { return Ok(0) };
    let instances = sqlx::query!(
        r#"select i.site_id, i.machine_id, i.state, coalesce(v.state, 'opening') as "service!",
                  coalesce(v.expires_at <= chain_now(s.chain_id)
                           and effective_tier(a.tier, a.tier_expires_at, chain_now(s.chain_id)) = 'free',
                           false) as "expired!"
           from site_instances i
           join sites s on s.id = i.site_id
           left join services v on v.chain_id = s.chain_id and v.service_id = s.service_id
           left join accounts a on a.chain_id = s.chain_id and a.address = s.account
           where s.chain_id = $1 and i.state <> 'destroyed'
           order by i.site_id"#,
        state.chain_id() as i64
    )
    .fetch_all(&state.db)
    .await?;
    let mut moved = 0;
    for instance in instances {
        let Some(at) = State::parse(&instance.state) else { continue };
        let desired = match (instance.service.as_str(), instance.expired) {
            ("cancelled", _) => Desired::Destroyed,
            ("active", false) => Desired::Running,
            _ => Desired::Stopped,
        };
        let reason = match desired {
            Desired::Running => "its service is active".to_owned(),
            Desired::Stopped if instance.expired => "its service expired".to_owned(),
            Desired::Stopped => format!("its service is {}", instance.service),
            Desired::Destroyed => "its service was cancelled".to_owned(),
        };
        let step = Step { state, runtime, site: instance.site_id, machine: &instance.machine_id };
        match step.reconcile(at, desired, &reason).await {
            Ok(n) => moved += n,
            Err(err) => tracing::warn!(target: "api::runtime", site = instance.site_id,
                err = format!("{err:#}"), "cannot reconcile an instance"),
        }
    }
    match sweep(state, runtime).await {
        Ok(swept) => moved += swept,
        Err(err) => tracing::warn!(target: "api::runtime", err = format!("{err:#}"),
            "cannot sweep orphaned machines"),
    }
    drop(lock);
    Ok(moved)
}

/// Destroys the machines nothing refers to any more: recorded as the machine of a deployment of
/// this platform that has ended (live or failed), and not any site's instance. A crash between launching a
/// replacement and destroying the machine it replaced, or between a failed start and its
/// clean-up, leaves such a machine running and billed. Machines of deployments still in flight
/// are left to their job, and machines this database has not recorded (another environment
/// sharing the Fly app, a machine launched or cloned by hand) are never touched.
async fn sweep(state: &HostingState, runtime: &dyn Runtime) -> anyhow::Result<usize> {
    let machines = runtime.machines().await?;
    let (ids, deployments): (Vec<String>, Vec<i64>) =
        machines.iter().filter_map(|m| Some((m.id.clone(), m.deployment?))).unzip();
    if ids.is_empty() {
        return Ok(0);
    }
    // The machines list came first: a machine switched to meanwhile is an instance by now, since
    // a deployment goes live and becomes its site's instance in one commit.
    let orphans = sqlx::query_scalar!(
        r#"select m.id as "id!" from unnest($1::text[], $2::bigint[]) as m(id, deployment)
           join deployments d on d.id = m.deployment and d.machine_id = m.id
                                and d.state in ('live', 'failed')
           where not exists (select 1 from site_instances i
                             where i.machine_id = m.id and i.state <> 'destroyed')"#,
        &ids,
        &deployments
    )
    .fetch_all(&state.db)
    .await?;
    let mut destroyed = 0;
    for id in orphans {
        match runtime.destroy(&id).await {
            Ok(()) | Err(RuntimeError::Gone(_)) => {
                tracing::warn!(target: "api::runtime", machine = id, "orphaned machine destroyed");
                destroyed += 1;
            }
            Err(err) => tracing::warn!(target: "api::runtime", machine = id, %err,
                "cannot destroy an orphaned machine"),
        }
    }
    Ok(destroyed)
}

struct Step<'a> {
    state: &'a HostingState,
    runtime: &'a dyn Runtime,
    site: i64,
    machine: &'a str,
}

impl Step<'_> {
    async fn apply(&self, from: State, event: Event, reason: &str) -> anyhow::Result<State> {
        let mut conn = self.state.db.acquire().await?;
        let to = transition(&mut conn, self.site, self.machine, from, event, reason).await?;
        // `None`: another writer moved it meanwhile; this pass leaves it.
        to.ok_or_else(|| anyhow::anyhow!("the instance moved meanwhile"))
    }

    async fn reconcile(
        &self,
        mut at: State,
        desired: Desired,
        reason: &str,
    ) -> anyhow::Result<usize> {
        let mut moved = 0;
        // What the runtime says happened.
        let machine = match self.runtime.machine(self.machine).await {
            Ok(machine) => Some(machine),
            Err(RuntimeError::Gone(_)) => None,
            Err(err) => return Err(err.into()),
        };
        let observed = match (&machine, at) {
            (Some(m), State::Starting) if m.started() => {
                Some((Event::Started, "the machine started"))
            }
            (Some(m), State::Starting | State::Running) if m.down() => {
                Some((Event::Exited, "the machine went down"))
            }
            (None, State::Starting | State::Running) => {
                Some((Event::Exited, "the machine is gone"))
            }
            (Some(m), State::Stopping) if m.down() => Some((Event::Stopped, "the machine stopped")),
            (None, State::Stopping) => Some((Event::Stopped, "the machine is gone")),
            _ => None,
        };
        if let Some((event, why)) = observed {
            at = self.apply(at, event, why).await?;
            moved += 1;
        }
        // What its service asks for.
        let action = match (desired, at) {
            (Desired::Destroyed, _) => Some(Event::Destroy),
            (Desired::Running, State::Stopped | State::Crashed) if machine.is_some() => {
                Some(Event::Start)
            }
            (Desired::Stopped, State::Running) => Some(Event::Stop),
            _ => None,
        };
        let Some(event) = action else { return Ok(moved) };
        match event {
            Event::Destroy => self.runtime.destroy(self.machine).await?,
            Event::Start => self.runtime.start(self.machine).await?,
            Event::Stop => self.runtime.stop(self.machine).await?,
            _ => {}
        }
        self.apply(at, event, reason).await?;
        Ok(moved + 1)
    }
}
