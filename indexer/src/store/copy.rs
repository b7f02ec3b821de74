//! Rows in PostgreSQL's binary `COPY` format, for the backfill's bulk inserts.
//!
//! The server reads binary fields without parsing text (numbers, timestamps, bytea escapes), which
//! is most of what a text `COPY` or an `unnest` of text arrays costs it per row. The format is
//! documented in the `COPY` reference ("Binary Format"); each field is its type's `send` form.

/// The start of every binary `COPY` stream: signature, flags and header-extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// A binary `COPY` stream being written: call [`CopyRows::row`] before each row's fields, then
/// [`CopyRows::finish`].
pub(crate) struct CopyRows {
    buf: Vec<u8>,
}

impl CopyRows {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + HEADER.len() + 2);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Starts a row of `fields` fields.
    pub(crate) fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    pub(crate) fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub(crate) fn int8(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn int4(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `bytea`, or a `text`/`json` value given as its UTF-8 bytes (their binary form).
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = i32::try_from(v.len()).expect("a COPY field is under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v);
        self
    }

    /// A `bytea` made of several slices (the concatenated topics), or null.
    pub(crate) fn opt_bytes_concat<'a>(
        &mut self,
        parts: Option<impl Iterator<Item = &'a [u8]> + Clone>,
    ) -> &mut Self {
        let Some(parts) = parts else { return self.null() };
        let len: usize = parts.clone().map(<[u8]>::len).sum();
        let len = i32::try_from(len).expect("a COPY field is under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self
    }

    pub(crate) fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.bytes(v),
            None => self.null(),
        }
    }

    pub(crate) fn opt_int8(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int8(v),
            None => self.null(),
        }
    }

    /// A `timestamptz` at a Unix time in seconds.
    pub(crate) fn opt_unix_time(&mut self, secs: Option<u64>) -> &mut Self {
        match secs.and_then(|s| i64::try_from(s).ok()) {
            Some(s) => self.int8((s - PG_EPOCH_UNIX_SECS) * 1_000_000),
            None => self.null(),
        }
    }

    /// A non-negative integer `numeric` given in decimal digits (how the ledger amounts arrive).
    ///
    /// Panics on anything but ASCII digits: the callers format these from unsigned integers.
    pub(crate) fn opt_numeric(&mut self, decimal: Option<&str>) -> &mut Self {
        let Some(decimal) = decimal else { return self.null() };
        let digits = decimal.trim_start_matches('0').as_bytes();
        assert!(digits.iter().all(u8::is_ascii_digit), "numeric field is not an unsigned integer");
        // Base-10000 digits, most significant first; the first group takes the leftover digits.
        let mut groups: Vec<i16> = Vec::with_capacity(digits.len() / 4 + 1);
        let head = digits.len() % 4;
        let value = |chunk: &[u8]| chunk.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'));
        if head > 0 {
            groups.push(value(&digits[..head]));
        }
        groups.extend(digits[head..].chunks(4).map(value));
        // The weight is the power of 10000 of the first group; trailing zero groups are implied.
        let weight = groups.len() as i16 - 1;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let len = 8 + 2 * groups.len() as i32;
        self.buf.extend_from_slice(&len.to_be_bytes());
        for header in [groups.len() as i16, if groups.is_empty() { 0 } else { weight }, 0, 0] {
            self.buf.extend_from_slice(&header.to_be_bytes());
        }
        for g in groups {
            self.buf.extend_from_slice(&g.to_be_bytes());
        }
        self
    }

    /// The finished stream, with its trailer.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::CopyRows;

    /// The bytes of one `numeric` field after the stream header and the row's field count.
    fn numeric(decimal: &str) -> Vec<i16> {
        let mut rows = CopyRows::with_capacity(0);
        rows.row(1).opt_numeric(Some(decimal));
        let field = &rows.finish()[super::HEADER.len() + 2..];
        let len = i32::from_be_bytes(field[..4].try_into().unwrap()) as usize;
        field[4..4 + len].chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numerics_are_base_10000_groups_with_their_weight() {
        // [ndigits, weight, sign, dscale, digits…]
        assert_eq!(numeric("0"), [0, 0, 0, 0]);
        assert_eq!(numeric("7"), [1, 0, 0, 0, 7]);
        assert_eq!(numeric("12345678"), [2, 1, 0, 0, 1234, 5678]);
        assert_eq!(numeric("123456789"), [3, 2, 0, 0, 1, 2345, 6789]);
        // Trailing zero groups are left implied by the weight.
        assert_eq!(numeric("10000"), [1, 1, 0, 0, 1]);
        assert_eq!(numeric("5000000000000"), [1, 3, 0, 0, 5]);
        assert_eq!(numeric("000042"), [1, 0, 0, 0, 42]);
    }

    #[test]
    fn a_stream_has_the_signature_and_ends_with_the_trailer() {
        let mut rows = CopyRows::with_capacity(0);
        rows.row(2).int8(-1).null();
        let bytes = rows.finish();
        assert!(bytes.starts_with(b"PGCOPY\n\xff\r\n\0"));
        assert_eq!(&bytes[bytes.len() - 2..], &[0xff, 0xff]);
        let row = &bytes[super::HEADER.len()..bytes.len() - 2];
        assert_eq!(row, [&[0, 2][..], &[0, 0, 0, 8], &[0xff; 8], &[0xff; 4]].concat());
    }
}
