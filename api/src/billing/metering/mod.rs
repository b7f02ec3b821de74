//! Pay-as-you-go metering: the meter charges services for their active time (and for usage
//! recorded through `/billing/deduct`) in `deductBatch` transactions under usage references the
//! ledger takes once.
//!
//! - [`plan`]: the arithmetic (active time, prices with carried remainders, usage references);
//! - `due`: the services with time not charged yet, and its price (shared with the available
//!   balance, `billing::available`);
//! - [`meter`]: the worker that plans charges each cycle;
//! - `charges`: how a charge is sent, followed and closed.
//!
//! Depletion (`billing::depletion`) suspends services when credit runs out, and usage is recorded
//! through `/billing/deduct` (`billing::usage`).

mod charges;
pub(crate) mod due;
pub mod meter;
pub mod plan;

pub use meter::{Meter, Report};
