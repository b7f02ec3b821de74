//! Clients of the providers the platform works with, each a small typed client over its documented
//! API, behind a trait where tests or a second provider need one:
//!
//! - [`ipfs`]: a Kubo RPC node (adds, pins, MFS directories, reads);
//! - [`arweave`]: format-2 transactions signed with the operator's wallet, posted in chunks;
//! - [`github`] ([`github::GitHub`]): OAuth code exchange, repositories, tarballs, hooks;
//! - [`paystack`] ([`paystack::CardPayments`]): card payments, their verification and signatures;
//! - [`registrar`] ([`registrar::Registrar`]): names bought through Gandi;
//! - [`runtime`] ([`runtime::Runtime`]): machines for dynamic sites on Fly Machines;
//! - [`ens`]: ENS ownership over an Ethereum RPC; [`dns`]: TXT lookups through one resolver.
//!
//! No client logs or returns a secret: tokens travel in headers, and errors name no URL that
//! could carry one. Tests run these clients against local servers that speak each provider's API.

pub mod arweave;
pub mod dns;
pub mod ens;
pub mod github;
mod http;
pub mod ipfs;
pub mod paystack;
pub mod registrar;
pub mod runtime;
