//! The monitor (`edge-test-monitor`): runs an e2e suite on demand (its command line, its
//! API) and on a schedule, retries and marks flaky tests, keeps runs in SQLite with a
//! retention policy, serves `/metrics`, calls a webhook, survives being killed or stopped
//! mid-run, and splits a suite between monitors.
//!
//! The suite it runs is `subject`, below: edge tests in e2e mode against `Shop`, a stand-in
//! deployment on loopback whose answers make one test pass, one flaky, one fail, one fail
//! softly and one skip. The monitor runs this very binary with `EDGE_TEST_TARGET_SHOP` set;
//! in an ordinary run the `subject` tests skip (they are for deployments only).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_test::Service;
use serde_json::{Value, json};

// Never built: the subject's tests run only against a deployment.
edge_test::register_service!("shop", || Service::guest_crate("guests/unit-tests")
    .guest_timeout(Duration::from_secs(20)));

mod subject {
    use edge_test::mock::{Mock, Reply};
    use edge_test::{Edge, edge_test};

    #[edge_test(service = "shop", e2e = "only")]
    async fn the_front_page_welcomes(edge: Edge) {
        let resp = edge.get("/").send().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text(), "welcome");
    }

    /// The stand-in fails every other request for the stock: flaky.
    #[edge_test(service = "shop", e2e = "only")]
    async fn the_stock_is_counted(edge: Edge) {
        let resp = edge.get("/stock").send().await;
        assert_eq!(resp.status(), 200, "{}", resp.text());
    }

    /// The stand-in answers in dollars: a hard failure.
    #[edge_test(service = "shop", e2e = "only")]
    async fn the_price_is_in_euros(edge: Edge) {
        let resp = edge.get("/price").send().await;
        assert!(resp.text().ends_with("EUR"), "the price: {}", resp.text());
    }

    /// The stand-in has no banner: a soft failure (the configuration says so).
    #[edge_test(service = "shop", e2e = "only")]
    async fn the_banner_is_shown(edge: Edge) {
        let resp = edge.get("/banner").send().await;
        assert_eq!(resp.status(), 200);
    }

    /// Mocks a backend: skipped against a deployment.
    #[edge_test(service = "shop", e2e = "only")]
    async fn the_cart_is_mocked(edge: Edge) {
        Mock::given(edge_test::mock::matchers::any())
            .respond_with(Reply::new(200))
            .mount(&edge.backend("cart"));
    }

    /// The stand-in takes its time (until released, or 10 s): a test to stop a monitor in.
    #[edge_test(service = "shop", e2e = "only")]
    async fn the_report_is_slow(edge: Edge) {
        let resp = edge.get("/slow").send().await;
        assert_eq!(resp.status(), 200);
    }
}

/// The stand-in deployment the subject's tests are pointed at.
struct Shop {
    addr: SocketAddr,
    stock_requests: Arc<AtomicUsize>,
    slow_started: Arc<AtomicUsize>,
}

impl Shop {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shop = Shop {
            addr: listener.local_addr().unwrap(),
            stock_requests: Arc::default(),
            slow_started: Arc::default(),
        };
        let (stock, slow) = (shop.stock_requests.clone(), shop.slow_started.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (stock, slow) = (stock.clone(), slow.clone());
                std::thread::spawn(move || answer(stream, &stock, &slow));
            }
        });
        shop
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(mut stream: TcpStream, stock: &AtomicUsize, slow: &AtomicUsize) {
    let Some((_, path, _)) = read_request(&mut stream) else {
        return;
    };
    let (status, body) = match path.as_str() {
        "/" => (200, "welcome"),
        "/stock" if stock.fetch_add(1, Ordering::SeqCst) % 2 == 0 => (503, "try again"),
        "/stock" => (200, "7 left"),
        "/price" => (200, "12 USD"),
        "/slow" => {
            slow.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(4));
            (200, "done")
        }
        _ => (404, "no such page"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// (method, path, body) of one HTTP/1.1 request.
fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

/// A local webhook receiver: the bodies POSTed to it.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/edge", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if let Some((method, path, body)) = read_request(&mut stream) {
                assert_eq!((method.as_str(), path.as_str()), ("POST", "/hooks/edge"));
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            }
        }
    });
    (url, received)
}

