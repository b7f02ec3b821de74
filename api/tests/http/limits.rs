//! The per-IP budget keys on the client: the peer, or behind a trusted proxy the address that
//! proxy reports in `X-Forwarded-For`; a client cannot choose its bucket with the header.

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, header},
};
use decentraspace_api::AppState;
use sqlx::PgPool;

use crate::support;

/// `GET /health` from `peer`, with `forwarded` as `X-Forwarded-For` when given: the status.
async fn health(state: &AppState, peer: &str, forwarded: Option<&str>) -> u16 {
    let mut request = Request::get("/health").header(header::ACCEPT, "application/json");
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let mut request = request.body(Body::empty()).expect("request");
    let peer: SocketAddr = peer.parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));
    support::call(state, request).await.status
}

#[sqlx::test(migrations = "../migrations")]
async fn the_per_ip_budget_keys_on_the_client_a_trusted_proxy_reports(db: PgPool) {
    let mut config = support::config();
    // One request a second, bursts of two.
    config.rate_limit_per_ip = 1;
    config.trusted_proxies = vec!["10.0.0.0/8".parse().expect("network")];
    let state = AppState::with_db(config, db).await.expect("state");
    const PROXY: &str = "10.0.0.2:40000";

    // How many of three quick requests pass: a fresh bucket lets at least two through (its
    // burst), one spent a moment before lets none through (at most one, should a second pass).
    let passed = |peer: &'static str, forwarded: Option<&'static str>| {
        let state = state.clone();
        async move {
            let mut passed = 0;
            for _ in 0..3 {
                passed += u32::from(health(&state, peer, forwarded).await == 200);
            }
            passed
        }
    };
    // One client behind the balancer spends its own budget.
    assert!(passed(PROXY, Some("203.0.113.5")).await >= 2);
    // It cannot escape by writing its own header first (the balancer's entry, the rightmost, is
    // the one believed), and coming directly it is the same client.
    assert!(passed(PROXY, Some("192.0.2.99, 203.0.113.5")).await <= 1);
    assert!(passed("203.0.113.5:5000", None).await <= 1);
    // Another client behind the same balancer has a budget of its own; so has a peer that is
    // not a trusted proxy, whatever it claims.
    assert!(passed(PROXY, Some("198.51.100.7")).await >= 2);
    assert!(passed("198.18.0.1:5000", Some("203.0.113.5")).await >= 2);
}
