//! A request a guest sent to one of its (mocked) backends, as the backend received it.

use bytes::Bytes;
use http::{HeaderMap, Method};

/// One request a backend received, recorded for assertions.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    pub(crate) backend: String,
    pub(crate) invocation: usize,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// How the guest registered the dynamic backend that sent it, if one did.
    pub(crate) dynamic: Option<DynamicBackend>,
}

/// A dynamic backend as the guest registered it (`fastly::Backend::builder(name, target)`
/// and its options), as [`BackendRequest::dynamic`] reports it. The guest's request reached
/// the test's mock over plain HTTP whatever it asked for: `use_tls` says what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamicBackend {
    /// The name the guest gave it.
    pub name: String,
    /// The target the guest named (`host` or `host:port`).
    pub target: String,
    pub host_override: Option<String>,
    pub use_tls: bool,
    pub connect_timeout: Option<std::time::Duration>,
    pub first_byte_timeout: Option<std::time::Duration>,
    pub between_bytes_timeout: Option<std::time::Duration>,
    pub cert_hostname: Option<String>,
    pub sni_hostname: Option<String>,
}

impl From<&crate::wire::DynamicRegistration> for DynamicBackend {
    fn from(r: &crate::wire::DynamicRegistration) -> Self {
        let ms = |ms: Option<u32>| ms.map(|ms| std::time::Duration::from_millis(u64::from(ms)));
        Self {
            name: r.name.clone(),
            target: r.target.clone(),
            host_override: r.host_override.clone(),
            use_tls: r.use_tls,
            connect_timeout: ms(r.connect_timeout_ms),
            first_byte_timeout: ms(r.first_byte_timeout_ms),
            between_bytes_timeout: ms(r.between_bytes_timeout_ms),
            cert_hostname: r.cert_hostname.clone(),
            sni_hostname: r.sni_hostname.clone(),
        }
    }
}

impl BackendRequest {
    /// The name of the backend (as in `fastly.toml`) that received it, or the target of the
    /// dynamic backend (as the test mounted it).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// How the guest registered the dynamic backend that sent it; `None` for a backend
    /// declared in `fastly.toml`.
    pub fn dynamic(&self) -> Option<&DynamicBackend> {
        self.dynamic.as_ref()
    }

    /// Which invocation of the test sent it, counting from 1.
    pub fn invocation(&self) -> usize {
        self.invocation
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of a query parameter, percent-decoding `+` and `%XX`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value, when present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not.
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body {} sent to backend `{}` is not the expected JSON: {e}\nbody: {}",
                self.summary(),
                self.backend,
                self.body_text()
            )
        })
    }

    /// `GET /path?query`, as used in reports.
    pub fn summary(&self) -> String {
        match &self.query {
            Some(q) => format!("{} {}?{q}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let req = BackendRequest {
            backend: "origin".into(),
            invocation: 1,
            method: Method::GET,
            path: "/search".into(),
            query: Some("q=hello+world&tag=a%2Fb&flag".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            dynamic: None,
        };
        assert_eq!(req.query_param("q").as_deref(), Some("hello world"));
        assert_eq!(req.query_param("tag").as_deref(), Some("a/b"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(req.summary(), "GET /search?q=hello+world&tag=a%2Fb&flag");
    }
}
