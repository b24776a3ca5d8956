//! Network-controlled text in log lines: clipped and escaped, so that a client can neither
//! forge log lines (newlines, terminal escapes) nor make one log event megabytes long.

use std::fmt;

/// How many characters of a client's string a log field shows.
pub(crate) const MAX_CHARS: usize = 128;

/// Shows at most [`MAX_CHARS`] characters of a string, control characters, quotes and
/// backslashes escaped, and how many bytes were left out.
pub(crate) struct Clip<'a>(pub(crate) &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_CHARS {
                return write!(f, "…(+{} bytes)", self.0.len() - shown);
            }
            for e in c.escape_debug() {
                fmt::Write::write_char(f, e)?;
            }
            shown += c.len_utf8();
        }
        Ok(())
    }
}

impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_and_escapes() {
        assert_eq!(Clip("urn:a").to_string(), "urn:a");
        assert_eq!(
            Clip("a\nFORGED\u{1b}[2J").to_string(),
            "a\\nFORGED\\u{1b}[2J"
        );
        let long = "x".repeat(1000);
        let shown = Clip(&long).to_string();
        assert_eq!(shown, format!("{}…(+872 bytes)", "x".repeat(128)));
        assert_eq!(
            Clip(&"é".repeat(200)).to_string().chars().count(),
            128 + "…(+144 bytes)".chars().count()
        );
    }
}
