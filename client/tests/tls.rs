//! Verifies that `wss://` works through rustls (feature `tls`): against a TLS terminator in front of a real server, with a certificate the client was told to trust, and that an untrusted certificate is reported as a TLS connect error.

mod support;

use std::sync::Arc;
use std::time::Duration;

use shardcast_client::{BackoffPolicy, Client, Config, ConnectError, Delivery, Event, Reason};
use support::Server;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};

const WAIT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts TLS on a free loopback port and forwards the plain bytes to `upstream`.
async fn terminator(
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    upstream: std::net::SocketAddr,
) -> u16 {
    let der = pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_rustls() {
    let server = Server::start(0, &[]);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let port = terminator(&cert, server.addr).await;
    let url = format!("wss://localhost:{port}/ws");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki_types::CertificateDer::from(cert.cert.der().to_vec()))
        .unwrap();
    let trusting = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = Client::start(Config::new(&url).unwrap().with_tls(Arc::new(trusting))).unwrap();
    client.connected(WAIT).await.unwrap();
    let mut sub = client.subscribe("secure").await.unwrap();
    assert_eq!(
        client
            .publish_acked("secure", "\"hi\"", Delivery::Now)
            .await,
        Ok(1)
    );
    match tokio::time::timeout(WAIT, sub.recv()).await.unwrap() {
        Some(Event::Message(m)) => assert_eq!(&*m.data, "\"hi\""),
        other => panic!("{other:?}"),
    }

    // The default roots (webpki) do not include the test's certificate.
    let untrusting = Client::start(
        Config::new(&url)
            .unwrap()
            .with_backoff(BackoffPolicy::default().with_max_attempts(Some(0))),
    )
    .unwrap();
    let s = untrusting
        .wait_for(WAIT, |s| s.state.is_terminal() && s.reason.is_some())
        .await
        .unwrap();
    let Some(Reason::AttemptsExhausted(last)) = &s.reason else {
        panic!("{:?}", s.reason)
    };
    assert!(
        matches!(&**last, Reason::Connect(e) if matches!(**e, ConnectError::Tls(_))),
        "{last:?}"
    );
}
