//! What crosses the boundary between a test and the runtime that executes its guest, and
//! every conversion at it: the executor's plain data (serde types with no viceroy types in
//! them, so that they can cross a socket as they are), and the conversions between it, the
//! `http` 1 types of the public API and the `http` 0.2 / hyper 0.14 types viceroy-lib and
//! the mock servers speak. Each conversion is lossless or an explicit error (never a silent
//! GET, 500 or dropped header).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Everything an executor needs to run one test's guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionSpec {
    pub service: String,
    /// The test the session is for (`module::path::name`): named in the host's log and in
    /// the in-process guest thread's name, for whoever investigates.
    pub test: String,
    pub wasm: PathBuf,
    /// The text of the service's `fastly.toml`, already validated by the runner.
    pub fastly_toml: Option<String>,
    /// Where each backend named in `fastly.toml` is served by the test's mocks.
    pub backend_addrs: BTreeMap<String, SocketAddr>,
    /// edge-test's own KV guest, built when `fastly.toml` declares a KV store: it carries
    /// out the test's KV changes and reads in the stores it shares with the guest.
    pub kv_guest: Option<PathBuf>,
    /// edge-test's HTTP cache shim, merged into the guest's module (`module_rewrite`) unless
    /// the service opted out of the HTTP cache.
    pub http_cache_shim: Option<PathBuf>,
    /// The guest's stdout and stderr as the bytes it wrote (`InvocationReport::stdio`),
    /// where the executor can: a forked worker, alone in its process, has its own file
    /// descriptors to catch them in. Elsewhere they are log lines as always, which lose
    /// where each write ended (viceroy strips a write's trailing newline), harmless for a
    /// service's logs but not for the output of a guest's own unit tests.
    pub capture_stdio: bool,
}

impl Default for InvocationRequest {
    /// `GET /` from 127.0.0.1 with no time limit or log room, no platform change and no
    /// read: what a struct literal fills in with `..Default::default()`.
    fn default() -> Self {
        Self {
            method: "GET".to_owned(),
            uri: "http://edge.test/".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            client_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            guest_timeout: Duration::ZERO,
            max_log_bytes: 0,
            platform: Vec::new(),
            platform_only: false,
            read_kv: Vec::new(),
            read_cache: Vec::new(),
            list_cache: false,
            dynamic_dispatcher: None,
            command: None,
        }
    }
}

/// A dynamic backend as the guest registered it (`Backend::builder(name, target)` and its
/// options): what the test's dynamic-backend dispatcher is told before the guest's request
/// arrives on a redirected connection (as one JSON line), and what the test can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DynamicRegistration {
    /// Its number among the invocation's registrations, from 0.
    pub slot: u32,
    pub name: String,
    pub target: String,
    pub host_override: Option<String>,
    pub use_tls: bool,
    pub connect_timeout_ms: Option<u32>,
    pub first_byte_timeout_ms: Option<u32>,
    pub between_bytes_timeout_ms: Option<u32>,
    pub cert_hostname: Option<String>,
    pub sni_hostname: Option<String>,
}

/// One downstream request, as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationRequest {
    pub method: String,
    /// Absolute URI (`http://host/path?query`).
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "as_bytes")]
    pub body: Vec<u8>,
    pub client_ip: IpAddr,
    /// How long the guest may run, response and all, before it is stopped.
    pub guest_timeout: Duration,
    /// How many bytes of log output (endpoints, stdout and stderr) the invocation may
    /// write; past that, output is counted and dropped.
    pub max_log_bytes: usize,
    /// What the test changed in the platform (stores, geolocation) since the last
    /// invocation: applied, in order, before this one runs.
    pub platform: Vec<PlatformChange>,
    /// Not a request for the guest: apply `platform`, read the KV stores `read_kv` names
    /// and the cache keys `read_cache` names, and report them
    /// (`InvocationReport::platform_read`) without running the guest.
    pub platform_only: bool,
    pub read_kv: Vec<String>,
    pub read_cache: Vec<Vec<u8>>,
    /// Also list every cache entry the guest or the test stored.
    pub list_cache: bool,
    /// Where the test serves its dynamic backends' mocks: redirected connections go there.
    pub dynamic_dispatcher: Option<SocketAddr>,
    /// Not a request: run the module as a WASI command (its `_start`, as `viceroy run`
    /// does) with these arguments, the program's name first. How the guest crate's own
    /// unit tests run (`guest_tests`); the method, URI, headers and body are unused.
    pub command: Option<Vec<String>>,
}

impl PlatformChange {
    /// Carried out in the KV stores (by the KV guest).
    pub(crate) fn is_kv(&self) -> bool {
        matches!(self, Self::KvInsert { .. } | Self::KvRemove { .. })
    }

    /// Carried out in the core cache.
    pub(crate) fn is_cache(&self) -> bool {
        matches!(
            self,
            Self::CacheInsert { .. }
                | Self::CachePurgeSurrogateKey { .. }
                | Self::CachePurgeKey { .. }
                | Self::CacheAdvance { .. }
        )
    }
}

