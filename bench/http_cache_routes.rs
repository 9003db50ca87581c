//! What each route to an HTTP cache (issue 10) would cost, measured on the todo guest, before
//! either is built: the same module compiled as it is, compiled after a walrus parse and
//! emit (what wrapping its imports costs, as the dynamic-backend rewrite does), and adapted
//! into a component (`viceroy_lib::adapt`, the first step of composing a shim component),
//! each timed for its compile and for a request. Run by `BENCH_ONLY=http_cache_routes
//! bash bench/run.sh`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use viceroy_lib::config::UnknownImportBehavior;
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

fn bench_path(var: &str, rest: &str) -> PathBuf {
    let base = std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: run bench/run.sh"));
    PathBuf::from(base).join(rest)
}

const COMPILES: usize = 3;
const REQUESTS: usize = 500;

fn compile(wasm: &Path, adapt: bool) -> (std::sync::Arc<ExecuteCtx>, Duration) {
    let toml = std::fs::read_to_string(bench_path("BENCH_ROOT", "examples/todo/guest/fastly.toml")).unwrap();
    let config: viceroy_lib::config::FastlyConfig = toml.parse().unwrap();
    let started = Instant::now();
    let ctx = ExecuteCtx::build(wasm, ProfilingConfig::None, HashSet::new(), UnknownImportBehavior::LinkError, adapt, WasmFeatures::default())
        .unwrap()
        .with_dictionaries(config.dictionaries().clone())
        .with_capture_logs(std::sync::Arc::new(std::sync::Mutex::new(std::io::sink())))
        .finish()
        .unwrap();
    (ctx, started.elapsed())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn request_median(ctx: &std::sync::Arc<ExecuteCtx>) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local: SocketAddr = "127.0.0.1:7676".parse().unwrap();
    let samples = (0..REQUESTS)
        .map(|_| {
            let req = hyper::Request::get("http://edge.test/greeting").body(hyper::Body::empty()).unwrap();
            let started = Instant::now();
            let (resp, _) = runtime.block_on(ctx.clone().handle_request(req, local, local)).unwrap();
            let body = runtime.block_on(resp.into_body().read_into_vec()).unwrap();
            assert!(body.starts_with(b"hello"), "{}", String::from_utf8_lossy(&body));
            started.elapsed()
        })
        .collect();
    median(samples)
}

fn main() {
    let wasm = bench_path("BENCH_TARGET", "edge-test/guests/wasm32-wasip1/release/todo-guest.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    println!("module: {} ({} KiB)", wasm.display(), bytes.len() / 1024);

    let rewrite: Vec<Duration> = (0..COMPILES)
        .map(|_| {
            let started = Instant::now();
            let mut module = walrus::Module::from_buffer(&bytes).unwrap();
            let _ = module.emit_wasm();
            started.elapsed()
        })
        .collect();
    let rewritten = std::env::temp_dir().join("edge-test-bench-rewritten.wasm");
    std::fs::write(&rewritten, walrus::Module::from_buffer(&bytes).unwrap().emit_wasm()).unwrap();

    for (label, path, adapt) in [
        ("as it is", &wasm, false),
        ("after a walrus parse and emit", &rewritten, false),
        ("adapted into a component", &wasm, true),
    ] {
        let mut contexts = Vec::new();
        let compiles: Vec<Duration> = (0..COMPILES)
            .map(|_| {
                let (ctx, took) = compile(path, adapt);
                contexts.push(ctx);
                took
            })
            .collect();
        let request = request_median(&contexts[0]);
        println!("{label}: compile median {:?}, request median {request:?}", median(compiles));
    }
    println!("walrus parse and emit alone: median {:?}", median(rewrite));
}
