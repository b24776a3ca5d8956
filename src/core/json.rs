//! A JSON writer for `serde_json::Value`s on the hot paths (a call's result, an event's
//! arguments): the same bytes as `serde_json::to_writer`, but strings are scanned for what
//! must be escaped eight bytes at a time rather than one by one (most of a WAMP payload is
//! strings, and most strings need no escaping at all).

use serde_json::Value;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is zero (may flag a byte above a zero one too: only a hint).
const fn has_zero(w: u64) -> bool {
    w.wrapping_sub(LO) & !w & HI != 0
}

/// Whether any of the eight bytes may need escaping: a control character, `"` (0x22) or
/// `\` (0x5c).
const fn may_need_escape(w: u64) -> bool {
    // A byte below 0x20: subtracting 0x20 borrows into its top bit while its own top bit
    // is clear.
    (w.wrapping_sub(LO * 0x20) & !w & HI != 0)
        || has_zero(w ^ (LO * 0x22))
        || has_zero(w ^ (LO * 0x5c))
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
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !may_need_escape(w) {
                i += 8;
                continue;
            }
        }
        // Byte by byte through this chunk (or the tail).
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
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
            i += 1;
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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
