//! Machine runtimes for dynamic sites: what the platform asks of one ([`Runtime`]), and Fly
//! Machines ([`fly::FlyMachines`]), the one it uses.

pub mod fly;

use async_trait::async_trait;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime refused the request (its answer): a bad image, a quota.
    #[error("the runtime refused: {0}")]
    Refused(String),
    /// The machine does not exist (any more).
    #[error("no such machine: {0}")]
    Gone(String),
    /// The runtime could not be reached, or did not answer in time.
    #[error("cannot reach the runtime: {0}")]
    Unreachable(String),
}

/// A machine as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The runtime's id for it.
    pub id: String,
    /// The runtime's state (`created`, `starting`, `started`, `stopping`, `stopped`, `failed`,
    /// `destroyed`, …).
    pub state: String,
    /// Its private address, which the gateway reaches it at.
    pub private_ip: String,
    /// The deployment it was launched for, from its metadata (`None` on a machine the platform
    /// did not launch).
    pub deployment: Option<i64>,
}

impl Machine {
    /// Whether it is up.
    pub fn started(&self) -> bool {
        self.state == "started"
    }

    /// Whether it has gone down on its own or for good.
    pub fn down(&self) -> bool {
        matches!(self.state.as_str(), "stopped" | "failed" | "destroyed" | "destroying")
    }
}

/// What a dynamic site's machine runs.
#[derive(Debug, Clone)]
pub struct MachineSpec<'a> {
    /// The site's name (the machine is named after it).
    pub site: &'a str,
    /// The deployment it serves.
    pub deployment: i64,
    /// The container image.
    pub image: &'a str,
    /// The port the image serves HTTP on.
    pub port: u16,
}

/// A machine runtime.
#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// Creates and starts a machine.
    async fn launch(&self, spec: &MachineSpec<'_>) -> Result<Machine, RuntimeError>;
    /// The machine as it is now.
    async fn machine(&self, id: &str) -> Result<Machine, RuntimeError>;
    /// Waits (at most `timeout_secs`) for the machine to be started; `false` when it was not.
    async fn wait_started(&self, id: &str, timeout_secs: u64) -> Result<bool, RuntimeError>;
    /// Starts a stopped machine.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops a running machine.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Destroys a machine (stopping it first if need be).
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every machine that is not destroyed.
    async fn machines(&self) -> Result<Vec<Machine>, RuntimeError>;
}
