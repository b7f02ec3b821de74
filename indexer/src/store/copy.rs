//! Rows for `COPY … FROM STDIN` in text format: the bulk path for events and history rows.

use std::fmt::Write as _;

use alloy::hex;

/// One `COPY` text payload being built, row by row.
#[derive(Debug, Default)]
pub(crate) struct CopyText {
    buf: String,
    row_open: bool,
}

impl CopyText {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self { buf: String::with_capacity(bytes), row_open: false }
    }

    fn sep(&mut self) {
        if self.row_open {
            self.buf.push('\t');
        }
        self.row_open = true;
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        self.buf.push('\n');
        self.row_open = false;
    }

    pub(crate) fn null(&mut self) {
        self.sep();
        self.buf.push_str("\\N");
    }

    pub(crate) fn int(&mut self, value: impl std::fmt::Display) {
        self.sep();
        let _ = write!(self.buf, "{value}");
    }

    /// A bytea in hex form (`\x…`, with the backslash escaped for COPY).
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.sep();
        self.buf.push_str("\\\\x");
        self.buf.push_str(&hex::encode(value));
    }

    pub(crate) fn text(&mut self, value: &str) {
        self.sep();
        escape_into(&mut self.buf, value);
    }

    pub(crate) fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub(crate) fn opt_bytes(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => self.bytes(v),
            None => self.null(),
        }
    }

    /// A timestamptz from unix seconds.
    pub(crate) fn opt_time(&mut self, unix: Option<u64>) {
        match unix.and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0)) {
            Some(t) => {
                self.sep();
                let _ = write!(self.buf, "{}", t.format("%Y-%m-%d %H:%M:%S+00"));
            }
            None => self.null(),
        }
    }

    /// A `bytea[]`.
    pub(crate) fn bytes_array<'a>(&mut self, values: impl IntoIterator<Item = &'a [u8]>) {
        let mut literal = String::from("{");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                literal.push(',');
            }
            literal.push_str("\"\\\\x");
            literal.push_str(&hex::encode(v));
            literal.push('"');
        }
        literal.push('}');
        self.text(&literal);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf.into_bytes()
    }
}

fn escape_into(buf: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_fields_and_rows() {
        let mut copy = CopyText::default();
        copy.int(7);
        copy.bytes(&[0xab, 0x01]);
        copy.text("a\tb\\c\nd");
        copy.null();
        copy.opt_time(Some(0));
        copy.end_row();
        copy.bytes_array([&[1u8][..], &[2u8, 3][..]]);
        copy.end_row();
        assert_eq!(
            String::from_utf8(copy.into_bytes()).expect("utf8"),
            "7\t\\\\xab01\ta\\tb\\\\c\\nd\t\\N\t1970-01-01 00:00:00+00\n{\"\\\\\\\\x01\",\"\\\\\\\\x0203\"}\n"
        );
    }
}
