//! Ordering certificates from the ACME server (RFC 8555, `instant-acme`) for linked domains,
//! proved by HTTP-01: the key authorization is stored before the server is told to look, so
//! whichever replica it reaches answers `/.well-known/acme-challenge/{token}`.
//!
//! One pass at a time (an advisory lock) orders for every linked DNS name that has no
//! certificate or whose certificate is past `TLS_RENEW_AFTER_FRACTION` of its lifetime, and that
//! is not waiting out a failure. Only names linked on-chain to a site are ever ordered: a request
//! for an unknown host cannot cause an order. A failure waits `TLS_RETRY_SECS`, doubled with
//! each further failure up to a day; a rate limit at least an hour.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use decentraspace_db::locks::{Lock, try_lead};
use futures::StreamExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::{CertificatesState, store};
use crate::{
    jobs::{Job, Schedule},
    wakes::Wake,
};

/// Names ordered per pass (the rest wait for the next).
const PER_PASS: i64 = 20;
/// The longest wait after failures.
const MAX_RETRY: Duration = Duration::from_secs(86_400);
/// The shortest wait after the server said to slow down.
const RATE_LIMITED_RETRY: Duration = Duration::from_secs(3_600);
/// How long the server may take to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));
/// Challenge answers older than this belong to orders that were cut off.
const STALE_CHALLENGE: Duration = Duration::from_secs(86_400);

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The ACME server refused or failed it (its problem document, as it put it).
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// The server could not validate the name (its reason).
    #[error("validation failed: {0}")]
    Invalid(String),
    /// Storing or reading state failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The issued certificate could not be read.
    #[error("the issued certificate is unusable: {0}")]
    Unusable(String),
}

impl OrderError {
    /// Whether the server said the platform is ordering too much.
    fn rate_limited(&self) -> bool {
        let problem = match self {
            Self::Acme(instant_acme::Error::Api(problem)) => problem,
            _ => return false,
        };
        problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")
    }
}

/// The ordering job (with `ACME_DIRECTORY_URL` set).
pub fn job(state: &CertificatesState) -> Option<Job> {
    let directory = state.config.acme_directory_url.clone()?;
    let state = state.clone();
    let account = std::sync::Arc::new(Mutex::new(None::<Account>));
    // Each indexed batch (such as a new link) wakes a pass sooner.
    let period = Duration::from_secs(state.config.tls_check_secs.max(1));
    Some(Job::periodic(
        "tls-orders",
        {
            let indexed = state.indexed.clone();
            move || {
                Schedule::every(period).woken_by(
                    tokio_stream::wrappers::BroadcastStream::new(indexed.subscribe()).map(|_| ()),
                )
            }
        },
        move || {
            let (state, account, directory) = (state.clone(), account.clone(), directory.clone());
            async move { pass(&state, &account, &directory).await }
        },
    ))
}

/// A name due for a certificate.
struct Due {
    domain: String,
    attempts: i32,
}

