//! The `#[edge_test]` attribute. It parses, checks and emits; all behaviour lives in
//! `edge-test-core`. Use it through the `edge-test` crate.

mod entry;

use proc_macro::TokenStream;

/// Turns a function taking an `Edge` into a test that runs against the named service.
///
/// Keys: `service = "name"` (required), `guest_timeout_ms = N` (optional). See the
/// `edge-test` crate for examples.
#[proc_macro_attribute]
pub fn edge_test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::edge_test(args.into(), item.into()).into()
}
