//! The frame decoder: bytes in, unmasked in place; whole messages, the replies they call for, "need more bytes" or a protocol error out.
//!
//! One file although long: the decoder is one state machine whose steps
//! share its invariants (its tests live in `decode/tests.rs`).
//!
//! # The caller's contract
//!
//! The caller keeps one buffer of received bytes per connection and calls
//! [`Decoder::decode`] on it until it returns [`Decoded::Incomplete`]:
//!
//! ```
//! use shardcast::proto::decode::{Decoded, Decoder, Limits, Incoming, Role};
//!
//! let limits = Limits::default();
//! let mut decoder = Decoder::new(Role::Server);
//! // RFC 6455 §5.7: a masked "Hello", then the first byte of another frame.
//! let mut buf = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x81];
//! loop {
//!     match decoder.decode(&mut buf, &limits) {
//!         Ok(Decoded::Message { consumed, message, reply }) => {
//!             assert_eq!(message, Incoming::Text("Hello"));
//!             assert!(reply.is_none()); // a Ping or Close would need an answer
//!             buf.drain(..consumed);
//!         }
//!         Ok(Decoded::Incomplete { consumed, needed }) => {
//!             buf.drain(..consumed);
//!             assert_eq!((buf.len(), needed), (1, 2));
//!             break; // read more, at least `needed - buf.len()` bytes
//!         }
//!         Err(e) => panic!("fail the connection with close code {}", e.close_code()),
//!     }
//! }
//! ```
//!
//! Bytes the decoder has looked at may have been unmasked in place: after
//! `Incomplete { consumed, .. }` the next call must get `input[consumed..]`
//! exactly as this call left it, followed by the new bytes. The decoder
//! remembers how far it unmasked and validated the frame at the front, so no
//! byte is unmasked twice and invalid UTF-8 fails as soon as it arrives.

use crate::proto::close::{CloseCode, CloseFrame};
use crate::proto::error::ProtocolError;
use crate::proto::frame::OpCode;
use crate::proto::mask;
use crate::proto::utf8::{self, Utf8Validator};

/// Which end of the connection the decoder is on; it fixes which frames
/// must be masked (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding a client's frames, which must all be masked.
    Server,
    /// Decoding a server's frames, which must not be masked.
    Client,
}

/// The default for both [`Limits::max_frame_size`] and
/// [`Limits::max_message_size`]: 16 MiB.
pub const DEFAULT_MAX_SIZE: usize = 16 << 20;

/// Size limits and negotiated extensions, passed to every
/// [`Decoder::decode`] call (one `Limits` per core, not per connection).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// The largest payload one data frame may announce; larger announcements
    /// fail with [`ProtocolError::FrameTooLarge`] (close code 1009) as soon
    /// as the header is read. Control frames are bounded at 125 bytes by
    /// the RFC instead. Default: 16 MiB.
    pub max_frame_size: usize,
    /// The largest data message, summed over its fragments; beyond it,
    /// [`ProtocolError::MessageTooLarge`] (1009) as soon as the header of the
    /// fragment that would cross it is read. Default: 16 MiB.
    pub max_message_size: usize,
    /// RSV1 is allowed on the first frame of a data message, because
    /// permessage-deflate (RFC 7692) was negotiated; such messages come out
    /// as [`Incoming::Compressed`]. Default: false.
    pub allow_rsv1: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_SIZE,
            max_message_size: DEFAULT_MAX_SIZE,
            allow_rsv1: false,
        }
    }
}

impl Limits {
    /// The defaults: 16 MiB frames and messages, no RSV1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Limits::max_frame_size`]. Default: 16 MiB.
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Limits::max_message_size`]. Default: 16 MiB.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Limits::allow_rsv1`]. Default: false.
    pub fn with_allow_rsv1(mut self, allow: bool) -> Self {
        self.allow_rsv1 = allow;
        self
    }
}

