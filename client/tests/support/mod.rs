//! Shared by the integration tests: a real `shardcast` server process, and a TCP proxy that can cut connections.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// The workspace's `shardcast` binary, built once per test process.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--bin", "shardcast"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin shardcast failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("shardcast")
    })
    .clone()
}

/// A free loopback port (taken from the kernel, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `shardcast` process, killed (by its PID) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the server on `127.0.0.1:port` (0: any free port) with extra
    /// flags, and waits (at most 20 s) until its log names the address.
    pub fn start(port: u16, extra: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(server_bin())
            .args([
                "--listen",
                &listen,
                "--cores",
                "2",
                "--no-pin",
                "--log-format",
                "json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shardcast");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads the log to its end, so the server never blocks on a full pipe.
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(a) = v["fields"]["addr"].as_str() {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server logged its address");
        Server { child, addr }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGTERM (the server closes every connection with 1001), then waits
    /// for the exit, at most 10 s.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the connections open when it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Reset both sides (SO_LINGER 0, then close): the client gets an RST.
    Reset,
    /// Stop forwarding in both directions and keep both sockets open: no
    /// FIN, no RST, nothing; only a heartbeat can tell.
    Silent,
    /// Close the server's side and keep the client's open, reading and
    /// discarding what it sends: the client's writes succeed, nothing ever
    /// answers (a half-open connection).
    HalfOpen,
}

/// A loopback TCP proxy in front of a server, for cutting connections.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    refuse: Arc<AtomicBool>,
    cuts: broadcast::Sender<Cut>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let refuse = Arc::new(AtomicBool::new(false));
        let (cuts, _) = broadcast::channel(16);
        let task = {
            let upstream = upstream.clone();
            let refuse = refuse.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if refuse.load(Ordering::SeqCst) {
                        reset(client);
                        continue;
                    }
                    let to = *upstream.lock().unwrap();
                    tokio::spawn(pipe(client, to, cuts.subscribe()));
                }
            })
        };
        Proxy {
            addr,
            upstream,
            refuse,
            cuts,
            task,
        }
    }

    /// `ws://PROXY/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Resets new connections at once while `on`.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Forwards new connections to `to`.
    pub fn set_upstream(&self, to: SocketAddr) {
        *self.upstream.lock().unwrap() = to;
    }

    /// Cuts every connection open now; later ones are forwarded normally.
    pub fn cut(&self, how: Cut) {
        let _ = self.cuts.send(how);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes `s` with an RST: SO_LINGER 0 makes the close abortive (it never
/// blocks, which is what the deprecation warns about for other values).
#[allow(deprecated)]
fn reset(s: TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

async fn pipe(mut client: TcpStream, to: SocketAddr, mut cuts: broadcast::Receiver<Cut>) {
    let Ok(mut server) = TcpStream::connect(to).await else {
        reset(client);
        return;
    };
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(n) if n > 0 => if server.write_all(&a[..n]).await.is_err() { return },
                _ => return,
            },
            r = server.read(&mut b) => match r {
                Ok(n) if n > 0 => if client.write_all(&b[..n]).await.is_err() { return },
                _ => return,
            },
            c = cuts.recv() => match c {
                Ok(Cut::Reset) => {
                    reset(client);
                    reset(server);
                    return;
                }
                Ok(Cut::Silent) => {
                    // Hold both sockets, forward nothing, until the test ends.
                    let _hold = (client, server);
                    std::future::pending::<()>().await;
                    return;
                }
                Ok(Cut::HalfOpen) => {
                    drop(server);
                    while matches!(client.read(&mut a).await, Ok(n) if n > 0) {}
                    return;
                }
                Err(_) => return,
            },
        }
    }
}
