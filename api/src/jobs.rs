//! Background jobs, supervised. Every job of every feature is started in one place
//! ([`Supervisor::start`]); a job that fails or panics is logged, counted
//! (`job_restarts_total{job}`, `job_up{job}`) and started again after a backoff, and while a
//! required job is down `/ready` says so. Most jobs are a pass run on a schedule: the loop around
//! the pass is written once ([`repeat`]), and a failed pass is logged, counted
//! (`job_pass_failures_total{job}`) and tried again at the next turn, without restarting the job.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, future::BoxFuture};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

/// A job's body: run until the process ends (or fail).
type Body = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// A background job: its name, whether readiness depends on it, and how to start it (again).
#[derive(Clone)]
pub struct Job {
    name: &'static str,
    required: bool,
    body: Body,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).field("required", &self.required).finish()
    }
}

impl Job {
    /// A job that runs until the process ends; `start` makes a fresh run of it (at start and
    /// after each failure). Readiness depends on it unless marked [`optional`](Self::optional).
    pub fn new<F, Fut>(name: &'static str, start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self { name, required: true, body: Arc::new(move || Box::pin(start())) }
    }

    /// A job that runs `make()`'s pass on `schedule` ([`repeat`]).
    pub fn repeating<F, P>(
        name: &'static str,
        schedule: impl Fn() -> Schedule + Send + Sync + 'static,
        make: F,
    ) -> Self
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: Pass + 'static,
    {
        let make = Arc::new(make);
        let schedule = Arc::new(schedule);
        Self::new(name, move || {
            let (make, schedule) = (make.clone(), schedule.clone());
            async move { repeat(name, schedule(), make()).await }
        })
    }

    /// A repeating job whose turns keep nothing between them: `pass()` makes each turn.
    pub fn periodic<F, Fut>(
        name: &'static str,
        schedule: impl Fn() -> Schedule + Send + Sync + 'static,
        pass: F,
    ) -> Self
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::repeating(name, schedule, move || pass.clone())
    }

    /// Readiness does not depend on this job (best-effort housekeeping).
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One turn of a repeating job. Any `FnMut() -> impl Future<Output = anyhow::Result<()>>` is one;
/// a job with state across turns implements it on its own type.
pub trait Pass: Send {
    /// Runs one turn.
    fn run(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl<F, Fut> Pass for F
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    fn run(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        self()
    }
}

/// When a repeating job's passes run: every `period`, the first after `first_after` (at once by
/// default), and early whenever `wake` yields.
pub struct Schedule {
    period: Duration,
    first_after: Duration,
    wake: Option<Pin<Box<dyn Stream<Item = ()> + Send>>>,
}

impl Schedule {
    /// A pass every `period`, the first at once.
    pub fn every(period: Duration) -> Self {
        Self { period, first_after: Duration::ZERO, wake: None }
    }

    /// The first pass after `delay` instead of at once.
    pub fn first_after(mut self, delay: Duration) -> Self {
        self.first_after = delay;
        self
    }

    /// A pass as soon as `wake` yields (and then every `period` again).
    pub fn woken_by(mut self, wake: impl Stream<Item = ()> + Send + 'static) -> Self {
        self.wake = Some(Box::pin(wake));
        self
    }

    /// A pass as soon as `notify` is notified.
    pub fn woken_by_notify(self, notify: Arc<Notify>) -> Self {
        self.woken_by(futures::stream::unfold(notify, |notify| async move {
            notify.notified().await;
            Some(((), notify))
        }))
    }

