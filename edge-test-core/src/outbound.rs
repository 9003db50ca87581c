//! HTTP/1.1 to a real server: how a recording cassette reaches its origin and how e2e mode
//! reaches a deployed service. TLS is verified against the system's roots.

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `request` (its URI a path) over `stream`, and waits for the response's head.
pub(crate) async fn send<S>(
    stream: S,
    request: hyper::Request<hyper::Body>,
) -> Result<hyper::Response<hyper::Body>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::handshake(stream).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// [`send`] over TLS to `host`; a failed handshake is a [`TlsFailed`].
#[cfg(not(trybuild))]
pub(crate) async fn send_tls(
    host: String,
    tcp: tokio::net::TcpStream,
    request: hyper::Request<hyper::Body>,
) -> Result<hyper::Response<hyper::Body>, BoxError> {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config()?));
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| TlsFailed(e.to_string()))?;
    send(stream, request).await
}

/// The compile-fail tests' build has no TLS (see `executor::compiled_out`).
#[cfg(trybuild)]
pub(crate) async fn send_tls(
    _: String,
    _: tokio::net::TcpStream,
    _: hyper::Request<hyper::Body>,
) -> Result<hyper::Response<hyper::Body>, BoxError> {
    Err("no TLS in this build".into())
}

/// The TLS handshake failed: rustls's reason.
#[derive(Debug)]
pub(crate) struct TlsFailed(pub String);

impl std::fmt::Display for TlsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the TLS handshake failed: {}", self.0)
    }
}

impl std::error::Error for TlsFailed {}

#[cfg(not(trybuild))]
fn client_config() -> Result<rustls::ClientConfig, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
