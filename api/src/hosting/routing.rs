//! `_redirects` and `_headers` at the top of a site's output, in Netlify's formats (the de-facto
//! standard, also read by IPFS gateways): parsed when the deployment is made, where a malformed
//! file fails the deployment naming the line at fault; stored with the deployment; applied by the
//! gateway to every request.
//!
//! `_redirects`: one rule a line, `from to [status][!]`; `#` starts a comment. `from` is a path
//! whose segments may be `:name` placeholders and whose last may be `*` (the splat, any rest of
//! the path, none included); `to` is a path or an `http(s)://` address in which `:name` and
//! `:splat` are replaced. Status 301 (the default), 302, 303, 307 or 308 redirects; 200 rewrites
//! (serves `to`'s file at the asked path), 404 and 410 rewrite with that status. The first rule
//! that matches applies; a rule without `!` (force) gives way to a file that exists at the path
//! (shadowing). Netlify's conditions (query parameters, country, language, role) and proxying to
//! other hosts are refused with the line, not silently ignored.
//!
//! `_headers`: a path pattern on a line of its own, then its headers indented below it as
//! `Name: value`. Every block whose pattern matches the asked path adds its headers; one header
//! set by several blocks is joined with `, `. Headers the gateway owns (length, encoding, caching
//! validators, connection) cannot be set.

use serde::{Deserialize, Serialize};

/// The largest `_redirects` or `_headers` file read.
pub(crate) const MAX_FILE: u64 = 64 * 1024;
/// The most rules one file may hold.
const MAX_RULES: usize = 2_000;

/// A deployment's redirects and headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Redirect and rewrite rules, in the file's order.
    pub redirects: Vec<Redirect>,
    /// Header blocks, in the file's order.
    pub headers: Vec<HeaderRule>,
}

/// One `_redirects` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// What it matches.
    pub from: Pattern,
    /// Where it sends (a path or an address, with placeholders).
    pub to: String,
    /// The status it answers with.
    pub status: u16,
    /// Whether it applies even where a file exists.
    pub force: bool,
}

/// One `_headers` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    /// The paths it applies to.
    pub path: Pattern,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A path pattern: literal segments and `:name` placeholders, maybe ending with the splat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    segments: Vec<Segment>,
    splat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Segment {
    Literal(String),
    Placeholder(String),
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {reason}")]
pub struct RoutingError {
    /// `_redirects` or `_headers`.
    pub file: &'static str,
    /// The line at fault (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What a path matched: its placeholders' values and the splat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    named: Vec<(String, String)>,
    splat: Option<String>,
}

fn placeholder_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} must be a path starting with `/`"))?;
        if text.contains('?') || text.contains('#') {
            return Err(format!("{text:?}: query strings and fragments are not matched"));
        }
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut splat = false;
        for (i, part) in parts.iter().enumerate() {
            if *part == "*" {
                if i + 1 != parts.len() {
                    return Err(format!("{text:?}: `*` may only end the path"));
                }
                splat = true;
            } else if part.contains('*') {
                return Err(format!("{text:?}: `*` must be a segment of its own, at the end"));
            } else if let Some(name) = part.strip_prefix(':') {
                if !placeholder_name(name) || name == "splat" {
                    return Err(format!("{text:?}: {part:?} is not a placeholder name"));
                }
                segments.push(Segment::Placeholder(name.to_owned()));
            } else {
                let decoded = percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map_err(|_| format!("{text:?}: {part:?} is not UTF-8 once decoded"))?;
                segments.push(Segment::Literal(decoded.into_owned()));
            }
        }
        Ok(Self { segments, splat })
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// What `path` (its decoded segments) captures, if it matches.
    pub fn matches(&self, path: &[String]) -> Option<Captures> {
        let fixed = self.segments.len();
        if path.len() < fixed || (!self.splat && path.len() != fixed) {
            return None;
        }
        let mut captures = Captures::default();
        for (segment, part) in self.segments.iter().zip(path) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Placeholder(name) => captures.named.push((name.clone(), part.clone())),
            }
        }
        if self.splat {
            captures.splat = Some(path[fixed..].join("/"));
        }
        Some(captures)
    }
}

/// What must be percent-encoded in a value put into a path.
const PATH_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The `:name` placeholders of `to`, as (start, end, name).
fn placeholders(to: &str) -> Vec<(usize, usize, &str)> {
    let bytes = to.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            let start = i;
            i += 1;
            while bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                i += 1;
            }
            found.push((start, i, &to[start + 1..i]));
        } else {
            i += 1;
        }
    }
    found
}

