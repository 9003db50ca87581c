//! What a test written with `#[edge_test]` runs: start the edge, run the body, verify.
//!
//! The macro only decides between `run_sync` and `run_async` (from the `async` keyword);
//! everything else happens here, in ordinary code.

use std::future::Future;
use std::time::Duration;

use crate::edge::Edge;

/// What the attribute knows about a test.
#[derive(Debug, Clone, Copy)]
pub struct TestMeta {
    pub service: &'static str,
    /// `module_path!()::name`, the test's identity.
    pub name: &'static str,
    pub guest_timeout_ms: Option<u64>,
    /// `e2e = ...`: where the test runs.
    pub e2e: E2e,
}

/// Where a test runs (`#[edge_test(e2e = ...)]`): locally and against a deployment (the
/// default), never against one (`false`), or only against one (`"only"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2e {
    Both,
    Never,
    Only,
}

/// The return types a test body may have: `()` or `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "an #[edge_test] function returns `()` or `Result<(), E>` with `E: Debug`, not `{Self}`",
    label = "this return type",
    note = "return `()`, or `Result<(), E>` and use `?`"
)]
pub trait TestOutput {
    fn into_result(self) -> Result<(), String>;
}

impl TestOutput for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Debug> TestOutput for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

fn start(meta: &TestMeta) -> Edge {
    // Before a local edge is started (its guest built) only to be thrown away. A target
    // that is set but bad is Edge::start's to report.
    if matches!(meta.e2e, E2e::Only) && matches!(crate::e2e::target_for(meta.service), Ok(None)) {
        crate::e2e::skip(format!(
            "it is marked `e2e = \"only\"`: it runs only against a deployment of `{}` \
             (set {} to its URL)",
            meta.service,
            crate::e2e::service_variable(meta.service)
        ));
    }
    let edge = Edge::start(meta.service, meta.name).unwrap_or_else(|e| panic!("{e}"));
    if matches!(meta.e2e, E2e::Never)
        && let Some(url) = edge.deployed_url()
    {
        crate::e2e::skip(format!(
            "it is marked `e2e = false`: it never runs against a deployment (e2e mode \
             against {url})"
        ));
    }
    if let Some(ms) = meta.guest_timeout_ms {
        edge.set_guest_timeout(Duration::from_millis(ms));
    }
    edge
}

fn finish(edge: &Edge, output: impl TestOutput) {
    if let Err(error) = output.into_result() {
        panic!("the test returned an error: {error}");
    }
    edge.verify();
}

/// Prints what the test's process backends printed when the test fails (a panic unwinding
/// past it): their output belongs in the failure's.
struct SayOnFailure<'e>(&'e Edge);

impl Drop for SayOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_process_output();
        }
    }
}

/// Runs `test`, and reports it skipped when it unwound with [`e2e::Skipped`](crate::e2e):
/// in e2e mode, it used what only a local run has.
fn skippable(meta: &TestMeta, test: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)) {
        match panic.downcast::<crate::e2e::Skipped>() {
            Ok(skipped) => crate::e2e::report_skip(meta.name, &skipped),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

pub fn run_sync<R: TestOutput>(meta: TestMeta, test: impl FnOnce(Edge) -> R) {
    skippable(&meta, || run_sync_unskipped(meta, test));
}

fn run_sync_unskipped<R: TestOutput>(meta: TestMeta, test: impl FnOnce(Edge) -> R) {
    let edge = start(&meta);
    let _said = SayOnFailure(&edge);
    let output = test(edge.clone());
    finish(&edge, output);
}

pub fn run_async<F, Fut>(meta: TestMeta, test: F)
where
    F: FnOnce(Edge) -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    skippable(&meta, || run_async_unskipped(meta, test));
}

fn run_async_unskipped<F, Fut>(meta: TestMeta, test: F)
where
    F: FnOnce(Edge) -> Fut,
    Fut: Future,
    Fut::Output: TestOutput,
{
    let edge = start(&meta);
    let _said = SayOnFailure(&edge);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the test body");
    let output = runtime.block_on(test(edge.clone()));
    // A request the body stopped awaiting is judged before the test may pass.
    runtime.block_on(edge.settle_abandoned());
    finish(&edge, output);
}