/// A decoded message. Borrows the caller's input (single-frame messages and
/// control frames: no copy) or the decoder's reassembly buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; the [`Reply::Pong`] owed comes with it.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's Close: `None` when it carried no status code. The
    /// [`Reply::Close`] owed comes with it, and the decoder is then
    /// [closed](Decoder::is_closed).
    Close(Option<CloseFrame<'a>>),
    /// Only with [`Limits::allow_rsv1`]: a data message whose first frame had
    /// RSV1 set, i.e. compressed with permessage-deflate (RFC 7692 §6). The
    /// payload is still compressed, so for `Text` UTF-8 has not been checked:
    /// the caller inflates it, and fails the connection with 1007 if the text
    /// is invalid. The size limits applied to the compressed bytes.
    Compressed {
        /// [`OpCode::Text`] or [`OpCode::Binary`].
        opcode: OpCode,
        /// The compressed payload, all fragments joined.
        payload: &'a [u8],
    },
}

impl Incoming<'_> {
    /// Copies the message out of the borrowed input, e.g. to keep it past
    /// the next [`Decoder::decode`] call or send it to another thread.
    pub fn to_owned_incoming(&self) -> OwnedIncoming {
        match *self {
            Incoming::Text(t) => OwnedIncoming::Text(t.to_owned()),
            Incoming::Binary(b) => OwnedIncoming::Binary(b.to_vec()),
            Incoming::Ping(b) => OwnedIncoming::Ping(b.to_vec()),
            Incoming::Pong(b) => OwnedIncoming::Pong(b.to_vec()),
            Incoming::Close(c) => OwnedIncoming::Close(c.map(|c| (c.code, c.reason.to_owned()))),
            Incoming::Compressed { opcode, payload } => OwnedIncoming::Compressed {
                opcode,
                payload: payload.to_vec(),
            },
        }
    }
}

/// A [`Incoming`] that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedIncoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame's status code and reason, if it carried a code.
    Close(Option<(CloseCode, String)>),
    /// A compressed data message (see [`Incoming::Compressed`]).
    Compressed {
        /// [`OpCode::Text`] or [`OpCode::Binary`].
        opcode: OpCode,
        /// The compressed payload.
        payload: Vec<u8>,
    },
}

impl From<Incoming<'_>> for OwnedIncoming {
    fn from(m: Incoming<'_>) -> Self {
        m.to_owned_incoming()
    }
}

/// What the peer is owed in answer to a frame; the caller encodes and sends
/// it (e.g. with [`PreparedFrame`](crate::proto::frame::PreparedFrame)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
    /// frame in response"; it "must have identical 'Application data'".
    Pong(&'a [u8]),
    /// §5.5.1: "If an endpoint receives a Close frame and did not previously
    /// send a Close frame, the endpoint MUST send a Close frame in response";
    /// this echoes the received code and reason ([`CloseCode::NORMAL`] and ""
    /// when it had no code).
    Close(CloseCode, &'a str),
}

/// The outcome of a successful [`Decoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More bytes are needed. The first `consumed` bytes of the input are
    /// done with (e.g. non-final fragments absorbed into the decoder): drop
    /// them and call again with the rest, unchanged, plus new bytes.
    /// `needed` is how many bytes that next input must hold for progress:
    /// the whole frame once its header is known, else as much of the header
    /// as is known (2 when nothing is), so the caller can reserve exactly.
    /// It is 0 only when the decoder is closed and wants nothing more.
    Incomplete {
        /// Bytes at the front of the input the caller can drop.
        consumed: usize,
        /// Bytes the next call's input must hold to make progress.
        needed: usize,
    },
    /// A whole message or control frame.
    Message {
        /// Bytes at the front of the input this message (and any fragments
        /// absorbed before it) took; drop them before the next call.
        consumed: usize,
        /// The message.
        message: Incoming<'a>,
        /// The answer the peer is owed, if any.
        reply: Option<Reply<'a>>,
    },
}

