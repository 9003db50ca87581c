//! Recording's one network use: a request forwarded to the real origin over HTTP/1.1 (TLS for
//! `https://`, verified against the system's roots), its answer or its failure kept.

use std::time::Duration;

use super::file::{Fault, Outcome};
use super::{CassetteRequest, CassetteResponse};

/// `Ok` for an `http://` or `https://` URL with a host.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("the cassette origin {url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!(
            "the cassette origin {url:?} must be an http:// or https:// URL with a host"
        )),
    }
}

/// Sends `request` to `origin` and waits at most `limit` for the whole answer (also how a
/// process backend is reached).
pub(crate) async fn forward(origin: &str, request: &CassetteRequest, limit: Duration) -> Outcome {
    match tokio::time::timeout(limit, exchange(origin, request)).await {
        Ok(Ok(response)) => Outcome::Response(response),
        Ok(Err(_)) => Outcome::Fault(Fault::Connection),
        Err(_) => Outcome::Fault(Fault::Timeout),
    }
}

use crate::outbound::BoxError;

async fn exchange(origin: &str, request: &CassetteRequest) -> Result<CassetteResponse, BoxError> {
    let uri: hyper::Uri = origin.parse()?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let target = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(target);
    for (name, value) in &request.headers {
        // Hop-by-hop: the forwarded request's framing is hyper's own.
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let outgoing = builder.body(hyper::Body::from(request.body.clone()))?;
    let response = if tls {
        crate::outbound::send_tls(host, tcp, outgoing, None).await?
    } else {
        crate::outbound::send(tcp, outgoing).await?
    };
    let (parts, body) = response.into_parts();
    let body = hyper::body::to_bytes(body).await?;
    Ok(CassetteResponse {
        status: parts.status.as_u16(),
        headers: super::header_pairs(
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        ),
        body: body.to_vec(),
    })
}
