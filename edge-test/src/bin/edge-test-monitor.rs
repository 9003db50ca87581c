//! `edge-test-monitor`: runs edge-test suites in e2e mode against deployments, on demand and
//! on schedules, with a results page, an API, Prometheus metrics and a webhook. Built with
//! `cargo install edge-test --features monitor` (or `cargo build -p edge-test --features
//! monitor`); see the README, "A monitor with a schedule".

fn main() -> std::process::ExitCode {
    edge_test::monitor::main()
}
