//! Writing to the chain: the outbox every transaction the platform signs goes through
//! ([`outbox`]: one durable queue, one sender per key across replicas), the calls of a key over
//! it ([`Operator`]), and the one error type every signed transaction answers with
//! ([`ChainError`]). HTTP handlers turn it into a problem at the edge
//! (`From<ChainError> for ApiError`); background jobs match its variants and ask
//! [`ChainError::is_retryable`].

mod error;
mod operator;
pub mod outbox;

pub use error::ChainError;
pub use operator::{Operator, TxOutcome};
