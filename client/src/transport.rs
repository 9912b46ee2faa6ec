//! Opening one connection: resolve, TCP, TLS for `wss://`, and the opening handshake through `shardcast::proto`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use shardcast::proto::handshake::{ClientHandshake, HandshakeError, Parsed};

use crate::config::{Config, TokenPlacement};
use crate::error::ConnectError;

/// A byte stream: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket connection, before any frame was read.
pub(crate) struct Opened {
    pub stream: Box<dyn Io>,
    /// Bytes that arrived behind the handshake response: frames already.
    pub leftover: Vec<u8>,
}

/// Opens a connection with the current `token`, without a time limit (the
/// caller applies one).
pub(crate) async fn open(
    cfg: &Config,
    token: Option<(String, TokenPlacement)>,
) -> Result<Opened, ConnectError> {
    let ep = &cfg.endpoint;
    let addrs: Vec<_> = tokio::net::lookup_host((ep.host.as_str(), ep.port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: ep.host.clone(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or(ConnectError::Tcp(last))?;
    // Small control messages (pongs, acks) should not wait for Nagle.
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let stream: Box<dyn Io> = if ep.secure {
        tls(cfg, tcp).await?
    } else {
        Box::new(tcp)
    };
    handshake(cfg, token.as_ref(), stream).await
}

#[cfg(feature = "tls")]
async fn tls(cfg: &Config, tcp: TcpStream) -> Result<Box<dyn Io>, ConnectError> {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, pki_types::ServerName};

    let config = match &cfg.tls {
        Some(c) => c.clone(),
        None => {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConnectError::Tls(io::Error::other(e)))?
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        }
    };
    let name = ServerName::try_from(cfg.endpoint.host.clone())
        .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    Ok(Box::new(stream))
}

#[cfg(not(feature = "tls"))]
async fn tls(_cfg: &Config, _tcp: TcpStream) -> Result<Box<dyn Io>, ConnectError> {
    // Config::new refuses wss:// without the feature; this is not reached.
    Err(ConnectError::Tls(io::Error::new(
        io::ErrorKind::Unsupported,
        "built without the `tls` feature",
    )))
}

async fn handshake(
    cfg: &Config,
    token: Option<&(String, TokenPlacement)>,
    mut stream: Box<dyn Io>,
) -> Result<Opened, ConnectError> {
    let headers = cfg.all_headers(token);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let protocols: Vec<&str> = cfg.protocols.iter().map(String::as_str).collect();
    let hs = ClientHandshake::new(
        &cfg.endpoint.host_header(),
        &cfg.target(token),
        &protocols,
        &headers,
    );
    stream
        .write_all(hs.request_bytes())
        .await
        .map_err(ConnectError::Io)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        match hs.parse_response(&buf) {
            Ok(Parsed::Complete { consumed, .. }) => {
                buf.drain(..consumed);
                return Ok(Opened {
                    stream,
                    leftover: buf,
                });
            }
            Ok(Parsed::Incomplete) => {}
            Err(HandshakeError::UnexpectedStatus(status)) => {
                return Err(ConnectError::Rejected(status))
            }
            Err(e) => return Err(ConnectError::Handshake(e)),
        }
        buf.reserve(1024);
        let n = stream.read_buf(&mut buf).await.map_err(ConnectError::Io)?;
        if n == 0 {
            return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