    async fn wait(&mut self, period: Duration) {
        match &mut self.wake {
            Some(wake) => {
                tokio::select! {
                    woken = wake.next() => {
                        if woken.is_none() {
                            // The source ended: fall back to the period alone.
                            self.wake = None;
                            tokio::time::sleep(period).await;
                        }
                    }
                    () = tokio::time::sleep(period) => {}
                }
            }
            None => tokio::time::sleep(period).await,
        }
    }
}

/// Runs `pass` on `schedule` until the task is dropped. A failed pass is logged and counted, and
/// the next runs on schedule; a panic ends the job (its supervisor starts it again).
pub async fn repeat(
    job: &'static str,
    mut schedule: Schedule,
    mut pass: impl Pass,
) -> anyhow::Result<()> {
    let first = schedule.first_after;
    if !first.is_zero() {
        schedule.wait(first).await;
    }
    loop {
        match pass.run().await {
            Ok(()) => JobHealth::passed(job, true),
            Err(err) => {
                JobHealth::passed(job, false);
                metrics::counter!("job_pass_failures_total", "job" => job).increment(1);
                tracing::warn!(target: "api::jobs", job, err = format!("{err:#}"), "pass failed; next at its turn");
            }
        }
        let period = schedule.period;
        schedule.wait(period).await;
    }
}

/// Where every supervised job stands, shared with readiness (required jobs that are down) and
/// the admins' system health (every job: up, last good pass, failures).
#[derive(Debug, Clone, Default)]
pub struct JobHealth(Arc<Mutex<BTreeMap<&'static str, JobStatus>>>);

/// One background job, as the admins' system health shows it.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// Its name.
    pub name: &'static str,
    /// Whether readiness depends on it.
    pub required: bool,
    /// Whether it runs now (a job that failed is down until its supervisor starts it again).
    pub up: bool,
    /// When a pass (of a repeating job) last succeeded.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When a pass last failed, or the job itself (the cause is in the logs).
    pub last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Failed passes and failures of the job since this process started.
    pub failures: u64,
}

tokio::task_local! {
    /// The health a supervised job's passes report to.
    static REPORTS_TO: JobHealth;
}

impl JobHealth {
    /// The required jobs that are not running now (failed, waiting to start again).
    pub fn down(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|jobs| {
                jobs.values().filter(|j| j.required && !j.up).map(|j| j.name.to_owned()).collect()
            })
            .unwrap_or_default()
    }

    /// Every job of this process, by name.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.0.lock().map(|jobs| jobs.values().cloned().collect()).unwrap_or_default()
    }

    fn update(&self, job: &'static str, change: impl FnOnce(&mut JobStatus)) {
        if let Ok(mut jobs) = self.0.lock() {
            let status =
                jobs.entry(job).or_insert_with(|| JobStatus { name: job, ..JobStatus::default() });
            change(status);
        }
    }

    fn set(&self, job: &Job, up: bool) {
        metrics::gauge!("job_up", "job" => job.name).set(if up { 1.0 } else { 0.0 });
        let required = job.required;
        self.update(job.name, |status| {
            status.required = required;
            status.up = up;
            if !up {
                status.failures += 1;
                status.last_failure_at = Some(chrono::Utc::now());
            }
        });
    }

    /// Records a pass of `job`, from inside the job's task (see [`repeat`]).
    fn passed(job: &'static str, ok: bool) {
        let _ = REPORTS_TO.try_with(|health| {
            health.update(job, |status| {
                if ok {
                    status.last_success_at = Some(chrono::Utc::now());
                } else {
                    status.failures += 1;
                    status.last_failure_at = Some(chrono::Utc::now());
                }
            });
        });
    }
}

/// How long a failed job waits before it starts again: `min`, doubling up to `max`; a job that ran
/// for `max` before failing starts over at `min`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait.
    pub min: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { min: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    fn after(&self, failures: u32) -> Duration {
        self.min.saturating_mul(1 << failures.min(16)).min(self.max)
    }
}

/// Runs jobs, restarting each one that fails.
#[derive(Debug)]
pub struct Supervisor {
    jobs: Vec<Job>,
    health: JobHealth,
    backoff: Backoff,
}

impl Supervisor {
    /// A supervisor of `jobs`, reporting to `health`.
    pub fn new(jobs: Vec<Job>, health: JobHealth) -> Self {
        Self { jobs, health, backoff: Backoff::default() }
    }

