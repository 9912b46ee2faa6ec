//! One open connection: the read loop (frames through the sans-IO decoder, heartbeat) and the writer task draining the queue.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use shardcast::proto::encode::{encode_frame, random_mask};
use shardcast::proto::{CloseCode, Decoded, Decoder, Incoming, Limits, OpCode, Reply, Role};

use crate::error::ConnectionError;
use crate::shared::Shared;
use crate::transport::{Io, Opened};

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The server sent a Close frame.
    ServerClosed { code: u16, text: String },
    /// I/O error, protocol error or heartbeat timeout.
    Failed(ConnectionError),
    /// The client asked to close.
    ClientClosed,
}

/// Bytes of queued messages the writer encodes into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a closing handshake may take, either side starting it.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    // RFC 6455 §5.3: "The masking key is a 32-bit value chosen at random by
    // the client" for every frame it sends.
    encode_frame(&mut out, true, opcode, payload, Some(random_mask()));
    out
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Close, &payload)
}

/// Runs an open connection until it ends. `first` (auth, resubscribe) is
/// written first, in order, before anything queued.
pub(crate) async fn run(
    opened: Opened,
    shared: &Arc<Shared>,
    first: Vec<String>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let (mut rd, wr) = tokio::io::split(opened.stream);
    let (ctrl, ctrl_rx) = unbounded_channel();
    for text in first {
        shared.metrics.sent(1, text.len());
        let _ = ctrl.send(frame(OpCode::Text, text.as_bytes()));
    }
    let (cancel_tx, cancel) = watch::channel(false);
    let mut writer = tokio::spawn(writer(wr, shared.clone(), ctrl_rx, cancel));
    shared.wake_writer.notify_one();

    let end = read_loop(
        &mut rd,
        opened.leftover,
        shared,
        &ctrl,
        &mut writer,
        shutdown,
    )
    .await;
    drop(ctrl);
    if !matches!(end, End::Failed(_)) && !writer.is_finished() {
        // Let the writer flush a Close; a dead connection gets no grace.
        let _ = timeout(CLOSE_WAIT, &mut writer).await;
    }
    // The writer returns at once when cancelled, requeueing what it had not
    // written; the abort is only a backstop.
    let _ = cancel_tx.send(true);
    if !writer.is_finished() {
        let _ = timeout(CLOSE_WAIT, &mut writer).await;
    }
    writer.abort();
    end
}

async fn read_loop(
    rd: &mut tokio::io::ReadHalf<Box<dyn Io>>,
    mut buf: Vec<u8>,
    shared: &Shared,
    ctrl: &UnboundedSender<Vec<u8>>,
    writer: &mut tokio::task::JoinHandle<io::Result<()>>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let limits = Limits::default()
        .with_max_frame_size(shared.cfg.max_message_size)
        .with_max_message_size(shared.cfg.max_message_size);
    let mut decoder = Decoder::new(Role::Client);
    let heartbeat = shared.cfg.heartbeat;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut next_ping = heartbeat.map_or(far, |h| Instant::now() + h.interval);
    // The outstanding ping: its sequence number and when it was sent.
    let mut awaiting: Option<(u64, Instant)> = None;
    let mut seq = 0u64;
    let mut closing: Option<Instant> = None;
    loop {
        let mut off = 0;
        let need;
        loop {
            match decoder.decode(&mut buf[off..], &limits) {
                Ok(Decoded::Message {
                    consumed,
                    message,
                    reply,
                }) => {
                    off += consumed;
                    match reply {
                        Some(Reply::Pong(p)) => {
                            let _ = ctrl.send(frame(OpCode::Pong, p));
                        }
                        Some(Reply::Close(code, _)) if closing.is_none() => {
                            let _ = ctrl.send(close_frame(code.0, ""));
                        }
                        _ => {}
                    }
                    match message {
                        Incoming::Text(text) => shared.on_text(text),
                        Incoming::Pong(p) => {
                            if let (Some((s, sent)), Ok(bytes)) = (awaiting, <[u8; 8]>::try_from(p))
                            {
                                if u64::from_be_bytes(bytes) == s {
                                    shared.metrics.rtt(sent.elapsed());
                                    awaiting = None;
                                }
                            }
                        }
                        Incoming::Close(c) => {
                            if closing.is_some() {
                                return End::ClientClosed;
                            }
                            return match c {
                                Some(f) => End::ServerClosed {
                                    code: f.code.0,
                                    text: f.reason.to_owned(),
                                },
                                None => End::ServerClosed {
                                    code: CloseCode::NO_STATUS.0,
                                    text: String::new(),
                                },
                            };
                        }
                        // Binary is not part of the protocol; pings were answered.
                        _ => {}
                    }
                }
                Ok(Decoded::Incomplete { consumed, needed }) => {
                    off += consumed;
                    need = needed;
                    break;
                }
                Err(e) => {
                    let _ = ctrl.send(close_frame(e.close_code().0, ""));
                    return End::Failed(ConnectionError::Protocol(e));
                }
            }
        }
        buf.drain(..off);
        buf.reserve(need.saturating_sub(buf.len()).max(4096));

        let dead_at = match (awaiting, heartbeat) {
            (Some((_, sent)), Some(h)) => sent + h.timeout,
            _ => far,
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => {
                    return if closing.is_some() {
                        End::ClientClosed
                    } else {
                        End::Failed(ConnectionError::Io(io::ErrorKind::UnexpectedEof.into()))
                    };
                }
                Ok(_) => {}
                Err(e) => return End::Failed(ConnectionError::Io(e)),
            },
            _ = sleep_until(next_ping), if awaiting.is_none() && heartbeat.is_some() => {
                seq += 1;
                let now = Instant::now();
                awaiting = Some((seq, now));
                next_ping = now + heartbeat.map_or(Duration::ZERO, |h| h.interval);
                let _ = ctrl.send(frame(OpCode::Ping, &seq.to_be_bytes()));
            }
            _ = sleep_until(dead_at), if awaiting.is_some() => {
                let t = heartbeat.map_or(Duration::ZERO, |h| h.timeout);
                return End::Failed(ConnectionError::HeartbeatTimeout(t));
            }
            _ = shutdown.changed(), if closing.is_none() => {
                let _ = ctrl.send(close_frame(CloseCode::NORMAL.0, ""));
                closing = Some(Instant::now() + CLOSE_WAIT);
            }
            _ = sleep_until(closing.unwrap_or(far)), if closing.is_some() => return End::ClientClosed,
            r = &mut *writer => {
                let e = match r {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => io::Error::other("writer ended"),
                    Err(e) => io::Error::other(e),
                };
                return End::Failed(ConnectionError::Io(e));
            }
        }
    }
}

