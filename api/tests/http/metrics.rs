//! A handler that panics is answered 500 problem+json and counted in `http_requests_total`, like
//! every other answer, and timed in a histogram with buckets.

use axum::routing::get;
use sqlx::PgPool;

use crate::support::{answer, state};
use tower::ServiceExt;

async fn boom() -> &'static str {
    panic!("a handler bug")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_panicking_handler_is_answered_and_counted(db: PgPool) {
    let state = state(db).await;
    let router = decentraspace_api::routes().0.route("/boom", get(boom));
    let app = decentraspace_api::layered(router, state);
    let get = |uri: &str| {
        axum::http::Request::builder().uri(uri).body(axum::body::Body::empty()).expect("request")
    };
    for _ in 0..2 {
        let boom = answer(app.clone().oneshot(get("/boom")).await.expect("infallible")).await;
        boom.assert_problem(500, "internal");
        assert!(!boom.text.contains("a handler bug"), "the cause is not sent: {}", boom.text);
    }
    let metrics = answer(app.oneshot(get("/metrics")).await.expect("infallible")).await;
    let line = metrics
        .text
        .lines()
        .find(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="/boom""#))
        .unwrap_or_else(|| panic!("no count for /boom in:\n{}", metrics.text));
    assert!(line.contains(r#"status="500""#), "{line}");
    assert!(line.ends_with(" 2"), "{line}");
    // Timings are histograms with buckets, which add up across replicas (summaries do not).
    assert!(
        metrics.text.lines().any(|l| l.starts_with("http_request_duration_seconds_bucket{")
            && l.contains(r#"route="/boom""#)
            && l.contains(r#"le="0.005""#)),
        "no bucket for /boom in:\n{}",
        metrics.text
    );
}
