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

/// [`send`] over TLS to `host`, trusting the system's roots and the certificates in
/// `extra_roots` (PEM); a failed handshake is a [`TlsFailed`].
#[cfg(not(trybuild))]
pub(crate) async fn send_tls(
    host: String,
    tcp: tokio::net::TcpStream,
    request: hyper::Request<hyper::Body>,
    extra_roots: Option<&[u8]>,
) -> Result<hyper::Response<hyper::Body>, BoxError> {
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(extra_roots)?));
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
    _: Option<&[u8]>,
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
fn client_config(extra_roots: Option<&[u8]>) -> Result<rustls::ClientConfig, BoxError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    // Read from the system once per process, not once per request: e2e mode makes one
    // request after another.
    static NATIVE: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    let native = NATIVE.get_or_init(|| rustls_native_certs::load_native_certs().certs);
    let mut roots = rustls::RootCertStore::empty();
    for cert in native {
        let _ = roots.add(cert.clone());
    }
    if let Some(pem) = extra_roots {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsFailed(format!("the extra roots are not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(TlsFailed("the extra roots hold no PEM certificate".to_owned()).into());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsFailed(format!("an extra root is not a usable CA: {e}")))?;
        }
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

/// POSTs `body` to `url` (http:// or https://, verified against the system's roots) and
/// returns the response's status, within `limit`: how edge-test's monitor calls its webhook.
pub async fn post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    limit: std::time::Duration,
) -> Result<u16, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = hyper::Request::post(path)
        .header(
            "host",
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(hyper::Body::from(body))
        .map_err(|e| format!("the request cannot be built: {e}"))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let response = if tls {
            send_tls(host.clone(), tcp, request, None).await
        } else {
            send(tcp, request).await
        }
        .map_err(|e| format!("the exchange with {url} failed: {e}"))?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("{url} did not answer within {limit:?}"))?
}