/// The state of a fragmented message: only allocated while one is in
/// progress, so idle connections hold no buffer.
#[derive(Debug)]
struct Reassembly {
    /// The first frame's opcode: Text or Binary.
    opcode: OpCode,
    /// The first frame had RSV1 (permessage-deflate).
    compressed: bool,
    /// The whole message was handed out; the buffer is freed on the next
    /// call, once the borrow has ended.
    delivered: bool,
    /// Some fragment was validated partly by an earlier call, as its bytes
    /// arrived; the finished text is then validated once more as a whole,
    /// so that what is handed out as `str` never depends on the caller
    /// having kept its side of the contract.
    recheck: bool,
    /// The unmasked payload of the fragments so far.
    payload: Vec<u8>,
    /// UTF-8 state across fragment boundaries (Text only).
    utf8: Utf8Validator,
}

/// Per-connection decode state: 24 bytes while no fragmented message is in
/// progress (the reassembly buffer is boxed and freed after the message).
///
/// After an error the connection must be failed; the decoder is reset to
/// the start of a message, and further calls stay memory-safe and panic-free
/// but their results mean nothing.
#[derive(Debug)]
pub struct Decoder {
    /// Present only while a fragmented message is being reassembled.
    reassembly: Option<Box<Reassembly>>,
    /// Payload bytes of the frame at the front of the input that an earlier
    /// call already unmasked (and, for text, validated) before returning
    /// `Incomplete`.
    progress: usize,
    role: Role,
    /// A Close frame was received.
    closed: bool,
    /// The last `tail` bytes of `progress` start a UTF-8 code point that
    /// has not finished arriving; they are validated again with the bytes
    /// that complete it. Used for the first frame of a text message, whose
    /// validator state lives here rather than in a `Reassembly`.
    tail: u8,
}

/// What one frame at the front of the input came to, as offsets, so that
/// the borrows handed out are created once, after the loop.
enum Step {
    Incomplete {
        needed: usize,
    },
    /// A non-final fragment of `len` bytes, now copied into the decoder.
    Absorbed {
        len: usize,
    },
    /// A frame of `len` bytes completing a message.
    Done {
        len: usize,
        out: Out,
    },
}

/// Where a finished message lies; `head` is its frame's header length.
enum Out {
    Text { head: usize },
    Binary { head: usize },
    Compressed { opcode: OpCode, head: usize },
    Control { opcode: OpCode, head: usize },
    Reassembled,
}

impl Decoder {
    /// A decoder for one connection, on the `role` side of it.
    pub fn new(role: Role) -> Self {
        Decoder {
            reassembly: None,
            progress: 0,
            role,
            closed: false,
            tail: 0,
        }
    }

    /// Which side of the connection this decoder is on.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the peer's Close frame was received. From then on
    /// [`Decoder::decode`] returns `Incomplete { consumed: 0, needed: 0 }`
    /// for empty input and [`ProtocolError::ReceivedAfterClose`] for any
    /// bytes.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a fragmented message is in progress (its reassembly buffer
    /// is allocated).
    pub fn in_fragmented_message(&self) -> bool {
        self.reassembly.as_ref().is_some_and(|r| !r.delivered)
    }

    /// Bytes the decoder holds for a fragmented message in progress (its
    /// reassembly buffer's capacity); 0 between messages.
    pub fn reassembly_capacity(&self) -> usize {
        self.reassembly
            .as_ref()
            .filter(|r| !r.delivered)
            .map_or(0, |r| r.payload.capacity())
    }