/// One change a test makes to the platform its guest reads, applied by the executor just
/// before the next invocation (the test checked it where it was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PlatformChange {
    /// Sets (`Some`) or removes (`None`) an entry of a config store `fastly.toml` declares.
    ConfigEntry {
        store: String,
        key: String,
        value: Option<String>,
    },
    /// The geolocation record for `ip`: a JSON object with every field the guest reads.
    Geo { ip: IpAddr, record: String },
    /// The device detection record for a `User-Agent`: a JSON object.
    Device { user_agent: String, record: String },
    /// The downstream facts (TLS, fingerprints) of the requests from now on, replacing the
    /// last ones (empty: absent, as for a plain HTTP client).
    Downstream { facts: BTreeMap<String, String> },
    /// Inserts or replaces a KV entry.
    KvInsert {
        store: String,
        key: String,
        #[serde(with = "as_bytes")]
        value: Vec<u8>,
        metadata: Option<String>,
    },
    /// Removes a KV entry (nothing when there is none).
    KvRemove { store: String, key: String },
    /// Inserts a core-cache entry, as `fastly::cache::core::insert` would.
    CacheInsert {
        #[serde(with = "as_bytes")]
        key: Vec<u8>,
        #[serde(with = "as_bytes")]
        body: Vec<u8>,
        ttl: Duration,
        age: Duration,
        stale_while_revalidate: Duration,
        surrogate_keys: Vec<String>,
        #[serde(with = "as_bytes")]
        user_metadata: Vec<u8>,
    },
    /// Purges every cache entry with this surrogate key.
    CachePurgeSurrogateKey { key: String },
    /// Purges the cache entry at this key.
    CachePurgeKey {
        #[serde(with = "as_bytes")]
        key: Vec<u8>,
    },
    /// Ages every cache entry the test can list by `by`.
    CacheAdvance { by: Duration },
}

/// What the client received and how the guest ended, once the guest has fully finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationReport {
    /// `None` when the guest never produced a response (for example it timed out first).
    pub response: Option<ReceivedResponse>,
    /// The invocation's log output as viceroy wrote it (`<endpoint> :: <message>` lines);
    /// see [`parse_log`]. Travels beside the report, not in it (`report_wire`).
    #[serde(skip)]
    pub log: Vec<u8>,
    pub outcome: Outcome,
    /// Connections the guest tried to open to anything but its mocks, refused by the fence.
    pub refused_connections: Vec<crate::executor::Refused>,
    /// Log output past the invocation's `max_log_bytes`, dropped unread.
    pub dropped_log_bytes: u64,
    /// What viceroy warned about while the guest ran (an undeclared backend, a hostcall
    /// that answered with an error): the explanation of many a puzzling failure.
    pub runtime_warnings: Vec<String>,
    /// Why the guest ran without the network fence, when it did.
    pub unfenced: Option<String>,
    /// What a platform-only request read, as JSON: `{"kv": {store: [[key, [bytes],
    /// metadata]]}, "cache": [entry or null, in the order asked]}`.
    pub platform_read: Option<String>,
    /// The guest's stdout and stderr together, as written, when the session captures them
    /// (`SessionSpec::capture_stdio`) and the invocation was a command.
    pub stdio: Option<CapturedStdio>,
}

/// What a guest wrote to stdout and stderr, interleaved as written, up to the invocation's
/// `max_log_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CapturedStdio {
    #[serde(with = "as_bytes")]
    pub bytes: Vec<u8>,
    /// Bytes written past the cap, dropped unread: a forked worker refuses writes past the
    /// cap and one more byte, so there, at least this many.
    pub dropped: u64,
}

impl InvocationReport {
    /// The report of a request answered with `response` and nothing else to tell: what a
    /// deployment's answer is (e2e mode).
    pub(crate) fn answered(response: ReceivedResponse) -> Self {
        Self {
            response: Some(response),
            outcome: Outcome::Completed,
            ..Self::not_run("")
        }
    }

