//! Protocol violations a peer can commit, one per RFC 6455 rule, each with the close code it calls for.

use crate::proto::close::CloseCode;

/// A rule of RFC 6455 (or a configured limit) that the peer's bytes broke.
///
/// The connection must then be failed (§7.1.7): send a Close frame with
/// [`ProtocolError::close_code`] and stop reading. "Need more bytes" is not an
/// error; see [`Decoded::Incomplete`](crate::proto::decode::Decoded::Incomplete).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client sent an unmasked frame (§5.1: "The server MUST close the
    /// connection upon receiving a frame that is not masked").
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1: "A client MUST close a
    /// connection if it detects a masked frame").
    #[error("server frame is masked")]
    MaskedFrame,
    /// RSV1, RSV2 or RSV3 set without a negotiated extension defining it
    /// (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// An opcode reserved for future use: 0x3–0x7 or 0xB–0xF (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with a payload longer than 125 bytes (§5.5).
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5: control frames "MUST NOT be
    /// fragmented").
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is still in
    /// progress (§5.4).
    #[error("new data message while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A Close frame whose body is exactly 1 byte: too long to be empty, too
    /// short to hold a status code (§5.5.1).
    #[error("close frame body of 1 byte")]
    InvalidCloseLength,
    /// A Close frame carrying a status code that may not be sent (§7.4).
    #[error("close code {0} is not allowed on the wire")]
    InvalidCloseCode(u16),
    /// A text message or close reason that is not UTF-8 (§8.1).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A 64-bit payload length with its most significant bit set (§5.2:
    /// "the most significant bit MUST be 0").
    #[error("64-bit payload length with the most significant bit set")]
    InvalidLength,
    /// A frame announcing more payload than
    /// [`Limits::max_frame_size`](crate::proto::decode::Limits::max_frame_size).
    #[error("frame larger than the configured maximum")]
    FrameTooLarge,
    /// A message (all its fragments) larger than
    /// [`Limits::max_message_size`](crate::proto::decode::Limits::max_message_size).
    #[error("message larger than the configured maximum")]
    MessageTooLarge,
    /// Bytes arrived after the peer's Close frame (§5.5.1: "The application
    /// MUST NOT send any more data frames after sending a Close frame").
    #[error("data received after a close frame")]
    ReceivedAfterClose,
}

impl ProtocolError {
    /// The status code to send in the Close frame that fails the connection:
    /// 1007 for invalid UTF-8 (§8.1), 1009 for exceeded limits (§7.4.1),
    /// 1002 for everything else.
    ///
    /// For [`ProtocolError::ReceivedAfterClose`] a Close frame has usually
    /// been sent already; the caller should then just drop the connection.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::UnmaskedFrame
            | ProtocolError::MaskedFrame
            | ProtocolError::ReservedBits
            | ProtocolError::ReservedOpcode(_)
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::InvalidCloseLength
            | ProtocolError::InvalidCloseCode(_)
            | ProtocolError::InvalidLength
            | ProtocolError::ReceivedAfterClose => CloseCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_rfc() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(ProtocolError::FrameTooLarge.close_code(), CloseCode(1009));
        assert_eq!(ProtocolError::MessageTooLarge.close_code(), CloseCode(1009));
        for e in [
            ProtocolError::UnmaskedFrame,
            ProtocolError::MaskedFrame,
            ProtocolError::ReservedBits,
            ProtocolError::ReservedOpcode(3),
            ProtocolError::ControlFrameTooLong,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::InvalidCloseLength,
            ProtocolError::InvalidCloseCode(1005),
            ProtocolError::InvalidLength,
            ProtocolError::ReceivedAfterClose,
        ] {
            assert_eq!(e.close_code(), CloseCode(1002), "{e}");
        }
    }

    #[test]
    fn stays_small() {
        // Returned from every decode call; must not bloat the Result.
        assert!(std::mem::size_of::<ProtocolError>() <= 4);
    }
}
