//! e2e mode: the same `#[edge_test]` tests against a deployed service.
//!
//! `EDGE_TEST_TARGET_<SERVICE>` (the service's name in capitals, other characters as `_`),
//! or `EDGE_TEST_TARGET` for every service of the run, names the deployment's base URL. Its
//! tests then send their requests there over real HTTP(S) instead of to a local guest, and
//! a test that uses what only a local run has (mocks, logs, backend calls, cache and store
//! controls, client facts) is skipped at that call, with the reason written where the run's
//! output shows it. `EDGE_TEST_E2E_SKIPS=fail` fails such tests instead.
//! `EDGE_TEST_TARGET_CA` names a PEM file of CA certificates trusted besides the system's.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use crate::error::EdgeError;
use crate::executor::{InvocationReport, InvocationRequest, ReceivedResponse};

const TARGET_ENV: &str = "EDGE_TEST_TARGET";
const SKIPS_ENV: &str = "EDGE_TEST_E2E_SKIPS";
/// A PEM file of CA certificates to trust besides the system's, for targets with a private CA.
const CA_ENV: &str = "EDGE_TEST_TARGET_CA";

/// A deployed service a run's requests go to.
#[derive(Debug)]
pub(crate) struct Target {
    pub service: String,
    /// The base URL, without a trailing `/`.
    pub url: String,
    /// The environment variable that named it.
    pub variable: String,
    tls: bool,
    host: String,
    port: u16,
    /// The URL's path, prefixed to every request's.
    base_path: String,
    /// `EDGE_TEST_TARGET_CA`'s certificates (PEM), trusted besides the system's roots.
    extra_roots: Option<Vec<u8>>,
}

/// The variable naming `service`'s deployment.
pub(crate) fn service_variable(service: &str) -> String {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{TARGET_ENV}_{name}")
}

/// The deployment `service`'s tests run against, when the environment names one.
pub(crate) fn target_for(service: &str) -> Result<Option<Arc<Target>>, EdgeError> {
    let own = service_variable(service);
    let (variable, url) = match std::env::var(&own) {
        Ok(url) => (own, url),
        Err(_) => match std::env::var(TARGET_ENV) {
            Ok(url) => (TARGET_ENV.to_owned(), url),
            Err(_) => return Ok(None),
        },
    };
    let mut target = parse(service, &variable, &url)?;
    if let Some(path) = std::env::var_os(CA_ENV) {
        let pem = std::fs::read(&path).map_err(|e| EdgeError::Host {
            reason: format!(
                "{CA_ENV}={} cannot be read ({e}): name a PEM file of the CA certificates that \
                 sign the deployment's certificate, or unset it",
                std::path::Path::new(&path).display()
            ),
        })?;
        target.extra_roots = Some(pem);
    }
    Ok(Some(Arc::new(target)))
}

fn parse(service: &str, variable: &str, url: &str) -> Result<Target, EdgeError> {
    let bad = |why: &str| EdgeError::Host {
        reason: format!(
            "{variable}={url:?} is not a deployment to test service `{service}` against: \
             {why}. Set it to the service's base URL, such as \
             https://my-service.edgecompute.app"
        ),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("it must start with http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| bad("it names no host"))?
        .to_owned();
    if uri.query().is_some() {
        return Err(bad("it may not have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Target {
        service: service.to_owned(),
        url: url.trim_end_matches('/').to_owned(),
        variable: variable.to_owned(),
        tls,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        host,
        base_path,
        extra_roots: None,
    })
}

/// The panic payload that skips a test: unwound to `test_runner`, which reports it.
pub(crate) struct Skipped {
    pub reason: String,
}

/// Skips the running test: what it does needs a local run.
pub(crate) fn skip(reason: String) -> ! {
    // The default hook would print "panicked at" for a test that did not fail.
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Skipped>() {
                previous(info);
            }
        }));
    });
    std::panic::panic_any(Skipped { reason })
}

