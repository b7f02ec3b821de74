//! The cgroups of one run (v1: `pids`, `memory`, `cpuacct`), made beneath the API process's own
//! groups, so a build also stays within whatever bounds the API itself runs in.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::{Limit, Limits, SandboxError};

/// The controllers a run needs.
const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpuacct"];

/// Runs made by this process, for unique group names.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Where this process's group of each controller is, in the order of [`CONTROLLERS`].
#[derive(Debug, Clone)]
pub(crate) struct Roots([PathBuf; 3]);

impl Roots {
    /// Finds this process's groups from `/proc/self/cgroup` and `/proc/self/mountinfo`, and
    /// checks that a group can be made in each.
    pub(crate) fn of_this_process() -> Result<Self, SandboxError> {
        let memberships = std::fs::read_to_string("/proc/self/cgroup")?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut roots = Vec::with_capacity(CONTROLLERS.len());
        for controller in CONTROLLERS {
            let root = group_of(&memberships, &mounts, controller)
                .ok_or_else(|| missing(controller, "it is not mounted".into()))?;
            let probe = root.join(format!("decentraspace-probe-{}", std::process::id()));
            std::fs::create_dir(&probe).and_then(|()| std::fs::remove_dir(&probe)).map_err(
                |e| missing(controller, format!("cannot make a group in {}: {e}", root.display())),
            )?;
            roots.push(root);
        }
        let roots: [PathBuf; 3] = roots.try_into().expect("one root per controller");
        Ok(Self(roots))
    }
}

fn missing(controller: &'static str, reason: String) -> SandboxError {
    SandboxError::Cgroup { controller, reason }
}

/// The folder of this process's group of `controller`: the controller's v1 mount point joined
/// with the group's path below the mount's root.
fn group_of(memberships: &str, mounts: &str, controller: &str) -> Option<PathBuf> {
    let path = memberships.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|c| c == controller).then_some(path)
    })?;
    mounts.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - type source super-options
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (root, mount_point) = (*left.get(3)?, *left.get(4)?);
        let (fs_type, super_options) = (*right.first()?, *right.get(2)?);
        if fs_type != "cgroup" || !super_options.split(',').any(|o| o == controller) {
            return None;
        }
        let below = Path::new(path).strip_prefix(root).ok()?;
        Some(Path::new(mount_point).join(below))
    })
}

/// One run's groups; removed by [`Cgroups::remove`] (or, failing that, when dropped).
#[derive(Debug)]
pub(crate) struct Cgroups {
    pids: PathBuf,
    memory: PathBuf,
    cpuacct: PathBuf,
    removed: bool,
}

impl Cgroups {
    /// Makes the run's groups with its limits.
    pub(crate) fn create(roots: &Roots, limits: &Limits) -> Result<Self, SandboxError> {
        let name = format!(
            "decentraspace-build-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let [pids, memory, cpuacct] = roots.0.clone().map(|root| root.join(&name));
        // Made before the folders, so a failure part-way removes what was made.
        let groups = Self { pids, memory, cpuacct, removed: false };
        for dir in [&groups.pids, &groups.memory, &groups.cpuacct] {
            std::fs::create_dir(dir)?;
        }
        std::fs::write(groups.pids.join("pids.max"), limits.processes.to_string())?;
        std::fs::write(
            groups.memory.join("memory.limit_in_bytes"),
            limits.memory_bytes.to_string(),
        )?;
        // With swap accounting, memory plus swap gets the same bound (no escape into swap).
        let swap = groups.memory.join("memory.memsw.limit_in_bytes");
        if swap.exists() {
            std::fs::write(swap, limits.memory_bytes.to_string())?;
        }
        Ok(groups)
    }

    /// The files a process writes its pid to, to join the groups.
    pub(crate) fn procs_files(&self) -> [PathBuf; 3] {
        [&self.pids, &self.memory, &self.cpuacct].map(|dir| dir.join("cgroup.procs"))
    }

    /// The CPU time the run's processes used.
    pub(crate) fn cpu_used(&self) -> std::io::Result<Duration> {
        let nanos = std::fs::read_to_string(self.cpuacct.join("cpuacct.usage"))?;
        Ok(Duration::from_nanos(nanos.trim().parse().unwrap_or(0)))
    }

    /// The limit the run has passed, if any: the kernel killed one of its processes for memory,
    /// refused it a process, or its CPU time is used up.
    pub(crate) fn passed(&self, limits: &Limits) -> std::io::Result<Option<Limit>> {
        Ok(if self.memory_killed()? {
            Some(Limit::Memory(limits.memory_bytes))
        } else if self.hit_process_limit()? {
            Some(Limit::Processes(limits.processes))
        } else if self.cpu_used()? > limits.cpu {
            Some(Limit::CpuTime(limits.cpu))
        } else {
            None
        })
    }

    /// Whether the kernel killed a process of the run for memory.
    fn memory_killed(&self) -> std::io::Result<bool> {
        let control = std::fs::read_to_string(self.memory.join("memory.oom_control"))?;
        Ok(counter(&control, "oom_kill") > 0)
    }

    /// Whether the run was refused a process for the process limit.
    fn hit_process_limit(&self) -> std::io::Result<bool> {
        let events = std::fs::read_to_string(self.pids.join("pids.events"))?;
        Ok(counter(&events, "max") > 0)
    }

    /// Kills every process of the run until none is left. A fork bomb keeps forking while it is
    /// killed, but it cannot pass the process limit, so each round leaves fewer.
    pub(crate) async fn kill_all(&self) -> std::io::Result<()> {
        for _ in 0..1000 {
            if self.kill_round() == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(std::io::Error::other("processes of the run survived 1000 rounds of SIGKILL"))
    }

    /// Sends SIGKILL to every process in the run's groups; gives how many there were.
    fn kill_round(&self) -> usize {
        let procs = std::fs::read_to_string(self.pids.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<libc::pid_t> = procs.lines().filter_map(|p| p.trim().parse().ok()).collect();
        for &pid in &pids {
            // SAFETY: `kill` has no memory effects; a pid that has already gone fails with ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        pids.len()
    }

    /// Removes the groups (their processes must be gone; exiting ones get a moment).
    pub(crate) async fn remove(mut self) {
        for _ in 0..100 {
            if self.try_remove() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(target: "sandbox", group = %self.pids.display(), "cannot remove a run's cgroups");
    }

    fn try_remove(&mut self) -> bool {
        for dir in [&self.pids, &self.memory, &self.cpuacct] {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return false,
            }
        }
        self.removed = true;
        true
    }
}

impl Drop for Cgroups {
    /// A run dropped part-way (its deployment timed out, its task was aborted) still leaves no
    /// process and no group behind.
    fn drop(&mut self) {
        for _ in 0..100 {
            if self.removed || (self.kill_round() == 0 && self.try_remove()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The value of `name` in a cgroup file of `name value` lines.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_found_below_the_mount_root() {
        let memberships = "4:memory:/api/abc\n2:cpu,cpuacct:/\n0::/\n";
        let mounts = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 /api /mnt/mem rw - cgroup cgroup rw,memory
40 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
        assert_eq!(
            group_of(memberships, mounts, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/api/abc"))
        );
        assert_eq!(
            group_of(memberships, mounts, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(group_of(memberships, mounts, "pids"), None);
    }

    #[test]
    fn counters_are_read_by_name() {
        assert_eq!(counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), 2);
        assert_eq!(counter("max 0\n", "max"), 0);
        assert_eq!(counter("", "max"), 0);
    }
}
