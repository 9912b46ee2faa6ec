//! The WebSocket client on one core: connecting from a chosen source address, the opening handshake, the read loop and a corked outbox.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use shardcast::proto::deflate::Inflater;
use shardcast::proto::encode::{encode_frame, random_mask};
use shardcast::proto::handshake::{ClientHandshake, Parsed};
use shardcast::proto::{Decoded, Decoder, Incoming, Limits, OpCode, Reply, Role};

/// Where to connect: a `ws://host:port/path` URL, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resolved address.
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port`).
    pub host: String,
    /// The request target, e.g. `/` or `/chat?x=1`.
    pub path: String,
    /// Offer permessage-deflate (RFC 7692) and require it: a server that
    /// declines fails the handshake, and compressed messages are inflated.
    pub deflate: bool,
}

impl Target {
    /// Parses and resolves `ws://host[:port][/path]` (port defaults to 80).
    ///
    /// # Errors
    /// For another scheme, a missing host, or a host that does not resolve.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{url}: no IPv4 address"))?;
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
            deflate: false,
        })
    }

    /// Source addresses to spread connections over, for a loopback target:
    /// enough of 127.0.0.2..=127.0.0.251 to put at most [`PORTS_PER_SOURCE`]
    /// connections on each, starting at `base` (a run can start where the
    /// previous run's TIME_WAIT sockets are not). None (the kernel chooses)
    /// for other targets.
    pub fn sources(&self, connections: usize, base: usize) -> Vec<IpAddr> {
        if !self.addr.ip().is_loopback() {
            return Vec::new();
        }
        let n = connections.div_ceil(PORTS_PER_SOURCE).clamp(1, 250);
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + ((base + i) % 250) as u8)))
            .collect()
    }
}

/// A base for [`Target::sources`] that differs from run to run.
pub fn source_base() -> usize {
    fastrand::usize(..250)
}

/// Connections placed on one (source, destination) pair. The default
/// ephemeral range has ~28,000 ports, but `connect()` prefers even ports
/// (the odd half is left for `bind()`), and searching gets slow past about
/// half the range: 10,000 keeps connecting at full speed.
pub const PORTS_PER_SOURCE: usize = 10_000;

/// The source address for global connection `index`.
pub fn source_for(sources: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[(index / PORTS_PER_SOURCE) % sources.len()])
}

/// Opens a TCP connection to `dst`, bound to `src` when given.
///
/// monoio's `connect` cannot bind a source address, so the socket is made
/// with socket2, connected without blocking, handed to monoio and awaited
/// until writable.
///
/// # Errors
/// Socket, bind or connect failures (e.g. `EMFILE`, `ECONNREFUSED`).
pub async fn connect(dst: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    connect_with_rcvbuf(dst, src, None).await
}

/// [`connect`], with the socket's receive buffer fixed at `rcvbuf` bytes
/// (SO_RCVBUF, set before connecting; it also stops the kernel from growing
/// the buffer) when given.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with_rcvbuf(
    dst: SocketAddr,
    src: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    // A reset on connect happens when the kernel reuses a source port whose
    // previous connection (TIME_WAIT here, closing on the server) the
    // server still knows; a fresh port works. Bounded: 3 attempts.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match connect_once(dst, src, rcvbuf).await {
            Err(e) if attempt < 3 && e.kind() == io::ErrorKind::ConnectionReset => continue,
            other => return other,
        }
    }
}

async fn connect_once(
    dst: SocketAddr,
    src: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(ip) = src {
        // Let connect() pick the port for the whole 4-tuple instead of bind()
        // reserving one per source address.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(sock.into())?;
    stream.writable(false).await?;
    if let Some(e) = take_error(stream.as_raw_fd())? {
        return Err(e);
    }
    Ok(stream)
}

fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, a c_int out-value and its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Sends the upgrade request and checks the answer (RFC 6455 §4.1). Returns
/// the bytes that arrived after the response head (frames the server sent
/// right away).
///
/// # Errors
/// I/O errors, EOF, or a response the handshake rejects.
pub async fn handshake(stream: &mut TcpStream, target: &Target) -> io::Result<Vec<u8>> {
    // What browsers offer.
    let offer = [(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    )];
    let extra: &[(&str, &str)] = if target.deflate { &offer } else { &[] };
    let hs = ClientHandshake::new(&target.host, &target.path, &[], extra);
    let (r, _) = stream.write_all(hs.request_bytes().to_vec()).await;
    r?;
    let mut buf = Vec::with_capacity(512);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(512);
        }
        let len = buf.len();
        let cap = buf.capacity();
        let (r, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        if r? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
        match hs.parse_response(&buf) {
            Ok(Parsed::Complete { consumed, .. }) => {
                if target.deflate && !names_deflate(&buf[..consumed]) {
                    return Err(io::Error::other(
                        "handshake: the server declined permessage-deflate",
                    ));
                }
                buf.drain(..consumed);
                return Ok(buf);
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => return Err(io::Error::other(format!("handshake: {e}"))),
        }
    }
}

/// Whether a response head accepts permessage-deflate.
fn names_deflate(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && v.trim_start().starts_with("permessage-deflate")
        })
    })
}

