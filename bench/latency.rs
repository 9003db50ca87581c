//! Per-test overhead, invocation latency against raw `ExecuteCtx::handle_request` on the
//! same guest, first-test cold start, and the host's memory over 2,000 tests. Run by
//! `bench/run.sh`; prints one line per figure.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_test::{Edge, Service};
use viceroy_lib::config::UnknownImportBehavior;
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

edge_test::register_service!("todo", || Service::guest_crate(concat!(env!("BENCH_ROOT"), "/examples/todo/guest")));

const INVOCATIONS: usize = 2000;
const TESTS_THROUGH_HOST: usize = 2000;

fn median_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
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
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &runtime_dir) };
    let t = Instant::now();
    let first = Edge::start("todo", "cold").expect("the todo service starts");
    assert_eq!(first.get("/greeting").send_blocking().status(), 200);
    println!("first test, cold (host start + template compile + fork + 1 request): {:?}", t.elapsed());
    drop(first);

    let starts: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let edge = Edge::start("todo", "bench").unwrap();
            let elapsed = t.elapsed();
            drop(edge);
            elapsed
        })
        .collect();
    let (median, p99) = median_p99(starts);
    println!("per-test overhead (Edge::start: mocks + fork + handshake): median {median:?}, p99 {p99:?}");

    let edge = Edge::start("todo", "latency").unwrap();
    let through_edge: Vec<Duration> = (0..INVOCATIONS)
        .map(|_| {
            let t = Instant::now();
            let resp = edge.get("/greeting").send_blocking();
            let elapsed = t.elapsed();
            assert_eq!(resp.status(), 200);
            elapsed
        })
        .collect();
    let (edge_median, edge_p99) = median_p99(through_edge);
    println!("invocation through edge-test: median {edge_median:?}, p99 {edge_p99:?}");
    drop(edge);

    let wasm = std::path::PathBuf::from(env!("BENCH_TARGET")).join("edge-test/guests/wasm32-wasip1/release/todo-guest.wasm");
    let toml = std::fs::read_to_string(concat!(env!("BENCH_ROOT"), "/examples/todo/guest/fastly.toml")).unwrap();
    let config: viceroy_lib::config::FastlyConfig = toml.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ctx = ExecuteCtx::build(&wasm, ProfilingConfig::None, HashSet::new(), UnknownImportBehavior::LinkError, false, WasmFeatures::default())
        .unwrap()
        .with_dictionaries(config.dictionaries().clone())
        .with_capture_logs(std::sync::Arc::new(std::sync::Mutex::new(std::io::sink())))
        .finish()
        .unwrap();
    let local: SocketAddr = "127.0.0.1:7676".parse().unwrap();
    let raw: Vec<Duration> = (0..INVOCATIONS)
        .map(|_| {
            let req = hyper::Request::get("http://edge.test/greeting").body(hyper::Body::empty()).unwrap();
            let t = Instant::now();
            let (resp, _) = runtime.block_on(ctx.clone().handle_request(req, local, local)).unwrap();
            let body = runtime.block_on(resp.into_body().read_into_vec()).unwrap();
            let elapsed = t.elapsed();
            assert!(!body.is_empty());
            elapsed
        })
        .collect();
    let (raw_median, raw_p99) = median_p99(raw);
    println!("raw handle_request: median {raw_median:?}, p99 {raw_p99:?}");
    println!("invocation median, edge-test / raw: {:.2}", edge_median.as_secs_f64() / raw_median.as_secs_f64());

    // Many tests through one host: its memory must stay flat, latency must not grow.
    let mut batch = Vec::new();
    for n in 1..=TESTS_THROUGH_HOST {
        let edge = Edge::start("todo", "soak").unwrap();
        let t = Instant::now();
        assert_eq!(edge.get("/greeting").send_blocking().status(), 200);
        batch.push(t.elapsed());
        if n % 500 == 0 {
            let rss = host_rss_kib(edge.worker_pid().expect("a forked worker"));
            let (median, p99) = median_p99(std::mem::take(&mut batch));
            println!("after {n} tests: host RSS {} MiB, first-request latency median {median:?}, p99 {p99:?}", rss / 1024);
        }
    }
}
