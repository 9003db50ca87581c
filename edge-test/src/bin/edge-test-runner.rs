//! `edge-test-runner`: cargo's target runner for a guest crate's own unit tests, each run in
//! a pristine instance forked from a module compiled once per machine. Set it in the guest
//! crate's `.cargo/config.toml`:
//!
//! ```toml
//! [target.wasm32-wasip1]
//! runner = "edge-test-runner"
//! ```
//!
//! and run `cargo test` or `cargo nextest run` there. See the README, "unit tests inside
//! the guest".

fn main() -> std::process::ExitCode {
    edge_test::guest_tests::main()
}
