//! One churn connection: opened, upgraded and subscribed, then closed with the closing handshake or a reset.

use std::net::IpAddr;
use std::os::fd::RawFd;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde_json::json;
use shardcast::proto::encode::{encode_frame, random_mask};
use shardcast::proto::{Decoded, Decoder, Incoming, Limits, OpCode, Role};

use crate::client::Target;
use crate::scenario::open;

/// Makes closing `fd` send a reset (RST) instead of a FIN, as a client that
/// crashes or loses its network does.
pub fn reset_on_close(fd: RawFd) -> std::io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads exactly `size_of::<linger>()` bytes from a
    // pointer to `l`, which lives across the call; an fd that is not a
    // socket makes it fail with ENOTSOCK, reported as an error.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One upgraded, subscribed connection.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Conn {
    /// Reads until a text message satisfies `pick` (Some(ok)) or the
    /// connection ends.
    async fn read_until(
        &mut self,
        mut pick: impl FnMut(&[u8]) -> Option<bool>,
    ) -> Result<bool, String> {
        let limits = Limits::default();
        loop {
            let mut off = 0;
            loop {
                match self.decoder.decode(&mut self.buf[off..], &limits) {
                    Ok(Decoded::Message {
                        consumed, message, ..
                    }) => {
                        off += consumed;
                        match message {
                            Incoming::Text(t) => {
                                if let Some(ok) = pick(t.as_bytes()) {
                                    self.buf.drain(..off);
                                    return Ok(ok);
                                }
                            }
                            Incoming::Close(_) => return Err("the server closed".into()),
                            _ => {}
                        }
                    }
                    Ok(Decoded::Incomplete { consumed, .. }) => {
                        off += consumed;
                        break;
                    }
                    Err(e) => return Err(format!("protocol error: {e}")),
                }
            }
            self.buf.drain(..off);
            let mut b = std::mem::take(&mut self.buf);
            b.reserve(4096);
            let len = b.len();
            let (r, slice) = self
                .stream
                .read(monoio::buf::IoBufMut::slice_mut(b, len..))
                .await;
            self.buf = slice.into_inner();
            match r {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    async fn send(&mut self, opcode: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(payload.len() + 14);
        encode_frame(&mut f, true, opcode, payload, Some(random_mask()));
        let (r, _) = self.stream.write_all(f).await;
        r.map(drop)
    }

    /// The closing handshake: our close frame, then everything the server
    /// sends until its FIN.
    pub(super) async fn close(mut self) -> Result<(), String> {
        self.send(OpCode::Close, &1000u16.to_be_bytes())
            .await
            .map_err(|e| format!("write close: {e}"))?;
        let mut b = std::mem::take(&mut self.buf);
        loop {
            b.clear();
            b.reserve(256);
            let (r, out) = self.stream.read(b).await;
            b = out;
            match r {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("read after close: {e}")),
            }
        }
    }
}

/// Opens, upgrades and subscribes one connection, waiting for the server's
/// acknowledgement; an error answer or a closed connection is an `Err`.
pub(super) async fn open_and_subscribe(
    target: &Target,
    src: Option<IpAddr>,
    topics: &[u64],
) -> Result<Conn, String> {
    let (stream, leftover) = open(target, src).await?;
    let mut c = Conn {
        stream,
        buf: leftover,
        decoder: Decoder::new(Role::Client),
    };
    let names: Vec<String> = topics.iter().map(|t| format!("churn.{t}")).collect();
    let msg = json!({"type": "subscribe", "topics": names, "id": 1}).to_string();
    c.send(OpCode::Text, msg.as_bytes())
        .await
        .map_err(|e| format!("write subscribe: {e}"))?;
    let ok = c
        .read_until(|m| {
            if memchr::memmem::find(m, b"\"subscribed\"").is_some() {
                Some(true)
            } else if memchr::memmem::find(m, b"\"error\"").is_some() {
                Some(false)
            } else {
                None
            }
        })
        .await?;
    if ok {
        Ok(c)
    } else {
        Err("the server refused the subscribe".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream as StdStream;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_reset_socket_closes_with_rst() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        reset_on_close(c.as_raw_fd()).unwrap();
        drop(c);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(reset_on_close(-1).is_err());
    }
}
