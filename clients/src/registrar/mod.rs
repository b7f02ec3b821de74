//! Registrars for names bought through the platform. The platform registers the name in its own
//! registrar account (the registrant contact is the platform's); the buyer's ownership is the
//! on-chain record (`DomainRegistry.recordPurchase`). One implementation: Gandi (`gandi.rs`),
//! chosen in `docs/adr/0008-domains.md`.

pub mod gandi;

use async_trait::async_trait;

/// What registering a name costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Whether it can be registered now.
    pub available: bool,
    /// The price of the whole term, in the currency's smallest unit (cents), taxes included.
    pub price_subunits: u64,
    /// The ISO 4217 currency.
    pub currency: String,
}

/// Why a registrar call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// The registrar refused (its message): the name is taken, the term not sold, …
    #[error("the registrar refused: {0}")]
    Refused(String),
    /// What was asked about does not exist there (a name not in the account, a record set not
    /// in the zone).
    #[error("the registrar has no such thing: {0}")]
    NotFound(String),
    /// It could not be reached or answered garbage.
    #[error("the registrar is unavailable: {0}")]
    Unavailable(String),
}

/// A domain registrar.
#[async_trait]
pub trait Registrar: Send + Sync + std::fmt::Debug {
    /// Whether `name` can be registered for `years`, and at what price.
    async fn quote(&self, name: &str, years: u32) -> Result<Quote, RegistrarError>;
    /// What renewing `name` for `years` costs.
    async fn renewal_quote(&self, name: &str, years: u32) -> Result<Quote, RegistrarError>;
    /// Registers `name` for `years`.
    async fn register(&self, name: &str, years: u32) -> Result<(), RegistrarError>;
    /// Renews `name` for `years`.
    async fn renew(&self, name: &str, years: u32) -> Result<(), RegistrarError>;
    /// Whether `name` is registered in the platform's account.
    async fn holds(&self, name: &str) -> Result<bool, RegistrarError>;
    /// When `name`'s registration ends at the registry (`None`: not in the platform's account):
    /// what tells whether a renewal was carried out.
    async fn expiry(
        &self,
        name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, RegistrarError>;
}

/// The records of one name and type in a zone (an RRset): `name` relative to the zone (`@` for
/// its apex), values as the zone file writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// The name in the zone: `@`, `www`, `mail`, …
    pub name: String,
    /// `A`, `AAAA`, `ALIAS`, `CNAME`, `MX`, `TXT`, …
    pub r#type: String,
    /// Its time to live, in seconds.
    pub ttl: u32,
    /// Its values.
    pub values: Vec<String>,
}

/// The DNS zones of names registered in the platform's account (the registrar's DNS service).
#[async_trait]
pub trait Zones: Send + Sync + std::fmt::Debug {
    /// Every record set of `domain`'s zone.
    async fn records(&self, domain: &str) -> Result<Vec<RecordSet>, RegistrarError>;
    /// Creates or replaces the record set `set` of `domain`.
    async fn put_records(&self, domain: &str, set: &RecordSet) -> Result<(), RegistrarError>;
    /// Removes `domain`'s record set `name`/`type` (gone already is fine).
    async fn delete_records(
        &self,
        domain: &str,
        name: &str,
        r#type: &str,
    ) -> Result<(), RegistrarError>;
}
