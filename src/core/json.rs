//! A JSON writer for `serde_json::Value`s on the hot paths (a call's result, an event's
//! arguments): the same bytes as `serde_json::to_writer`, but strings are scanned for what
//! must be escaped eight bytes at a time rather than one by one (most of a WAMP payload is
//! strings, and most strings need no escaping at all).

use serde_json::Value;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` that need a closer look in a JSON string, as their top bits: a
/// control character, `"` (0x22) or `\` (0x5c). Bits above the lowest may be false alarms
/// (a borrow carried up from a byte that is flagged); the lowest is exact.
const fn special(w: u64) -> u64 {
    // A byte below 0x20: subtracting 0x20 borrows into its top bit while its own top bit
    // is clear. A byte equal to `c`: zero after xor with `c`.
    let control = w.wrapping_sub(LO * 0x20) & !w;
    let quote = w ^ (LO * 0x22);
    let backslash = w ^ (LO * 0x5c);
    (control | (quote.wrapping_sub(LO) & !quote) | (backslash.wrapping_sub(LO) & !backslash)) & HI
}

/// Where the first byte at or after `i` that a JSON string cannot hold as it is stands
/// (`bytes.len()` when there is none), eight bytes at a time.
fn scan(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let hits = special(w);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !matches!(bytes[i], 0..0x20 | b'"' | b'\\') {
        i += 1;
    }
    i
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
///
/// ```
/// let mut out = Vec::new();
/// tower_wamp::core::json::write_str(&mut out, "a \"quoted\" line\n");
/// assert_eq!(out, br#""a \"quoted\" line\n""#);
/// ```
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = scan(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// Writes `n` in decimal.
///
/// ```
/// let mut out = Vec::new();
/// tower_wamp::core::json::write_u64(&mut out, 9_007_199_254_740_993);
/// assert_eq!(out, b"9007199254740993");
/// ```
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes `value` as JSON, the same bytes as `serde_json::to_writer` writes.
///
/// ```
/// let value = serde_json::json!({"a": [1, 2.5, null, true, "x\u{1}"], "b": {}});
/// let mut out = Vec::new();
/// tower_wamp::core::json::write_value(&mut out, &value);
/// assert_eq!(out, serde_json::to_vec(&value).unwrap());
/// ```
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // itoa and ryu, as serde_json writes numbers.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
}

/// Nesting deeper than this is left to serde_json (which refuses past 128 levels).
const MAX_NESTING: usize = 100;

/// Parses a whole JSON text into a [`Value`], as `serde_json::from_str` does, on the hot
/// path of every message: strings are scanned eight bytes at a time, arrays start with room
/// for a few items (a message's list, its arguments), and no `serde` visitor is involved.
///
/// `None` when the text is not JSON, or is JSON this parser leaves to serde_json (a lone
/// surrogate escape, nesting deeper than 100 levels): the caller asks serde_json then, for
/// its value or its error. So when this returns a value, it is the one serde_json returns.
///
/// ```
/// use serde_json::json;
/// let text = r#"[48, 7, {}, "com.example.echo", ["x\u00e9\n", -3, 2.5e3, true, null]]"#;
/// let value = tower_wamp::core::json::parse(text).unwrap();
/// assert_eq!(value, serde_json::from_str::<serde_json::Value>(text).unwrap());
/// assert_eq!(tower_wamp::core::json::parse("[1,]"), None);
/// ```
#[must_use]
pub fn parse(text: &str) -> Option<Value> {
    parse_counted(text).map(|(value, _)| value)
}

/// What a parsed text held, as the codecs' decoded-size estimate counts it
/// ([`crate::core::codec::v1::decoded_size`]): the `,`, `[` and `{` outside strings, and the
/// `{` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) marks: usize,
    pub(crate) objects: usize,
}

/// [`parse`], and what the text held, counted on the way (so that a frame is not scanned
/// once for its size and once more for its value).
pub(crate) fn parse_counted(text: &str) -> Option<(Value, Counts)> {
    let mut p = Parser::new(text);
    let value = p.value(0)?;
    p.skip_whitespace();
    (p.at == p.bytes.len()).then_some((value, p.counts))
}

