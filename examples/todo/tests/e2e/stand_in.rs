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

/// The deployment behind TLS, as a real one is: a proxy on loopback that terminates TLS with
/// a certificate for 127.0.0.1, signed by a CA of its own, and forwards to the stand-in.
pub struct TlsFront {
    pub url: String,
    /// The CA's certificate, as a PEM file: what `EDGE_TEST_TARGET_CA` names.
    pub ca_pem: std::path::PathBuf,
}

impl TlsFront {
    pub fn start(behind: &Deployment) -> Self {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        // Under cargo's directory for tests' files, not the system's: the front lives in a
        // static, so the file outlives the process (one a test process under nextest).
        let ca_pem = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("edge-test-e2e-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_pem, ca.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let upstream = behind.url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    });
                }
            });
        });
        Self {
            url: format!("https://{addr}"),
            ca_pem,
        }
    }
}