/// Skips the running test for `what` it does ("mocks backend `origin`"), which a run against
/// the deployment at `url` cannot do: the one wording of every local-only skip.
pub(crate) fn skip_local_only(what: &str, url: &str) -> ! {
    skip(format!(
        "{what}, which only a local run has (e2e mode against {url})"
    ))
}

/// Says that `test` was skipped, past libtest's capture so that a passing run shows it too;
/// or fails it, under `EDGE_TEST_E2E_SKIPS=fail`.
pub(crate) fn report_skip(test: &str, skipped: &Skipped) {
    let line = format!("edge-test: SKIPPED {test}: {}", skipped.reason);
    if std::env::var(SKIPS_ENV).is_ok_and(|v| v == "fail") {
        panic!("{line} ({SKIPS_ENV}=fail makes a skip a failure)");
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A test's connection to a deployed service: each request a real HTTP exchange.
pub(crate) struct DeployedSession {
    target: Arc<Target>,
    /// Each exchange as text (request, then response or failure), for a failing test's
    /// output: against a deployment there are no logs, so what was said is the evidence.
    journal: Mutex<VecDeque<String>>,
}

/// How much of a response body a failing test's output shows.
const JOURNAL_BODY_BYTES: usize = 2048;
/// How many exchanges a failing test's output shows (the last ones).
const JOURNAL_EXCHANGES: usize = 10;

/// Targets that could not be reached earlier in this process, with why: later tests fail at
/// once rather than each waiting out the same failure.
static UNREACHABLE: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

impl DeployedSession {
    pub(crate) fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            journal: Mutex::new(VecDeque::new()),
        }
    }

    /// The test's exchanges with the deployment, oldest first (the last few).
    pub(crate) fn exchanges(&self) -> Vec<String> {
        crate::sync::lock(&self.journal).iter().cloned().collect()
    }

    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        let said = describe_request(&self.target, &request);
        let report = self.exchange_once(request).await;
        let answer = match (&report.response, &report.outcome) {
            (Some(response), _) => describe_response(response),
            (None, crate::wire::Outcome::NotRun { reason }) => format!("no response: {reason}"),
            (None, _) => "no response".to_owned(),
        };
        let mut journal = crate::sync::lock(&self.journal);
        if journal.len() == JOURNAL_EXCHANGES {
            journal.pop_front();
        }
        journal.push_back(format!("{said}\n{answer}"));
        report
    }

    async fn exchange_once(&self, request: InvocationRequest) -> InvocationReport {
        let limit = request.guest_timeout;
        let target = &self.target;
        if let Some(why) = crate::sync::lock(&UNREACHABLE).get(&target.url) {
            return InvocationReport::not_run(&format!(
                "{} (already seen earlier in this run)",
                why
            ));
        }
        match tokio::time::timeout(limit, exchange(target, request)).await {
            Ok(Ok(response)) => InvocationReport::answered(response),
            Ok(Err(Failure::Unreachable(why))) => {
                let why = self.failed(&why);
                crate::sync::lock(&UNREACHABLE).insert(target.url.clone(), why.clone());
                InvocationReport::not_run(&why)
            }
            Ok(Err(Failure::Exchange(why))) => InvocationReport::not_run(&self.failed(&why)),
            Err(_) => InvocationReport::not_run(&self.failed(&format!(
                "no whole answer within {limit:?} (the test's time limit)"
            ))),
        }
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(self.run(request)),
            Err(e) => InvocationReport::not_run(&format!("no tokio runtime for the request: {e}")),
        }
    }

    fn failed(&self, why: &str) -> String {
        let target = &self.target;
        format!(
            "the deployed service `{}` at {} ({}): {why}",
            target.service, target.url, target.variable
        )
    }
}

/// `> GET https://host/path` and the request's headers and body size, as sent.
fn describe_request(target: &Target, request: &InvocationRequest) -> String {
    let path = request
        .uri
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        .unwrap_or_else(|| request.uri.clone());
    let mut text = format!("> {} {}{path}", request.method, target.url);
    for (name, value) in &request.headers {
        text.push_str(&format!("\n> {name}: {}", String::from_utf8_lossy(value)));
    }
    if !request.body.is_empty() {
        text.push_str(&format!("\n> ({} body bytes)", request.body.len()));
    }
    text
}