impl Redirect {
    /// Where this rule sends a request that captured `captures`: `to` with its placeholders
    /// replaced (values percent-encoded; a splat keeps its slashes).
    pub fn target(&self, captures: &Captures) -> String {
        let mut out = String::with_capacity(self.to.len());
        let mut last = 0;
        for (start, end, name) in placeholders(&self.to) {
            let value = if name == "splat" {
                captures.splat.as_deref()
            } else {
                captures.named.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
            };
            let Some(value) = value else { continue };
            out.push_str(&self.to[last..start]);
            for (i, part) in value.split('/').enumerate() {
                if i > 0 {
                    out.push('/');
                }
                out.extend(percent_encoding::utf8_percent_encode(part, PATH_VALUE));
            }
            last = end;
        }
        out.push_str(&self.to[last..]);
        out
    }

    /// Where a request that captured `captures` is sent, unless that would leave the site for
    /// an address the rule does not name (a path target that reads as `//host` or `/\host` to a
    /// browser: an open redirect through a captured value).
    pub fn safe_target(&self, captures: &Captures) -> Option<String> {
        let target = self.target(captures);
        let external = self.to.starts_with("http://") || self.to.starts_with("https://");
        let leaves = target.starts_with("//") || target.starts_with("/\\");
        (external || !leaves).then_some(target)
    }

    /// Whether it answers with a redirect (else it rewrites).
    pub fn redirects(&self) -> bool {
        (300..400).contains(&self.status)
    }
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, line)| (i + 1, line))
}

/// Parses a `_redirects` file.
pub fn parse_redirects(text: &str) -> Result<Vec<Redirect>, RoutingError> {
    let fail = |line, reason: String| RoutingError { file: "_redirects", line, reason };
    let mut rules = Vec::new();
    for (number, line) in lines(text) {
        let line = line.split_once('#').map_or(line, |(rule, _)| rule).trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `key=value` fields are Netlify's conditions: right after the path, on the query.
        let condition = |f: &&str| f.contains('=') && !f.starts_with('/') && !f.contains("://");
        if fields.get(1).is_some_and(condition) {
            return Err(fail(number, "query parameter conditions are not supported".into()));
        }
        let (from, to, status) = match fields.as_slice() {
            [from, to] => (*from, *to, None),
            [from, to, status] if !condition(status) => (*from, *to, Some(*status)),
            [_] => return Err(fail(number, "a rule needs a path and where it goes".into())),
            _ => {
                return Err(fail(
                    number,
                    "conditions (country, language, role, cookies) are not supported: write \
                     `from to [status][!]`"
                        .into(),
                ));
            }
        };
        if from.starts_with("http://") || from.starts_with("https://") {
            return Err(fail(number, "rules match paths of this site, not other hosts".into()));
        }
        let pattern = Pattern::parse(from).map_err(|reason| fail(number, reason))?;
        let (status, force) = match status {
            None => (301, false),
            Some(text) => {
                let (code, force) = match text.strip_suffix('!') {
                    Some(code) => (code, true),
                    None => (text, false),
                };
                let code: u16 = code
                    .parse()
                    .map_err(|_| fail(number, format!("{text:?} is not a status code")))?;
                if !matches!(code, 200 | 301 | 302 | 303 | 307 | 308 | 404 | 410) {
                    return Err(fail(
                        number,
                        format!(
                            "status {code} is not one of 200, 301, 302, 303, 307, 308, 404, 410"
                        ),
                    ));
                }
                (code, force)
            }
        };
        let external = to.starts_with("http://") || to.starts_with("https://");
        if !external && !to.starts_with('/') {
            return Err(fail(
                number,
                format!("{to:?} must be a path starting with `/` or an http(s) address"),
            ));
        }
        if external && !(300..400).contains(&status) {
            return Err(fail(
                number,
                "proxying to another host is not supported: redirect with a 3xx status".into(),
            ));
        }
        if to.chars().any(char::is_control) {
            return Err(fail(number, "the target holds a control character".into()));
        }
        for (_, _, name) in placeholders(to) {
            let known =
                if name == "splat" { pattern.splat } else { pattern.names().any(|n| n == name) };
            if !known && !external {
                return Err(fail(
                    number,
                    format!(":{name} in the target is not captured by {from:?}"),
                ));
            }
        }
        rules.push(Redirect { from: pattern, to: to.to_owned(), status, force });
        if rules.len() > MAX_RULES {
            return Err(fail(number, format!("more than {MAX_RULES} rules")));
        }
    }
    Ok(rules)
}

/// Headers a site cannot set: the gateway owns them.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "etag",
    "keep-alive",
    "last-modified",
    "transfer-encoding",
    "upgrade",
];

