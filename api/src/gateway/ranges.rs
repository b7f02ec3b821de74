//! What a static host decides from a request's headers alone: how long a file may be cached,
//! which bytes of it a `Range` asks for (RFC 9110, section 14), and which of its compressed
//! copies the client takes (`Accept-Encoding`, section 12.5.3).

use axum::http::{HeaderMap, header};

/// Files whose name carries a content hash (`app.3f9a1c2b.js`, `index-BtD3xZ9a.css`) never change
/// under that name: cached for a year without asking again. Pages revalidate every time (a new
/// deployment shows at once); every other file revalidates too, cheaply, with its `ETag`.
pub(super) fn cache_control(path: &str, content_type: &str) -> &'static str {
    if content_type.starts_with("text/html") {
        "no-cache"
    } else if fingerprinted(path) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=0, must-revalidate"
    }
}

/// Whether the file name has a hash part: a `.`- or `-`-separated piece of the stem of 8 or more
/// letters and digits (or `_`) with at least one digit, as bundlers write them.
fn fingerprinted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((stem, _extension)) = name.rsplit_once('.') else { return false };
    stem.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && part.bytes().any(|b| b.is_ascii_digit())
    })
}

/// The bytes a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wanted {
    /// The whole file (no `Range`, one the server may ignore, or an `If-Range` that no longer
    /// matches).
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// The first byte.
        start: u64,
        /// The last byte (inclusive).
        end: u64,
    },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// The bytes `headers` ask for of a file of `size` bytes tagged `etag`. One range is served;
/// several are answered whole (allowed, and what a media player never sends).
pub(super) fn wanted(headers: &HeaderMap, etag: &str, size: u64) -> Wanted {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Wanted::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let (first, last) = (first.trim(), last.trim());
    match (first.parse::<u64>(), last.parse::<u64>()) {
        // `bytes=-n`: the last n bytes.
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 || size == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part { start: size.saturating_sub(suffix), end: size - 1 }
            }
        }
        (Ok(start), _) if start >= size => Wanted::Unsatisfiable,
        // `bytes=a-`: from a to the end.
        (Ok(start), Err(_)) if last.is_empty() => Wanted::Part { start, end: size - 1 },
        (Ok(start), Ok(end)) if end >= start => Wanted::Part { start, end: end.min(size - 1) },
        // Malformed: ignored, as RFC 9110 lets a server do.
        _ => Wanted::Whole,
    }
}

/// A compressed copy of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// `br`.
    Brotli,
    /// `gzip`.
    Gzip,
}

impl Encoding {
    /// Its `Content-Encoding` token.
    pub(super) fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// Which of the copies a file has (`brotli`, `gzip`) the request's `Accept-Encoding` takes: the
/// one with the higher weight, brotli on a tie; none when neither is acceptable (`q=0`, or not
/// named and no `*`).
pub(super) fn encoding(headers: &HeaderMap, brotli: bool, gzip: bool) -> Option<Encoding> {
    let accept = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok())?;
    let mut weights: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if token.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        weights.push((token, q));
    }
    let weight = |names: &[&str]| {
        weights
            .iter()
            .find(|(t, _)| names.contains(&t.as_str()))
            .or_else(|| weights.iter().find(|(t, _)| t == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let (br, gz) = (
        if brotli { weight(&["br"]) } else { 0.0 },
        if gzip { weight(&["gzip", "x-gzip"]) } else { 0.0 },
    );
    if br > 0.0 && br >= gz {
        Some(Encoding::Brotli)
    } else if gz > 0.0 {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ask(range: &str, if_range: Option<&str>) -> Wanted {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(tag) = if_range {
            headers.insert(header::IF_RANGE, HeaderValue::from_str(tag).unwrap());
        }
        wanted(&headers, "\"bafy\"", 1000)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(wanted(&HeaderMap::new(), "\"bafy\"", 1000), Wanted::Whole);
        assert_eq!(ask("bytes=0-99", None), Wanted::Part { start: 0, end: 99 });
        assert_eq!(ask("bytes=900-", None), Wanted::Part { start: 900, end: 999 });
        assert_eq!(ask("bytes=-10", None), Wanted::Part { start: 990, end: 999 });
        assert_eq!(ask("bytes=-5000", None), Wanted::Part { start: 0, end: 999 });
        assert_eq!(ask("bytes=990-5000", None), Wanted::Part { start: 990, end: 999 });
        assert_eq!(ask("bytes=1000-", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=-0", None), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=5-1", None), Wanted::Whole);
        assert_eq!(ask("bytes=0-1,5-6", None), Wanted::Whole);
        assert_eq!(ask("items=0-1", None), Wanted::Whole);
        assert_eq!(ask("bytes=x-1", None), Wanted::Whole);
        assert_eq!(ask("bytes=0-9", Some("\"bafy\"")), Wanted::Part { start: 0, end: 9 });
        assert_eq!(ask("bytes=0-9", Some("\"other\"")), Wanted::Whole);
    }

    #[test]
    fn the_accepted_copy_is_chosen_by_weight() {
        let pick = |accept: &str, brotli: bool, gzip: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
            encoding(&headers, brotli, gzip)
        };
        assert_eq!(encoding(&HeaderMap::new(), true, true), None);
        assert_eq!(pick("gzip, deflate, br", true, true), Some(Encoding::Brotli));
        assert_eq!(pick("gzip, deflate, br", false, true), Some(Encoding::Gzip));
        assert_eq!(pick("gzip;q=1.0, br;q=0.5", true, true), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0, gzip", true, true), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0", true, true), None);
        assert_eq!(pick("identity", true, true), None);
        assert_eq!(pick("*", true, true), Some(Encoding::Brotli));
        assert_eq!(pick("*;q=0.1, br;q=0", true, true), Some(Encoding::Gzip));
        assert_eq!(pick("x-gzip", true, true), Some(Encoding::Gzip));
        assert_eq!(pick("br", false, false), None);
    }

    #[test]
    fn hashed_names_are_immutable_and_the_rest_revalidates() {
        for hashed in
            ["assets/index-BtD3xZ9a.js", "app.3f9a1c2b.css", "static/js/main.8c2f1e0a.chunk.js"]
        {
            assert_eq!(
                cache_control(hashed, "text/javascript"),
                "public, max-age=31536000, immutable"
            );
        }
        for plain in
            ["style.css", "logo-mainlogo.png", "app.js", "vendor-abcdefgh.js", "robots.txt"]
        {
            assert_eq!(
                cache_control(plain, "text/css"),
                "public, max-age=0, must-revalidate",
                "{plain}"
            );
        }
        assert_eq!(cache_control("index-BtD3xZ9a.html", "text/html; charset=utf-8"), "no-cache");
    }
}