/// `< 503` and the response's headers and the start of its body.
fn describe_response(response: &ReceivedResponse) -> String {
    let mut text = format!("< {}", response.status);
    for (name, value) in &response.headers {
        text.push_str(&format!("\n< {name}: {}", String::from_utf8_lossy(value)));
    }
    if !response.body.is_empty() {
        let shown = &response.body[..response.body.len().min(JOURNAL_BODY_BYTES)];
        text.push_str(&format!("\n<\n{}", String::from_utf8_lossy(shown)));
        if shown.len() < response.body.len() {
            text.push_str(&format!(
                "\n< ({} more body bytes not shown)",
                response.body.len() - shown.len()
            ));
        }
    }
    text
}

enum Failure {
    /// Before a request was sent: the target itself is not there (or not as configured).
    Unreachable(String),
    /// The exchange itself failed.
    Exchange(String),
}

async fn exchange(
    target: &Target,
    request: InvocationRequest,
) -> Result<ReceivedResponse, Failure> {
    let uri: hyper::Uri = request
        .uri
        .parse()
        .map_err(|e| Failure::Exchange(format!("the request's URI is not valid: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(format!("{}{path}", target.base_path));
    let mut has_host = false;
    for (name, value) in &request.headers {
        has_host |= name.eq_ignore_ascii_case("host");
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if !has_host {
        let authority = match (target.tls, target.port) {
            (true, 443) | (false, 80) => target.host.clone(),
            (_, port) => format!("{}:{port}", target.host),
        };
        builder = builder.header("host", authority);
    }
    let outgoing = builder
        .body(hyper::Body::from(request.body))
        .map_err(|e| Failure::Exchange(format!("the request cannot be sent: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            Failure::Unreachable(format!(
                "cannot connect to {}:{}: {e}",
                target.host, target.port
            ))
        })?;
    let sent = if target.tls {
        let roots = target.extra_roots.as_deref();
        crate::outbound::send_tls(target.host.clone(), tcp, outgoing, roots).await
    } else {
        crate::outbound::send(tcp, outgoing).await
    };
    let response = sent.map_err(|e| match e.downcast_ref::<crate::outbound::TlsFailed>() {
        Some(tls) => Failure::Unreachable(format!(
            "{tls} (is it served over https at that port, with a certificate this machine \
             trusts?)"
        )),
        None => Failure::Exchange(format!("the exchange failed: {e}")),
    })?;
    let (parts, body) = response.into_parts();
    let body = hyper::body::to_bytes(body)
        .await
        .map_err(|e| Failure::Exchange(format!("the response body broke off: {e}")))?;
    Ok(ReceivedResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
        body_error: None,
        from_runtime: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_becomes_its_variable() {
        assert_eq!(service_variable("todo"), "EDGE_TEST_TARGET_TODO");
        assert_eq!(service_variable("my-api.v2"), "EDGE_TEST_TARGET_MY_API_V2");
    }

    #[test]
    fn a_target_url_keeps_its_path_and_port() {
        let t = parse("todo", "V", "https://example.com:8443/staging/").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (true, "example.com", 8443)
        );
        assert_eq!(t.base_path, "/staging");
        assert_eq!(t.url, "https://example.com:8443/staging");
        let plain = parse("todo", "V", "http://127.0.0.1").unwrap();
        assert_eq!(
            (plain.tls, plain.port, plain.base_path.as_str()),
            (false, 80, "")
        );
    }

    #[test]
    fn a_bad_target_names_the_variable_and_the_fix() {
        for (url, why) in [
            ("todo.example.com", "http:// or https://"),
            ("ftp://x", "http:// or https://"),
            ("https://x/?a=1", "query"),
        ] {
            let e = parse("todo", "EDGE_TEST_TARGET_TODO", url)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("EDGE_TEST_TARGET_TODO") && e.contains(why),
                "{e}"
            );
        }
    }
}
