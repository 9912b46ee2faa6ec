//! JSON helpers: where a member's value lies in the raw text (to pass `data` through byte for byte) and string escaping for what the server writes.
//!
//! The scanner runs only on text simd-json has already validated, so it
//! can be small: it skips values without checking them.

use std::ops::Range;

/// Byte ranges of the raw values of `data` and `id` in one object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spans {
    /// The `data` member's value.
    pub data: Option<Range<usize>>,
    /// The `id` member's value.
    pub id: Option<Range<usize>>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the index after the closing one.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// `i` is at the start of a value; returns the index after it.
fn skip_value(b: &[u8], mut i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_string(b, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            b.len()
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            i
        }
    }
}

/// The spans of `data` and `id` in the object starting at `start` (after
/// whitespace), and the index after the object.
///
/// Keys are compared unescaped, so `"d\u0061ta"` is `data` as it is to the
/// parser. A member written more than once has no span: parsers differ on
/// which one counts (simd-json keeps the first of up to 32 members and the
/// last of more), so the caller takes the parsed value instead of guessing.
pub fn object_spans(b: &[u8], start: usize) -> (Spans, usize) {
    let mut found = Found::default();
    let end = scan_object(b, start, &mut found);
    let spans = Spans {
        data: found.data.filter(|_| found.data_count == 1),
        id: found.id.filter(|_| found.id_count == 1),
    };
    (spans, end)
}

#[derive(Default)]
struct Found {
    data: Option<Range<usize>>,
    data_count: usize,
    id: Option<Range<usize>>,
    id_count: usize,
}

fn scan_object(b: &[u8], start: usize, found: &mut Found) -> usize {
    let mut i = skip_ws(b, start);
    if b.get(i) != Some(&b'{') {
        return skip_value(b, i);
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            Some(b'}') => return i + 1,
            _ => return b.len(),
        }
        let k0 = i;
        i = skip_string(b, i);
        let key = &b[k0 + 1..i.saturating_sub(1).max(k0 + 1)];
        i = skip_ws(b, i);
        if b.get(i) != Some(&b':') {
            return b.len();
        }
        i = skip_ws(b, i + 1);
        let v0 = i;
        i = skip_value(b, i);
        if key_is(key, b"data") {
            found.data.get_or_insert(v0..i);
            found.data_count += 1;
        } else if key_is(key, b"id") {
            found.id.get_or_insert(v0..i);
            found.id_count += 1;
        }
        i = skip_ws(b, i);
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// Whether the raw text of a key (between its quotes, escapes as written)
/// unescapes to `name`, which is ASCII.
fn key_is(raw: &[u8], name: &[u8]) -> bool {
    if !raw.contains(&b'\\') {
        return raw == name;
    }
    let (mut i, mut n) = (0, 0);
    while i < raw.len() {
        let c = if raw[i] == b'\\' {
            let (c, len) = match raw.get(i + 1) {
                Some(b'u') => {
                    let unit = raw
                        .get(i + 2..i + 6)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    match unit {
                        // Anything else is not ASCII, so not in `name`.
                        Some(u) if u < 0x80 => (u as u8, 6),
                        _ => return false,
                    }
                }
                Some(b'b') => (0x08, 2),
                Some(b'f') => (0x0c, 2),
                Some(b'n') => (b'\n', 2),
                Some(b'r') => (b'\r', 2),
                Some(b't') => (b'\t', 2),
                Some(&c) => (c, 2),
                None => return false,
            };
            i += len;
            c
        } else {
            i += 1;
            raw[i - 1]
        };
        if name.get(n) != Some(&c) {
            return false;
        }
        n += 1;
    }
    n == name.len()
}

/// The start of every element of the array starting at `start`.
pub fn array_elements(b: &[u8], start: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = skip_ws(b, start);
    if b.get(i) != Some(&b'[') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None | Some(b']') => return out,
            Some(_) => {}
        }
        out.push(i);
        i = skip_ws(b, skip_value(b, i));
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// Appends `s` as a JSON string, quotes included.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{c:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Appends `["a","b"]`.
pub fn push_str_array<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, s.as_ref());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(s: &str) -> (Option<&str>, Option<&str>) {
        let (sp, _) = object_spans(s.as_bytes(), 0);
        (sp.data.map(|r| &s[r]), sp.id.map(|r| &s[r]))
    }

    #[test]
    fn finds_raw_values_whatever_their_shape() {
        assert_eq!(
            spans(r#"{"type":"publish","data":{"a":[1,"}]"],"b":null} ,"id":7}"#),
            (Some(r#"{"a":[1,"}]"],"b":null}"#), Some("7"))
        );
        assert_eq!(
            spans(r#" { "id" : "x\"y" , "data" : 1.5e3 } "#),
            (Some("1.5e3"), Some(r#""x\"y""#))
        );
        assert_eq!(spans(r#"{"data":"\\"}"#), (Some(r#""\\""#), None));
        assert_eq!(spans(r#"{"data":[] }"#), (Some("[]"), None));
        assert_eq!(spans(r#"{"nodata":true}"#), (None, None));
        assert_eq!(
            spans(r#"{"d\u0061ta":[1], "\u0069d":2}"#),
            (Some("[1]"), Some("2"))
        );
        assert_eq!(
            spans(r#"{"d\u0061t":1,"dat\u0061a":2,"\"id":3}"#),
            (None, None)
        );
    }

    #[test]
    fn a_repeated_member_has_no_span() {
        // The parser decides which one counts; the caller uses its value.
        assert_eq!(spans(r#"{"data":1,"data":2}"#), (None, None));
        assert_eq!(
            spans(r#"{"id":1,"d\u0061ta":0,"i\u0064":2,"data":3}"#),
            (None, None)
        );
    }

    #[test]
    fn lists_array_elements() {
        let s = r#" [ {"a":1} , {"b":[2,3]},4 ] "#;
        let starts = array_elements(s.as_bytes(), 0);
        assert_eq!(starts.len(), 3);
        assert_eq!(&s[starts[1]..starts[1] + 1], "{");
        assert!(array_elements(b"[]", 0).is_empty());
    }

    #[test]
    fn escapes_strings() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é""#);
    }
}
