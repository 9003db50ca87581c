//! A local process as a backend: `test-origin` (this crate's `src/bin/test-origin.rs`, a
//! real server, not a mock) started on a free port, waited for, routed to, and never left
//! behind. `misbehave`'s `/backend/..` route forwards to its backend `api`.

mod support;

use std::time::Duration;

use edge_test::{Edge, Process, edge_test};
use support::process::{asked_to_run, helper};

fn origin() -> Process {
    Process::new("test-origin", env!("CARGO_BIN_EXE_test-origin"))
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for this purpose: it holds no port and runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn panic_text_of(f: impl FnOnce()) -> String {
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("a panic");
    support::panic_text(&panic)
}

#[edge_test(service = "misbehave-uncached")]
async fn a_backend_is_served_by_a_real_process(edge: Edge) {
    let process = edge.route_process("api", &origin());
    let response = edge.get("/backend/hello").send().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), format!("hello from {}", process.pid()));
    let [call] = response.backend_calls() else {
        panic!("one backend call: {:?}", response.backend_calls())
    };
    assert_eq!(call.path(), "/hello", "recorded like a call to a mock");
    // Its output is read as it comes: give the line a moment to arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process.output().iter().any(|l| l == "served /hello") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            process.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tests_of_one_process_share_it_and_an_isolated_one_is_its_own() {
    let first = Edge::start("misbehave-uncached", "process_backends::first").unwrap();
    let second = Edge::start("misbehave-uncached", "process_backends::second").unwrap();
    let shared = origin().env("ROLE", "shared");
    let a = first.route_process("api", &shared);
    let b = second.route_process("api", &shared);
    assert_eq!(a.pid(), b.pid(), "one process for both");

    let isolated = second.route_process("api", &shared.clone().isolated());
    assert_ne!(isolated.pid(), a.pid());
    assert_eq!(
        second.get("/backend/hello").send_blocking().text(),
        format!("hello from {}", isolated.pid())
    );
    drop(second);
    assert!(
        !alive(isolated.pid()),
        "an isolated process stops with its edge"
    );
    assert!(alive(a.pid()), "a shared one stays for the other tests");
}

#[test]
fn a_process_that_exits_early_is_named_with_its_status_and_output() {
    let edge = Edge::start("misbehave-uncached", "process_backends::early").unwrap();
    let message = panic_text_of(|| {
        edge.route_process("api", &origin().env("EXIT_EARLY", "3"));
    });
    assert!(
        message.contains("process backend `test-origin` (pid "),
        "{message}"
    );
    assert!(
        message.contains("exited with status 3 before it was ready"),
        "{message}"
    );
    assert!(message.contains("bad config: EXIT_EARLY=3"), "{message}");
}

#[test]
fn a_process_never_ready_is_stopped_at_its_start_timeout() {
    let edge = Edge::start("misbehave-uncached", "process_backends::never").unwrap();
    let message = panic_text_of(|| {
        edge.route_process(
            "api",
            &origin()
                .env("START_DELAY_MS", "60000")
                .start_timeout(Duration::from_millis(500)),
        );
    });
    assert!(message.contains("was not ready within 500ms"), "{message}");
    assert!(message.contains("waited for port"), "{message}");
    assert!(message.contains("starting slowly (60000 ms)"), "{message}");
}

#[test]
fn a_slow_start_within_the_limit_and_a_readiness_line() {
    let edge = Edge::start("misbehave-uncached", "process_backends::slow").unwrap();
    edge.route_process(
        "api",
        &origin()
            .env("START_DELAY_MS", "300")
            .ready_when_output_contains("listening on"),
    );
    assert_eq!(edge.get("/backend/hello").send_blocking().status(), 200);
}

#[test]
fn a_process_that_crashes_mid_test_fails_the_request_naming_it() {
    let edge = Edge::start("misbehave-uncached", "process_backends::crash").unwrap();
    let process = edge.route_process("api", &origin().env("ROLE", "crash").isolated());
    let failure = edge
        .get("/backend/crash")
        .try_send_blocking()
        .expect_err("the process died under the request");
    let text = failure.to_string();
    assert!(
        text.contains(&format!(
            "received GET /crash (invocation 1), and its process backend `test-origin` (pid {}) \
             exited with status 7",
            process.pid()
        )),
        "{text}"
    );
    assert!(text.contains("crashing on purpose"), "{text}");
}

#[test]
fn a_port_in_use_is_named_by_the_process_that_could_not_take_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let edge = Edge::start("misbehave-uncached", "process_backends::port").unwrap();
    let message = panic_text_of(|| {
        edge.route_process(
            "api",
            &origin().port(port).ready_when_output_contains("listening"),
        );
    });
    assert!(
        message.contains("exited with status 2 before it was ready"),
        "{message}"
    );
    assert!(
        message.contains(&format!("cannot listen on port {port}")),
        "{message}"
    );
}

