//! The HTTP pieces every feature shares: errors as problem+json, the extractors that guard routes,
//! pagination, request budgets, the read cache, input checks and the OpenAPI frame. Features use
//! these; nothing here uses a feature.

pub mod auth;
pub(crate) mod budgets;
pub mod cache;
pub mod client;
pub mod error;
pub mod format;
pub(crate) mod input;
pub mod limits;
pub mod openapi;
pub mod pagination;
