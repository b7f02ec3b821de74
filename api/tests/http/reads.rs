//! Reads refuse what they cannot answer with 400 and a reason, before any query.

use alloy::signers::local::PrivateKeySigner;
use sqlx::PgPool;

use crate::support::{get, login, state};

#[sqlx::test(migrations = "../migrations")]
async fn bad_filters_are_bad_requests(db: PgPool) {
    let state = state(db).await;
    let token = login(&state, &PrivateKeySigner::random()).await;
    for uri in [
        "/billing/history?kind=gift",
        "/billing/history?limit=0",
        "/billing/history?limit=501",
        "/billing/history?cursor=zz",
        "/billing/history?from=yesterday",
        "/analytics/credit?bucket=hour",
        "/analytics/credit?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/analytics/credit?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let answer = get(&state, uri, Some(&token)).await;
        answer.assert_problem(400, "bad-request");
        assert!(answer.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{uri}");
    }
    for uri in ["/v1/events?limit=0", "/v1/events?cursor=zz", "/v1/accounts/0x12"] {
        get(&state, uri, None).await.assert_problem(400, "bad-request");
    }
}