/// The sending side of a connection. Frames are appended to a queue; one
/// writer at a time drains it with one `write` per batch, so everything
/// queued while a write is in flight goes out together (corking).
pub struct Outbox {
    wr: Cell<Option<OwnedWriteHalf<TcpStream>>>,
    queue: RefCell<Vec<u8>>,
    spare: Cell<Vec<u8>>,
    scratch: RefCell<Vec<u8>>,
}

impl Outbox {
    fn new(wr: OwnedWriteHalf<TcpStream>) -> Self {
        Self {
            wr: Cell::new(Some(wr)),
            queue: RefCell::new(Vec::with_capacity(256)),
            spare: Cell::new(Vec::with_capacity(256)),
            scratch: RefCell::new(Vec::with_capacity(256)),
        }
    }

    /// Queues a masked, final frame with `payload`.
    pub fn push(&self, opcode: OpCode, payload: &[u8]) {
        encode_frame(
            &mut self.queue.borrow_mut(),
            true,
            opcode,
            payload,
            Some(random_mask()),
        );
    }

    /// Queues a text frame whose payload `fill` writes into a reused buffer.
    pub fn push_text_with(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut s = self.scratch.borrow_mut();
        s.clear();
        fill(&mut s);
        self.push(OpCode::Text, &s);
    }

    /// Whether frames are waiting to be written.
    pub fn is_pending(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Writes everything queued. When another task is already writing, it
    /// takes the new frames along and this returns at once.
    ///
    /// # Errors
    /// The write's error; the connection is then unusable.
    pub async fn flush(&self) -> io::Result<()> {
        let Some(mut wr) = self.wr.take() else {
            return Ok(());
        };
        let res = loop {
            let q = self.queue.replace(self.spare.take());
            if q.is_empty() {
                self.spare.set(q);
                break Ok(());
            }
            let (r, mut q) = wr.write_all(q).await;
            q.clear();
            self.spare.set(q);
            if let Err(e) = r {
                break Err(e);
            }
        };
        self.wr.set(Some(wr));
        res
    }
}

/// What the message callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop the read loop.
    Stop,
}

/// How a read loop ended.
#[derive(Debug)]
pub enum End {
    /// The callback asked to stop.
    Stopped,
    /// The server closed the WebSocket (with this code) or the TCP connection.
    Closed(Option<u16>),
    /// A protocol or I/O error.
    Error(String),
}

/// The receiving side of a connection: the read half, one buffer reused for
/// every read, and the frame decoder.
pub struct Reader {
    rd: OwnedReadHalf<TcpStream>,
    buf: Vec<u8>,
    decoder: Decoder,
    /// permessage-deflate was negotiated: the inflater and its output.
    inflate: Option<Box<(Inflater, Vec<u8>)>>,
}