    /// With another backoff (tests use short ones).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts every job and supervises them until `stop` is cancelled; then every job is
    /// stopped.
    pub fn start(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.supervise(stop))
    }

    async fn supervise(self, stop: CancellationToken) {
        let Self { jobs, health, backoff } = self;
        let mut running = JoinSet::new();
        // Per job: when its current run started, and its failures in a row.
        let mut runs: BTreeMap<tokio::task::Id, usize> = BTreeMap::new();
        let mut failures = vec![0u32; jobs.len()];
        let mut started = vec![Instant::now(); jobs.len()];
        for (index, job) in jobs.iter().enumerate() {
            health.set(job, true);
            let id = running.spawn(REPORTS_TO.scope(health.clone(), (job.body)())).id();
            runs.insert(id, index);
            tracing::info!(target: "api::jobs", job = job.name, "started");
        }
        loop {
            let ended = tokio::select! {
                () = stop.cancelled() => break,
                ended = running.join_next_with_id() => ended,
            };
            let Some(ended) = ended else { break };
            let (id, outcome) = match ended {
                Ok((id, result)) => (id, result.map_err(|err| format!("{err:#}"))),
                Err(err) if err.is_cancelled() => continue,
                Err(err) => (err.id(), Err(panic_message(err))),
            };
            let Some(index) = runs.remove(&id) else { continue };
            let job = &jobs[index];
            let cause = match outcome {
                // A job that finishes has nothing more to do (its feature is not configured).
                Ok(()) => {
                    tracing::info!(target: "api::jobs", job = job.name, "finished");
                    health.set(job, true);
                    continue;
                }
                Err(cause) => cause,
            };
            if started[index].elapsed() >= backoff.max {
                failures[index] = 0;
            }
            let wait = backoff.after(failures[index]);
            failures[index] = failures[index].saturating_add(1);
            metrics::counter!("job_restarts_total", "job" => job.name).increment(1);
            health.set(job, false);
            tracing::error!(target: "api::jobs", job = job.name, %cause, ?wait, "job failed; starting it again after a backoff");
            let (body, restarted, name) = (job.body.clone(), health.clone(), job.clone());
            started[index] = Instant::now() + wait;
            let id = running
                .spawn(REPORTS_TO.scope(health.clone(), async move {
                    tokio::time::sleep(wait).await;
                    restarted.set(&name, true);
                    tracing::info!(target: "api::jobs", job = name.name, "started again");
                    body().await
                }))
                .id();
            runs.insert(id, index);
        }
        running.shutdown().await;
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(panic) => match panic.downcast::<String>() {
            Ok(message) => format!("panicked: {message}"),
            Err(panic) => match panic.downcast::<&'static str>() {
                Ok(message) => format!("panicked: {message}"),
                Err(_) => "panicked".to_owned(),
            },
        },
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> Backoff {
        Backoff { min: Duration::from_millis(200), max: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_down_then_started_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let job = Job::new("flaky", move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    panic!("a bug in the first run");
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let health = JobHealth::default();
        let stop = CancellationToken::new();
        let supervisor =
            Supervisor::new(vec![job], health.clone()).with_backoff(quick()).start(stop.clone());
        // Down while it waits out its backoff…
        let deadline = Instant::now() + Duration::from_secs(5);
        while health.down().is_empty() {
            assert!(Instant::now() < deadline, "the panic was never reported");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(health.down(), vec!["flaky".to_owned()]);
        // …then running again.
        while runs.load(Ordering::SeqCst) < 2 || !health.down().is_empty() {
            assert!(Instant::now() < deadline, "the job was not started again");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        supervisor.await.expect("the supervisor ends");
    }

    #[tokio::test]
    async fn every_jobs_passes_and_failures_are_shown() {
        let health = JobHealth::default();
        let turns = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let job = Job::periodic("alternating", || Schedule::every(Duration::from_millis(5)), {
            let turns = turns.clone();
            move || {
                let n = turns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n.is_multiple_of(2) { anyhow::bail!("pass {n} failed") } else { Ok(()) }
                }
            }
        })
        .optional();
        let stop = CancellationToken::new();
        let supervisor = Supervisor::new(vec![job], health.clone()).start(stop.clone());
        while turns.load(std::sync::atomic::Ordering::SeqCst) < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        supervisor.await.expect("supervisor");
        let jobs = health.jobs();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let status = &jobs[0];
        assert_eq!((status.name, status.required, status.up), ("alternating", false, true));
        assert!(status.failures >= 3, "{status:?}");
        assert!(status.last_success_at.is_some() && status.last_failure_at.is_some(), "{status:?}");
        assert!(health.down().is_empty(), "an optional job never holds readiness");
    }

    #[tokio::test]
    async fn failed_passes_do_not_stop_a_repeating_job() {
        let passes = Arc::new(AtomicU32::new(0));
        let counted = passes.clone();
        let job = Job::repeating(
            "passes",
            || Schedule::every(Duration::from_millis(10)),
            move || {
                let counted = counted.clone();
                move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n.is_multiple_of(2) { anyhow::bail!("pass {n} failed") } else { Ok(()) }
                    }
                }
            },
        );
        let health = JobHealth::default();
        let stop = CancellationToken::new();
        let supervisor =
            Supervisor::new(vec![job], health.clone()).with_backoff(quick()).start(stop.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while passes.load(Ordering::SeqCst) < 6 {
            assert!(Instant::now() < deadline, "passes stopped");
            assert!(health.down().is_empty(), "a failed pass is not a failed job");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        supervisor.await.expect("the supervisor ends");
    }

    #[tokio::test]
    async fn a_wake_runs_a_pass_before_its_period() {
        let notify = Arc::new(Notify::new());
        let passes = Arc::new(AtomicU32::new(0));
        let counted = passes.clone();
        let schedule = Schedule::every(Duration::from_secs(3600)).woken_by_notify(notify.clone());
        let task = tokio::spawn(repeat("woken", schedule, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while passes.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        notify.notify_one();
        while passes.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the wake did not run a pass");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let backoff = Backoff { min: Duration::from_secs(1), max: Duration::from_secs(60) };
        let waits: Vec<u64> = (0..8).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
