//! [`Registrar`] on Gandi's API v5 (`https://api.gandi.net/v5`): `GET /domain/check` for
//! availability and prices, `POST /domain/domains` to register, `POST /domain/domains/{fqdn}/renew`
//! to renew; and [`Zones`] on its LiveDNS (`/livedns/domains/{fqdn}/records`, record sets by
//! `{rrset_name}/{rrset_type}`). Authorised by a personal access token (`Authorization: Bearer`).
//! Errors come as `{"code", "message", "cause", "object"}`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{Quote, RecordSet, Registrar, RegistrarError, Zones};
use crate::http::{Failure, send_bearer};

/// Gandi's error message: `message`, with its `cause` when it gives one.
fn message(body: &serde_json::Value) -> Option<String> {
    let message = body["message"].as_str()?.to_owned();
    Some(match body["cause"].as_str() {
        Some(cause) if !cause.is_empty() => format!("{message} ({cause})"),
        _ => message,
    })
}

/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A Gandi account the platform registers names in.
pub struct Gandi {
    http: reqwest::Client,
    api: String,
    token: SecretString,
    /// The registrant contact (Gandi's `owner` object), the platform's.
    owner: serde_json::Value,
}

impl std::fmt::Debug for Gandi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Gandi").field("api", &self.api).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Check {
    currency: String,
    #[serde(default)]
    products: Vec<Product>,
}

#[derive(Deserialize)]
struct Product {
    status: String,
    #[serde(default)]
    process: String,
    #[serde(default)]
    prices: Vec<Price>,
}

#[derive(Deserialize)]
struct Price {
    min_duration: u32,
    max_duration: u32,
    price_after_taxes: f64,
}

impl Gandi {
    /// A client of the API at `api` with `token`, registering names to `owner` (a JSON contact).
    pub fn new(api: &str, token: SecretString, owner: serde_json::Value) -> anyhow::Result<Self> {
        anyhow::ensure!(owner.is_object(), "the registrant contact is a JSON object");
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, api: api.trim_end_matches('/').to_owned(), token, owner })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, RegistrarError> {
        send_bearer(request.timeout(CALL_TIMEOUT), &self.token, message).await.map_err(|failure| {
            match failure {
                Failure::Unreachable(cause) => RegistrarError::Unavailable(cause),
                Failure::Status { status: StatusCode::NOT_FOUND, message } => {
                    RegistrarError::NotFound(message)
                }
                Failure::Status { status, message }
                    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
                {
                    RegistrarError::Refused(format!("{status}: {message}"))
                }
                Failure::Status { status, message } => {
                    RegistrarError::Unavailable(format!("{status}: {message}"))
                }
            }
        })
    }

    async fn check(&self, name: &str, years: u32, process: &str) -> Result<Quote, RegistrarError> {
        let body = self
            .send(
                self.http
                    .get(format!("{}/domain/check", self.api))
                    .query(&[("name", name), ("processes", process)]),
            )
            .await?;
        let check: Check = serde_json::from_str(&body)
            .map_err(|e| RegistrarError::Unavailable(format!("an unreadable check: {e}")))?;
        let product =
            check.products.into_iter().find(|p| p.process.is_empty() || p.process == process);
        let Some(product) = product else {
            return Ok(Quote { available: false, price_subunits: 0, currency: check.currency });
        };
        let price = product
            .prices
            .iter()
            .find(|p| (p.min_duration..=p.max_duration).contains(&years))
            .map(|p| (p.price_after_taxes * 100.0).round() as u64 * u64::from(years));
        let available = product.status == "available" || process == "renew";
        Ok(Quote {
            available: available && price.is_some(),
            price_subunits: price.unwrap_or(0),
            currency: check.currency,
        })
    }
}

#[async_trait]
impl Registrar for Gandi {
    async fn quote(&self, name: &str, years: u32) -> Result<Quote, RegistrarError> {
        self.check(name, years, "create").await
    }

    async fn renewal_quote(&self, name: &str, years: u32) -> Result<Quote, RegistrarError> {
        self.check(name, years, "renew").await
    }

    async fn register(&self, name: &str, years: u32) -> Result<(), RegistrarError> {
        let body = json!({ "fqdn": name, "duration": years, "owner": self.owner });
        self.send(self.http.post(format!("{}/domain/domains", self.api)).json(&body))
            .await
            .map(drop)
    }

    async fn holds(&self, name: &str) -> Result<bool, RegistrarError> {
        match self.send(self.http.get(format!("{}/domain/domains/{name}", self.api))).await {
            Ok(_) => Ok(true),
            Err(RegistrarError::NotFound(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn expiry(
        &self,
        name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, RegistrarError> {
        #[derive(Deserialize)]
        struct Dates {
            registry_ends_at: chrono::DateTime<chrono::Utc>,
        }
        #[derive(Deserialize)]
        struct Domain {
            dates: Dates,
        }
        match self.send(self.http.get(format!("{}/domain/domains/{name}", self.api))).await {
            Ok(body) => serde_json::from_str::<Domain>(&body)
                .map(|d| Some(d.dates.registry_ends_at))
                .map_err(|e| RegistrarError::Unavailable(format!("an unreadable domain: {e}"))),
            Err(RegistrarError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn renew(&self, name: &str, years: u32) -> Result<(), RegistrarError> {
        self.send(
            self.http
                .post(format!("{}/domain/domains/{name}/renew", self.api))
                .json(&json!({ "duration": years })),
        )
        .await
        .map(drop)
    }
}

/// A LiveDNS record set, as Gandi writes it.
#[derive(Deserialize, serde::Serialize)]
struct LiveRecord {
    rrset_name: String,
    rrset_type: String,
    #[serde(default)]
    rrset_ttl: u32,
    #[serde(default)]
    rrset_values: Vec<String>,
}

impl Gandi {
    fn records_url(&self, domain: &str) -> String {
        format!("{}/livedns/domains/{domain}/records", self.api)
    }
}

#[async_trait]
impl Zones for Gandi {
    async fn records(&self, domain: &str) -> Result<Vec<RecordSet>, RegistrarError> {
        let body = self.send(self.http.get(self.records_url(domain))).await?;
        let records: Vec<LiveRecord> = serde_json::from_str(&body)
            .map_err(|e| RegistrarError::Unavailable(format!("unreadable records: {e}")))?;
        Ok(records
            .into_iter()
            .map(|r| RecordSet {
                name: r.rrset_name,
                r#type: r.rrset_type,
                ttl: r.rrset_ttl,
                values: r.rrset_values,
            })
            .collect())
    }

    async fn put_records(&self, domain: &str, set: &RecordSet) -> Result<(), RegistrarError> {
        let url = format!("{}/{}/{}", self.records_url(domain), set.name, set.r#type);
        let body = json!({ "rrset_ttl": set.ttl, "rrset_values": set.values });
        self.send(self.http.put(url).json(&body)).await.map(drop)
    }

    async fn delete_records(
        &self,
        domain: &str,
        name: &str,
        r#type: &str,
    ) -> Result<(), RegistrarError> {
        let url = format!("{}/{name}/{}", self.records_url(domain), r#type);
        match self.send(self.http.delete(url)).await {
            Ok(_) | Err(RegistrarError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