/// Bytes every [`Reader`] of the process has read from its socket (frame
/// headers and payloads as they came over the wire, compressed or not).
static RX_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes read by every [`Reader`] so far: over a measurement, the bytes on
/// the wire (above TCP) that the deliveries took.
pub fn rx_bytes() -> u64 {
    RX_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Capacity of a connection's read buffer. Grows only for frames larger than this.
pub const READ_BUF: usize = 4096;

/// Splits an upgraded stream into a [`Reader`] (seeded with the bytes that
/// came after the handshake) and an [`Outbox`]. Also returns the raw fd, so
/// the owning core can shut the socket down to end the read loop. With
/// `deflate` (the handshake negotiated permessage-deflate), compressed
/// messages are inflated before the callback sees them.
pub fn split(stream: TcpStream, leftover: Vec<u8>, deflate: bool) -> (Reader, Outbox, RawFd) {
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let mut buf = leftover;
    buf.reserve(READ_BUF.saturating_sub(buf.len()));
    (
        Reader {
            rd,
            buf,
            decoder: Decoder::new(Role::Client),
            inflate: deflate.then(|| Box::new((Inflater::new(15, false), Vec::new()))),
        },
        Outbox::new(wr),
        fd,
    )
}

/// Shuts both directions of socket `fd` down, which ends a pending read with EOF.
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown on an fd the caller's connection owns; errors (an
    // already closed peer) are irrelevant.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

impl Reader {
    /// Reads and decodes until `on_msg` says stop or the connection ends.
    /// After a stop, calling `run` again continues with the next message.
    ///
    /// `on_msg(outbox, payload, received_ns)` gets every text or binary
    /// message; `received_ns` is taken once per read, on this core, right
    /// after the read completed. Pings are answered, a close is echoed. What
    /// the callback queues in `outbox` is flushed after each read.
    /// Nothing is allocated per message.
    pub async fn run<F>(&mut self, outbox: &Outbox, limits: &Limits, mut on_msg: F) -> End
    where
        F: FnMut(&Outbox, &[u8], u64) -> Flow,
    {
        let deflate_limits;
        let limits = if self.inflate.is_some() {
            deflate_limits = limits.clone().with_allow_rsv1(true);
            &deflate_limits
        } else {
            limits
        };
        let mut now = crate::sys::now_ns();
        loop {
            let mut off = 0;
            let need;
            loop {
                match self.decoder.decode(&mut self.buf[off..], limits) {
                    Ok(Decoded::Message {
                        consumed,
                        message,
                        reply,
                    }) => {
                        off += consumed;
                        match reply {
                            Some(Reply::Pong(p)) => outbox.push(OpCode::Pong, p),
                            Some(Reply::Close(code, _)) => {
                                outbox.push(OpCode::Close, &code.0.to_be_bytes());
                                let _ = outbox.flush().await;
                                let code = match message {
                                    Incoming::Close(Some(f)) => Some(f.code.0),
                                    _ => None,
                                };
                                return End::Closed(code);
                            }
                            None => {}
                        }
                        let payload = match message {
                            Incoming::Text(t) => t.as_bytes(),
                            Incoming::Binary(b) => b,
                            Incoming::Compressed { opcode, payload } => {
                                let Some(z) = self.inflate.as_deref_mut() else {
                                    return End::Error("RSV1 without permessage-deflate".into());
                                };
                                let (inf, out) = (&mut z.0, &mut z.1);
                                let text = opcode == OpCode::Text;
                                if let Err(e) =
                                    inf.inflate(payload, limits.max_message_size, text, out)
                                {
                                    return End::Error(format!("inflate: {e}"));
                                }
                                out.as_slice()
                            }
                            _ => continue,
                        };
                        if on_msg(outbox, payload, now) == Flow::Stop {
                            // Keep what follows, so a later `run` resumes
                            // at the next message.
                            self.buf.drain(..off);
                            return End::Stopped;
                        }
                    }
                    Ok(Decoded::Incomplete { consumed, needed }) => {
                        off += consumed;
                        need = needed;
                        break;
                    }
                    Err(e) => return End::Error(format!("protocol error: {e}")),
                }
            }
            let len = self.buf.len();
            self.buf.copy_within(off..len, 0);
            self.buf.truncate(len - off);
            if outbox.is_pending() {
                if let Err(e) = outbox.flush().await {
                    return End::Error(format!("write: {e}"));
                }
            }
            if self.buf.capacity() < need.max(self.buf.len() + 1) {
                self.buf
                    .reserve(need.max(self.buf.len() + READ_BUF) - self.buf.len());
            }
            let len = self.buf.len();
            let cap = self.buf.capacity();
            let slice: SliceMut<Vec<u8>> = std::mem::take(&mut self.buf).slice_mut(len..cap);
            let (r, slice) = self.rd.read(slice).await;
            self.buf = slice.into_inner();
            now = crate::sys::now_ns();
            match r {
                Ok(0) => return End::Closed(None),
                Ok(n) => {
                    RX_BYTES.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return End::Error(format!("read: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("ws://127.0.0.1:9001/x?y=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.path, "/x?y=1");
        assert_eq!(t.host, "127.0.0.1:9001");
        let t = Target::parse("ws://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        assert!(Target::parse("http://127.0.0.1").is_err());
        assert!(Target::parse("ws:///").is_err());
    }

    #[test]
    fn spreads_sources_for_loopback_only() {
        let t = Target::parse("ws://127.0.0.1:9001").unwrap();
        assert_eq!(t.sources(100, 0).len(), 1);
        let s = t.sources(40_000, 249);
        assert_eq!(s.len(), 4);
        assert_eq!(source_for(&s, 0), Some("127.0.0.251".parse().unwrap()));
        assert_eq!(source_for(&s, 15_000), Some("127.0.0.2".parse().unwrap()));
        assert!(Target::parse("ws://10.0.0.1:1")
            .unwrap()
            .sources(5, 0)
            .is_empty());
        assert_eq!(source_for(&[], 5), None);
    }
}
