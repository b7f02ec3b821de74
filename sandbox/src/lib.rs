//! Runs untrusted commands, a site's install and build steps, inside a sandbox, never in the
//! API's process or as its user.
//!
//! A run is one `/bin/sh -c <command>` inside [bubblewrap] with every namespace unshared (user, pid,
//! mount, network, IPC, UTS, cgroup), as an unprivileged user with no capabilities and no way to
//! make further user namespaces. It sees:
//!
//! - its folder, read-write, at `/build`, and a cache folder at `/cache` if it is given one
//!   (nothing else of the host is writable);
//! - the machine's toolchain read-only (`/usr`, where Node.js and npm live), and a folder of
//!   further tools if given (`/opt/tools`: pnpm, yarn);
//! - a private `/proc`, a minimal `/dev`, and a `/tmp` of bounded size;
//! - only the environment it is given: no variable of the API reaches it;
//! - no network: only a loopback interface of its own, and, for a run given a registry, one
//!   way out to that registry's address and no other ([`Run::registry`]).
//!
//! Its processes are put in cgroups of their own before bubblewrap starts, which bound the number
//! of processes (a fork bomb stops there) and memory (the kernel kills past it), and count CPU
//! time. Wall time, CPU time and the folder's size are watched while it runs; a run that passes one
//! is killed whole (every process of its cgroups) and ends as [`Outcome::Limit`], naming which.
//! Whatever ends a run, no process of it outlives [`Sandbox::run`].
//!
//! The host must have bubblewrap and cgroup v1 `pids`, `memory` and `cpuacct` controllers the
//! API's user may create groups in ([`Sandbox::new`] checks both and says what is missing).
//!
//! [bubblewrap]: https://github.com/containers/bubblewrap

mod cgroup;
mod output;
mod registry;

pub use output::MAX_LINE;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{process::Command, sync::mpsc};

use crate::cgroup::Cgroups;

/// The user and group a sandboxed command runs as, inside its own user namespace.
const SANDBOX_ID: &str = "1000";
/// How often a run's CPU time is read.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often a run's folder is measured (a walk of the tree).
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// What a run may use. Passing any one ends it as [`Outcome::Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time from start to end.
    pub wall: Duration,
    /// CPU time of all its processes together.
    pub cpu: Duration,
    /// Memory of all its processes together, in bytes (the kernel kills past it).
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub processes: u32,
    /// Size of its folder, in bytes, and of any one file it writes.
    pub disk_bytes: u64,
    /// Size of its `/tmp`, in bytes.
    pub tmp_bytes: u64,
}

/// One command to run.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The folder the command may change, seen as `/build` inside.
    pub dir: &'a Path,
    /// Where inside `dir` the command starts (a relative path; empty for `dir` itself).
    pub workdir: &'a Path,
    /// A shell command line.
    pub command: &'a str,
    /// The command's whole environment besides `PATH`, `HOME` (= `/tmp`) and `CI` (= `true`).
    pub env: &'a [(String, String)],
    /// What it may use.
    pub limits: Limits,
    /// A package registry (an HTTP server on the host) the command may reach, at
    /// `http://127.0.0.1:<its port>/` inside; none: no network at all.
    pub registry: Option<std::net::SocketAddr>,
    /// A folder kept between runs (a package manager's cache), read-write at `/cache` inside.
    pub cache: Option<&'a Path>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this status.
    Exited(i32),
    /// The command was killed by this signal (not by the sandbox).
    Signaled(i32),
    /// The sandbox stopped it for passing a limit.
    Limit(Limit),
}

/// The limit a run passed; its message ("ran longer than its time limit of 600 s") says
/// which, for the build log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// It ran past its wall time.
    #[error("ran longer than its time limit of {} s", .0.as_secs())]
    WallTime(Duration),
    /// Its processes used more CPU time than allowed.
    #[error("used more than its CPU time limit of {} s", .0.as_secs())]
    CpuTime(Duration),
    /// It needed more memory than allowed.
    #[error("needed more than its memory limit of {} MiB", .0 >> 20)]
    Memory(u64),
    /// It started more processes than allowed at once.
    #[error("started more than its limit of {0} processes")]
    Processes(u32),
    /// Its folder grew past the size allowed.
    #[error("wrote more than its disk limit of {} MiB", .0 >> 20)]
    Disk(u64),
}

