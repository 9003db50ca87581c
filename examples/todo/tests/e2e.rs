//! e2e mode: the same `#[edge_test]` tests, run against a deployed service when
//! `EDGE_TEST_TARGET_TODO` names it.
//!
//! `suite` is ordinary edge tests: a normal run runs them locally. The tests below it run
//! this binary again with `EDGE_TEST_TARGET_TODO` pointing at a deployment stand-in (the
//! guest served over real HTTP by viceroy-lib, with a real origin behind it; see
//! `e2e/stand_in.rs`), or at targets that are not there, and check what a user sees.

#[path = "e2e/stand_in.rs"]
mod stand_in;

use std::process::Command;
use std::sync::OnceLock;

use edge_test::Service;

edge_test::register_service!("todo", || Service::guest_crate("guest"));

mod suite {
    use edge_test::mock::matchers::{method, path};
    use edge_test::mock::{Mock, Reply};
    use edge_test::{Edge, edge_test};
    use serde_json::{Value, json};

    #[edge_test(service = "todo")]
    async fn the_greeting_comes_from_the_config_store(edge: Edge) {
        let resp = edge.get("/greeting").send().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text(), "hello from the edge, 127.0.0.1");
        edge_test::assert_snapshot!(resp);
    }

    /// Runs in both modes: locally the origin is a mock, against a deployment it is the real
    /// one, and the service's caching is the same.
    #[edge_test(service = "todo")]
    async fn a_todo_is_fetched_once_then_served_from_the_cache(edge: Edge) {
        let id = std::process::id() % 100_000;
        let title = if edge.deployed_url().is_some() {
            "from the real origin"
        } else {
            Mock::given(method("GET"))
                .and(path(&format!("/todos/{id}")))
                .respond_with(Reply::json(
                    200,
                    &json!({"id": id, "title": "mocked", "done": false}),
                ))
                .expect(1)
                .mount(&edge.backend("origin"));
            "mocked"
        };

        let miss = edge.get(&format!("/todos/{id}")).send().await;
        let hit = edge.get(&format!("/todos/{id}")).send().await;

        assert_eq!(miss.header("x-cache"), Some("MISS"));
        assert_eq!(hit.header("x-cache"), Some("HIT"));
        assert_eq!(
            hit.json::<Value>(),
            json!({"id": id, "title": title, "done": false})
        );
    }

    /// Marked for local runs only: skipped against a deployment before it starts.
    #[edge_test(service = "todo", e2e = false)]
    async fn the_greeting_is_plain_text(edge: Edge) {
        let resp = edge.get("/greeting").send().await;
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    /// Marked for deployments only: what a deployment's real origin answers.
    #[edge_test(service = "todo", e2e = "only")]
    async fn the_real_origin_answers_through_the_deployment(edge: Edge) {
        let resp = edge.get("/todos/42").send().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>()["title"], "from the real origin");
    }

    /// Mocks a backend: only a local run can.
    #[edge_test(service = "todo")]
    async fn an_origin_outage_is_a_bad_gateway(edge: Edge) {
        Mock::given(method("GET"))
            .respond_with(Reply::new(503))
            .mount(&edge.backend("origin"));
        let resp = edge.get("/todos/1").send().await;
        assert_eq!(resp.status(), 502);
    }

    /// Reads log lines: only a local run has them.
    #[edge_test(service = "todo")]
    async fn a_bad_id_is_refused_and_logged(edge: Edge) {
        let resp = edge.get("/todos/x").send().await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.logs().endpoint("access"), ["GET /todos/x 400 -"]);
    }
}

fn tls_front() -> &'static stand_in::TlsFront {
    static STARTED: OnceLock<stand_in::TlsFront> = OnceLock::new();
    STARTED.get_or_init(|| stand_in::TlsFront::start(deployment()))
}

fn deployment() -> &'static stand_in::Deployment {
    static STARTED: OnceLock<stand_in::Deployment> = OnceLock::new();
    STARTED.get_or_init(stand_in::Deployment::start)
}

