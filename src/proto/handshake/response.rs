//! Response writers: the 101 that completes an upgrade, rejections, and plain HTTP replies.
//!
//! Each appends to a caller-owned `Vec<u8>` and allocates nothing else, so a
//! connection can reuse one output buffer for its whole life.

use super::{UpgradeKey, WEBSOCKET_VERSION};

/// The reason phrase for `status`, or `""` for codes not listed here (an
/// empty reason phrase is valid, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends the `101 Switching Protocols` response that completes the
/// handshake (RFC 6455 §4.2.2): `Upgrade`, `Connection`,
/// `Sec-WebSocket-Accept`, the selected subprotocol if any, then
/// `extra_headers` in order.
///
/// `protocol` must be one the client offered (see
/// [`Request::select_protocol`](super::Request::select_protocol)): RFC 6455
/// §4.1 obliges the client to fail the connection otherwise.
///
/// # Panics
///
/// If `protocol` or a header name or value contains CR, LF or NUL, or a
/// name is empty or contains `:` or whitespace: written as is, such a value
/// would let its source inject headers or split the response.
pub fn write_switching_protocols(
    dst: &mut Vec<u8>,
    key: &UpgradeKey,
    protocol: Option<&str>,
    extra_headers: &[(&str, &str)],
) {
    dst.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    dst.extend_from_slice(key.accept().as_bytes());
    dst.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        push_header(dst, "Sec-WebSocket-Protocol", protocol);
    }
    for (name, value) in extra_headers {
        push_header(dst, name, value);
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends a rejection: `status`, `Content-Type: text/plain`,
/// `Connection: close` and `reason` plus a newline as the body. A 426 also
/// carries `Upgrade: websocket` (RFC 9110 §15.5.22) and
/// `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2).
///
/// For an error from this module prefer
/// [`HandshakeError::write_response`](super::HandshakeError::write_response),
/// which also adds `Allow` to a 405.
///
/// # Panics
///
/// If `status` is not within 400..=599: a rejection is a client or server error.
pub fn write_rejection(dst: &mut Vec<u8>, status: u16, reason: &str) {
    write_rejection_with(dst, status, reason, &[]);
}

pub(super) fn write_rejection_with(
    dst: &mut Vec<u8>,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
) {
    assert!(
        (400..=599).contains(&status),
        "HTTP status {status} is not an error status"
    );
    write_head(dst, status, "text/plain; charset=utf-8", reason.len() + 1);
    dst.extend_from_slice(b"Connection: close\r\n");
    if status == 426 {
        dst.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: ");
        dst.extend_from_slice(WEBSOCKET_VERSION.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra_headers {
        push_header(dst, name, value);
    }
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(reason.as_bytes());
    dst.push(b'\n');
}

/// Appends a plain HTTP/1.1 response with `Content-Type` (omitted if
/// `content_type` is empty), `Content-Length`, `extra_headers` in order,
/// and `body`.
///
/// No `Connection` header is added: the connection stays open under HTTP/1.1
/// rules unless `extra_headers` says `Connection: close`.
///
/// # Panics
///
/// If `status` is not within 100..=999, if `body` is not empty for a 1xx or
/// 204 status (those carry no body), or if a header name or value is
/// invalid as described for [`write_switching_protocols`].
pub fn write_http_response(
    dst: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    assert!(
        body.is_empty() || (status >= 200 && status != 204),
        "HTTP status {status} carries no body"
    );
    write_head(dst, status, content_type, body.len());
    for (name, value) in extra_headers {
        push_header(dst, name, value);
    }
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(body);
}

/// Status line, `Content-Type` and `Content-Length`, without the blank line.
fn write_head(dst: &mut Vec<u8>, status: u16, content_type: &str, body_len: usize) {
    assert!(
        (100..=999).contains(&status),
        "HTTP status {status} is not three digits"
    );
    dst.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(dst, status.into());
    dst.push(b' ');
    dst.extend_from_slice(reason_phrase(status).as_bytes());
    dst.extend_from_slice(b"\r\n");
    if !content_type.is_empty() {
        push_header(dst, "Content-Type", content_type);
    }
    // RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field
    // in any response with a status code of 1xx (Informational) or 204 (No
    // Content)."
    if status >= 200 && status != 204 {
        dst.extend_from_slice(b"Content-Length: ");
        push_decimal(dst, body_len as u64);
        dst.extend_from_slice(b"\r\n");
    }
}

/// Whether `name` can be written as a header name: visible ASCII, no
/// colon. The one rule both the writer and the callers that must not make
/// it panic use.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Whether `value` can be written as a header value: no CR, LF or NUL,
/// which would split or end the response.
pub fn valid_header_value(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

pub(super) fn push_header(dst: &mut Vec<u8>, name: &str, value: &str) {
    assert!(valid_header_name(name), "invalid header name {name:?}");
    assert!(
        valid_header_value(value),
        "header value for {name} contains CR, LF or NUL"
    );
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

fn push_decimal(dst: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::super::{accept_key, HandshakeError};
    use super::*;

    fn text(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn switching_protocols_carries_accept_and_protocol() {
        let mut out = b"prefix".to_vec();
        let key = UpgradeKey::from_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        write_switching_protocols(&mut out, &key, Some("chat"), &[("X-Shard", "3")]);
        assert_eq!(
            text(&out),
            "prefixHTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             X-Shard: 3\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_without_protocol() {
        let mut out = Vec::new();
        let key = UpgradeKey::from_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        write_switching_protocols(&mut out, &key, None, &[]);
        assert!(!text(&out).contains("Sec-WebSocket-Protocol"));
        assert!(text(&out).ends_with("xOo=\r\n\r\n"));
        assert_eq!(
            key.accept().as_bytes(),
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ==")
        );
    }

    #[test]
    fn rejection_has_body_length_and_close() {
        for status in [400, 403, 404, 405, 429, 431, 503] {
            let mut out = Vec::new();
            write_rejection(&mut out, status, "nope");
            let s = text(&out);
            assert!(
                s.starts_with(&format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status))),
                "{s}"
            );
            assert!(s.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
            assert!(s.contains("\r\nContent-Length: 5\r\n"));
            assert!(s.contains("\r\nConnection: close\r\n"));
            assert!(s.ends_with("\r\n\r\nnope\n"));
            assert!(!s.contains("Sec-WebSocket-Version"));
        }
    }

    #[test]
    fn rejection_426_names_version_and_protocol() {
        let mut out = Vec::new();
        write_rejection(&mut out, 426, "use 13");
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(s.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(s.contains("\r\nUpgrade: websocket\r\n"));
    }

    #[test]
    fn rejection_parses_back_as_http() {
        let mut out = Vec::new();
        write_rejection(&mut out, 599, "odd");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let len = resp.parse(&out).unwrap().unwrap();
        assert_eq!(resp.code, Some(599));
        assert_eq!(&out[len..], b"odd\n");
    }

    #[test]
    fn error_response_adds_allow_for_405() {
        let mut out = Vec::new();
        HandshakeError::MethodNotAllowed.write_response(&mut out);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.contains("\r\nAllow: GET\r\n"));

        out.clear();
        HandshakeError::UnsupportedVersion.write_response(&mut out);
        assert!(text(&out).contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn http_response_for_plain_endpoints() {
        let mut out = Vec::new();
        write_http_response(
            &mut out,
            200,
            "text/plain",
            &[("Cache-Control", "no-store")],
            b"ok",
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\n\r\nok"
        );
        out.clear();
        write_http_response(&mut out, 204, "", &[], b"");
        assert_eq!(text(&out), "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn reason_phrases() {
        for (code, phrase) in [
            (101, "Switching Protocols"),
            (200, "OK"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (413, "Content Too Large"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ] {
            assert_eq!(reason_phrase(code), phrase);
        }
        assert_eq!(reason_phrase(299), "");
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(text(&out), n.to_string());
        }
    }

    #[test]
    #[should_panic(expected = "CR, LF or NUL")]
    fn header_injection_panics() {
        let mut out = Vec::new();
        let key = UpgradeKey::from_key(b"x");
        write_switching_protocols(&mut out, &key, Some("chat\r\nSet-Cookie: a=b"), &[]);
    }

    #[test]
    #[should_panic(expected = "invalid header name")]
    fn bad_header_name_panics() {
        let mut out = Vec::new();
        write_http_response(&mut out, 200, "", &[("X Bad", "v")], b"");
    }

    #[test]
    #[should_panic(expected = "not an error status")]
    fn rejection_with_success_status_panics() {
        write_rejection(&mut Vec::new(), 200, "");
    }

    #[test]
    #[should_panic(expected = "not three digits")]
    fn bad_status_panics() {
        write_http_response(&mut Vec::new(), 1000, "", &[], b"");
    }
}
