//! What `#[edge_test]` accepts: async and plain functions, `Result` returns, and the usual
//! test attributes.

mod support;

use edge_test::{Edge, edge_test};

#[edge_test(service = "misbehave")]
async fn an_async_test_awaits_send(edge: Edge) {
    assert_eq!(edge.get("/ok").send().await.text(), "ok");
}

#[edge_test(service = "misbehave")]
fn a_plain_test_uses_send_blocking(edge: Edge) {
    assert_eq!(edge.get("/ok").send_blocking().text(), "ok");
}

#[edge_test(service = "misbehave")]
async fn a_test_may_return_ok(edge: Edge) -> Result<(), String> {
    let body = edge.get("/ok").send().await.text().to_owned();
    if body == "ok" {
        Ok(())
    } else {
        Err(format!("unexpected body {body}"))
    }
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "the test returned an error: \"it went wrong\"")]
async fn a_test_returning_err_fails(_edge: Edge) -> Result<(), String> {
    Err("it went wrong".to_owned())
}

/// Doc comments stay on the generated test. A fixture of the test below, which asks libtest
/// whether it is ignored (run with `--include-ignored`, it does nothing).
#[edge_test(service = "misbehave")]
#[ignore = "shows that #[ignore] is kept"]
async fn an_ignored_test_is_not_run(_edge: Edge) {}

#[test]
fn ignore_is_kept_on_the_generated_test() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l == "an_ignored_test_is_not_run: test"),
        "libtest lists it among the ignored tests:\n{listed}"
    );
}

#[edge_test(service = "misbehave")]
async fn the_edge_knows_its_service(edge: Edge) {
    assert_eq!(edge.service(), "misbehave");
}

#[edge_test(service = "misbehave")]
async fn invocations_are_numbered_and_calls_attributed(edge: Edge) {
    use edge_test::mock::{Mock, Reply, matchers::path};
    Mock::given(path("/a"))
        .respond_with(Reply::text(200, "A"))
        .mount(&edge.backend("api"));
    let first = edge.get("/ok").send().await;
    let second = edge.get("/backend/a").send().await;
    assert_eq!((first.invocation(), second.invocation()), (1, 2));
    assert!(first.backend_calls().is_empty());
    assert_eq!(second.backend_calls().len(), 1);
    assert_eq!(second.backend_calls()[0].invocation(), 2);
    assert_eq!(second.text(), "A");
}

/// Attributes that are not about the test stay on the user's function, where they apply:
/// with `#[track_caller]` on it, `Location::caller()` inside it is where the runner called
/// it, not the line that asks (which it would be, were the attribute moved to the test).
#[edge_test(service = "misbehave")]
#[track_caller]
fn a_functions_own_attributes_stay_on_it(_edge: Edge) {
    let (caller, here) = (std::panic::Location::caller(), line!());
    assert!(
        caller.line() != here || caller.file() != file!(),
        "#[track_caller] did not apply to the function: {caller}"
    );
}
