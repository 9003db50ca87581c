//! What crossing the worker's socket costs for large outputs: a 20 MiB response and 60 MiB
//! of log lines, forked against in process, sampled in turn. Run by `bench/run.sh`.

use std::time::{Duration, Instant};

use edge_test::{Edge, Service};

edge_test::register_service!("misbehave", || {
    let root = std::env::var_os("BENCH_ROOT").expect("BENCH_ROOT is not set: run bench/run.sh");
    Service::guest_crate(std::path::PathBuf::from(root).join("tests/guests/misbehave"))
        .max_log_bytes(64 << 20)
        .guest_timeout(Duration::from_secs(60))
});

const ROUNDS: usize = 7;

fn time(edge: &Edge, path: &str) -> Duration {
    let t = Instant::now();
    let resp = edge.get(path).send_blocking();
    let elapsed = t.elapsed();
    assert_eq!(resp.status(), 200);
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let forked = Edge::start("misbehave", "boundary").unwrap();
    assert!(edge_test::__private::worker_pid(&forked).is_some(), "a forked worker");
    // SAFETY: no other thread reads the environment while this single-threaded setup runs.
    unsafe { std::env::set_var("EDGE_TEST_HOST", "off") };
    let in_process = Edge::start("misbehave", "boundary").unwrap();
    unsafe { std::env::remove_var("EDGE_TEST_HOST") };
    assert!(edge_test::__private::worker_pid(&in_process).is_none(), "an in-process session");

    for (what, path) in [("20 MiB response", "/big/20"), ("60 MiB of logs", "/flood/61440")] {
        let (mut through_forked, mut through_in_process) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            through_forked.push(time(&forked, path));
            through_in_process.push(time(&in_process, path));
        }
        let (f, p) = (median(through_forked), median(through_in_process));
        println!(
            "{what}: forked median {f:?}, in process median {p:?}, forked / in process {:.2}",
            f.as_secs_f64() / p.as_secs_f64()
        );
    }
}