/// This binary's `suite` tests (those `filter` picks) with `target` as the deployment: its
/// status, stdout and stderr.
fn run_suite(target: &str, filter: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([filter, "--test-threads=1"])
        .env_remove("EDGE_TEST_TARGET")
        .env_remove("EDGE_TEST_TARGET_TODO");
    // An empty target: a local run.
    if !target.is_empty() {
        command.env("EDGE_TEST_TARGET_TODO", target);
    }
    let output = command.envs(env.iter().copied()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_suite_runs_against_a_deployment_and_skips_what_needs_a_local_run() {
    let deployment = deployment();
    let before = deployment
        .origin_requests
        .load(std::sync::atomic::Ordering::SeqCst);

    let (passed, out) = run_suite(&deployment.url, "suite::", &[]);

    assert!(passed, "{out}");
    assert!(out.contains("test result: ok. 6 passed"), "{out}");
    // The caching test reached the real origin through the deployment once, and the test
    // for deployments only once.
    let after = deployment
        .origin_requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(after - before, 2, "origin requests; {out}");
    // Each local-only test is named with what needs a local run, and where it ran.
    let url = &deployment.url;
    for skipped in [
        format!(
            "edge-test: SKIPPED e2e::suite::an_origin_outage_is_a_bad_gateway: it mocks backend \
             `origin`, which only a local run has (e2e mode against {url})"
        ),
        format!(
            "edge-test: SKIPPED e2e::suite::a_bad_id_is_refused_and_logged: reads the \
             invocation's log lines, which only a local run has (e2e mode against {url})"
        ),
        format!(
            "edge-test: SKIPPED e2e::suite::the_greeting_is_plain_text: it is marked `e2e = false`: \
             it never runs against a deployment (e2e mode against {url})"
        ),
    ] {
        assert!(out.contains(&skipped), "missing {skipped:?} in:\n{out}");
    }
    assert_eq!(out.matches("edge-test: SKIPPED").count(), 3, "{out}");
}

#[test]
fn a_test_for_deployments_only_is_skipped_in_a_local_run_saying_how_to_run_it() {
    let (passed, out) = run_suite("", "suite::", &[]);
    assert!(passed, "{out}");
    assert!(out.contains("test result: ok. 6 passed"), "{out}");
    assert!(
        out.contains(
            "edge-test: SKIPPED e2e::suite::the_real_origin_answers_through_the_deployment: it is \
             marked `e2e = \"only\"`: it runs only against a deployment of `todo` (set \
             EDGE_TEST_TARGET_TODO to its URL)"
        ),
        "{out}"
    );
    assert_eq!(out.matches("edge-test: SKIPPED").count(), 1, "{out}");
}

#[test]
fn skips_fail_the_run_when_asked() {
    let (passed, out) = run_suite(
        &deployment().url,
        "suite::an_origin_outage_is_a_bad_gateway",
        &[("EDGE_TEST_E2E_SKIPS", "fail")],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains("EDGE_TEST_E2E_SKIPS=fail makes a skip a failure"),
        "{out}"
    );
}

#[test]
fn an_unreachable_deployment_fails_naming_its_url_and_the_cause() {
    // Port 9 (discard) on loopback: nothing listens there.
    let (passed, out) = run_suite(
        "http://127.0.0.1:9",
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(
            "the deployed service `todo` at http://127.0.0.1:9 (EDGE_TEST_TARGET_TODO): cannot \
             connect to 127.0.0.1:9: Connection refused"
        ),
        "{out}"
    );
}

#[test]
fn a_deployment_that_does_not_speak_tls_fails_naming_the_handshake() {
    let plain = deployment().url.replace("http://", "https://");
    let (passed, out) = run_suite(
        &plain,
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!("the deployed service `todo` at {plain}")),
        "{out}"
    );
    assert!(out.contains("the TLS handshake failed"), "{out}");
}

#[test]
fn a_target_that_is_not_a_url_is_refused_with_the_fix() {
    let (passed, out) = run_suite(
        "todo.example.com",
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(
            "EDGE_TEST_TARGET_TODO=\"todo.example.com\" is not a deployment to test service \
             `todo` against: it must start with http:// or https://"
        ),
        "{out}"
    );
}

#[test]
fn a_failing_test_shows_its_requests_to_the_deployment_and_what_came_back() {
    // A "deployment" that answers every request with the wrong greeting.
    let wrong = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", wrong.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in wrong.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "hello from somewhere else";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (passed, out) = run_suite(
        &target,
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    let shown = format!(
        "edge-test: this test's exchanges with the deployment (the last 1):\n\
         > GET {target}/greeting\n"
    );
    assert!(out.contains(&shown), "{out}");
    assert!(
        out.contains("< 200\n< content-type: text/plain\n")
            && out.contains("<\nhello from somewhere else"),
        "{out}"
    );
}

#[test]
fn a_deployment_that_never_answers_fails_at_the_tests_time_limit() {
    // Connections complete in the listener's backlog, and nothing ever reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", silent.local_addr().unwrap());
    let (passed, out) = run_suite(
        &target,
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!(
            "the deployed service `todo` at {target} (EDGE_TEST_TARGET_TODO): no whole answer \
             within 5s (the test's time limit)"
        )),
        "{out}"
    );
}

#[test]
fn a_deployment_with_a_private_ca_is_reached_over_tls_once_its_ca_is_named() {
    let front = tls_front();
    let ca = front.ca_pem.to_str().unwrap();
    let (passed, out) = run_suite(
        &front.url,
        "suite::the_greeting_comes_from_the_config_store",
        &[("EDGE_TEST_TARGET_CA", ca)],
    );
    assert!(passed, "{out}");
    assert!(out.contains("test result: ok. 1 passed"), "{out}");
}

#[test]
fn a_certificate_this_machine_does_not_trust_fails_naming_the_reason() {
    let front = tls_front();
    let (passed, out) = run_suite(
        &front.url,
        "suite::the_greeting_comes_from_the_config_store",
        &[],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!(
            "the deployed service `todo` at {} (EDGE_TEST_TARGET_TODO): the TLS handshake \
             failed: invalid peer certificate: UnknownIssuer",
            front.url
        )),
        "{out}"
    );
}

#[test]
fn a_ca_file_that_cannot_be_read_is_named_with_the_fix() {
    let (passed, out) = run_suite(
        &deployment().url,
        "suite::the_greeting_comes_from_the_config_store",
        &[("EDGE_TEST_TARGET_CA", "/nonexistent/ca.pem")],
    );
    assert!(!passed, "{out}");
    assert!(
        out.contains(
            "EDGE_TEST_TARGET_CA=/nonexistent/ca.pem cannot be read (No such file or directory \
             (os error 2)): name a PEM file of the CA certificates"
        ),
        "{out}"
    );
}
