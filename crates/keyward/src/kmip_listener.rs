//! The KMIP listener (`--kmip-listen`, docs/kmip.md): binary TTLV over TLS 1.2/1.3 with
//! mutual TLS.
//!
//! - TLS: the aws-lc-rs provider's AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305
//!   on TLS 1.2); the server's certificate from `--kmip-tls-cert/--kmip-tls-key`, else the
//!   main `--tls-cert/--tls-key`. A client must present a certificate and prove it holds its
//!   key (the handshake signature is verified); whether that certificate is trusted is
//!   decided by the registry, not by a CA: its SHA-256 fingerprint must be registered on a
//!   KMIP adapter (`KeyService::kmip_session`, looked up again for every message, so a
//!   removed certificate stops at its next request). An unregistered client's first request
//!   is answered Authentication Not Successful and the connection closed.
//! - Framing: each message is one TTLV item; its header is read first and a message that is
//!   not a Request Message, or declares more than [`MAX_MESSAGE`] bytes, is answered with an
//!   Invalid Message error and the connection closed before anything else is read. A message
//!   that does not decode gets the same treatment. Nothing is allocated beyond the cap.
//! - Bounds like the HTTP edge (`edge.rs`): at most `--max-connections` connections (past it
//!   new ones wait in the kernel's accept queue), `--header-timeout` for the handshake and the
//!   rest of a message once its first byte came, `--idle-timeout` between messages.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keyward_kmip::message;
use keyward_kmip::ops::handle_bytes;
use keyward_kmip::tags::{self, reason};
use keyward_kmip::ttlv::{self, Limits, HEADER_LEN};
use keyward_service::KeyService;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest request message accepted, header included.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The KMIP listener's settings.
#[derive(Debug, Clone)]
pub struct KmipSettings {
    pub listen: SocketAddr,
    /// (certificate chain, private key) PEM files of the server.
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Accepts any client certificate that parses, after rustls verified the handshake
/// signature with its key; the registry decides afterwards whether it is allowed.
#[derive(Debug)]
struct RegisteredClientCerts {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RegisteredClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The rustls configuration of the KMIP listener.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading KMIP TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing KMIP TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading KMIP TLS key {}", key.display()))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| {
        let name = format!("{:?}", s.suite());
        name.contains("GCM") || name.contains("CHACHA20_POLY1305")
    });
    let verifier = Arc::new(RegisteredClientCerts {
        algs: provider.signature_verification_algorithms,
    });
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(cfg)
}

/// A bound KMIP listener.
pub struct KmipListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl KmipListener {
    pub async fn bind(settings: &KmipSettings) -> anyhow::Result<Self> {
        let cfg = tls_config(&settings.cert, &settings.key)?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding KMIP listener {}", settings.listen))?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(cfg)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` turns true.
    pub async fn serve(
        self,
        svc: Arc<KeyService>,
        edge: crate::edge::EdgeSettings,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let permits = Arc::new(tokio::sync::Semaphore::new(edge.max_connections.max(1)));
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.changed() => return,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "KMIP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let svc = svc.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                connection(tcp, peer, acceptor, svc, edge, stop).await;
            });
        }
    }
}

fn error_bytes(why: u32, msg: &str, now: i64) -> Vec<u8> {
    let e = message::MessageError {
        reason: why,
        message: msg.into(),
        version: (1, 0),
    };
    ttlv::encode(&message::error_response(&e, now))
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    svc: Arc<KeyService>,
    edge: crate::edge::EdgeSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tls = match tokio::time::timeout(edge.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "KMIP TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let Some(fingerprint) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| keyward_crypto::sha256(c.as_ref()))
    else {
        return;
    };
    let limits = Limits {
        max_message: MAX_MESSAGE,
        ..Limits::default()
    };
    let now = || svc.clock().now_unix();
    loop {
        // The first byte of the next message: within the idle timeout.
        let mut header = [0u8; HEADER_LEN];
        let first = tokio::select! {
            r = tokio::time::timeout(edge.idle_timeout, tls.read(&mut header[..1])) => r,
            _ = stop.changed() => break,
        };
        match first {
            Ok(Ok(1)) => {}
            _ => break,
        }
        // The rest of the header and the body: within the header timeout.
        let read_rest = async {
            tls.read_exact(&mut header[1..]).await?;
            let (tag, ty, len) = ttlv::peek_header(&header);
            let len = len as usize;
            if tag != tags::REQUEST_MESSAGE || ty != 0x01 || len > MAX_MESSAGE - HEADER_LEN {
                return Ok::<_, std::io::Error>(None);
            }
            // A request may carry key material (Register): the buffer is wiped when dropped.
            let mut buf = zeroize::Zeroizing::new(vec![0u8; HEADER_LEN + len]);
            buf[..HEADER_LEN].copy_from_slice(&header);
            tls.read_exact(&mut buf[HEADER_LEN..]).await?;
            Ok(Some(buf))
        };
        let msg = match tokio::time::timeout(edge.header_timeout, read_rest).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                let _ = tls
                    .write_all(&error_bytes(
                        reason::INVALID_MESSAGE,
                        "not a Request Message, or larger than the server accepts",
                        now(),
                    ))
                    .await;
                break;
            }
            _ => break,
        };
        let session = match svc.kmip_session(&fingerprint).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                tracing::info!(%peer, "KMIP client certificate is not registered on any adapter");
                let _ = tls
                    .write_all(&error_bytes(
                        reason::AUTHENTICATION_NOT_SUCCESSFUL,
                        "the client certificate is not registered on a KMIP adapter",
                        now(),
                    ))
                    .await;
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, code = e.code.as_str(), "KMIP client lookup failed");
                let _ = tls
                    .write_all(&error_bytes(
                        reason::GENERAL_FAILURE,
                        "the service is temporarily unavailable",
                        now(),
                    ))
                    .await;
                break;
            }
        };
        // A response may carry key material (Get): the buffer is wiped when dropped.
        let (resp, close) = match handle_bytes(&session, &msg, &limits).await {
            Ok(r) => (zeroize::Zeroizing::new(r), false),
            Err(r) => (zeroize::Zeroizing::new(r), true),
        };
        if tls.write_all(&resp).await.is_err() || tls.flush().await.is_err() || close {
            break;
        }
    }
    let _ = tls.shutdown().await;
}
