//! The OpenAPI document is committed (`api/openapi.json`), so every change to it is deliberate:
//! this test fails when the served document differs. After changing routes on purpose, refresh
//! it with `UPDATE_OPENAPI=1 cargo test -p decentraspace-api --test http openapi`.

use serde_json::Value;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn document() -> Value {
    serde_json::to_value(decentraspace_api::openapi_document()).expect("serialises")
}

#[test]
fn the_document_matches_the_committed_snapshot() {
    let served = serde_json::to_string_pretty(&document()).expect("serialises") + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(SNAPSHOT, &served).expect("write the snapshot");
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).expect("api/openapi.json is committed");
    assert!(
        committed == served,
        "the OpenAPI document differs from api/openapi.json; if the change is deliberate, run \
         UPDATE_OPENAPI=1 cargo test -p decentraspace-api --test http openapi and commit the file"
    );
}

#[test]
fn every_operation_documents_the_statuses_the_shared_layers_answer() {
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 60, "{} paths", paths.len());
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("item") {
            let responses = operation["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            assert!(has("400") && has("429"), "{method} {path}");
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if secured {
                assert!(has("401"), "{method} {path} needs a token but documents no 401");
            }
            if operation["requestBody"]["content"].get("application/json").is_some() {
                assert!(has("415") && has("422"), "{method} {path} takes JSON");
            }
        }
    }
}

/// Every endpoint of the product spec (`backend-spec.md`), as written there: all 26.
const SPEC_PATHS: &[&str] = &[
    "/auth/login/",
    "/auth/tier/",
    "/auth/manage/",
    "/github/link/",
    "/github/unlink/",
    "/github/deploy/",
    "/billing/balance/",
    "/billing/deduct/",
    "/billing/history/",
    "/billing/recharge/",
    "/billing/payment-methods/",
    "/storage/upload/",
    "/storage/folder/",
    "/storage/manage/",
    "/domain/purchase/",
    "/domain/link/",
    "/domain/unlink/",
    "/hosting/deploy/",
    "/hosting/status/",
    "/hosting/expire/",
    "/blockchain/credit/",
    "/blockchain/ownership/",
    "/blockchain/listener/",
    "/analytics/site/",
    "/analytics/credit/",
    "/analytics/system/",
];

#[test]
fn every_spec_path_is_documented() {
    assert_eq!(SPEC_PATHS.len(), 26);
    let doc = document();
    let documented = doc["paths"].as_object().expect("paths");
    for spec in SPEC_PATHS {
        let path = spec.trim_end_matches('/');
        assert!(documented.contains_key(path), "{spec} is not served");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_documented_operation_is_routed_with_and_without_a_trailing_slash(db: sqlx::PgPool) {
    use crate::support::{call, state};
    let state = state(db).await;
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{address}", "0x0000000000000000000000000000000000000001")
            .replace("{id}", "1")
            .replace("{name}", "a.b")
            .replace("{site}", "a-site")
            .replace("{reference}", "ref")
            .replace("{token}", "tok")
            .replace("{folder}", "1");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() || concrete == "/v1/stream" {
                continue;
            }
            for uri in [concrete.clone(), format!("{concrete}/")] {
                let request = axum::http::Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .body(axum::body::Body::empty())
                    .expect("request");
                let answer = call(&state, request).await;
                // A 404 for a missing resource is fine; one for a missing route is not.
                let no_route =
                    answer.body["detail"].as_str().is_some_and(|d| d.starts_with("no route"));
                assert!(!(answer.status == 404 && no_route), "{method} {uri}: not routed");
                assert_ne!(answer.status, 405, "{method} {uri}");
            }
        }
    }
    let docs = call(
        &state,
        axum::http::Request::builder()
            .uri("/docs/")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(docs.status, 200, "the UI is served");
}
