//! Every way a service can be set up wrong gets an error that names the problem and the fix.

mod support;

use edge_test::{Edge, EdgeError, edge_test};

fn start_error(service: &str) -> String {
    match Edge::start(service, "bad_input") {
        Ok(_) => panic!("service `{service}` was expected not to start"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "expected the error to mention {part:?}:\n{message}"
        );
    }
}

#[test]
fn an_unknown_service_lists_the_registered_ones() {
    let err = Edge::start("nope", "bad_input").unwrap_err();
    assert!(matches!(err, EdgeError::UnknownService { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            "unknown service `nope`",
            "`bad-manifest`",
            "`misbehave`",
            "`not-wasm`",
            "register_service!",
        ],
    );
}

#[edge_test(service = "nope")]
#[should_panic(expected = "unknown service `nope`. Registered services:")]
async fn the_attribute_reports_an_unknown_service_at_run_time(_edge: Edge) {}

#[test]
fn a_missing_wasm_names_the_path() {
    assert_mentions(
        &start_error("missing-wasm"),
        &[
            "service `missing-wasm`",
            "cannot read its wasm module",
            "fixtures/does-not-exist.wasm",
            "No such file",
        ],
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    assert_mentions(
        &start_error("not-wasm"),
        &[
            "service `not-wasm`",
            "cannot load",
            "not-wasm.wasm",
            "built for wasm32-wasip1",
        ],
    );
}

#[test]
fn a_guest_importing_unknown_host_functions_is_refused() {
    assert_mentions(
        &start_error("unknown-import"),
        &["service `unknown-import`", "fastly_nonexistent", "teleport"],
    );
}

#[test]
fn a_guest_crate_that_does_not_compile_shows_cargo_output() {
    assert_mentions(
        &start_error("broken"),
        &[
            "service `broken`",
            "guests/broken",
            "failed",
            "--- cargo output ---",
            "mismatched types",
            "forty-two",
        ],
    );
}

#[test]
fn a_malformed_fastly_toml_is_reported_with_its_path() {
    assert_mentions(
        &start_error("bad-manifest"),
        &[
            "service `bad-manifest`",
            "invalid fastly.toml",
            "bad-fastly.toml",
            "url",
        ],
    );
}

#[test]
fn a_fastly_toml_file_that_does_not_resolve_is_named() {
    let cwd = std::env::current_dir().unwrap();
    assert_mentions(
        &start_error("missing-file"),
        &[
            "service `missing-file`",
            "missing-file-fastly.toml",
            "[local_server.config_stores.settings] names the file \"fixtures/no-such-settings.json\"",
            &format!(
                "looked for {}",
                cwd.join("fixtures/no-such-settings.json").display()
            ),
            &format!("the test's working directory, {}", cwd.display()),
        ],
    );
}

#[test]
fn a_missing_fastly_toml_is_reported_with_its_path() {
    assert_mentions(
        &start_error("missing-manifest"),
        &[
            "invalid fastly.toml",
            "no-such-fastly.toml",
            "cannot read it",
        ],
    );
}

#[test]
fn an_error_in_one_service_leaves_other_services_working() {
    let _ = start_error("not-wasm");
    let edge = Edge::start("misbehave", "bad_input").expect("a good service still starts");
    assert_eq!(edge.get("/ok").send_blocking().text(), "ok");
}

#[test]
fn a_guest_reaching_past_its_mocks_is_refused_and_fails_the_test() {
    // A dynamic backend the rewrite cannot redirect (the module has no shadow stack) to
    // TEST-NET-3, routed nowhere: unfenced, the connection would fail or hang on its own;
    // fenced, it is refused at once and the test is told why.
    let edge = Edge::start("dynamic-by-ip", "bad_input").expect("the fixture starts");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        edge.get("/").send_blocking()
    }))
    .expect_err("a connection past the mocks fails the test");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert_mentions(
        message,
        &[
            "GET / (invocation 1)",
            "the guest of service `dynamic-by-ip` tried to connect to TCP 203.0.113.9:80",
            "none of its mocked backends, and was refused",
            "[local_server.backends]",
            "edge.dynamic_backend(\"host:port\")",
            "edge-test did not redirect this module's dynamic backends to mocks: the module has \
             no `__stack_pointer`",
        ],
    );
}

#[test]
fn a_guest_looking_up_a_host_name_is_refused_too() {
    let edge = Edge::start("dynamic-by-name", "bad_input").expect("the fixture starts");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        edge.get("/").send_blocking()
    }))
    .expect_err("a DNS lookup is a connection past the mocks");
    let message = panic.downcast_ref::<String>().unwrap();
    assert_mentions(message, &["tried to connect to UDP ", ":53 (a DNS lookup)"]);
    assert_eq!(
        message.matches("(a DNS lookup)").count(),
        1,
        "a destination is named once however often it was tried:\n{message}"
    );
}
