//! Input every route refuses the same way, once, at the edge: a NUL character anywhere in the
//! path, the query or a JSON body. PostgreSQL cannot store `0x00` in text, and no name, reference
//! or message of this API legitimately holds one, so such a request is answered 400 before any
//! handler sees it instead of failing deep inside a query.

use axum::{
    body::Body,
    extract::Request,
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::http::error::ApiError;

/// Middleware: refuses a NUL in the path or the query (as `%00`). Runs before routing, on every
/// route, streaming ones included.
pub(crate) async fn refuse_nul_in_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let where_ = if has_encoded_nul(uri.path()) {
        Some("path")
    } else if uri.query().is_some_and(has_encoded_nul) {
        Some("query")
    } else {
        None
    };
    match where_ {
        Some(part) => nul_refused(part).into_response(),
        None => next.run(request).await,
    }
}

/// Middleware: refuses a JSON body holding a NUL in any string (as `\u0000`). Runs inside the
/// body limit, so the body it reads is bounded; streaming routes (uploads) are not behind it.
pub(crate) async fn refuse_nul_in_json(request: Request, next: Next) -> Response {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        });
    if !is_json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The body limit layer outside this one bounds what is read; past it, the read fails and the
    // request is answered as too large, as the handler's own extractor would.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => return body_read_failed(&err).into_response(),
    };
    if json_has_nul(&bytes) {
        return nul_refused("JSON body").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A text part of a multipart form: refused when it holds a NUL.
pub(crate) fn refuse_nul_in_text(part: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "the `{part}` part contains a NUL character, which no value here may hold"
        )));
    }
    Ok(())
}

fn nul_refused(part: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "the request's {part} contains a NUL character (%00 or \\u0000), which no value here may hold"
    ))
}

fn body_read_failed(err: &axum::Error) -> ApiError {
    let too_large = std::error::Error::source(err)
        .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
    if too_large {
        ApiError::TooLarge {
            slug: "payload-too-large",
            detail: "the request body is too large".into(),
        }
    } else {
        ApiError::BadRequest("the request body could not be read".into())
    }
}

/// Whether percent-encoded text holds `%00`.
fn has_encoded_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| w == b"%00")
}

/// Whether a JSON text holds a NUL inside a string: the escape `\u0000`, or a raw 0x00 byte
/// (invalid JSON, which the parser refuses anyway). An escaped backslash followed by `u0000` is
/// text, not a NUL, and is told apart.
fn json_has_nul(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            0 => return true,
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                // Skip the escaped character (a quote or a backslash must not toggle anything).
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_in_strings_only_as_escapes() {
        assert!(json_has_nul(br#"{"site":"a\u0000b"}"#));
        assert!(json_has_nul(br#"["x", {"k": ["\u0000"]}]"#));
        assert!(json_has_nul(b"{\"a\":\"\x00\"}"));
        // An escaped backslash followed by the text u0000 is not a NUL.
        assert!(!json_has_nul(br#"{"a":"\\u0000"}"#));
        // An escaped quote does not end the string.
        assert!(json_has_nul(br#"{"a":"\"\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"\u0001"}"#));
        assert!(json_has_nul(br#"{"b":"\u00001"}"#));
        assert!(!json_has_nul(br#"{"a":"plain","n":10000}"#));
    }

    #[test]
    fn encoded_nuls_are_found_in_uris() {
        assert!(has_encoded_nul("/v1/domains/a%00b.com"));
        assert!(has_encoded_nul("event=a%00b"));
        assert!(!has_encoded_nul("/v1/domains/a%2500b.com"));
        assert!(!has_encoded_nul("site=a%20b"));
    }
}
