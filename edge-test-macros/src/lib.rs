//! The `#[edge_test]` attribute. It parses, checks and emits; all behaviour lives in
//! `edge-test-core`. Use it through the `edge-test` crate.

mod entry;

use proc_macro::TokenStream;

/// Turns a function taking an `Edge` into a test that runs against the named service.
///
/// Keys: `service = "name"` (required: a service registered with
/// `edge_test::register_service!`), `guest_timeout_ms = N` (optional: the time limit of
/// each of the test's invocations), `e2e = false` or `e2e = "only"` (optional: the test never
/// runs against a deployment, or runs only against one; by default both, see e2e mode in
/// the README). The function is `async fn` or `fn`, takes one `Edge`,
/// and returns `()` or `Result<(), E>` with `E: Debug`. See the `edge-test` crate for
/// examples.
///
/// # What it expands to
///
/// ```text
/// #[edge_test(service = "todo", guest_timeout_ms = 2000)]
/// #[ignore]
/// #[tracing::instrument]
/// async fn cached(edge: Edge) -> Result<(), String> { .. }
/// ```
///
/// becomes, in effect,
///
/// ```text
/// const _: () = ::edge_test::__private::assert_is_edge::<Edge>();  // the argument's type
/// #[ignore]                                  // test-only: ignore, should_panic, doc, cfg, cfg_attr
/// #[test]
/// fn cached() {
///     #[tracing::instrument]                 // every other attribute stays on your function
///     async fn cached(edge: Edge) -> Result<(), String> { .. }
///     ::edge_test::__private::run_async(
///         TestMeta { service: "todo", name: "<module path>::cached", guest_timeout_ms: Some(2000), e2e: E2e::Both },
///         cached,
///     );
/// }
/// ```
///
/// `run_async` starts the edge (building and compiling the service the first time), runs
/// your function on a tokio runtime of its own, settles a request it stopped awaiting,
/// fails the test on an `Err` and verifies the mocks' expectations; `run_sync` does the same
/// for a plain `fn`. The macro never looks at types: a wrong argument or return type is
/// reported by those functions' bounds, with messages that say what to write.
#[proc_macro_attribute]
pub fn edge_test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::edge_test(args.into(), item.into()).into()
}