/// A fresh directory for one test's configuration and database, under cargo's directory for
/// tests' files (kept after the test, for a look at a failed run's database).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edge-test-monitor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration running this binary's `subject` tests (those `filter` picks) against
/// `shop`, written to `dir`; `extra` is more TOML at the top.
fn configure(dir: &Path, shop: &Shop, filter: &[&str], extra: &str, suite_extra: &str) -> PathBuf {
    let text = format!(
        r#"database = "runs.sqlite"
listen = "127.0.0.1:0"
{extra}

[[suite]]
name = "shop"
binaries = [{binary:?}]
filter = {filter:?}
env = {{ EDGE_TEST_TARGET_SHOP = "{url}" }}
retries = 1
soft_fail = ["subject::the_banner"]
{suite_extra}
"#,
        binary = std::env::current_exe().unwrap(),
        url = shop.url(),
    );
    let path = dir.join("monitor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every subject test but the slow one.
const QUICK: &[&str] = &[
    "subject::the_front",
    "subject::the_stock",
    "subject::the_price",
    "subject::the_banner",
    "subject::the_cart",
];

fn monitor_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_test-monitor"));
    command.arg("--config").arg(config);
    for var in ["EDGE_TEST_TARGET", "EDGE_TEST_TARGET_SHOP"] {
        command.env_remove(var);
    }
    command
}

fn load(config: &Path) -> edge_test::monitor::Config {
    edge_test::monitor::Config::load(config, &[]).unwrap()
}

/// One HTTP/1.1 exchange with the monitor: (status, location header, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: monitor\r\nconnection: close\r\n{headers}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or("")
        .to_owned();
    // hyper chunks bodies of unknown length; the page and the API send a known one.
    (status, location, body.to_owned())
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = http(addr, "GET", path, "", "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (up to a minute: a bound, not a timing) until `done` holds.
fn wait_for<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = done() {
            return t;
        }
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finished_run(addr: SocketAddr, id: i64) -> Value {
    wait_for(&format!("run {id} to end"), || {
        let run = get_json(addr, &format!("/api/runs/{id}"));
        let status = run["run"]["status"].as_str().unwrap().to_owned();
        (status != "queued" && status != "running").then_some(run)
    })
}

/// `result` and attempt outcomes of each test of a run, by name.
fn outcomes(run: &Value) -> Vec<(String, String, Vec<String>)> {
    run["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["test"]["name"].as_str().unwrap().to_owned(),
                t["test"]["result"].as_str().unwrap().to_owned(),
                t["attempts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["outcome"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn test_of<'r>(run: &'r Value, name: &str) -> &'r Value {
    run["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"]["name"] == name)
        .unwrap_or_else(|| panic!("no test {name} in {run}"))
}

fn strings(parts: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
    parts
        .iter()
        .map(|(n, r, a)| {
            (
                n.to_string(),
                r.to_string(),
                a.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn a_run_from_the_command_line_records_each_test_its_attempts_and_its_output() {
    let shop = Shop::start();
    let dir = scratch("cli");
    let config = configure(&dir, &shop, QUICK, "", "");
    let out = monitor_command(&config)
        .args(["run", "shop"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "soft_failed  subject::the_banner_is_shown",
        "skipped      subject::the_cart_is_mocked (it mocks backend `cart`, which only a local \
         run has",
        "passed       subject::the_front_page_welcomes",
        "failed       subject::the_price_is_in_euros\n               the price: 12 USD\n",
        "flaky        subject::the_stock_is_counted",
        "run #1 of `shop`: failed (1 passed, 1 failed, 1 flaky, 1 soft failed, 1 skipped)",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{stdout}");
    }

    // What the database kept, through the API of a monitor serving it.
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = get_json(served.addr(), "/api/runs/1");
    assert_eq!(run["run"]["trigger"], "cli");
    assert_eq!(
        outcomes(&run),
        strings(&[
            (
                "subject::the_banner_is_shown",
                "soft_failed",
                &["failed", "failed"]
            ),
            ("subject::the_cart_is_mocked", "skipped", &["skipped"]),
            ("subject::the_front_page_welcomes", "passed", &["passed"]),
            (
                "subject::the_price_is_in_euros",
                "failed",
                &["failed", "failed"]
            ),
            (
                "subject::the_stock_is_counted",
                "flaky",
                &["failed", "passed"]
            ),
        ])
    );
    // The failure's output: the assertion, and the exchange with the deployment.
    let price = test_of(&run, "subject::the_price_is_in_euros");
    let output = price["attempts"][1]["output"].as_str().unwrap();
    assert!(output.contains("the price: 12 USD"), "{output}");
    assert!(
        output.contains(&format!("> GET {}/price", shop.url()))
            && output.contains("< 200\n< content-type: text/plain")
            && output.contains("<\n12 USD"),
        "{output}"
    );
    assert_eq!(shop.stock_requests.load(Ordering::SeqCst), 2);
    served.shutdown();

    // With a key, a run is made once.
    let keyed = |expect: &str| {
        let out = monitor_command(&config)
            .args(["run", "shop", "--key", "release-7"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(stdout.contains(expect), "{stdout}");
    };
    keyed("run #2 of `shop`: failed");
    keyed("run #2 already has the key \"release-7\": failed");
}

#[test]
fn runs_asked_over_the_api_are_idempotent_counted_in_the_metrics_and_sent_to_the_webhook() {
    let shop = Shop::start();
    let dir = scratch("api");
    let (hook, received) = webhook();
    let config = configure(&dir, &shop, QUICK, &format!("webhook = {hook:?}"), "");
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let addr = served.addr();

    let ask = |headers: &str, body: Value| {
        let (status, _, body) = http(addr, "POST", "/api/runs", headers, &body.to_string());
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(json!(body)),
        )
    };
    let (status, first) = ask("", json!({"suite": "shop", "key": "deploy-41"}));
    assert_eq!(status, 201, "{first}");
    let id = first["run"]["id"].as_i64().unwrap();
    let (status, again) = ask("", json!({"suite": "shop", "key": "deploy-41"}));
    assert_eq!((status, again["run"]["id"].as_i64()), (200, Some(id)));
    let (status, by_header) = ask("idempotency-key: deploy-41\r\n", json!({"suite": "shop"}));
    assert_eq!((status, by_header["run"]["id"].as_i64()), (200, Some(id)));
    let (status, unknown) = ask("", json!({"suite": "prod"}));
    assert_eq!(status, 400);
    assert!(
        unknown.to_string().contains("no suite is named `prod`"),
        "{unknown}"
    );

    let run = finished_run(addr, id);
    assert_eq!(run["run"]["status"], "failed");
    assert_eq!(
        get_json(addr, "/api/runs")["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The metrics, parsed as Prometheus's text format.
    let (_, _, text) = http(addr, "GET", "/metrics", "", "");
    let mut samples = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    let sample = |s: &str| {
        samples
            .get(s)
            .copied()
            .unwrap_or_else(|| panic!("{s} in\n{text}"))
    };
    assert_eq!(sample("handoff_testsuites_running{suite=\"shop\"}"), 0.0);
    assert_eq!(
        sample("handoff_testsuites_started_total{suite=\"shop\"}"),
        1.0
    );
    for result in ["passed", "failed", "flaky", "soft_failed", "skipped"] {
        let series = format!("handoff_tests_run_total{{suite=\"shop\",result=\"{result}\"}}");
        assert_eq!(sample(&series), 1.0, "{series}");
    }
    for test in [
        "the_front_page_welcomes",
        "the_price_is_in_euros",
        "the_stock_is_counted",
    ] {
        let series =
            format!("handoff_test_duration_seconds{{suite=\"shop\",test=\"subject::{test}\"}}");
        assert!(sample(&series) > 0.0, "{series}");
    }

    // The webhook: one summary of the failed run.
    let hooks = wait_for("the webhook", || {
        let got = received.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let summary = &hooks[0];
    assert_eq!(summary["event"], "run_failed");
    assert_eq!(
        (summary["suite"].as_str(), summary["run"].as_i64()),
        (Some("shop"), Some(id))
    );
    assert_eq!(summary["url"], format!("http://{addr}/runs/{id}"));
    assert_eq!(summary["counts"]["failed"], 1);
    assert_eq!(
        summary["failed"][0]["test"],
        "subject::the_price_is_in_euros"
    );
    assert!(
        summary["failed"][0]["output"]
            .as_str()
            .unwrap()
            .contains("12 USD")
    );
    assert_eq!(summary["flaky"], json!(["subject::the_stock_is_counted"]));
    assert_eq!(
        summary["soft_failed"],
        json!(["subject::the_banner_is_shown"])
    );
    served.shutdown();
}

#[test]
fn a_schedule_runs_the_suite_again_and_again_and_the_flake_rate_comes_from_history() {
    let shop = Shop::start();
    let dir = scratch("schedule");
    let config = configure(
        &dir,
        &shop,
        &["subject::the_front", "subject::the_stock"],
        "",
        "schedule = \"* * * * * *\"",
    );
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let addr = served.addr();
    let runs = wait_for("three scheduled runs to end", || {
        let runs = get_json(addr, "/api/runs?suite=shop")["runs"].clone();
        let ended: Vec<Value> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "passed")
            .cloned()
            .collect();
        (ended.len() >= 3).then_some(ended)
    });
    served.shutdown();
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"), "{runs:?}");
    let newest = runs[0]["id"].as_i64().unwrap();
    // Read back without the schedule, and without resuming a run the shutdown cut short.
    let config = configure(
        &dir,
        &shop,
        &["subject::the_front", "subject::the_stock"],
        "resume_interrupted = false",
        "",
    );
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = get_json(served.addr(), &format!("/api/runs/{newest}"));
    // Each run, the stock failed once and passed on its retry.
    assert_eq!(
        test_of(&run, "subject::the_stock_is_counted")["flake_rate"],
        1.0
    );
    assert_eq!(
        test_of(&run, "subject::the_front_page_welcomes")["flake_rate"],
        0.0
    );
    served.shutdown();
}

/// Starts the monitor's binary serving `config`; returns it and its address.
fn spawn_serving(config: &Path) -> (Child, SocketAddr) {
    let mut child = monitor_command(config)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // The rest of what it says, read so that its stdout stays open.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("edge-test-monitor: serving on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// Starts a run of the slow suite and waits until its slow test is under way.
fn start_slow_run(shop: &Shop, addr: SocketAddr) -> i64 {
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/runs",
        "",
        &json!({"suite": "shop"}).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    wait_for("the slow test to start", || {
        (shop.slow_started.load(Ordering::SeqCst) > 0).then_some(())
    });
    serde_json::from_str::<Value>(&body).unwrap()["run"]["id"]
        .as_i64()
        .unwrap()
}

/// Serves `config` from the monitor's binary, starts a run and kills the monitor (SIGKILL)
/// while the slow test runs: the run's id.
fn kill_mid_run(shop: &Shop, config: &Path) -> i64 {
    let (mut child, addr) = spawn_serving(config);
    let id = start_slow_run(shop, addr);
    child.kill().unwrap();
    child.wait().unwrap();
    id
}

#[test]
fn a_monitor_killed_mid_run_resumes_the_run_when_it_starts_again() {
    let shop = Shop::start();
    let dir = scratch("killed");
    let config = configure(
        &dir,
        &shop,
        &["subject::the_front", "subject::the_report"],
        "",
        "",
    );
    let id = kill_mid_run(&shop, &config);
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = finished_run(served.addr(), id);
    assert_eq!(run["run"]["status"], "passed", "{run}");
    assert_eq!(run["run"]["note"], "resumed after the monitor restarted");
    assert_eq!(
        outcomes(&run),
        strings(&[
            ("subject::the_front_page_welcomes", "passed", &["passed"]),
            (
                "subject::the_report_is_slow",
                "passed",
                &["interrupted", "passed"]
            ),
        ])
    );
    let slow = test_of(&run, "subject::the_report_is_slow");
    assert!(
        slow["attempts"][0]["output"]
            .as_str()
            .unwrap()
            .contains("the monitor stopped while this attempt ran")
    );
    served.shutdown();
}

#[test]
fn a_run_cut_short_is_only_marked_interrupted_when_resuming_is_off() {
    let shop = Shop::start();
    let dir = scratch("marked");
    let config = configure(
        &dir,
        &shop,
        &["subject::the_report"],
        "resume_interrupted = false",
        "",
    );
    let id = kill_mid_run(&shop, &config);
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = get_json(served.addr(), &format!("/api/runs/{id}"));
    assert_eq!(run["run"]["status"], "interrupted");
    assert_eq!(
        run["run"]["note"],
        "interrupted: the monitor stopped during it"
    );
    assert_eq!(
        outcomes(&run),
        strings(&[(
            "subject::the_report_is_slow",
            "interrupted",
            &["interrupted"]
        )])
    );
    served.shutdown();
}

#[test]
fn a_stopped_monitor_shuts_down_within_its_grace_and_its_next_start_finishes_the_run() {
    let shop = Shop::start();
    let dir = scratch("sigterm");
    let config = configure(
        &dir,
        &shop,
        &["subject::the_report", "subject::the_stock"],
        "shutdown_grace_secs = 1",
        "",
    );
    let (mut child, addr) = spawn_serving(&config);
    let id = start_slow_run(&shop, addr);
    // A client that starts a request and never finishes it does not hold the shutdown.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"GET /runs/1 HTTP/1.1\r\nhost: monitor\r\n")
        .unwrap();
    // SAFETY: kill(2) on the child's pid, which is ours to signal until we reap it.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_for("the monitor to exit", || child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    drop(stalled);

    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = finished_run(served.addr(), id);
    assert_eq!(run["run"]["status"], "passed", "{run}");
    // The slow test was stopped after the grace, and ran again on the restart; the stock
    // had not started, and ran only then.
    assert_eq!(
        outcomes(&run),
        strings(&[
            (
                "subject::the_report_is_slow",
                "passed",
                &["interrupted", "passed"]
            ),
            (
                "subject::the_stock_is_counted",
                "flaky",
                &["failed", "passed"]
            ),
        ])
    );
    let stopped = test_of(&run, "subject::the_report_is_slow")["attempts"][0]["output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stopped.contains("stopped, the monitor is shutting down"),
        "{stopped}"
    );
    served.shutdown();
}

#[test]
fn retention_keeps_the_newest_runs_of_a_suite() {
    let shop = Shop::start();
    let dir = scratch("retention");
    let config = configure(
        &dir,
        &shop,
        &["subject::the_front"],
        "[retention]\nmax_runs_per_suite = 2",
        "",
    );
    for _ in 0..3 {
        let out = monitor_command(&config)
            .args(["run", "shop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let runs = get_json(served.addr(), "/api/runs")["runs"].clone();
    let ids: Vec<i64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2]);
    let (status, _, _) = http(served.addr(), "GET", "/api/runs/1", "", "");
    assert_eq!(status, 404);
    served.shutdown();
}

#[test]
fn partitions_split_a_suite_between_monitors_sharing_one_database() {
    let shop = Shop::start();
    let dir = scratch("shards");
    let config = configure(&dir, &shop, QUICK, "", "");
    for share in ["count:1/2", "count:2/2"] {
        let out = monitor_command(&config)
            .args(["run", "shop", "--partition", share])
            .output()
            .unwrap();
        assert!(out.status.code().is_some(), "{out:?}");
    }
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let names = |id: i64| -> Vec<String> {
        outcomes(&get_json(served.addr(), &format!("/api/runs/{id}")))
            .into_iter()
            .map(|(n, _, _)| n)
            .collect()
    };
    let (first, second) = (names(1), names(2));
    assert_eq!(
        first,
        [
            "subject::the_banner_is_shown",
            "subject::the_front_page_welcomes",
            "subject::the_stock_is_counted"
        ]
    );
    assert_eq!(
        second,
        [
            "subject::the_cart_is_mocked",
            "subject::the_price_is_in_euros"
        ]
    );
    assert_eq!(
        get_json(served.addr(), "/api/runs/2")["run"]["partition"],
        "count:2/2"
    );
    served.shutdown();
}

#[test]
fn a_test_past_its_time_limit_fails_named_and_a_dead_webhook_does_not_stop_the_monitor() {
    let shop = Shop::start();
    let dir = scratch("timeout");
    // Nothing listens there once the listener is gone.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = configure(
        &dir,
        &shop,
        &["subject::the_report"],
        &format!("webhook = \"http://{dead}/hook\"\nwebhook_timeout_secs = 1"),
        "test_timeout_secs = 1",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("retries = 1", "retries = 0")).unwrap();
    let out = monitor_command(&config)
        .args(["run", "shop"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("failed       subject::the_report_is_slow (timed out)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "the webhook http://{dead}/hook for failed run 1: cannot connect"
        )) && stderr.contains("(3 tries)"),
        "{stderr}"
    );
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let run = get_json(served.addr(), "/api/runs/1");
    let attempt = &test_of(&run, "subject::the_report_is_slow")["attempts"][0];
    assert_eq!(attempt["outcome"], "timed_out");
    assert!(
        attempt["output"]
            .as_str()
            .unwrap()
            .contains("stopped after 1s, the suite's test_timeout_secs"),
        "{attempt}"
    );
    served.shutdown();

    // A webhook that takes the connection and never answers: each try ends at the limit.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&dead.to_string(), &silent_addr.to_string()),
    )
    .unwrap();
    let out = monitor_command(&config)
        .args(["run", "shop"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the webhook http://{silent_addr}/hook for failed run 2: http://{silent_addr}/hook \
             did not answer within 1s (3 tries)"
        )),
        "{stderr}"
    );
    drop(silent);
}

#[test]
fn the_environment_overrides_the_file_and_flags_override_the_environment() {
    let shop = Shop::start();
    let dir = scratch("overrides");
    let config = configure(&dir, &shop, &["subject::the_front"], "", "");
    let run = |env: &[(&str, &Path)], args: &[&str]| {
        let out = monitor_command(&config)
            .args(["run", "shop"])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let (from_env, from_flag) = (dir.join("env.sqlite"), dir.join("flag.sqlite"));
    run(&[("EDGE_TEST_MONITOR_DATABASE", &from_env)], &[]);
    assert!(from_env.exists() && !dir.join("runs.sqlite").exists());
    run(
        &[("EDGE_TEST_MONITOR_DATABASE", &from_env)],
        &["--database", from_flag.to_str().unwrap()],
    );
    assert!(from_flag.exists());
    // The file's own database saw neither run; the environment's saw one.
    let mut c = load(&config);
    c.database = from_env;
    let served = edge_test::monitor::serve(c).unwrap();
    assert_eq!(
        get_json(served.addr(), "/api/runs")["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    served.shutdown();
}

#[test]
fn bad_configurations_and_suites_are_named_with_the_fix() {
    let shop = Shop::start();
    let dir = scratch("bad");
    let run = |config: &Path, args: &[&str]| {
        let out = monitor_command(config).args(args).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&dir.join("missing.toml"), &["run", "shop"]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("missing.toml") && out.contains("--config"),
        "{out}"
    );

    let config = configure(&dir, &shop, QUICK, "", "schedule = \"every hour\"");
    let (code, out) = run(&config, &["serve"]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("the schedule `every hour` has 2 fields"),
        "{out}"
    );

    let config = configure(&dir, &shop, QUICK, "", "");
    let (code, out) = run(&config, &["run", "prod"]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("no suite is named `prod`: the configuration has shop"),
        "{out}"
    );

    let text = std::fs::read_to_string(&config).unwrap();
    let exe = format!("{:?}", std::env::current_exe().unwrap());
    std::fs::write(&config, text.replace(&exe, "\"target/debug/deps/gone\"")).unwrap();
    let (code, out) = run(&config, &["run", "shop"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("note: suite `shop`: cannot run the test binary")
            && out.contains("gone")
            && out.contains("cargo test --no-run"),
        "{out}"
    );

    // A "test binary" whose listing never ends: stopped at the suite's time limit.
    let hangs = dir.join("hangs.sh");
    std::fs::write(&hangs, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&hangs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = configure(&dir, &shop, QUICK, "", "test_timeout_secs = 1");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&exe, &format!("{hangs:?}"))).unwrap();
    let (code, out) = run(&config, &["run", "shop"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("hangs.sh --list did not end within 1s (the suite's test_timeout_secs)"),
        "{out}"
    );

    // One whose listing ends at once but leaves a process holding its stdout: the run goes
    // on (here to say the binary lists no test), not waiting for that process.
    let holds = dir.join("holds.sh");
    std::fs::write(&holds, "#!/bin/sh\nsleep 60 &\nexit 0\n").unwrap();
    std::fs::set_permissions(&holds, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = configure(&dir, &shop, QUICK, "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&exe, &format!("{holds:?}"))).unwrap();
    let started = Instant::now();
    let (code, out) = run(&config, &["run", "shop"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("suite `shop` selects no test in its binaries"),
        "{out}"
    );
    // A bound, not a timing: the held pipe would keep it for the sleep's 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
}

/// The browser the page test drives: `EDGE_TEST_CHROMIUM`, or Debian's chromium.
fn chromium() -> PathBuf {
    let path = std::env::var_os("EDGE_TEST_CHROMIUM")
        .map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "no browser at {} (apt-get install chromium, or set EDGE_TEST_CHROMIUM)",
        path.display()
    );
    path
}

/// Headless Chromium on `url`, with `args` (`--dump-dom`, `--screenshot=...`): its stdout.
fn browse(url: &str, args: &[&str]) -> String {
    let profile = scratch(&format!("chromium-{}", args.len()));
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs Chromium (apt-get install chromium); .ci/run installs it and runs this"]
fn the_results_page_shows_suites_timelines_and_failures_in_a_real_browser() {
    let shop = Shop::start();
    let dir = scratch("page");
    let config = configure(&dir, &shop, QUICK, "", "");
    let out = monitor_command(&config)
        .args(["run", "shop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let served = edge_test::monitor::serve(load(&config)).unwrap();
    let base = format!("http://{}", served.addr());

    let index = browse(&format!("{base}/"), &["--dump-dom"]);
    assert!(
        index.contains("<a href=\"/suites/shop\">shop</a>"),
        "{index}"
    );
    assert!(
        index.contains("<span class=\"badge failed\">failed</span>"),
        "{index}"
    );
    assert!(
        index.contains("<button type=\"submit\">Run now</button>"),
        "{index}"
    );

    let suite = browse(&format!("{base}/suites/shop"), &["--dump-dom"]);
    for (test, result) in [
        ("the_stock_is_counted", "flaky"),
        ("the_price_is_in_euros", "failed"),
        ("the_banner_is_shown", "soft_failed"),
        ("the_cart_is_mocked", "skipped"),
        ("the_front_page_welcomes", "passed"),
    ] {
        let row = suite
            .split("<tr>")
            .find(|row| row.contains(&format!("<td>subject::{test}</td>")))
            .unwrap_or_else(|| panic!("no row for {test} in {suite}"));
        assert!(
            row.contains(&format!("class=\"{result}\" href=\"/runs/1#test-")),
            "{row}"
        );
    }
    assert!(
        suite.contains("100% (1 of 1)"),
        "the stock's flake rate: {suite}"
    );

    let run = browse(&format!("{base}/runs/1"), &["--dump-dom"]);
    assert!(run.contains("<h2>Failed attempts</h2>"), "{run}");
    assert!(
        run.contains(&format!("&gt; GET {}/price", shop.url())),
        "{run}"
    );
    assert!(run.contains("the price: 12 USD"), "{run}");

    // Screenshots, for a person to look at: in the test's output, not the repository.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitor-page");
    std::fs::create_dir_all(&shots).unwrap();
    for (page, path) in [
        ("index", "/"),
        ("suite", "/suites/shop"),
        ("run", "/runs/1"),
    ] {
        let file = shots.join(format!("{page}.png"));
        let _ = std::fs::remove_file(&file);
        browse(
            &format!("{base}{path}"),
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1280,1400",
            ],
        );
        let png = std::fs::read(&file).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
            "{}",
            file.display()
        );
        println!("screenshot: {}", file.display());
    }

    // The run-again button is a form: what the browser posts when it is pressed (twice).
    let form = run.split("<form").nth(1).unwrap();
    let action = form
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let key = form
        .split("name=\"key\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(action, "/suites/shop/runs");
    let press = || {
        http(
            served.addr(),
            "POST",
            action,
            "content-type: application/x-www-form-urlencoded\r\n",
            &format!("key={key}"),
        )
    };
    let (status, location, _) = press();
    assert_eq!((status, location.as_str()), (303, "/runs/2"));
    assert_eq!(press().1, "/runs/2");
    let again = finished_run(served.addr(), 2);
    assert_eq!(again["run"]["trigger"], "page");
    served.shutdown();
}