#[test]
#[ignore = "a helper: runs in the child process its test starts"]
fn helper_hold_a_process() {
    if !asked_to_run("helper_hold_a_process") {
        return;
    }
    let edge = Edge::start("misbehave-uncached", "process_backends::helper").unwrap();
    // Each test names its own role: tests running at once must not share one process.
    let role = std::env::var("ROLE").unwrap();
    let process = edge.route_process("api", &origin().env("ROLE", role));
    println!("PID {} PORT {}", process.pid(), process.port());
    let hold = std::env::var("HOLD_MS").map_or(60_000, |ms| ms.parse().unwrap());
    std::thread::sleep(Duration::from_millis(hold));
}

#[test]
fn a_killed_test_process_leaves_no_process_and_no_port_behind() {
    let mut child = helper("helper_hold_a_process")
        .env("ROLE", "holder-killed")
        .spawn()
        .unwrap();
    let (pid, port) = named_process(&mut child);
    assert!(alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "the process stopped once the test process that held it was gone"
    );
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("its port is free again");
}

#[test]
#[ignore = "a helper: runs in the child process its test starts"]
fn helper_fail_after_using_a_process() {
    if !asked_to_run("helper_fail_after_using_a_process") {
        return;
    }
    edge_test::__private::run_sync(
        edge_test::__private::TestMeta {
            service: "misbehave-uncached",
            name: "process_backends::helper_fail",
            guest_timeout_ms: None,
            e2e: edge_test::__private::E2e::Both,
        },
        |edge: Edge| {
            edge.route_process("api", &origin().env("ROLE", "failing"));
            let status = edge.get("/backend/hello").send_blocking().status();
            assert_eq!(status, 418, "a failing test");
        },
    );
}

#[test]
fn a_failing_test_shows_what_its_processes_printed() {
    let output = helper("helper_fail_after_using_a_process")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("edge-test: process backend `test-origin` (pid "),
        "{text}"
    );
    assert!(
        text.contains("(used by this test) printed, last lines:"),
        "{text}"
    );
    assert!(text.contains("served /hello"), "{text}");
}

/// The pid and port a `helper_hold_a_process` child names.
fn named_process(child: &mut std::process::Child) -> (u32, u16) {
    let stdout = child.stdout.take().unwrap();
    let named = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .find_map(|l| l.ok()?.strip_prefix("PID ").map(str::to_owned))
        .expect("the helper names its process");
    let (pid, port) = named.split_once(" PORT ").unwrap();
    (pid.parse().unwrap(), port.parse().unwrap())
}

fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

#[test]
fn test_processes_share_one_process_which_stops_after_the_last() {
    let hold = |ms: &str| {
        helper("helper_hold_a_process")
            .env("ROLE", "shared-across-processes")
            .env("HOLD_MS", ms)
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (hold("1500"), hold("1500"));
    let (a, b) = (named_process(&mut first), named_process(&mut second));
    assert_eq!(a, b, "two test processes, one process (pid and port)");
    let (pid, port) = a;
    first.wait().unwrap();
    second.wait().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "stopped once no test process holds it"
    );
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("its port is free again");
}

#[test]
fn a_killed_supervisor_takes_its_process_along() {
    let mut holder = helper("helper_hold_a_process")
        .env("ROLE", "supervisor-killed")
        .spawn()
        .unwrap();
    let (pid, _) = named_process(&mut holder);
    let supervisor = support::process::parent_of(pid);
    assert_ne!(
        supervisor,
        holder.id(),
        "the process belongs to a supervisor"
    );
    support::process::kill(supervisor, "-KILL");
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "it died with its supervisor"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn a_shared_process_that_crashed_is_started_again_for_the_next_test() {
    let declaration = origin().env("ROLE", "restarted");
    let first = Edge::start("misbehave-uncached", "process_backends::restart_a").unwrap();
    let crashed = first.route_process("api", &declaration);
    let _ = first.get("/backend/crash").try_send_blocking();
    assert!(gone_within(crashed.pid(), Duration::from_secs(10)));

    let second = Edge::start("misbehave-uncached", "process_backends::restart_b").unwrap();
    let restarted = second.route_process("api", &declaration);
    assert_ne!(restarted.pid(), crashed.pid(), "a new process");
    assert_eq!(
        second.get("/backend/hello").send_blocking().text(),
        format!("hello from {}", restarted.pid())
    );
}

#[edge_test(service = "misbehave-uncached")]
async fn a_process_a_mock_a_cassette_and_the_platform_in_one_test(edge: Edge) {
    use edge_test::cassette::Cassette;
    use edge_test::mock::matchers::path;
    use edge_test::mock::{Mock, Reply};
    let process = edge.route_process("api", &origin().env("ROLE", "composed"));
    Mock::given(path("/pinned"))
        .respond_with(Reply::text(200, "from the mock"))
        .mount(&edge.backend("pinned"));
    edge.cassette(
        "third",
        Cassette::new().path(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/cassettes/third.json"
        )),
    );
    edge.config_store("flags").set("beta", "on");

    let from_process = edge.get("/backend/hello").send().await;
    assert_eq!(from_process.text(), format!("hello from {}", process.pid()));
    assert_eq!(edge.get("/pinned").send().await.text(), "from the mock");
    assert_eq!(
        edge.get("/via/third/answer").send().await.text(),
        "from the cassette"
    );
    assert_eq!(edge.get("/config/flags/beta").send().await.text(), "on");
}