    /// Decodes the next message from `input`, unmasking it in place.
    ///
    /// Absorbs non-final fragments (copying their payload into the decoder)
    /// until a whole message or a control frame is available, or `input`
    /// runs out. Control frames between fragments come out as they arrive.
    /// Single-frame messages and control frames borrow `input`; fragmented
    /// messages borrow the decoder, whose buffer is freed on the next call.
    ///
    /// Text is validated as it arrives, including the available part of a
    /// frame whose payload is incomplete, so invalid UTF-8 fails without
    /// waiting for the end of the frame or message. Size limits are checked
    /// from each header before any payload is waited for or allocated.
    ///
    /// See the [module documentation](self) for the caller's contract.
    ///
    /// # Errors
    /// The [`ProtocolError`] for the first rule the input breaks; fail the
    /// connection with its [close code](ProtocolError::close_code).
    #[inline]
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Decoded<'a>, ProtocolError> {
        if self.reassembly.as_ref().is_some_and(|r| r.delivered) {
            self.reassembly = None;
        }
        if self.closed {
            // §5.5.1: "The application MUST NOT send any more data frames
            // after sending a Close frame."
            return if input.is_empty() {
                Ok(Decoded::Incomplete {
                    consumed: 0,
                    needed: 0,
                })
            } else {
                Err(ProtocolError::ReceivedAfterClose)
            };
        }
        if let Some((head, len, key)) = self.single_frame(input, limits) {
            // The common case, decided from the header alone: a whole
            // single-frame Text or Binary message, no copy.
            let is_text = input[0] == 0x81;
            let payload = &mut input[head..len];
            unmask_whole(payload, key, is_text)?;
            let payload: &'a [u8] = payload;
            let message = if is_text {
                // SAFETY: just checked: all ASCII per `mask::unmask_text`, or
                // accepted by `utf8::validate`.
                Incoming::Text(unsafe { str_unchecked(payload) })
            } else {
                Incoming::Binary(payload)
            };
            return Ok(Decoded::Message {
                consumed: len,
                message,
                reply: None,
            });
        }
        let mut consumed = 0;
        let (len, out) = loop {
            match self.step(&mut input[consumed..], limits) {
                Ok(Step::Done { len, out }) => break (len, out),
                Ok(Step::Absorbed { len }) => consumed += len,
                Ok(Step::Incomplete { needed }) => {
                    return Ok(Decoded::Incomplete { consumed, needed })
                }
                Err(e) => return Err(self.fail(e)),
            }
        };
        let input: &'a [u8] = input;
        let frame = &input[consumed..consumed + len];
        consumed += len;
        let (message, reply) = match out {
            Out::Text { head } => {
                // SAFETY: `step` returns `Out::Text` only after checking this
                // whole payload, in this call: all ASCII per
                // `mask::unmask_text`, or accepted by `utf8::validate`.
                let text = unsafe { str_unchecked(&frame[head..]) };
                (Incoming::Text(text), None)
            }
            Out::Binary { head } => (Incoming::Binary(&frame[head..]), None),
            Out::Compressed { opcode, head } => (
                Incoming::Compressed {
                    opcode,
                    payload: &frame[head..],
                },
                None,
            ),
            Out::Control { opcode, head } => {
                let payload = &frame[head..];
                match opcode {
                    OpCode::Ping => (Incoming::Ping(payload), Some(Reply::Pong(payload))),
                    OpCode::Pong => (Incoming::Pong(payload), None),
                    _ => match CloseFrame::parse(payload) {
                        Ok(close) => {
                            self.closed = true;
                            // A message cut short by the Close is dropped.
                            self.reassembly = None;
                            let reply = match close {
                                Some(c) => Reply::Close(c.code, c.reason),
                                None => Reply::Close(CloseCode::NORMAL, ""),
                            };
                            (Incoming::Close(close), Some(reply))
                        }
                        Err(e) => return Err(self.fail(e)),
                    },
                }
            }
            Out::Reassembled => {
                let r = self
                    .reassembly
                    .as_deref()
                    .expect("a reassembled message has its buffer");
                let message = if r.compressed {
                    Incoming::Compressed {
                        opcode: r.opcode,
                        payload: &r.payload,
                    }
                } else if r.opcode == OpCode::Text {
                    // SAFETY: each fragment was fed to `r.utf8` in the call
                    // that copied it into `r.payload`, and `finish` confirmed
                    // the message ends on a code point; or, if any fragment
                    // was partly fed by an earlier call (`r.recheck`),
                    // `utf8::validate` accepted the whole payload.
                    Incoming::Text(unsafe { str_unchecked(&r.payload) })
                } else {
                    Incoming::Binary(&r.payload)
                };
                (message, None)
            }
        };
        Ok(Decoded::Message {
            consumed,
            message,
            reply,
        })
    }

    /// Recognises the common frame from its header: a final, RSV-free Text or
    /// Binary frame with a 7- or 16-bit length, masked as the role requires,
    /// wholly in `input`, within the limits, with no fragmented message or
    /// partial frame in progress. Returns the header length, the frame length
    /// and the masking key. Anything else takes the general path, which
    /// enforces every rule. Called once the decoder is known not closed.
    #[inline(always)]
    fn single_frame(
        &self,
        input: &[u8],
        limits: &Limits,
    ) -> Option<(usize, usize, Option<[u8; 4]>)> {
        if self.reassembly.is_some() || self.progress != 0 {
            return None;
        }
        let [b0, b1, ..] = *input else {
            return None;
        };
        // FIN, no RSV bits, opcode Text or Binary.
        if b0 != 0x81 && b0 != 0x82 {
            return None;
        }
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return None;
        }
        let (n, mut head) = match b1 & 0x7F {
            127 => return None,
            126 => (
                u16::from_be_bytes([*input.get(2)?, *input.get(3)?]) as usize,
                4,
            ),
            n => (n as usize, 2),
        };
        if masked {
            head += 4;
        }
        let len = head + n;
        if input.len() < len || n > limits.max_frame_size || n > limits.max_message_size {
            return None;
        }
        let key = if masked {
            Some([
                input[head - 4],
                input[head - 3],
                input[head - 2],
                input[head - 1],
            ])
        } else {
            None
        };
        Some((head, len, key))
    }

    /// Resets to the start of a message and passes `e` on.
    #[cold]
    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        self.reassembly = None;
        self.progress = 0;
        self.tail = 0;
        e
    }

    /// Decodes the frame at the front of `buf`.
    #[inline(always)]
    fn step(&mut self, buf: &mut [u8], limits: &Limits) -> Result<Step, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(Step::Incomplete { needed: 2 });
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let Some(opcode) = OpCode::from_u8(b0 & 0x0F) else {
            // §5.2: "If an unknown opcode is received, the receiving endpoint
            // MUST _Fail the WebSocket Connection_."
            return Err(ProtocolError::ReservedOpcode(b0 & 0x0F));
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            // §5.1: "The server MUST close the connection upon receiving a
            // frame that is not masked."
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            // §5.1: "A client MUST close a connection if it detects a masked
            // frame."
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            // §5.2: RSV bits "MUST be 0 unless an extension is negotiated that
            // defines meanings for non-zero values"; none does for control
            // frames (RFC 7692 §6, see below).
            if rsv != 0 {
                return Err(ProtocolError::ReservedBits);
            }
            // §5.5: "All control frames MUST have a payload length of 125
            // bytes or less and MUST NOT be fragmented."
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        } else {
            // §5.2 as above. RFC 7692 §6 forbids RSV1 on "control frames and
            // non-first fragments of a data message. An endpoint receiving
            // such a frame MUST _Fail the WebSocket Connection_."
            let rsv1_allowed = limits.allow_rsv1 && opcode != OpCode::Continuation;
            if rsv & 0b011 != 0 || (rsv & 0b100 != 0 && !rsv1_allowed) {
                return Err(ProtocolError::ReservedBits);
            }
            // §5.4: a fragmented message is one Text/Binary frame without FIN,
            // then continuations, the last with FIN; messages don't interleave.
            match (opcode, self.reassembly.is_some()) {
                (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
        }

        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < head {
            // §5.2: in the 64-bit form "the most significant bit MUST be 0";
            // fail on the first length byte rather than wait for the rest.
            if len7 == 127 && buf.get(2).is_some_and(|b| b & 0x80 != 0) {
                return Err(ProtocolError::InvalidLength);
            }
            let payload = if ext == 0 { len7 as usize } else { 0 };
            return Ok(Step::Incomplete {
                needed: head + payload,
            });
        }
        let payload_len = match len7 {
            126 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
            127 => {
                let len = u64::from_be_bytes([
                    buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
                ]);
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                len
            }
            n => n as u64,
        };
        let key = masked.then(|| [buf[head - 4], buf[head - 3], buf[head - 2], buf[head - 1]]);
        let avail = buf.len() - head;

        if opcode.is_control() {
            // At most 125 bytes: no need to work on a partial payload.
            let n = payload_len as usize;
            if avail < n {
                return Ok(Step::Incomplete { needed: head + n });
            }
            if let Some(key) = key {
                mask::apply_mask(&mut buf[head..head + n], key, 0);
            }
            return Ok(Step::Done {
                len: head + n,
                out: Out::Control { opcode, head },
            });
        }

        // The limits, from the header alone: before waiting for the payload
        // or allocating for it.
        if payload_len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge);
        }
        let n = payload_len as usize;
        let so_far = self.reassembly.as_ref().map_or(0, |r| r.payload.len());
        if n > limits.max_message_size.saturating_sub(so_far) {
            return Err(ProtocolError::MessageTooLarge);
        }
        let (text, compressed) = match self.reassembly.as_deref() {
            Some(r) => (r.opcode == OpCode::Text && !r.compressed, r.compressed),
            None => {
                let compressed = rsv & 0b100 != 0;
                (opcode == OpCode::Text && !compressed, compressed)
            }
        };
        if avail < n {
            self.absorb_prefix(&mut buf[head..], key, text)?;
            return Ok(Step::Incomplete {
                needed: head.saturating_add(n),
            });
        }

        let len = head + n;
        let payload = &mut buf[head..len];
        // Normally 0; the part of this frame an earlier call unmasked.
        let done = std::mem::take(&mut self.progress).min(n);
        let tail = (std::mem::take(&mut self.tail) as usize).min(done);
        let Some(r) = self.reassembly.as_deref_mut() else {
            if fin {
                // A single-frame message, the common case: no copy.
                if done == 0 {
                    unmask_whole(payload, key, text)?;
                } else {
                    if let Some(key) = key {
                        mask::apply_mask(&mut payload[done..], key, done);
                    }
                    // The prefix was validated when it arrived (to fail
                    // fast), but by an earlier call: a caller breaking the
                    // contract could have changed it since, and the `str`
                    // handed out must be valid regardless. So validate the
                    // whole payload, a cheap pass over bytes still in cache.
                    if text && !utf8::validate(payload) {
                        return Err(ProtocolError::InvalidUtf8);
                    }
                }
                let out = if compressed {
                    Out::Compressed { opcode, head }
                } else if text {
                    Out::Text { head }
                } else {
                    Out::Binary { head }
                };
                return Ok(Step::Done { len, out });
            }
            // The first fragment of a fragmented message.
            if let Some(key) = key {
                mask::apply_mask(&mut payload[done..], key, done);
            }
            let mut validator = Utf8Validator::new();
            if text {
                // §8.1, as early as possible: the first fragment is checked
                // now, not when the message ends. Bytes before `done - tail`
                // were checked as they arrived and end on a code point.
                validator
                    .feed(&payload[done - tail..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.reassembly = Some(Box::new(Reassembly {
                opcode,
                compressed,
                delivered: false,
                recheck: done > 0,
                payload: payload.to_vec(),
                utf8: validator,
            }));
            return Ok(Step::Absorbed { len });
        };
        // A continuation of the fragmented message.
        if let Some(key) = key {
            mask::apply_mask(&mut payload[done..], key, done);
        }
        r.recheck |= done > 0;
        if text {
            r.utf8
                .feed(&payload[done..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if fin {
                r.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        r.payload.extend_from_slice(payload);
        if fin && text && r.recheck && !utf8::validate(&r.payload) {
            return Err(ProtocolError::InvalidUtf8);
        }
        if fin {
            r.delivered = true;
            Ok(Step::Done {
                len,
                out: Out::Reassembled,
            })
        } else {
            Ok(Step::Absorbed { len })
        }
    }

    /// Unmasks and validates the part of a data frame's payload that has
    /// arrived (`prefix`, shorter than the payload) beyond what earlier calls
    /// did, and records how far it got.
    #[cold]
    fn absorb_prefix(
        &mut self,
        prefix: &mut [u8],
        key: Option<[u8; 4]>,
        text: bool,
    ) -> Result<(), ProtocolError> {
        let avail = prefix.len();
        let done = self.progress.min(avail);
        let fresh = &mut prefix[done..];
        let ascii = match key {
            Some(key) if text => mask::unmask_text(fresh, key, done),
            Some(key) => {
                mask::apply_mask(fresh, key, done);
                false
            }
            None => false,
        };
        if text {
            match self.reassembly.as_deref_mut() {
                Some(r) => r.utf8.feed(fresh).map_err(|_| ProtocolError::InvalidUtf8)?,
                // ASCII after a complete code point needs no validator.
                None if ascii && self.tail == 0 => {}
                None => {
                    let tail = (self.tail as usize).min(done);
                    self.tail = unfinished_tail(&prefix[done - tail..])?;
                }
            }
        }
        self.progress = avail;
        Ok(())
    }
}

/// Unmasks a whole payload in place and, for text, checks it is UTF-8.
#[inline(always)]
fn unmask_whole(payload: &mut [u8], key: Option<[u8; 4]>, text: bool) -> Result<(), ProtocolError> {
    let valid = match key {
        // The fused pass reports all-ASCII, so the UTF-8 validator only runs
        // on text that is not.
        Some(key) if text => mask::unmask_text(payload, key, 0) || utf8::validate(payload),
        Some(key) => {
            mask::apply_mask(payload, key, 0);
            true
        }
        None => !text || utf8::validate(payload),
    };
    if valid {
        Ok(())
    } else {
        // §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but
        // finds that the byte stream is not, in fact, a valid UTF-8 stream,
        // that endpoint MUST _Fail the WebSocket Connection_."
        Err(ProtocolError::InvalidUtf8)
    }
}

/// Validates `bytes` as the start of UTF-8 text and returns how many bytes
/// at its end begin a code point that is not complete yet (0 to 3).
fn unfinished_tail(bytes: &[u8]) -> Result<u8, ProtocolError> {
    let mut validator = Utf8Validator::new();
    validator
        .feed(bytes)
        .map_err(|_| ProtocolError::InvalidUtf8)?;
    if validator.is_complete() {
        return Ok(0);
    }
    // Everything validated except an unfinished code point at the end: it
    // starts at the last byte that is not a continuation byte (10xxxxxx),
    // at most 3 bytes back.
    bytes
        .iter()
        .rev()
        .take(3)
        .position(|&b| b & 0xC0 != 0x80)
        .map(|i| i as u8 + 1)
        .ok_or(ProtocolError::InvalidUtf8)
}

/// Views bytes already checked to be UTF-8 as a `str`, without checking
/// them again (the point of the fused unmask + ASCII pass).
///
/// # Safety
/// `bytes` must be valid UTF-8.
#[inline(always)]
unsafe fn str_unchecked(bytes: &[u8]) -> &str {
    // Tests, proptests and the fuzz target run with debug assertions, so
    // every path that reaches here is re-checked there.
    debug_assert!(
        std::str::from_utf8(bytes).is_ok(),
        "unchecked text is not UTF-8"
    );
    // SAFETY: guaranteed by the caller.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

#[cfg(test)]
mod tests;