/// Whether an encoded frame is a Close frame (the opcode is the low nibble
/// of its first byte).
fn is_close(frame: &[u8]) -> bool {
    frame
        .first()
        .is_some_and(|b| b & 0x0f == OpCode::Close as u8)
}

/// Why the writer stopped early.
enum Stop {
    Io(io::Error),
    Cancelled,
}

/// Writes `buf` until done, an error, or `cancel`; returns the bytes
/// written. A `write` dropped unfinished has written nothing, so the count
/// is exact even when cancelled.
async fn write_some(
    wr: &mut WriteHalf<Box<dyn Io>>,
    buf: &[u8],
    cancel: &mut watch::Receiver<bool>,
) -> (usize, Option<Stop>) {
    let mut pos = 0;
    while pos < buf.len() {
        tokio::select! {
            biased;
            _ = cancelled(cancel) => return (pos, Some(Stop::Cancelled)),
            r = wr.write(&buf[pos..]) => match r {
                Ok(0) => return (pos, Some(Stop::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => pos += n,
                Err(e) => return (pos, Some(Stop::Io(e))),
            },
        }
    }
    (pos, None)
}

/// Resolves once `cancel` turns true (or its sender is gone).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = cancel.wait_for(|c| *c).await.map(|_| ());
}

fn stopped(stop: Stop) -> io::Result<()> {
    match stop {
        Stop::Io(e) => Err(e),
        Stop::Cancelled => Ok(()),
    }
}

/// Writes control frames first, then queued messages in batches. Messages
/// whose frame was not completely written when the connection failed or was
/// cancelled go back to the front of the queue, so they are sent on the next
/// connection: none is lost on the client's side, none is sent twice.
async fn writer(
    mut wr: WriteHalf<Box<dyn Io>>,
    shared: Arc<Shared>,
    mut ctrl: UnboundedReceiver<Vec<u8>>,
    mut cancel: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut ends = Vec::new();
    let mut buf = Vec::new();
    let mut stop = cancel.clone();
    // RFC 6455 §5.5.1: "After sending a Close frame, the endpoint MUST NOT
    // send any further data frames." What is still queued then stays queued.
    let mut sent_close = false;
    loop {
        tokio::select! {
            biased;
            _ = cancelled(&mut stop) => return Ok(()),
            c = ctrl.recv() => match c {
                Some(f) => {
                    if let (_, Some(stop)) = write_some(&mut wr, &f, &mut cancel).await {
                        return stopped(stop);
                    }
                    sent_close |= is_close(&f);
                }
                None => {
                    let _ = wr.flush().await;
                    return Ok(());
                }
            },
            _ = shared.wake_writer.notified() => loop {
                while let Ok(f) = ctrl.try_recv() {
                    if let (_, Some(stop)) = write_some(&mut wr, &f, &mut cancel).await {
                        return stopped(stop);
                    }
                    sent_close |= is_close(&f);
                }
                if sent_close {
                    break;
                }
                shared.take_batch(BATCH_BYTES, &mut batch);
                if batch.is_empty() {
                    break;
                }
                buf.clear();
                ends.clear();
                for item in &batch {
                    encode_frame(&mut buf, true, OpCode::Text, item.text.as_bytes(), Some(random_mask()));
                    ends.push(buf.len());
                }
                let (written, stop) = write_some(&mut wr, &buf, &mut cancel).await;
                let done = ends.iter().take_while(|&&e| e <= written).count();
                let bytes: usize = batch[..done].iter().map(|m| m.text.len()).sum();
                shared.metrics.sent(done as u64, bytes);
                if let Some(stop) = stop {
                    shared.requeue(batch.split_off(done));
                    return stopped(stop);
                }
                batch.clear();
            },
        }
    }
}