/// The items of a JSON text that is a list, parsed one at a time as they are taken: a
/// message is decoded straight from its text, with no list of its items built first.
///
/// The iterator ends at the list's end or at the first text that [`parse`] would not take;
/// [`finish`](Self::finish) tells which, once the rest is parsed too.
pub(crate) struct ListItems<'a> {
    parser: Parser<'a>,
    state: ListState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListState {
    First,
    More,
    Done,
    Failed,
}

impl<'a> ListItems<'a> {
    /// `None` unless the text starts (after whitespace) with `[`.
    pub(crate) fn new(text: &'a str) -> Option<Self> {
        let mut parser = Parser::new(text);
        (parser.next_token()? == b'[').then_some(())?;
        parser.counts.marks += 1;
        Some(Self {
            parser,
            state: ListState::First,
        })
    }

    /// Parses what is left of the text: what it held, as [`parse_counted`] counts it, when
    /// the whole text is JSON that [`parse`] takes (`None` otherwise).
    pub(crate) fn finish(mut self) -> Option<Counts> {
        while self.next().is_some() {}
        if self.state == ListState::Failed {
            return None;
        }
        self.parser.skip_whitespace();
        (self.parser.at == self.parser.bytes.len()).then_some(self.parser.counts)
    }
}

impl Iterator for ListItems<'_> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let p = &mut self.parser;
        match self.state {
            ListState::First => {
                p.skip_whitespace();
                if p.bytes.get(p.at) == Some(&b']') {
                    p.at += 1;
                    self.state = ListState::Done;
                    return None;
                }
            }
            ListState::More => match p.next_token() {
                Some(b',') => p.counts.marks += 1,
                Some(b']') => {
                    self.state = ListState::Done;
                    return None;
                }
                _ => {
                    self.state = ListState::Failed;
                    return None;
                }
            },
            ListState::Done | ListState::Failed => return None,
        }
        let item = p.value(1);
        self.state = if item.is_some() {
            ListState::More
        } else {
            ListState::Failed
        };
        item
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    counts: Counts,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            counts: Counts::default(),
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn literal(&mut self, rest: &[u8], value: Value) -> Option<Value> {
        let end = self.at.checked_add(rest.len())?;
        (self.bytes.get(self.at..end)? == rest).then(|| {
            self.at = end;
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        match self.next_token()? {
            b'"' => self.string().map(Value::String),
            b'[' => {
                if depth >= MAX_NESTING {
                    return None;
                }
                self.counts.marks += 1;
                self.skip_whitespace();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Some(Value::Array(Vec::new()));
                }
                // A message's own list has up to seven items; nested lists start as small
                // as the standard library starts them.
                let mut items = Vec::with_capacity(if depth == 0 { 8 } else { 4 });
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.next_token()? {
                        b',' => self.counts.marks += 1,
                        b']' => return Some(Value::Array(items)),
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_NESTING {
                    return None;
                }
                self.counts.marks += 1;
                self.counts.objects += 1;
                let mut map = serde_json::Map::new();
                if self.next_token()? == b'}' {
                    return Some(Value::Object(map));
                }
                self.at -= 1;
                loop {
                    if self.next_token()? != b'"' {
                        return None;
                    }
                    let key = self.string()?;
                    // serde_json reads an object with such a first key as its own raw
                    // value or number (with its `raw_value` or `arbitrary_precision`
                    // features, which other crates may turn on): left to it.
                    if map.is_empty() && key.starts_with("$serde_json::private::") {
                        return None;
                    }
                    if self.next_token()? != b':' {
                        return None;
                    }
                    let value = self.value(depth + 1)?;
                    // A repeated key keeps its last value, as serde_json's.
                    map.insert(key, value);
                    match self.next_token()? {
                        b',' => self.counts.marks += 1,
                        b'}' => return Some(Value::Object(map)),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"rue", Value::Bool(true)),
            b'f' => self.literal(b"alse", Value::Bool(false)),
            b'n' => self.literal(b"ull", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A number, its first byte consumed.
    fn number(&mut self) -> Option<Value> {
        let start = self.at - 1;
        // Most numbers in a message are small unsigned integers (its code, a request id):
        // read as their digits are scanned, up to 19 (any 19 digits fit a u64).
        let first = self.bytes[start];
        if first.is_ascii_digit() {
            let mut n = u64::from(first - b'0');
            let mut end = self.at;
            while end - start < 19
                && let Some(&d) = self.bytes.get(end)
                && d.is_ascii_digit()
            {
                n = n * 10 + u64::from(d - b'0');
                end += 1;
            }
            let more = matches!(
                self.bytes.get(end),
                Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            );
            if !more && (first != b'0' || end == self.at) {
                self.at = end;
                return Some(Value::from(n));
            }
        }
        let mut end = self.at;
        while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.bytes.get(end) {
            end += 1;
        }
        self.at = end;
        let token = &self.bytes[start..end];
        let (negative, digits) = match token.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, token),
        };
        // Plain integers here; anything else (a fraction, an exponent, a leading zero, an
        // integer beyond 64 bits, -0) is read by serde_json's own number parser.
        let plain = !digits.is_empty()
            && digits.len() <= 19
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || (digits.len() == 1 && !negative));
        if plain {
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if !negative {
                return Some(Value::from(n));
            }
            if let Some(n) = 0i64.checked_sub_unsigned(n) {
                return Some(Value::from(n));
            }
        }
        let token = std::str::from_utf8(token).ok()?;
        serde_json::from_str::<serde_json::Number>(token)
            .ok()
            .map(Value::Number)
    }

    /// A string's contents, its opening quote consumed.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        let mut i = scan(self.bytes, start);
        if *self.bytes.get(i)? == b'"' {
            self.at = i + 1;
            // The text is a `str` and the quote is ASCII: a char boundary.
            return Some(self.text[start..i].to_owned());
        }
        // With escapes: what came before, then piece by piece.
        let mut out = String::with_capacity(i - start + 16);
        let mut plain = start;
        loop {
            out.push_str(&self.text[plain..i]);
            match *self.bytes.get(i)? {
                b'"' => {
                    self.at = i + 1;
                    return Some(out);
                }
                b'\\' => {
                    let unescaped = match *self.bytes.get(i + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = std::str::from_utf8(self.bytes.get(i + 2..i + 6)?).ok()?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            let code = u32::from_str_radix(hex, 16).ok()?;
                            i += 4;
                            // A surrogate (paired or not) is left to serde_json.
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    out.push(unescaped);
                    plain = i + 2;
                    i = scan(self.bytes, plain);
                }
                // A control character.
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
            proptest::collection::vec(0u8..0x80, 0..40)
                .prop_map(|b| Value::String(String::from_utf8(b).unwrap())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(value in json_value()) {
            let mut out = Vec::new();
            write_value(&mut out, &value);
            prop_assert_eq!(out, serde_json::to_vec(&value).unwrap());
        }
    }

    /// `text` with whitespace put between its tokens (outside strings).
    fn spaced(text: &str, spaces: &[u8]) -> String {
        let mut out = String::new();
        let (mut in_string, mut escaped, mut k) = (false, false, 0);
        for c in text.chars() {
            if !in_string && matches!(c, '[' | ']' | '{' | '}' | ',' | ':') {
                out.push(char::from(
                    b" \t\n\r"[usize::from(spaces[k % spaces.len()] % 4)],
                ));
                k += 1;
            }
            out.push(c);
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if c == '"' {
                in_string = true;
            }
        }
        out
    }

    /// What serde_json makes of `text`, and that `parse` never disagrees: a value it
    /// returns is serde_json's, and it returns none where serde_json fails.
    fn agrees(text: &str) -> Result<Option<Value>, TestCaseError> {
        let ours = parse(text);
        let theirs = serde_json::from_str::<Value>(text).ok();
        if let Some(ours) = &ours {
            prop_assert_eq!(Some(ours), theirs.as_ref(), "text {:?}", text);
        }
        Ok(ours)
    }

    proptest! {
        #[test]
        fn parses_what_serde_json_parses(
            value in json_value(),
            spaces in proptest::collection::vec(any::<u8>(), 1..8),
            pretty in any::<bool>(),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                spaced(&serde_json::to_string(&value).unwrap(), &spaces)
            };
            // Every value serde_json writes is parsed here, not left to it.
            prop_assert_eq!(agrees(&text)?, Some(value));
            // And counted as the decoded-size scan counts it.
            let (_, counts) = parse_counted(&text).expect("parsed");
            prop_assert_eq!(
                crate::core::codec::v1::estimate(text.len(), counts),
                crate::core::codec::v1::decoded_size(&text)
            );
        }

        #[test]
        fn never_accepts_what_serde_json_refuses(
            value in json_value(),
            at in any::<prop::sample::Index>(),
            edit in 0usize..4,
            byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b','), Just(b']'), Just(b'}'),
                Just(b'0'), Just(b'-'), Just(b'.'), Just(b'e'), Just(b'u'), Just(b' '),
                Just(0x01u8), Just(b'['), Just(b'{'), Just(b':'), Just(b'n'), Just(b'x')],
        ) {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            let i = at.index(bytes.len() + 1);
            match edit {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 if i < bytes.len() => bytes[i] = byte,
                2 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agrees(text)?;
            }
        }

        #[test]
        fn escapes_read_as_serde_json_reads_them(code in 0u32..0x1_0000, s in ".{0,12}") {
            let text = format!(r#"["{s}\u{code:04x}\u{code:04X}\n\/\"{s}"]"#);
            agrees(&text)?;
        }
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "-0",
            "1",
            "-1",
            "01",
            "-01",
            "1.",
            ".5",
            "1.5",
            "-1.5e3",
            "1e400",
            "1E-7",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "-9223372036854775809",
            "9999999999999999999",
            "99999999999999999999",
            "1e",
            "1e+",
            "--1",
            "+1",
            "1-2",
            "0.1e-2",
            "123456789012345678901234567890",
        ] {
            for text in [
                text.to_owned(),
                format!("[{text}]"),
                format!(r#"{{"k":{text}}}"#),
            ] {
                let ours = parse(&text);
                let theirs = serde_json::from_str::<Value>(&text).ok();
                assert_eq!(ours, theirs, "{text}");
            }
        }
    }

    #[test]
    fn deep_nesting_and_surrogates_are_left_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert_eq!(parse(&deep), None);
        assert!(serde_json::from_str::<Value>(&deep).is_ok());
        assert_eq!(parse(r#"["\ud83d\ude00"]"#), None);
        // serde_json's private keys (its `raw_value` and `arbitrary_precision` features).
        for text in [
            r#"{"$serde_json::private::RawValue":"[1]"}"#,
            r#"{"$serde_json::private::RawValue":1}"#,
            r#"[{"$serde_json::private::Number":"1"}]"#,
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        let later = r#"{"a":1,"$serde_json::private::RawValue":"[1]"}"#;
        assert!(parse(later).is_some());
        assert_eq!(parse(later), serde_json::from_str(later).ok());
        assert_eq!(parse("[]").unwrap(), serde_json::json!([]));
        assert_eq!(
            parse(r#" {"a":1,"a":2} "#).unwrap(),
            serde_json::json!({"a": 2})
        );
        for bad in [
            "",
            " ",
            "[",
            "]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{1:2}"#,
            "[1,]",
            "{,}",
            "tru",
            "nul",
            r#"["\u12"]"#,
            "\"\t\"",
            "[1]x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_wherever_it_stands() {
        for b in (0u8..0x20).chain([b'"', b'\\', 0x7f, b'/', b'a']) {
            for at in 0..20 {
                let mut s = "x".repeat(20);
                s.replace_range(at..=at, std::str::from_utf8(&[b]).unwrap());
                let mut out = Vec::new();
                write_str(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "byte {b:#x} at {at}");
            }
        }
    }
}
