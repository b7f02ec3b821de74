//! Writing to the chain: the platform's signing keys ([`Operator`] for the few role-holder calls,
//! [`Relayer`] for the nonce-counting senders of relayed requests and billing batches), and the
//! one error type every signed transaction answers with ([`ChainError`]). HTTP handlers turn it
//! into a problem at the edge (`From<ChainError> for ApiError`); background jobs match its
//! variants and ask [`ChainError::is_retryable`].

mod error;
mod operator;
pub mod relayer;

pub use error::ChainError;
pub use operator::{Operator, TxOutcome};
pub use relayer::Relayer;
