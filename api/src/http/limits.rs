//! Request budgets per client IP and per account, in two layers: per-second token buckets (GCRA
//! via `governor`) in each replica smooth bursts, and per-minute budgets shared by every replica
//! through Postgres ([`super::budgets`]) hold the total however many replicas serve the client.
//! Behind trusted proxies the client is the one they report (`client`), not the proxy.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use alloy::primitives::Address;
use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::{
    budgets::{OverBudget, SharedBudgets},
    error::ApiError,
};

/// The per-IP and per-account limiters.
#[derive(Debug)]
pub struct RateLimits {
    ip: DefaultKeyedRateLimiter<IpAddr>,
    account: DefaultKeyedRateLimiter<Address>,
    /// Proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The per-minute budgets shared by every replica (per IP, per account).
    shared: Option<(SharedBudgets, SharedBudgets)>,
}

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl RateLimits {
    /// Budgets of `per_ip` and `per_account` requests per second, bursts of twice that.
    pub fn new(per_ip: u32, per_account: u32) -> Self {
        Self {
            ip: RateLimiter::keyed(quota(per_ip)),
            account: RateLimiter::keyed(quota(per_account)),
            trusted_proxies: Vec::new(),
            shared: None,
        }
    }

    /// Adds per-minute budgets shared by every replica through `db`: `per_ip` and `per_account`
    /// requests a minute.
    pub fn shared(mut self, db: sqlx::PgPool, per_ip: u32, per_account: u32) -> Self {
        self.shared = Some((
            SharedBudgets::new(db.clone(), "ip", per_ip),
            SharedBudgets::new(db, "account", per_account),
        ));
        self
    }

    /// Keys the per-IP budget on the client that `proxies` report (`X-Forwarded-For`).
    pub fn behind(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Spends one request of `account`'s budgets.
    pub async fn check_account(&self, account: Address) -> Result<(), ApiError> {
        self.account.check_key(&account).map_err(|not_until| ApiError::RateLimited {
            retry_after_secs: retry_after(
                not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
            ),
        })?;
        if let Some((_, shared)) = &self.shared {
            shared.spend(&account.to_string()).await.map_err(over_budget)?;
        }
        Ok(())
    }

    async fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.ip.check_key(&ip).map_err(|not_until| ApiError::RateLimited {
            retry_after_secs: retry_after(
                not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
            ),
        })?;
        if let Some((shared, _)) = &self.shared {
            shared.spend(&ip.to_string()).await.map_err(over_budget)?;
        }
        Ok(())
    }

    /// Forgets idle keys and past minutes so the maps (and the shared table) do not grow
    /// without bound.
    pub async fn prune(&self) {
        self.ip.retain_recent();
        self.account.retain_recent();
        if let Some((ip, account)) = &self.shared {
            ip.prune().await;
            account.prune().await;
        }
    }
}

fn over_budget(over: OverBudget) -> ApiError {
    ApiError::RateLimited { retry_after_secs: over.retry_after_secs }
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Middleware: spends one request of the client IP's budget.
pub(crate) async fn per_ip(
    State(limits): State<std::sync::Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| super::client::client_ip(c.0.ip(), request.headers(), &limits.trusted_proxies));
    if let Some(ip) = ip
        && let Err(err) = limits.check_ip(ip).await
    {
        return err.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_account_over_its_budget_is_told_when_to_retry() {
        let limits = RateLimits::new(1, 1);
        let account = Address::repeat_byte(1);
        assert!(limits.check_account(account).await.is_ok());
        assert!(limits.check_account(account).await.is_ok());
        match limits.check_account(account).await {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Another account has its own budget.
        assert!(limits.check_account(Address::repeat_byte(2)).await.is_ok());
    }
}