/// A finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub wall: Duration,
    /// The CPU time its processes used.
    pub cpu: Duration,
    /// Connections it made to its registry.
    pub registry_connections: u64,
}

impl Finished {
    /// Whether the command exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Exited(0)
    }
}

/// Why a command could not be run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not where it was looked for, or does not run.
    #[error("bubblewrap cannot run from {path}: {reason}")]
    NoBubblewrap {
        /// The path tried.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A cgroup controller the limits need is not mounted or not writable.
    #[error("the sandbox needs the cgroup v1 {controller} controller: {reason}")]
    Cgroup {
        /// The controller (`pids`, `memory`, `cpuacct`).
        controller: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The run's folder or working folder is not usable.
    #[error("the build folder is not usable: {0}")]
    Folder(String),
    /// Starting or watching the run failed.
    #[error("the sandbox failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs commands in bubblewrap with cgroup limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    cgroups: cgroup::Roots,
    /// Extra tools (a `node_modules` folder of package managers), read-only at [`TOOLS_INSIDE`].
    tools: Option<PathBuf>,
}

/// Where [`Sandbox::with_tools`]'s folder is seen inside; its `.bin` comes first on `PATH`.
pub const TOOLS_INSIDE: &str = "/opt/tools";

impl Sandbox {
    /// A sandbox using the bubblewrap at `bwrap`; checks that it runs and that the cgroup
    /// controllers are there and writable, so a host that cannot sandbox says so at start.
    pub async fn new(bwrap: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let bwrap = bwrap.into();
        let version = Command::new(&bwrap)
            .arg("--version")
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| SandboxError::NoBubblewrap {
                path: bwrap.clone(),
                reason: e.to_string(),
            })?;
        if !version.status.success() {
            return Err(SandboxError::NoBubblewrap {
                path: bwrap,
                reason: format!("--version answered {}", version.status),
            });
        }
        let cgroups = cgroup::Roots::of_this_process()?;
        Ok(Self { bwrap, cgroups, tools: None })
    }

    /// Also gives every run the tools installed in `node_modules` (package managers beside the
    /// machine's npm: pnpm, yarn), read-only at [`TOOLS_INSIDE`], their `.bin` first on `PATH`.
    pub fn with_tools(mut self, node_modules: impl Into<PathBuf>) -> Self {
        self.tools = Some(node_modules.into());
        self
    }

    /// Runs one command and sends its output, stdout and stderr interleaved, line by line to
    /// `lines` as it comes (each line at most [`MAX_LINE`] bytes, longer ones cut). A
    /// closed receiver does not stop the run. Every process of the run is gone when this returns.
    pub async fn run(
        &self,
        run: Run<'_>,
        lines: mpsc::Sender<String>,
    ) -> Result<Finished, SandboxError> {
        let workdir = checked_workdir(run.dir, run.workdir)?;
        let limits = run.limits;
        let cgroups = Cgroups::create(&self.cgroups, &limits)?;
        let gate = run.registry.map(registry::Gate::open).transpose()?;
        let started = Instant::now();
        let mut child = self.command(&run, &workdir, &cgroups, gate.as_ref()).spawn()?;
        let pumps = output::pump(&mut child, lines);

        let deadline = tokio::time::sleep(limits.wall);
        tokio::pin!(deadline);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let mut last_measure = Instant::now();
        let (status, mut stopped) = loop {
            tokio::select! {
                status = child.wait() => break (Some(status?), None),
                () = &mut deadline => break (None, Some(Limit::WallTime(limits.wall))),
                _ = watch.tick() => {
                    if let Some(limit) = cgroups.passed(&limits)? {
                        break (None, Some(limit));
                    }
                    if last_measure.elapsed() >= MEASURE_EVERY {
                        last_measure = Instant::now();
                        if over(run.dir, limits.disk_bytes).await {
                            break (None, Some(Limit::Disk(limits.disk_bytes)));
                        }
                    }
                }
            }
        };
        // Whatever ended the command, nothing of the run may outlive it: bubblewrap's own
        // process, and then every process left in the run's groups (a background job, a
        // daemon, a fork bomb's remains).
        let _ = child.start_kill();
        cgroups.kill_all().await?;
        let status = match status {
            Some(status) => status,
            None => child.wait().await?,
        };
        output::drain(pumps).await;
        let cpu = cgroups.cpu_used()?;
        let wall = started.elapsed();
        // A limit passed since the last look (or a file cut at the size limit) still counts.
        if stopped.is_none() {
            stopped = cgroups.passed(&limits)?;
        }
        if stopped.is_none() && over(run.dir, limits.disk_bytes).await {
            stopped = Some(Limit::Disk(limits.disk_bytes));
        }
        let outcome = match (stopped, status.code()) {
            (Some(limit), _) => Outcome::Limit(limit),
            (None, Some(code)) => Outcome::Exited(code),
            (None, None) => {
                use std::os::unix::process::ExitStatusExt;
                Outcome::Signaled(status.signal().unwrap_or_default())
            }
        };
        cgroups.remove().await;
        let registry_connections = gate.as_ref().map_or(0, registry::Gate::connections);
        Ok(Finished { outcome, wall, cpu, registry_connections })
    }

    /// `sh` puts itself in the run's groups and then becomes bubblewrap, so every process of the
    /// sandbox is counted from its first instruction on.
    fn command(
        &self,
        run: &Run<'_>,
        workdir: &Path,
        cgroups: &Cgroups,
        gate: Option<&registry::Gate>,
    ) -> Command {
        let mut command = Command::new("/bin/sh");
        // `ulimit -f` (in 512-byte blocks) cuts any one file just past the disk limit.
        command.env_clear().arg("-c").arg(
            r#"ulimit -f "$1" || exit 125; shift
               while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift
               exec "$@""#,
        );
        // One block more than the limit, so a file cut there is seen to be past it.
        command.arg("sh").arg((run.limits.disk_bytes / 512 + 1).to_string());
        command.args(cgroups.procs_files()).arg("--").arg(&self.bwrap);
        #[rustfmt::skip]
        command.args([
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", SANDBOX_ID, "--gid", SANDBOX_ID, "--cap-drop", "ALL",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
            "--proc", "/proc", "--dev", "/dev",
        ]);
        command.arg("--size").arg(run.limits.tmp_bytes.to_string()).args(["--tmpfs", "/tmp"]);
        command.arg("--bind").arg(run.dir).arg("/build");
        if let Some(cache) = run.cache {
            command.arg("--bind").arg(cache).arg("/cache");
        }
        let start = if workdir.as_os_str().is_empty() {
            "/build".into()
        } else {
            Path::new("/build").join(workdir)
        };
        command.arg("--chdir").arg(start);
        let path = match &self.tools {
            Some(tools) => {
                command.arg("--ro-bind").arg(tools).arg(TOOLS_INSIDE);
                format!("{TOOLS_INSIDE}/.bin:/usr/local/bin:/usr/bin:/bin")
            }
            None => "/usr/local/bin:/usr/bin:/bin".to_owned(),
        };
        command.args(["--clearenv", "--setenv", "PATH"]).arg(path);
        command.args(["--setenv", "HOME", "/tmp", "--setenv", "CI", "true"]);
        for (name, value) in run.env {
            command.arg("--setenv").arg(name).arg(value);
        }
        match gate {
            Some(gate) => {
                command.arg("--bind").arg(gate.socket()).arg(registry::SOCKET_INSIDE);
                command.args(["/bin/sh", "-c", registry::Gate::WRAPPER, "sh"]);
                command.arg(gate.forwarder()).arg(run.command);
            }
            None => {
                command.args(["/bin/sh", "-c", run.command]);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// The working folder, relative and inside the run's folder.
fn checked_workdir(dir: &Path, workdir: &Path) -> Result<PathBuf, SandboxError> {
    use std::path::Component;
    if !dir.is_dir() {
        return Err(SandboxError::Folder(format!("{} is not a folder", dir.display())));
    }
    let mut inside = PathBuf::new();
    for part in workdir.components() {
        match part {
            Component::Normal(name) => inside.push(name),
            Component::CurDir => {}
            _ => {
                return Err(SandboxError::Folder(format!(
                    "{} is not a folder inside the source",
                    workdir.display()
                )));
            }
        }
    }
    Ok(inside)
}

/// Whether the files under `dir` hold more than `limit` bytes (links are not followed).
async fn over(dir: &Path, limit: u64) -> bool {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || tree_size(&dir, limit) > limit).await.unwrap_or(false)
}

/// The bytes of the files under `dir`, counted until past `stop_past` (links are not followed;
/// what cannot be read counts nothing). Blocking.
pub fn tree_size(dir: &Path, stop_past: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
                if total > stop_past {
                    return total;
                }
            }
        }
    }
    total
}
