//! Pay-as-you-go metering: the meter charges services for their active time (and for usage
//! recorded through `/billing/deduct`) in `deductBatch` transactions under usage references the
//! ledger takes once; depletion suspends the priced services of an account whose credit ran out.
//!
//! - [`plan`]: the arithmetic (active time, prices with carried remainders, usage references);
//! - [`meter`]: the worker that plans charges each cycle;
//! - [`charges`]: how a charge is sent, followed and closed;
//! - [`depletion`]: the worker that suspends services when credit runs out;
//! - [`usage`]: the `/billing/deduct` routes.

mod charges;
pub mod depletion;
pub mod meter;
pub mod plan;
pub mod usage;

pub use meter::{Meter, Report};
pub use usage::router;