    /// The report of a request that never reached the guest, and why.
    pub(crate) fn not_run(reason: &str) -> Self {
        Self {
            response: None,
            log: Vec::new(),
            outcome: Outcome::NotRun {
                reason: reason.to_owned(),
            },
            refused_connections: Vec::new(),
            dropped_log_bytes: 0,
            runtime_warnings: Vec::new(),
            unfenced: None,
            platform_read: None,
            stdio: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceivedResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Travels beside the report, not in it (`report_wire`).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Why the body ended early, when the guest stopped mid-stream.
    pub body_error: Option<String>,
    /// The guest failed before answering; this is the runtime's 500 in its place.
    pub from_runtime: bool,
}

/// How a guest invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Completed,
    /// The guest trapped (a Rust panic aborts into a trap) or exited with an error.
    Trapped {
        message: String,
    },
    /// A guest run as a command (`InvocationRequest::command`) exited with this status,
    /// not 0.
    Exited {
        code: i32,
    },
    /// The guest was still running when its time limit ran out, and was stopped.
    TimedOut {
        limit: Duration,
    },
    /// The invocation could not run at all (the session ended earlier, or the runtime
    /// refused the request).
    NotRun {
        reason: String,
    },
}

/// Bodies as one run of bytes on the wire (serde writes a `Vec<u8>` as a sequence of
/// numbers, one call per byte).
mod as_bytes {
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// A value one side can hold and the other cannot: says which, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Header pairs as the executor carries them (names and raw values).
pub(crate) type RawHeaders = Vec<(String, Vec<u8>)>;

/// `http` 1 headers as the executor carries them.
pub(crate) fn raw_headers(headers: &HeaderMap) -> RawHeaders {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// hyper's headers (viceroy's response) as the executor carries them.
pub(crate) fn raw_headers_from_hyper(headers: &hyper::HeaderMap) -> RawHeaders {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// The executor's headers as `http` 1 headers.
pub(crate) fn headers_from_raw(raw: RawHeaders) -> Result<HeaderMap, WireError> {
    let mut headers = HeaderMap::with_capacity(raw.len());
    for (name, value) in raw {
        let header_name = HeaderName::try_from(name.as_str())
            .map_err(|e| WireError(format!("header name {name:?}: {e}")))?;
        let header_value = HeaderValue::from_bytes(&value)
            .map_err(|e| WireError(format!("value {value:?} of header `{name}`: {e}")))?;
        headers.append(header_name, header_value);
    }
    Ok(headers)
}

/// hyper's headers (what a guest sent a mock) as `http` 1 headers.
pub(crate) fn headers_from_hyper(headers: &hyper::HeaderMap) -> Result<HeaderMap, WireError> {
    headers_from_raw(raw_headers_from_hyper(headers))
}

/// A status as the executor carries it, as `http` 1's.
pub(crate) fn status(code: u16) -> Result<StatusCode, WireError> {
    StatusCode::from_u16(code).map_err(|e| WireError(format!("status {code}: {e}")))
}

/// hyper's method (what a guest sent a mock) as `http` 1's: extension methods included.
pub(crate) fn method_from_hyper(method: &hyper::Method) -> Result<Method, WireError> {
    Method::from_bytes(method.as_str().as_bytes())
        .map_err(|e| WireError(format!("method {method}: {e}")))
}

/// A downstream request as viceroy takes it.
pub(crate) fn hyper_request(
    request: InvocationRequest,
) -> Result<hyper::Request<hyper::Body>, WireError> {
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(request.uri.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder
        .body(hyper::Body::from(request.body))
        .map_err(|e| WireError(format!("request {} {}: {e}", request.method, request.uri)))
}

/// A mock's answer as hyper sends it.
pub(crate) fn hyper_response(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<hyper::Response<hyper::Body>, WireError> {
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(hyper::Body::from(body))
        .map_err(|e| WireError(format!("mock reply with status {status}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    fn request(method: &str, headers: RawHeaders) -> InvocationRequest {
        InvocationRequest {
            method: method.into(),
            uri: "http://edge.test/x?y=1".into(),
            headers,
            body: b"body".to_vec(),
            client_ip: Ipv4Addr::LOCALHOST.into(),
            guest_timeout: Duration::from_secs(1),
            max_log_bytes: 0,
            ..Default::default()
        }
    }

    #[test]
    fn headers_round_trip_with_repeats_and_raw_bytes() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.append("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let back = headers_from_raw(raw_headers(&headers)).unwrap();
        assert_eq!(back, headers);
    }

    #[test]
    fn an_invalid_header_or_status_is_an_error_naming_it() {
        let error = headers_from_raw(vec![("bad name".into(), b"v".to_vec())]).unwrap_err();
        assert!(
            error.to_string().starts_with("header name \"bad name\""),
            "{error}"
        );
        let error = headers_from_raw(vec![("x".into(), b"a\nb".to_vec())]).unwrap_err();
        assert!(error.to_string().contains("of header `x`"), "{error}");
        assert!(
            status(1000)
                .unwrap_err()
                .to_string()
                .starts_with("status 1000")
        );
        assert_eq!(status(418).unwrap(), StatusCode::IM_A_TEAPOT);
    }

    #[test]
    fn extension_methods_survive_both_ways() {
        let purge = hyper::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_from_hyper(&purge).unwrap().as_str(), "PURGE");
        let hyper = hyper_request(request("PURGE", vec![("x-a".into(), b"1".to_vec())])).unwrap();
        assert_eq!(hyper.method().as_str(), "PURGE");
        assert_eq!(hyper.uri().query(), Some("y=1"));
        assert_eq!(hyper.headers()["x-a"], "1");
    }

    #[test]
    fn a_request_hyper_cannot_hold_is_an_error() {
        let error =
            hyper_request(request("GET", vec![("bad name".into(), Vec::new())])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("request GET http://edge.test/x?y=1"),
            "{error}"
        );
    }

    #[test]
    fn a_mock_reply_becomes_a_hyper_response() {
        let response =
            hyper_response(201, &[("x-a".into(), "1".into())], b"made".to_vec()).unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-a"], "1");
    }
}