async fn pass(
    state: &CertificatesState,
    account: &Mutex<Option<Account>>,
    directory: &str,
) -> anyhow::Result<()> {
    let Some(lock) = try_lead(&state.db, Lock::TlsOrders).await? else { return Ok(()) };
    sqlx::query!(
        "delete from acme_challenges where created_at < now() - make_interval(secs => $1)",
        STALE_CHALLENGE.as_secs_f64()
    )
    .execute(&state.db)
    .await?;
    let sites_domain = store::normal(&state.config.sites_domain).into_owned();
    let due = sqlx::query_as!(
        Due,
        r#"select d.name as domain, coalesce(o.attempts, 0) as "attempts!"
           from domains d
           join sites s on s.chain_id = d.chain_id and s.service_id = d.service_id
           left join tls_certificates c on c.domain = d.name
           left join tls_orders o on o.domain = d.name
           where d.chain_id = $1 and d.method in ('dns', 'purchase')
             and (d.expires_at is null or d.expires_at > chain_now($1))
             and d.name <> $2 and d.name not like '%.' || $2
             and (c.domain is null or c.not_before + (c.not_after - c.not_before) * $3 <= now())
             and (o.domain is null or o.next_attempt_at <= now())
           order by o.attempts nulls first, d.name
           limit $4"#,
        state.chain_id() as i64,
        &sites_domain,
        state.config.tls_renew_after_fraction,
        PER_PASS
    )
    .fetch_all(&state.db)
    .await?;
    if due.is_empty() {
        return Ok(());
    }
    let account = {
        let mut held = account.lock().await;
        match held.as_ref() {
            Some(account) => account.clone(),
            None => held.insert(load_account(state, directory).await?).clone(),
        }
    };
    let mut failed = 0usize;
    for name in due {
        let ordered = match order(state, &account, &name.domain).await {
            // Not stored (the database failed): waits out its back-off like a failed order, so
            // the certificate authority is not asked again at every pass.
            Ok(issued) => store_issued(state, &name.domain, issued).await.map_err(OrderError::from),
            Err(err) => Err(err),
        };
        match ordered {
            Ok(()) => {
                tracing::info!(target: "api::certificates", domain = name.domain, "certificate issued");
            }
            Err(err) => {
                failed += 1;
                let attempts = name.attempts.saturating_add(1);
                let wait = retry_after(state.config.tls_retry_secs, attempts, err.rate_limited());
                tracing::warn!(target: "api::certificates", domain = name.domain, attempts, retry_in_secs = wait.as_secs(), error = %err, "certificate order failed");
                sqlx::query!(
                    "insert into tls_orders (domain, attempts, last_error, last_attempt_at, next_attempt_at)
                     values ($1, $2, $3, now(), now() + make_interval(secs => $4))
                     on conflict (domain) do update
                     set attempts = excluded.attempts, last_error = excluded.last_error,
                         last_attempt_at = excluded.last_attempt_at,
                         next_attempt_at = excluded.next_attempt_at",
                    name.domain,
                    attempts,
                    err.to_string(),
                    wait.as_secs_f64()
                )
                .execute(&state.db)
                .await?;
            }
        }
    }
    drop(lock);
    metrics::counter!("tls_orders_failed_total").increment(failed as u64);
    anyhow::ensure!(
        failed == 0,
        "{failed} certificate orders failed; retried after their back-off"
    );
    Ok(())
}

/// The wait after the `attempts`th failure in a row.
fn retry_after(first_secs: u64, attempts: i32, rate_limited: bool) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
    let wait = Duration::from_secs(first_secs.max(1).saturating_mul(1 << doublings)).min(MAX_RETRY);
    if rate_limited { wait.max(RATE_LIMITED_RETRY) } else { wait }
}

/// The platform's account on `directory`: the stored one, else a new one (stored sealed).
async fn load_account(state: &CertificatesState, directory: &str) -> anyhow::Result<Account> {
    let context = [b"acme account\0".as_slice(), directory.as_bytes()].concat();
    let builder = || -> anyhow::Result<_> {
        Ok(match &state.config.acme_ca_roots {
            Some(roots) => Account::builder_with_root(roots)
                .with_context(|| format!("ACME_CA_ROOTS {}", roots.display()))?,
            None => Account::builder()?,
        })
    };
    let stored = sqlx::query_scalar!(
        "select credentials_sealed from acme_accounts where directory_url = $1",
        directory
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(sealed) = stored {
        let json = state
            .sealer
            .open_for(&sealed, &context)
            .map_err(|_| anyhow::anyhow!("the stored ACME account does not open"))?;
        let credentials: AccountCredentials = serde_json::from_str(json.expose_secret())?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = state.config.acme_contact.as_ref().map(|c| format!("mailto:{c}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await
        .context("create the ACME account")?;
    let json = SecretString::from(serde_json::to_string(&credentials)?);
    sqlx::query!(
        "insert into acme_accounts (directory_url, credentials_sealed) values ($1, $2)
         on conflict (directory_url) do nothing",
        directory,
        state.sealer.seal_for(&json, &context)
    )
    .execute(&state.db)
    .await?;
    tracing::info!(target: "api::certificates", directory, "ACME account created");
    Ok(account)
}

/// A certificate as the CA issued it, with its new key.
pub(super) struct Issued {
    chain_pem: String,
    key_pem: SecretString,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

/// Orders a certificate for `domain` and waits for it. The challenge answers are removed
/// whatever happens.
async fn order(
    state: &CertificatesState,
    account: &Account,
    domain: &str,
) -> Result<Issued, OrderError> {
    let mut tokens = Vec::new();
    let result = order_with(state, account, domain, &mut tokens).await;
    if !tokens.is_empty() {
        // A failed clean-up loses nothing: stale answers are removed after a day.
        let removed = sqlx::query!("delete from acme_challenges where token = any($1)", &tokens)
            .execute(&state.db)
            .await;
        if let Err(err) = removed {
            tracing::warn!(target: "api::certificates", domain, %err, "challenge answers left for the daily clean-up");
        }
    }
    result
}

async fn order_with(
    state: &CertificatesState,
    account: &Account,
    domain: &str,
    tokens: &mut Vec<String>,
) -> Result<Issued, OrderError> {
    let identifiers = [Identifier::Dns(domain.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(OrderError::Invalid(format!("the authorization is {other:?}")));
            }
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| OrderError::Invalid("the server offers no HTTP-01 challenge".into()))?;
        let token = challenge.token.clone();
        let answer = challenge.key_authorization();
        sqlx::query!(
            "insert into acme_challenges (token, domain, key_authorization) values ($1, $2, $3)
             on conflict (token) do update set key_authorization = excluded.key_authorization",
            token,
            domain,
            answer.as_str()
        )
        .execute(&state.db)
        .await?;
        tokens.push(token);
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&POLL).await?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Invalid(reason(&mut order).await));
    }
    let key_pem = SecretString::from(order.finalize().await?);
    let chain_pem = order.poll_certificate(&POLL).await?;
    let (not_before, not_after) =
        validity(&chain_pem).map_err(|e| OrderError::Unusable(format!("{e:#}")))?;
    Ok(Issued { chain_pem, key_pem, not_before, not_after })
}

/// Why an order's authorization failed, as the server said.
async fn reason(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else { continue };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                return problem.detail.clone().unwrap_or_else(|| problem.to_string());
            }
        }
    }
    "the server did not validate the name".into()
}

