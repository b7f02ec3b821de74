//! Pages of lists: a bounded page size, and opaque cursors over (block, log index).

use serde::Deserialize;

use super::error::ApiError;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for.
pub const MAX_LIMIT: i64 = 500;

/// Clamps a requested page size.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => {
            Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}, got {n}")))
        }
    }
}

/// An opaque position in a list ordered by (block, log index): `<block>.<log index>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Block number.
    pub block: i64,
    /// Log index.
    pub log: i32,
}

impl Cursor {
    /// Parses a cursor a previous page returned.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "invalid cursor {text:?}: pass the next_cursor of a previous page"
            ))
        };
        let (block, log) = text.split_once('.').ok_or_else(bad)?;
        Ok(Self { block: block.parse().map_err(|_| bad())?, log: log.parse().map_err(|_| bad())? })
    }

    /// The cursor's text.
    pub fn encode(self) -> String {
        format!("{}.{}", self.block, self.log)
    }
}

/// Which page of a list: every list takes these beside its own filters (a second `Query`
/// extractor reads them from the same query string).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The page size asked for, bounded ([`page_limit`]).
    pub fn limit(&self) -> Result<i64, ApiError> {
        page_limit(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor { block: 12, log: 3 };
        assert_eq!(Cursor::parse(&c.encode()).expect("parses"), c);
        for bad in ["", "12", "a.b", "1.2.3"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page_limit(None).expect("default"), DEFAULT_LIMIT);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
