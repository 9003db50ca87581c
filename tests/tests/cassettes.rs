//! Cassettes: a backend's traffic recorded from a real origin (`support::origin`, a server
//! of its own, not a mock) and replayed with that origin stopped. Recording happens in a
//! child process (this binary's `helper_record`) with `CI` unset, as a developer records;
//! replay happens here, where `.ci/run` sets `CI`, as CI replays.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edge_test::cassette::{Cassette, CassetteMode, MatchOn};
use edge_test::mock::matchers::path;
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, GuestFailureKind};
use serde_json::Value;
use support::origin::{Origin, SECRET};
use support::process::{asked_to_run, helper, run_to_end};

const SERVICE: &str = "misbehave-uncached";

/// A fresh cassette file for `name`, under the system's temporary directory, removed when
/// the test is done with it.
fn cassette_path(name: &str) -> TempCassette {
    let dir = std::env::temp_dir().join(format!("edge-test-cassettes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&path);
    TempCassette(path)
}

struct TempCassette(PathBuf);

impl std::ops::Deref for TempCassette {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempCassette {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempCassette {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempCassette {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // The directory goes with the last file of this process.
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// One request the recording helper sends: method, path (of the guest's `/backend/..`
/// route, which forwards to backend `api`), body, and whether it carries [`SECRET`].
type Step = (&'static str, &'static str, &'static str, bool);

fn script(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|(m, p, b, secret)| format!("{m} {p} {} {b}", u8::from(*secret)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records `steps` from `origin` into `path` in a child process (CI unset) and returns
/// what the guest answered to each, one line each.
fn record(service: &str, path: &Path, origin: &Origin, steps: &[Step]) -> String {
    let child = helper("helper_record")
        .env_remove("CI")
        .env("CASSETTE_SERVICE", service)
        .env("CASSETTE_PATH", path)
        .env("CASSETTE_ORIGIN", origin.url())
        .env("CASSETTE_SCRIPT", script(steps))
        .spawn()
        .unwrap();
    let output = run_to_end(child);
    output
        .lines()
        .filter_map(|l| l.strip_prefix("ANSWER "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn request(edge: &Edge, (method, path, body, secret): Step) -> edge_test::RequestBuilder {
    let builder = match method {
        "POST" => edge.post(path).text(body),
        _ => edge.get(path),
    };
    if secret {
        builder.header("authorization", SECRET)
    } else {
        builder
    }
}

fn answer(response: &edge_test::Response) -> String {
    format!(
        "{} {}",
        response.status().as_u16(),
        String::from_utf8_lossy(response.bytes())
    )
}

#[test]
#[ignore = "a helper: runs in the child process its test starts"]
fn helper_record() {
    if !asked_to_run("helper_record") {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap();
    let edge = Edge::start(&var("CASSETTE_SERVICE"), "cassettes::helper_record").unwrap();
    let tape = edge.cassette(
        "api",
        Cassette::new()
            .mode(CassetteMode::Record)
            .origin(var("CASSETTE_ORIGIN"))
            .path(var("CASSETTE_PATH"))
            .record_timeout(Duration::from_millis(300)),
    );
    assert!(tape.is_recording());
    tape.state("seed", || format!("seed-{}", std::process::id()));
    for line in var("CASSETTE_SCRIPT").lines() {
        let mut parts = line.splitn(4, ' ');
        let (method, path, secret, body) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap() == "1",
            parts.next().unwrap_or(""),
        );
        let step: Step = (leak(method), leak(path), leak(body), secret);
        match request(&edge, step).try_send_blocking() {
            Ok(response) => println!("ANSWER {}", answer(&response)),
            Err(failure) => println!("ANSWER failed: {}", failure.kind_name()),
        }
    }
    edge.verify();
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for edge_test::GuestFailure {
    fn kind_name(&self) -> &'static str {
        match self.kind() {
            GuestFailureKind::TimedOut { .. } => "timeout",
            GuestFailureKind::MockFailed { .. } => "mock failed",
            _ => "other",
        }
    }
}

/// An answer with a JSON body in serde's form (keys sorted), for comparing as JSON.
fn same_json(answer: &str) -> String {
    match answer.split_once(' ') {
        Some((status, body)) => match serde_json::from_str::<Value>(body) {
            Ok(json) => format!("{status} {json}"),
            Err(_) => answer.to_owned(),
        },
        None => answer.to_owned(),
    }
}

fn replaying(service: &str, path: &Path, cassette: Cassette) -> Edge {
    let edge = Edge::start(service, "cassettes::replay").unwrap();
    let tape = edge.cassette("api", cassette.path(path));
    assert!(!tape.is_recording());
    edge
}

#[test]
fn a_recording_replays_with_the_origin_stopped_in_any_order() {
    let path = cassette_path("any-order");
    let origin = Origin::start();
    let steps: [Step; 3] = [
        ("GET", "/backend/todos/7", "", false),
        ("POST", "/backend/echo", r#"{"b":1,"a":[2,3]}"#, false),
        ("GET", "/backend/binary", "", false),
    ];
    let recorded = record(SERVICE, &path, &origin, &steps);
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    drop(origin);

    let edge = replaying(SERVICE, &path, Cassette::new().fail_on_unused());
    let mut replayed = Vec::new();
    for step in [steps[2], steps[0], steps[1]] {
        replayed.push(answer(&request(&edge, step).send_blocking()));
    }
    let mut recorded: Vec<String> = recorded.lines().map(same_json).collect();
    recorded.rotate_right(1);
    let replayed: Vec<String> = replayed.iter().map(|a| same_json(a)).collect();
    assert_eq!(replayed, recorded, "JSON bodies come back as the same JSON");
    assert_eq!(
        replayed[1],
        r#"200 {"id":7,"title":"from the real origin"}"#
    );
    edge.verify();

    // The file a reviewer reads.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["edge-test cassette"], 1);
    assert_eq!(file["service"], SERVICE);
    assert_eq!(file["backend"], "api");
    assert!(file["recorded_at"].as_str().unwrap().ends_with('Z'));
    let interactions = file["interactions"].as_array().unwrap();
    assert_eq!(
        interactions[0]["response"]["body"]["json"]["title"], "from the real origin",
        "JSON as JSON"
    );
    assert_eq!(
        interactions[1]["request"]["body"]["json"],
        serde_json::json!({ "a": [2, 3], "b": 1 })
    );
    assert_eq!(interactions[2]["response"]["body"]["base64"], "/wD+AQ==");
    let names: Vec<&str> = interactions[0]["response"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().split_once(": ").unwrap().0)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "headers sorted");
}

#[test]
fn repeated_identical_requests_replay_in_their_recorded_order() {
    let path = cassette_path("repeated");
    let origin = Origin::start();
    let counter: Step = ("GET", "/backend/counter", "", false);
    assert_eq!(
        record(SERVICE, &path, &origin, &[counter, counter, counter]),
        "200 1\n200 2\n200 3"
    );
    drop(origin);
    let edge = replaying(SERVICE, &path, Cassette::new());
    let replayed: Vec<String> = (0..3)
        .map(|_| answer(&request(&edge, counter).send_blocking()))
        .collect();
    assert_eq!(replayed, ["200 1", "200 2", "200 3"]);
    let fourth = request(&edge, counter)
        .try_send_blocking()
        .expect_err("the cassette holds three");
    assert!(
        fourth
            .to_string()
            .contains("All 3 recorded interaction(s) were already replayed"),
        "{fourth}"
    );
}

#[test]
fn secrets_never_reach_the_file_and_scrubbed_requests_still_match() {
    let path = cassette_path("secrets");
    let origin = Origin::start();
    let whoami: Step = ("GET", "/backend/whoami", "", true);
    assert_eq!(record(SERVICE, &path, &origin, &[whoami]), "200 ok");
    drop(origin);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("s3cret"),
        "the guest's authorization header:\n{text}"
    );
    assert!(
        !text.contains("origin-session-secret"),
        "the origin's cookie:\n{text}"
    );
    assert!(text.contains("[scrubbed by edge-test]"), "{text}");

    // Matching on the header works on the scrubbed value, the live one scrubbed the same.
    let edge = replaying(
        SERVICE,
        &path,
        Cassette::new().match_on([
            MatchOn::Method,
            MatchOn::Path,
            MatchOn::Header("authorization".into()),
        ]),
    );
    assert_eq!(answer(&request(&edge, whoami).send_blocking()), "200 ok");
}

#[test]
fn a_scrubber_of_the_tests_own_runs_at_record_and_at_replay() {
    let path = cassette_path("own-scrubber");
    let origin = Origin::start();
    // `trace` changes every run; the scrubber drops it from the query both times.
    let child = helper("helper_record_scrubbed")
        .env_remove("CI")
        .env("CASSETTE_PATH", &path)
        .env("CASSETTE_ORIGIN", origin.url())
        .spawn()
        .unwrap();
    run_to_end(child);
    drop(origin);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("run-1"));
    let edge = replaying(SERVICE, &path, Cassette::new().scrub_request(drop_trace));
    let other_run: Step = ("GET", "/backend/todos/3?trace=run-2", "", false);
    assert_eq!(
        answer(&request(&edge, other_run).send_blocking()),
        r#"200 {"id":3,"title":"from the real origin"}"#
    );
}

fn drop_trace(request: &mut edge_test::cassette::CassetteRequest) {
    request.query = request.query.take().and_then(|q| {
        let kept: Vec<&str> = q.split('&').filter(|p| !p.starts_with("trace=")).collect();
        (!kept.is_empty()).then(|| kept.join("&"))
    });
}

#[test]
#[ignore = "a helper: runs in the child process its test starts"]
fn helper_record_scrubbed() {
    if !asked_to_run("helper_record_scrubbed") {
        return;
    }
    let edge = Edge::start(SERVICE, "cassettes::helper_record_scrubbed").unwrap();
    edge.cassette(
        "api",
        Cassette::new()
            .mode(CassetteMode::Record)
            .origin(std::env::var("CASSETTE_ORIGIN").unwrap())
            .path(std::env::var("CASSETTE_PATH").unwrap())
            .scrub_request(drop_trace),
    );
    let response = edge.get("/backend/todos/3?trace=run-1").send_blocking();
    assert_eq!(response.status(), 200);
    edge.verify();
}

#[test]
fn an_unmatched_request_fails_naming_the_closest_recorded_ones() {
    let path = cassette_path("unmatched");
    let origin = Origin::start();
    record(
        SERVICE,
        &path,
        &origin,
        &[("GET", "/backend/todos/7", "", false)],
    );
    drop(origin);
    let edge = replaying(SERVICE, &path, Cassette::new());
    let failure = edge
        .get("/backend/todos/8")
        .try_send_blocking()
        .expect_err("not recorded");
    let text = failure.to_string();
    assert!(
        text.contains("backend `api` received GET /todos/8 (invocation 1), which no mock matched"),
        "{text}"
    );
    assert!(
        text.contains("#1 GET /todos/7: path /todos/8 here, /todos/7 recorded"),
        "{text}"
    );
    assert!(
        text.contains("EDGE_TEST_CASSETTES=record cargo test"),
        "{text}"
    );
}

#[test]
fn interactions_never_replayed_fail_the_test_when_asked() {
    let path = cassette_path("unused");
    let origin = Origin::start();
    let (seven, three) = (
        ("GET", "/backend/todos/7", "", false),
        ("GET", "/backend/todos/3", "", false),
    );
    record(SERVICE, &path, &origin, &[seven, three]);
    drop(origin);
    let lenient = replaying(SERVICE, &path, Cassette::new());
    request(&lenient, seven).send_blocking();
    lenient.verify();

    let strict = replaying(SERVICE, &path, Cassette::new().fail_on_unused());
    request(&strict, seven).send_blocking();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| strict.verify()))
        .expect_err("one interaction unused");
    let message = support::panic_text(&panic);
    assert!(message.contains("never replayed"), "{message}");
    assert!(message.contains("#2 GET /todos/3"), "{message}");
}

#[test]
fn corrupt_and_newer_cassettes_are_clear_errors() {
    for (name, content, expected) in [
        ("corrupt", "{ not json", "is not readable"),
        (
            "not-a-cassette",
            r#"{"interactions": []}"#,
            "it is not a cassette",
        ),
        (
            "newer",
            r#"{"edge-test cassette": 99, "interactions": []}"#,
            "is format 99, written by a newer edge-test",
        ),
    ] {
        let path = cassette_path(name);
        std::fs::write(&path, content).unwrap();
        let edge = Edge::start(SERVICE, "cassettes::corrupt").unwrap();
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            edge.cassette("api", Cassette::new().path(&path));
        }))
        .expect_err("refused");
        let message = support::panic_text(&panic);
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn a_missing_cassette_says_how_to_record_it() {
    let path = cassette_path("missing");
    let edge = Edge::start(SERVICE, "cassettes::lists_todos").unwrap();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        edge.cassette("api", Cassette::new().path(&path));
    }))
    .expect_err("missing");
    let message = support::panic_text(&panic);
    assert!(
        message.contains(&format!("cassette {} does not exist", path.display())),
        "{message}"
    );
    assert!(
        message.contains("`EDGE_TEST_CASSETTES=record cargo test lists_todos` records it"),
        "{message}"
    );
}

#[test]
fn ci_refuses_to_record() {
    let path = cassette_path("ci");
    let origin = Origin::start();
    let output = helper("helper_record")
        .env("CI", "true")
        .env("CASSETTE_SERVICE", SERVICE)
        .env("CASSETTE_PATH", &path)
        .env("CASSETTE_ORIGIN", origin.url())
        .env("CASSETTE_SCRIPT", "GET /backend/todos/1 0 ")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("would be recorded, but CI is set"), "{text}");
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!path.exists());
}

#[test]
fn state_recorded_is_state_replayed() {
    let path = cassette_path("state");
    let origin = Origin::start();
    record(
        SERVICE,
        &path,
        &origin,
        &[("GET", "/backend/todos/1", "", false)],
    );
    drop(origin);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let recorded = file["state"]["seed"].as_str().unwrap().to_owned();
    assert!(recorded.starts_with("seed-"));
    let edge = Edge::start(SERVICE, "cassettes::state").unwrap();
    let tape = edge.cassette("api", Cassette::new().path(&path));
    let replayed = tape.state("seed", || panic!("not made again at replay"));
    assert_eq!(replayed, recorded);
}

#[test]
fn faults_survive_the_recording() {
    let path = cassette_path("faults");
    let origin = Origin::start();
    let (dropped, down) = (
        ("GET", "/backend/drop", "", false),
        ("GET", "/backend/down", "", false),
    );
    let recorded = record(SERVICE, &path, &origin, &[dropped, down]);
    drop(origin);
    let lines: Vec<&str> = recorded.lines().collect();
    assert!(lines[0].starts_with("502 send failed"), "{recorded}");
    assert_eq!(lines[1], "503 down for maintenance");
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains(r#""fault": "connection""#), "{file}");
    let edge = replaying(SERVICE, &path, Cassette::new());
    let replayed = [
        answer(&request(&edge, dropped).send_blocking()),
        answer(&request(&edge, down).send_blocking()),
    ];
    assert_eq!(replayed[0], lines[0], "the same connection failure");
    assert_eq!(replayed[1], lines[1], "the same 503");
}

#[test]
fn a_time_out_is_recorded_and_replayed_as_one() {
    let path = cassette_path("timeout");
    let origin = Origin::start();
    let slow: Step = ("GET", "/backend/slow", "", false);
    let service = "misbehave-uncached-impatient";
    assert_eq!(record(service, &path, &origin, &[slow]), "failed: timeout");
    drop(origin);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains(r#""fault": "timeout""#)
    );
    let edge = replaying(service, &path, Cassette::new());
    let failure = request(&edge, slow)
        .try_send_blocking()
        .expect_err("hangs again");
    assert_eq!(failure.kind_name(), "timeout", "{failure}");
}

#[test]
fn a_mock_answers_before_the_cassette() {
    let file = cassette_path("mixed");
    let origin = Origin::start();
    record(
        SERVICE,
        &file,
        &origin,
        &[
            ("GET", "/backend/todos/7", "", false),
            ("GET", "/backend/todos/3", "", false),
        ],
    );
    drop(origin);
    let edge = replaying(SERVICE, &file, Cassette::new());
    Mock::given(path("/todos/7"))
        .respond_with(Reply::text(200, "from the mock"))
        .mount(&edge.backend("api"));
    assert_eq!(
        edge.get("/backend/todos/7").send_blocking().text(),
        "from the mock"
    );
    assert_eq!(
        edge.get("/backend/todos/3").send_blocking().text(),
        r#"{"id":3,"title":"from the real origin"}"#
    );
    let calls = edge.backend("api").received();
    assert_eq!(calls.len(), 2, "both recorded as backend calls");
}

#[test]
fn many_processes_record_at_once_into_their_own_files() {
    let origin = Origin::start();
    let children: Vec<(TempCassette, std::process::Child)> = (0..4)
        .map(|i| {
            let path = cassette_path(&format!("parallel-{i}"));
            let child = helper("helper_record")
                .env_remove("CI")
                .env("CASSETTE_SERVICE", SERVICE)
                .env("CASSETTE_PATH", &path)
                .env("CASSETTE_ORIGIN", origin.url())
                .env("CASSETTE_SCRIPT", format!("GET /backend/todos/{i} 0 "))
                .spawn()
                .unwrap();
            (path, child)
        })
        .collect();
    for (i, (path, child)) in children.into_iter().enumerate() {
        run_to_end(child);
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            file["interactions"][0]["request"]["path"],
            format!("/todos/{i}"),
            "each process its own file"
        );
    }
}

#[test]
#[ignore = "a helper: runs in the child process its test starts"]
fn helper_default_mode() {
    if !asked_to_run("helper_default_mode") {
        return;
    }
    let edge = Edge::start(SERVICE, "cassettes::helper_default_mode").unwrap();
    // The test asks for nothing: the mode is the variable's.
    let tape = edge.cassette(
        "api",
        Cassette::new()
            .origin(std::env::var("CASSETTE_ORIGIN").unwrap())
            .path(std::env::var("CASSETTE_PATH").unwrap()),
    );
    println!("RECORDING {}", tape.is_recording());
    let response = edge.get("/backend/todos/5").send_blocking();
    assert_eq!(response.status(), 200);
    edge.verify();
}

#[test]
fn the_variable_sets_the_mode_for_a_whole_run() {
    let path = cassette_path("by-variable");
    let origin = Origin::start();
    let run = |mode: &str| {
        let child = helper("helper_default_mode")
            .env_remove("CI")
            .env("EDGE_TEST_CASSETTES", mode)
            .env("CASSETTE_PATH", &path)
            .env("CASSETTE_ORIGIN", origin.url())
            .spawn()
            .unwrap();
        run_to_end(child)
    };
    assert!(run("record-if-missing").contains("RECORDING true"));
    assert!(path.exists());
    assert!(
        run("record-if-missing").contains("RECORDING false"),
        "the second run finds the file and replays it"
    );
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    let output = helper("helper_default_mode")
        .env("EDGE_TEST_CASSETTES", "rewind")
        .env("CASSETTE_PATH", &path)
        .env("CASSETTE_ORIGIN", origin.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        text.contains("EDGE_TEST_CASSETTES=\"rewind\" is not a cassette mode: use replay, record or record-if-missing"),
        "{text}"
    );
}
