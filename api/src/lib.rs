//! The DecentraSpace REST API: the secure door to the indexed chain state and to the platform's
//! off-chain work. This crate is the skeleton the API grows from: its configuration and router,
//! serving the liveness probe.

use axum::{Json, Router, routing::get};
use serde::Serialize;

mod config;

pub use config::Config;

/// The liveness probe's answer.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

/// The API's router.
pub fn router() -> Router {
    Router::new().route("/health", get(|| async { Json(Health { status: "ok" }) }))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn health_answers_ok() {
        let response = router()
            .oneshot(Request::get("/health").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], br#"{"status":"ok"}"#);
    }
}
