//! Per-test overhead, invocation latency against raw `ExecuteCtx::handle_request` on the
//! same guest, first-test cold start, and the host's memory over 2,000 tests. Run by
//! `bench/run.sh`; prints one line per figure.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_test::{Edge, Service};
use viceroy_lib::config::UnknownImportBehavior;
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

edge_test::register_service!("todo", || Service::guest_crate(bench_path("BENCH_ROOT", "examples/todo/guest")));

/// Read at run time: `cargo test` in the bench crate compiles this example too, without them.
fn bench_path(var: &str, rest: &str) -> std::path::PathBuf {
    let base = std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: run bench/run.sh"));
    std::path::PathBuf::from(base).join(rest)
}

const INVOCATIONS: usize = 2000;
const TESTS_THROUGH_HOST: usize = 2000;
const TESTS_FOR_OVERHEAD: usize = 500;

fn median_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn time_request(edge: &Edge) -> Duration {
    let t = Instant::now();
    let resp = edge.get("/greeting").send_blocking();
    let elapsed = t.elapsed();
    assert_eq!(resp.status(), 200);
    elapsed
}

/// The same guest on a bare viceroy context: the floor for one request.
struct RawContext {
    ctx: std::sync::Arc<ExecuteCtx>,
    runtime: tokio::runtime::Runtime,
}

impl RawContext {
    fn new() -> Self {
        let wasm = bench_path("BENCH_TARGET", "edge-test/guests/wasm32-wasip1/release/todo-guest.wasm");
        let toml = std::fs::read_to_string(bench_path("BENCH_ROOT", "examples/todo/guest/fastly.toml")).unwrap();
        let config: viceroy_lib::config::FastlyConfig = toml.parse().unwrap();
        let ctx = ExecuteCtx::build(&wasm, ProfilingConfig::None, HashSet::new(), UnknownImportBehavior::LinkError, false, WasmFeatures::default())
            .unwrap()
            .with_dictionaries(config.dictionaries().clone())
            .with_capture_logs(std::sync::Arc::new(std::sync::Mutex::new(std::io::sink())))
            .finish()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { ctx, runtime }
    }

    fn time_request(&self) -> Duration {
        let local: SocketAddr = "127.0.0.1:7676".parse().unwrap();
        let req = hyper::Request::get("http://edge.test/greeting").body(hyper::Body::empty()).unwrap();
        let t = Instant::now();
        let (resp, _) = self.runtime.block_on(self.ctx.clone().handle_request(req, local, local)).unwrap();
        let body = self.runtime.block_on(resp.into_body().read_into_vec()).unwrap();
        let elapsed = t.elapsed();
        assert!(!body.is_empty());
        elapsed
    }
}

fn host_rss_kib(worker: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    let host: u32 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

fn main() {
    // A host of our own, started by the first edge: that is the cold start.
    let runtime_dir = std::env::temp_dir().join(format!("edge-test-bench-{}", std::process::id()));
    std::fs::create_dir_all(&runtime_dir).unwrap();
    // Its host exits when idle, and its socket goes with this directory.
    struct RemoveOnExit(std::path::PathBuf);
    impl Drop for RemoveOnExit {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnExit(runtime_dir.clone());
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &runtime_dir) };
    let t = Instant::now();
    let first = Edge::start("todo", "cold").expect("the todo service starts");
    assert_eq!(first.get("/greeting").send_blocking().status(), 200);
    println!("first test, cold (host start + template compile + fork + 1 request): {:?}", t.elapsed());
    drop(first);

    // The three ways to run a request, sampled in turn so that noise on this shared machine
    // falls on all of them alike.
    let forked = Edge::start("todo", "latency").unwrap();
    assert!(edge_test::__private::worker_pid(&forked).is_some(), "a forked worker");
    unsafe { std::env::set_var("EDGE_TEST_HOST", "off") };
    let in_process = Edge::start("todo", "latency").unwrap();
    unsafe { std::env::remove_var("EDGE_TEST_HOST") };
    assert!(edge_test::__private::worker_pid(&in_process).is_none(), "an in-process session");
    let raw = RawContext::new();
    let (mut through_forked, mut through_in_process, mut through_raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..INVOCATIONS {
        through_forked.push(time_request(&forked));
        through_in_process.push(time_request(&in_process));
        through_raw.push(raw.time_request());
    }
    let (forked_median, forked_p99) = median_p99(through_forked);
    let (in_process_median, in_process_p99) = median_p99(through_in_process);
    let (raw_median, raw_p99) = median_p99(through_raw);
    println!("invocation, forked worker (default): median {forked_median:?}, p99 {forked_p99:?}");
    println!("invocation, in process (EDGE_TEST_HOST=off): median {in_process_median:?}, p99 {in_process_p99:?}");
    println!("invocation, raw ExecuteCtx::handle_request: median {raw_median:?}, p99 {raw_p99:?}");
    println!("invocation median, forked / raw: {:.2}", forked_median.as_secs_f64() / raw_median.as_secs_f64());
    drop((forked, in_process));

    // What a test pays before and around its requests: a whole one-request test (start,
    // request, end) against one request on a running edge.
    let (mut starts, mut whole_tests) = (Vec::new(), Vec::new());
    for _ in 0..TESTS_FOR_OVERHEAD {
        let t = Instant::now();
        let edge = Edge::start("todo", "overhead").unwrap();
        starts.push(t.elapsed());
        assert_eq!(edge.get("/greeting").send_blocking().status(), 200);
        drop(edge);
        whole_tests.push(t.elapsed());
    }
    let (start_median, start_p99) = median_p99(starts);
    let (test_median, test_p99) = median_p99(whole_tests);
    println!("Edge::start (mocks + fork + handshake): median {start_median:?}, p99 {start_p99:?}");
    println!("one-request test (start + request + end): median {test_median:?}, p99 {test_p99:?}");
    println!("per-test overhead (one-request test - one request): median {:?}", test_median.saturating_sub(forked_median));

    // Many tests through one host: its memory must stay flat, latency must not grow.
    let mut batch = Vec::new();
    for n in 1..=TESTS_THROUGH_HOST {
        let t = Instant::now();
        let edge = Edge::start("todo", "soak").unwrap();
        assert_eq!(edge.get("/greeting").send_blocking().status(), 200);
        batch.push(t.elapsed());
        if n % 500 == 0 {
            let rss = host_rss_kib(edge_test::__private::worker_pid(&edge).expect("a forked worker"));
            let (median, p99) = median_p99(std::mem::take(&mut batch));
            println!("after {n} tests: host RSS {} MiB, one-request test median {median:?}, p99 {p99:?}", rss / 1024);
        }
    }
}
