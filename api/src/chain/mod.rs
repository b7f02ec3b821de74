//! Writing to the chain: the one error type every signed transaction of the platform answers
//! with ([`ChainError`]), whichever key sends it. HTTP handlers turn it into a problem at the
//! edge (`From<ChainError> for ApiError`); background jobs match its variants and ask
//! [`ChainError::is_retryable`].

mod error;

pub use error::ChainError;
