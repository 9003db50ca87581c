//! `edge-test-runner-host`: the whole of edge-test's runner for a guest crate's unit tests,
//! with edge-test's runtime in it. Users name `edge-test-runner` as cargo's target runner,
//! not this: that thin binary hands each call to the shared host this binary starts, and runs
//! this binary for what the host does not run in place. See the README, "unit tests inside
//! the guest".

fn main() -> std::process::ExitCode {
    edge_test::guest_tests::main()
}
