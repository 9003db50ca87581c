//! Invocation latency through edge-test against raw `ExecuteCtx::handle_request` on the same
//! guest, and the per-test cost of starting an edge. Run by `bench/run.sh`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_test::{Edge, Service};
use viceroy_lib::config::{FastlyConfig, UnknownImportBehavior};
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

edge_test::register_service!("todo", || Service::guest_crate(concat!(env!("BENCH_ROOT"), "/examples/todo/guest")));

const INVOCATIONS: usize = 2000;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn main() {
    // Per-test overhead: everything a test pays before its first request.
    let warm = Edge::start("todo", "warm-up").expect("the todo service starts");
    let starts: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let edge = Edge::start("todo", "bench").unwrap();
            let elapsed = t.elapsed();
            drop(edge);
            elapsed
        })
        .collect();
    let (start_median, start_p99) = percentiles(starts);
    println!("edge start (per-test overhead): median {start_median:?}, p99 {start_p99:?}");

    let through_edge: Vec<Duration> = (0..INVOCATIONS)
        .map(|_| {
            let t = Instant::now();
            let resp = warm.get("/greeting").send_blocking();
            let elapsed = t.elapsed();
            assert_eq!(resp.status(), 200);
            elapsed
        })
        .collect();
    let (median, p99) = percentiles(through_edge);
    println!("invocation through edge-test: median {median:?}, p99 {p99:?}");

    let wasm = std::path::PathBuf::from(env!("BENCH_TARGET")).join("edge-test/guests/wasm32-wasip1/release/todo-guest.wasm");
    let toml = std::fs::read_to_string(concat!(env!("BENCH_ROOT"), "/examples/todo/guest/fastly.toml")).unwrap();
    let config: FastlyConfig = toml.parse().unwrap();
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
    let (raw_median, raw_p99) = percentiles(raw);
    println!("raw handle_request: median {raw_median:?}, p99 {raw_p99:?}");
    println!("ratio (median): {:.2}", median.as_secs_f64() / raw_median.as_secs_f64());
}
