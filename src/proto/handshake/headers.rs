//! Header storage and the comma-list syntax shared by requests and responses.

use super::error::{from_httparse, HandshakeError};
use super::{HandshakeLimits, MAX_HEADERS_CAP};

/// Header fields of a parsed head, in arrival order, borrowing the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderList<'a> {
    entries: Vec<(&'a str, &'a [u8])>,
}

impl<'a> HeaderList<'a> {
    pub(crate) fn from_httparse(headers: &[httparse::Header<'a>]) -> Self {
        Self {
            entries: headers.iter().map(|h| (h.name, h.value)).collect(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.entries.iter().copied()
    }

    /// Values of every field called `name` (ASCII case-insensitive, RFC 9110 §5.1).
    pub(crate) fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    pub(crate) fn get_str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub(crate) fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether any field called `name` lists `token` (ASCII case-insensitive),
    /// treating all such fields as one comma-separated list (RFC 9110 §5.3).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(list_elements)
            .any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The UTF-8 elements of every `name` list, trimmed, empty ones skipped.
    ///
    /// Quotes are not special here: the lists this is used for
    /// (`Sec-WebSocket-Protocol`, `Upgrade`) hold tokens, and a token cannot
    /// contain a comma, so every comma separates.
    pub(crate) fn str_elements<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.get_all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    pub(crate) fn extensions<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = Extension<'a>> + 's {
        // Extension parameters may be quoted strings (RFC 6455 §9.1), so
        // commas inside quotes do not separate extensions.
        self.get_all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(quoted_list)
            .map(Extension::parse)
    }
}

/// Elements of a comma-separated list, trimmed of whitespace. Empty elements
/// are skipped: RFC 9110 §5.6.1 says a recipient "MUST accept empty list
/// elements", as in `Connection: , Upgrade`.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Elements of a comma-separated list whose elements may hold quoted
/// strings (commas inside quotes do not separate), trimmed, empty ones skipped.
pub(crate) fn quoted_list(value: &str) -> impl Iterator<Item = &str> {
    split_unquoted(value, b',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// Splits `s` at every ASCII `sep` outside a double-quoted string, so a quoted
/// parameter value may contain the separator.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in r.as_bytes().iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == sep && !quoted {
                // `sep` is ASCII, so `i` is a char boundary.
                rest = Some(&r[i + 1..]);
                return Some(&r[..i]);
            }
        }
        rest = None;
        Some(r)
    })
}

/// One offered or accepted extension from `Sec-WebSocket-Extensions`
/// (RFC 6455 §9.1), such as `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    name: &'a str,
    params: &'a str,
}

impl<'a> Extension<'a> {
    pub(crate) fn parse(element: &'a str) -> Self {
        let (name, params) = element.split_once(';').unwrap_or((element, ""));
        Self {
            name: name.trim(),
            params,
        }
    }

    /// The extension token, e.g. `permessage-deflate`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The parameters in order, as `(name, value)`; `value` is `None` for a
    /// bare parameter and has surrounding double quotes removed (backslash
    /// escapes inside quotes are left as sent).
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        split_unquoted(self.params, b';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                None => (p, None),
            })
    }

    /// The first parameter called `name` (ASCII case-insensitive): `None` if
    /// absent, `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

fn unquote(v: &str) -> &str {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner,
        None => v,
    }
}

/// Scratch slots for httparse, on the stack so a partial parse allocates nothing.
pub(crate) type HeaderSlots<'b> = [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS_CAP];

pub(crate) fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP]
}

/// The part of `buf` handed to httparse: never more than the byte limit, so
/// the work per call is bounded however much the peer sent.
pub(crate) fn window<'b>(buf: &'b [u8], limits: &HandshakeLimits) -> &'b [u8] {
    &buf[..buf.len().min(limits.max_header_bytes)]
}

pub(crate) fn slot_count(limits: &HandshakeLimits) -> usize {
    limits.max_headers.min(MAX_HEADERS_CAP)
}

/// Turns httparse's verdict on `window(buf)` into ours: `Ok(Some(len))` for a
/// complete head, `Ok(None)` to wait for more bytes.
pub(crate) fn head_status(
    status: httparse::Result<usize>,
    buf_len: usize,
    limits: &HandshakeLimits,
) -> Result<Option<usize>, HandshakeError> {
    match status {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        // The window already holds `max_header_bytes` and the head has not
        // ended, so it is longer than allowed: refuse now rather than buffer on.
        Ok(httparse::Status::Partial) if buf_len >= limits.max_header_bytes => {
            Err(HandshakeError::HeadTooLarge {
                limit: limits.max_header_bytes,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(from_httparse(e, slot_count(limits))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(headers: &[(&'static str, &'static [u8])]) -> HeaderList<'static> {
        HeaderList {
            entries: headers.to_vec(),
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let h = list(&[("X-Thing", b"a"), ("x-thing", b"b")]);
        assert_eq!(h.get("X-THING"), Some(&b"a"[..]));
        assert_eq!(h.count("x-Thing"), 2);
        assert_eq!(h.get("missing"), None);
    }

    #[test]
    fn tokens_span_several_fields_and_lists() {
        let h = list(&[
            ("Connection", b"keep-alive"),
            ("connection", b" , UPGRADE ,"),
        ]);
        assert!(h.has_token("Connection", "upgrade"));
        assert!(!h.has_token("Connection", "close"));
        // A token must match whole, not as a substring.
        let h = list(&[("Connection", b"upgraded, keep-upgrade")]);
        assert!(!h.has_token("Connection", "upgrade"));
    }

    #[test]
    fn extensions_with_params() {
        let h = list(&[
            (
                "Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits, x-foo;a=1; b=\"x,y\"",
            ),
            ("Sec-WebSocket-Extensions", b"  x-bar  ,, "),
        ]);
        let exts: Vec<_> = h.extensions("sec-websocket-extensions").collect();
        assert_eq!(exts.len(), 3);
        assert_eq!(exts[0].name(), "permessage-deflate");
        assert_eq!(
            exts[0].params().collect::<Vec<_>>(),
            [("client_max_window_bits", None)]
        );
        assert_eq!(exts[1].name(), "x-foo");
        assert_eq!(
            exts[1].params().collect::<Vec<_>>(),
            [("a", Some("1")), ("b", Some("x,y"))]
        );
        assert_eq!(exts[1].param("B"), Some(Some("x,y")));
        assert_eq!(exts[1].param("c"), None);
        assert_eq!(exts[2].name(), "x-bar");
        assert_eq!(exts[2].params().count(), 0);
    }

    #[test]
    fn split_unquoted_honours_escapes() {
        let parts: Vec<_> = split_unquoted(r#"a="x\",y",b"#, b',').collect();
        assert_eq!(parts, [r#"a="x\",y""#, "b"]);
    }
}
