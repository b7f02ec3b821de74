//! Dynamic sites (Paid): each runs a container image on a machine the runtime provides, behind
//! the gateway. The runtime is reached through [`Runtime`]; production uses Fly Machines
//! ([`fly::FlyMachines`]). Machines run untrusted code, so never on the API's hosts.
//!
//! - `instance`: the instance state machine and its recorded transitions.
//! - `launch`: the deploy job's part: launch a deployment's machine, wait for it, switch to it.
//! - `reconcile`: one replica at a time keeps every instance where its service says it should be
//!   (running while the service is active, stopped while paused or suspended, destroyed once
//!   cancelled), notices machines that died, and destroys machines nothing refers to any more.

pub mod instance;
pub(super) mod launch;
pub mod reconcile;

pub use decentraspace_clients::runtime::{Machine, MachineSpec, Runtime, RuntimeError, fly};
