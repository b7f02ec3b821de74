//! The gateway's reverse proxy to dynamic sites: a request for a dynamic site goes to its
//! running machine (its private address), body streamed both ways, without hop-by-hop headers,
//! with the forwarding headers a server behind a proxy expects. Redirects are passed back, never
//! followed.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;

/// How long a machine may take to start answering a request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The client requests go out on.
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a client with static settings")
}

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        out.remove(name);
    }
    out.remove("keep-alive");
    out
}

/// Forwards `request` (for `host`) to the machine at `upstream` (`host:port`).
pub(super) async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    host: &str,
    peer: SocketAddr,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{upstream}{path}");
    let mut headers = forwardable(&parts.headers);
    headers.remove(header::HOST);
    // The gateway is the edge: what a client claims in these headers is replaced, not trusted.
    headers.remove("forwarded");
    if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", value);
    }
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let sent = client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .timeout(UPSTREAM_TIMEOUT)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(err) => {
            tracing::info!(target: "api::gateway", upstream, %err, "the site's machine did not answer");
            let status = if err.is_timeout() {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            return super::serve::page(
                status,
                "Site not answering",
                "The site's server did not answer. Try again in a moment.",
            );
        }
    };
    let status = answer.status();
    let headers = forwardable(answer.headers());
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    let mut response = (status, Body::from_stream(stream)).into_response();
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let out = forwardable(&headers);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[header::CONTENT_TYPE], "text/plain");
    }
}
