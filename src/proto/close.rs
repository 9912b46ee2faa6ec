//! Close status codes and close frame bodies (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use crate::proto::error::ProtocolError;

/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest close reason that fits a control frame next to its 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// A close status code (RFC 6455 §7.4), as sent in the first two bytes of a
/// Close frame's body.
///
/// Any `u16` can be held; [`CloseCode::is_valid_on_wire`] says whether it may
/// appear in a Close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint cannot accept this kind of data (e.g. binary).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Local use only, never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a Close frame. Local use only,
    /// never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data did not match its type (e.g. invalid UTF-8
    /// in a text message).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: the service is overloaded; try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Local use only, never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a Close frame on the wire.
    ///
    /// Valid: 1000–1003 and 1007–1011 (RFC 6455 §7.4.1), 1012–1014
    /// (registered with IANA after the RFC, and sent by real servers, e.g.
    /// [`CloseCode::TRY_AGAIN_LATER`] under overload), 3000–3999 (registered
    /// by libraries and frameworks) and 4000–4999 (private use).
    ///
    /// Invalid: 0–999 (unused), 1004 (reserved), 1005, 1006 and 1015 (which
    /// the RFC says MUST NOT be set in a Close frame), 1016–2999 (reserved for
    /// future RFCs) and 5000 and above.
    #[inline]
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The body of a Close frame that carried a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code; always valid on the wire when it came from a decoder.
    pub code: CloseCode,
    /// The UTF-8 reason, possibly empty; at most [`MAX_CLOSE_REASON`] bytes.
    pub reason: &'a str,
}

impl<'a> CloseFrame<'a> {
    /// Parses the (unmasked) payload of a received Close frame.
    ///
    /// Returns `Ok(None)` for an empty body, which carries no status code.
    ///
    /// # Errors
    /// - [`ProtocolError::InvalidCloseLength`] for a 1-byte body.
    /// - [`ProtocolError::InvalidCloseCode`] for a code that is not
    ///   [valid on the wire](CloseCode::is_valid_on_wire).
    /// - [`ProtocolError::InvalidUtf8`] when the reason is not UTF-8.
    pub fn parse(payload: &'a [u8]) -> Result<Option<Self>, ProtocolError> {
        let (code, reason) = match payload {
            [] => return Ok(None),
            // §5.5.1: "If there is a body, the first two bytes of the body MUST
            // be a 2-byte unsigned integer ... representing a status code".
            [_] => return Err(ProtocolError::InvalidCloseLength),
            [hi, lo, reason @ ..] => (CloseCode(u16::from_be_bytes([*hi, *lo])), reason),
        };
        // §7.4.1 lists the codes an endpoint MUST NOT set; receiving one, or
        // one from an unassigned range, is a protocol error.
        if !code.is_valid_on_wire() {
            return Err(ProtocolError::InvalidCloseCode(code.0));
        }
        // §5.5.1: the body "MAY contain UTF-8-encoded data with value
        // /reason/"; bytes that are not UTF-8 fall under §8.1 (1007). At most
        // 123 bytes, so std's scalar check costs nothing measurable.
        let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Some(CloseFrame { code, reason }))
    }
}

/// Cuts `reason` to at most [`MAX_CLOSE_REASON`] bytes at a char boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    // A UTF-8 code point is at most 4 bytes, so this loop runs at most 3 times.
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_by_range() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let invalid = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in valid {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in invalid {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn parse_empty_body_has_no_code() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
    }

    #[test]
    fn parse_one_byte_body_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::InvalidCloseLength)
        );
    }

    #[test]
    fn parse_code_and_reason() {
        assert_eq!(
            CloseFrame::parse(b"\x03\xe8bye"),
            Ok(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "bye"
            }))
        );
        assert_eq!(
            CloseFrame::parse(b"\x0f\xa0"),
            Ok(Some(CloseFrame {
                code: CloseCode(4000),
                reason: ""
            }))
        );
    }

    #[test]
    fn parse_rejects_codes_not_valid_on_wire() {
        // 1005 (0x03ed) and 999 (0x03e7) must never be sent.
        assert_eq!(
            CloseFrame::parse(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(b"\x03\xe7"),
            Err(ProtocolError::InvalidCloseCode(999))
        );
    }

    #[test]
    fn parse_rejects_invalid_utf8_reason() {
        // CE BA E1 BD B9 CF 83 CE BC CE B5 ED A0 80: "κόσμε" then a surrogate.
        let body = b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80";
        assert_eq!(CloseFrame::parse(body), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn truncate_reason_keeps_char_boundaries() {
        assert_eq!(truncate_reason("short"), "short");
        let exact = "a".repeat(MAX_CLOSE_REASON);
        assert_eq!(truncate_reason(&exact), exact);
        // 122 ASCII bytes then a 3-byte '€' straddling the limit.
        let straddle = format!("{}€", "a".repeat(122));
        assert_eq!(truncate_reason(&straddle), "a".repeat(122));
        let euros = "€".repeat(100);
        let cut = truncate_reason(&euros);
        assert_eq!(cut.len(), 123);
        assert!(cut.chars().all(|c| c == '€'));
    }
}