/// The validity of the first (end-entity) certificate of a PEM chain.
fn validity(chain_pem: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    use x509_cert::der::Decode;
    let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .context("no certificate in the chain")??;
    let cert = x509_cert::Certificate::from_der(&first).context("not an X.509 certificate")?;
    let validity = cert.tbs_certificate.validity;
    let time = |t: x509_cert::time::Time| -> anyhow::Result<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp(i64::try_from(t.to_unix_duration().as_secs())?, 0)
            .context("a validity date out of range")
    };
    Ok((time(validity.not_before)?, time(validity.not_after)?))
}

/// Stores `domain`'s new certificate (its key sealed), clears its failures, and has every
/// replica load it.
async fn store_issued(
    state: &CertificatesState,
    domain: &str,
    issued: Issued,
) -> Result<(), sqlx::Error> {
    let sealed = state.sealer.seal_for(&issued.key_pem, &store::key_context(domain));
    let mut tx = state.db.begin().await?;
    sqlx::query!(
        "insert into tls_certificates (domain, chain_pem, key_sealed, not_before, not_after)
         values ($1, $2, $3, $4, $5)
         on conflict (domain) do update
         set chain_pem = excluded.chain_pem, key_sealed = excluded.key_sealed,
             not_before = excluded.not_before, not_after = excluded.not_after, issued_at = now()",
        domain,
        issued.chain_pem,
        sealed,
        issued.not_before,
        issued.not_after
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("delete from tls_orders where domain = $1", domain).execute(&mut *tx).await?;
    state.wakes.after_commit(&mut tx, Wake::Certificates).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_a_day_and_a_rate_limit_waits_an_hour() {
        assert_eq!(retry_after(60, 1, false), Duration::from_secs(60));
        assert_eq!(retry_after(60, 2, false), Duration::from_secs(120));
        assert_eq!(retry_after(60, 5, false), Duration::from_secs(960));
        assert_eq!(retry_after(60, 40, false), MAX_RETRY);
        assert_eq!(retry_after(1, 1, true), RATE_LIMITED_RETRY);
        assert_eq!(retry_after(0, 1, false), Duration::from_secs(1));
    }

    #[test]
    fn a_certificates_validity_is_read_from_its_pem() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["shop.test".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2026, 4, 2);
        let pem = params.self_signed(&key).expect("cert").pem();
        let (from, to) = validity(&pem).expect("validity");
        assert_eq!(from.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-04-02T00:00:00+00:00");
    }
}
