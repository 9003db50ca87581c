//! A deployment stand-in for e2e mode: the todo guest served over real HTTP on loopback by
//! viceroy-lib (as `fastly compute serve` does), its `origin` backend pointed at a real
//! origin server on loopback.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use viceroy_lib::config::{FastlyConfig, UnknownImportBehavior};
use viceroy_lib::{ExecuteCtx, ProfilingConfig, ViceroyService};

/// The stand-in and its origin, serving until the process ends.
pub struct Deployment {
    pub url: String,
    /// Requests the origin answered.
    pub origin_requests: Arc<AtomicUsize>,
}

impl Deployment {
    pub fn start() -> Self {
        let (origin, origin_requests) = start_origin();
        let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
        let wasm = edge_test::__private::build_guest_crate("todo", &guest).unwrap();
        let manifest = std::fs::read_to_string(guest.join("fastly.toml"))
            .unwrap()
            .replace("https://api.todo.example", &format!("http://{origin}"));
        let config: FastlyConfig = manifest.parse().unwrap();
        let ctx = ExecuteCtx::build(
            &wasm,
            ProfilingConfig::None,
            HashSet::new(),
            UnknownImportBehavior::LinkError,
            false,
            Default::default(),
        )
        .unwrap()
        .with_backends(config.backends().clone())
        .with_dictionaries(config.dictionaries().clone())
        .with_object_stores(config.object_stores().clone())
        .with_secret_stores(config.secret_stores().clone())
        // A deployment's logs go to its log endpoints, not to this test's output.
        .with_capture_logs(Arc::new(std::sync::Mutex::new(std::io::sink())))
        .finish()
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve_forever(listener, ViceroyService::new(ctx));
        Self {
            url: format!("http://{addr}"),
            origin_requests,
        }
    }
}

fn serve_forever(listener: TcpListener, service: ViceroyService) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let _ = hyper::Server::from_tcp(listener)
                .unwrap()
                .serve(service)
                .await;
        });
    });
}

/// A real origin: `GET /todos/<id>` is `{"id":<id>,"title":"from the real origin","done":false}`,
/// anything else 404.
fn start_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let make = hyper::service::make_service_fn(move |_| {
                let counted = counted.clone();
                async move {
                    Ok::<_, Infallible>(hyper::service::service_fn(move |req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(req.uri().path())) }
                    }))
                }
            });
            let _ = hyper::Server::from_tcp(listener).unwrap().serve(make).await;
        });
    });
    (addr, requests)
}

fn answer(path: &str) -> hyper::Response<hyper::Body> {
    match path.strip_prefix("/todos/") {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(
                    format!(r#"{{"id":{id},"title":"from the real origin","done":false}}"#).into(),
                )
                .unwrap()
        }
        _ => hyper::Response::builder()
            .status(404)
            .body(hyper::Body::empty())
            .unwrap(),
    }
}