/// Parses a `_headers` file.
pub fn parse_headers(text: &str) -> Result<Vec<HeaderRule>, RoutingError> {
    let fail = |line, reason: String| RoutingError { file: "_headers", line, reason };
    let mut rules: Vec<HeaderRule> = Vec::new();
    for (number, raw) in lines(text) {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        if !indented {
            let path = Pattern::parse(trimmed).map_err(|reason| fail(number, reason))?;
            rules.push(HeaderRule { path, headers: Vec::new() });
            if rules.len() > MAX_RULES {
                return Err(fail(number, format!("more than {MAX_RULES} path blocks")));
            }
            continue;
        }
        let rule = rules
            .last_mut()
            .ok_or_else(|| fail(number, "a header comes before any path".into()))?;
        let (name, value) = trimmed
            .split_once(':')
            .ok_or_else(|| fail(number, format!("{trimmed:?} is not `Name: value`")))?;
        let (name, value) = (name.trim(), value.trim());
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(fail(number, format!("{name:?} is not a header name")));
        }
        if axum::http::HeaderValue::from_str(value).is_err() {
            return Err(fail(number, format!("the value of {name} is not a valid header value")));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(fail(
                number,
                format!("{name} is set by the gateway and cannot be changed"),
            ));
        }
        rule.headers.push((lower, value.to_owned()));
    }
    Ok(rules)
}

impl Routing {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.headers.is_empty()
    }

    /// The headers for the asked path, each name once (values of several blocks joined).
    pub fn headers_for(&self, path: &[String]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for rule in self.headers.iter().filter(|r| r.path.matches(path).is_some()) {
            for (name, value) in &rule.headers {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, existing)) => {
                        existing.push_str(", ");
                        existing.push_str(value);
                    }
                    None => out.push((name.clone(), value.clone())),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn rules_match_with_placeholders_and_splats() {
        let rules = parse_redirects(
            "# moved\n\
             /news/:year/:month   /blog/:year-:month.html\n\
             /docs/*   /documentation/:splat   302\n\
             /app/*    /app/index.html   200!\n\
             /old      https://example.com/new?x=1   308\n\
             /gone     /gone.html   410\n",
        )
        .expect("parses");
        assert_eq!(rules.len(), 5);
        let news = rules[0].from.matches(&path("/news/2026/12")).expect("matches");
        assert_eq!(rules[0].target(&news), "/blog/2026-12.html");
        assert_eq!(rules[0].status, 301);
        assert!(rules[0].from.matches(&path("/news/2026")).is_none());
        let docs = rules[1].from.matches(&path("/docs/a b/c")).expect("splat");
        assert_eq!(rules[1].target(&docs), "/documentation/a%20b/c");
        assert!(rules[1].from.matches(&path("/docs")).is_some(), "a splat matches nothing too");
        assert!(rules[2].force && !rules[2].redirects());
        assert_eq!(rules[3].target(&Captures::default()), "https://example.com/new?x=1");
        assert_eq!(rules[4].status, 410);
        // A captured value cannot make a path target leave the site.
        let open = parse_redirects("/en/*  /:splat  301").expect("parses");
        let sneaky = open[0].from.matches(&path("/en/\\evil.example")).expect("matches");
        assert_eq!(open[0].target(&sneaky), "/%5Cevil.example");
        let slashes = parse_redirects("/go/:to  /:to  301").expect("parses");
        let empty = Captures { named: vec![("to".into(), "/evil.example".into())], splat: None };
        assert_eq!(slashes[0].safe_target(&empty), None);
    }

    #[test]
    fn a_malformed_rule_names_its_line() {
        for (text, line, says) in [
            ("/a /b\n/c", 2, "needs a path"),
            ("/a /b 299", 1, "not one of"),
            ("\n\n/a /b 302 Country=au", 3, "not supported"),
            ("/store id=:id /blog/:id 301", 1, "query parameter"),
            ("a /b", 1, "starting with `/`"),
            ("/a/*/b /c", 1, "may only end"),
            ("/a /b/:id", 1, ":id in the target is not captured"),
            ("/blog/* https://elsewhere.example/:splat 200", 1, "proxying"),
            ("/a /b abc", 1, "not a status code"),
        ] {
            let err = parse_redirects(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(err.to_string().starts_with(&format!("_redirects line {line}: ")));
        }
    }

    #[test]
    fn headers_apply_by_path_and_join() {
        let rules = parse_headers(
            "/*\n  X-Frame-Options: DENY\n  Cache-Control: public, max-age=60\n\
             # assets\n/assets/*\n\tCache-Control: immutable\n",
        )
        .expect("parses");
        let routing = Routing { redirects: vec![], headers: rules };
        assert_eq!(
            routing.headers_for(&path("/assets/app.js")),
            [
                ("x-frame-options".to_owned(), "DENY".to_owned()),
                ("cache-control".to_owned(), "public, max-age=60, immutable".to_owned())
            ]
        );
        assert_eq!(routing.headers_for(&path("/")).len(), 2);
        for (text, line, says) in [
            ("  X-A: b", 1, "before any path"),
            ("/\n  Content-Length: 5", 2, "set by the gateway"),
            ("/\n  Bad Name: x", 2, "not a header name"),
            ("/\n  no colon", 2, "not `Name: value`"),
            ("nopath\n  X-A: b", 1, "starting with `/`"),
        ] {
            let err = parse_headers(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
    }
}
