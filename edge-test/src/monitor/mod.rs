//! The monitor: edge tests in e2e mode, against a deployment, on demand and on schedules.
//!
//! It runs the libtest binaries of a suite (`cargo test --no-run` builds them) with the
//! suite's environment (`EDGE_TEST_TARGET_<SERVICE>=https://...`), one process per test,
//! retrying failures and marking a test that passed on a retry as flaky; it keeps every
//! run, test and attempt in SQLite, serves a results page, an API and `/metrics`, and calls
//! a webhook when a run fails. Built with the `monitor` feature, as the
//! `edge-test-monitor` binary:
//!
//! ```text
//! edge-test-monitor serve --config monitor.toml   # the page, the API, the schedules
//! edge-test-monitor run staging --config monitor.toml   # one run now; exit 1 if it failed
//! ```
//!
//! The same in a program of your own (or a test of the monitor):
//!
//! ```no_run
//! use std::path::Path;
//!
//! let config = edge_test::monitor::Config::load(Path::new("monitor.toml"), &[])?;
//! let served = edge_test::monitor::serve(config)?;
//! println!("the results page: http://{}/", served.addr());
//! // ... until it is time to stop: running tests get the configured grace.
//! served.shutdown();
//! # Ok::<(), String>(())
//! ```
//!
//! See the README, "From one run against staging to a monitor with a schedule", for the
//! configuration.

mod config;
mod execute;
mod metrics;
mod page;
mod runner;
mod schedule;
mod server;
mod state;
mod store;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use config::{Config, Overrides, Partition, Retention, Suite};
pub use schedule::{BadSchedule, Schedule};

use state::{Monitor, now_ms};

/// A monitor serving: its page, API and metrics on [`addr`](Self::addr), its schedules
/// and queued runs going on in the background, until [`shutdown`](Self::shutdown).
#[must_use = "a monitor stops when its handle is shut down; keep it"]
pub struct Served {
    addr: SocketAddr,
    monitor: Arc<Monitor>,
    server_stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Ends the server at once: connections still open after the grace are dropped.
    server_force: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// Opens the database, recovers the runs an earlier monitor on this address left going
/// (resumed, or marked interrupted), listens on the configured address and starts the
/// schedules and the suites' queues.
pub fn serve(mut config: Config) -> Result<Served, String> {
    let listener = std::net::TcpListener::bind(&config.listen).map_err(|e| {
        format!(
            "the monitor cannot listen on {}: {e} (set `listen` in its configuration, \
             --listen or EDGE_TEST_MONITOR_LISTEN)",
            config.listen
        )
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The webhook's links go to where the page is served, unless said otherwise.
    config
        .public_url
        .get_or_insert_with(|| format!("http://{addr}"));
    // Runs are their monitor's, named by where it listens: several may share a database.
    let owner = format!("serve {}", config.listen);
    let monitor = Arc::new(Monitor::open(config, owner)?);
    let resumed = monitor.recover()?;
    if !resumed.is_empty() {
        eprintln!(
            "edge-test-monitor: resuming run(s) {resumed:?}, left unfinished by an earlier start"
        );
    }

    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (server_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (server_force, forced) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime for the monitor's server: {e}"))?;
    let server = {
        let monitor = monitor.clone();
        let _entered = runtime.enter();
        let make = hyper::service::make_service_fn(move |_| {
            let monitor = monitor.clone();
            async move {
                Ok::<_, std::convert::Infallible>(hyper::service::service_fn(move |request| {
                    server::handle(monitor.clone(), request)
                }))
            }
        });
        hyper::Server::from_tcp(listener)
            .map_err(|e| e.to_string())?
            .serve(make)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
    };
    let server = std::thread::Builder::new()
        .name("monitor-http".into())
        .spawn(move || {
            // A graceful stop waits for open requests, which a client may never finish.
            let ended = runtime.block_on(async {
                tokio::select! {
                    ended = server => ended,
                    _ = forced => Ok(()),
                }
            });
            if let Err(e) = ended {
                eprintln!("edge-test-monitor: the server stopped: {e}");
            }
            // Connections left: dropped with their tasks, not waited for.
            runtime.shutdown_background();
        })
        .map_err(|e| e.to_string())?;

    let mut workers = Vec::new();
    for suite in &monitor.config.suites {
        let (monitor, name) = (monitor.clone(), suite.name.clone());
        workers.push(std::thread::spawn(move || run_queue(&monitor, &name)));
    }
    if monitor.config.suites.iter().any(|s| s.schedule.is_some()) {
        let monitor = monitor.clone();
        workers.push(std::thread::spawn(move || run_schedules(&monitor)));
    }
    Ok(Served {
        addr,
        monitor,
        server_stop: Some(server_stop),
        server_force: Some(server_force),
        server: Some(server),
        workers,
    })
}

impl Served {
    /// Where the page, the API and `/metrics` are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops graceful: no new run or attempt starts and the server stops taking requests;
    /// running tests get the configured grace to end, then are stopped. A run left
    /// unfinished is resumed (or marked interrupted) by the next start.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let monitor = &self.monitor;
        monitor.draining.store(true, Ordering::SeqCst);
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        let deadline = Instant::now() + monitor.config.shutdown_grace;
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        monitor.stop_now.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(server) = self.server.take() {
            let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
            while !server.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(force) = self.server_force.take() {
                let _ = force.send(());
            }
            let _ = server.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A suite's runs, one at a time, in the order they were asked for.
fn run_queue(monitor: &Monitor, suite: &str) {
    while !monitor.draining() {
        let Some(id) = monitor.next_run(suite, Duration::from_millis(200)) else {
            continue;
        };
        if let Err(e) = runner::execute(monitor, id) {
            eprintln!("edge-test-monitor: run {id} of `{suite}`: {e}");
        }
    }
}

/// Queues each scheduled suite's run when its time comes; a suite whose last run is still
/// queued or going on skips that time (at most one run of a suite at once).
fn run_schedules(monitor: &Monitor) {
    let now = || (now_ms() / 1000) as u64;
    let mut next: Vec<(String, Option<u64>, Schedule)> = monitor
        .config
        .suites
        .iter()
        .filter_map(|s| {
            let schedule = s.schedule.clone()?;
            Some((s.name.clone(), schedule.next_after(now()), schedule))
        })
        .collect();
    while !monitor.draining() {
        let t = now();
        for (suite, due, schedule) in &mut next {
            let Some(at) = *due else { continue };
            if t < at {
                continue;
            }
            *due = schedule.next_after(t);
            let busy = monitor.store(|s| s.suite_is_busy(suite, &monitor.owner));
            if busy.unwrap_or(true) {
                monitor.metrics.schedule_skipped(suite);
                eprintln!(
                    "edge-test-monitor: `{suite}`'s run for {} skipped: its last run has not ended",
                    schedule::format_utc(at as i64 * 1000)
                );
                continue;
            }
            // Keyed by its time: a monitor restarted within the same second does not run
            // it twice.
            let key = format!("schedule {suite} {at} {}", monitor.owner);
            if let Err(e) = monitor.request_run(suite, Some(&key), "schedule", None) {
                eprintln!("edge-test-monitor: `{suite}`'s scheduled run: {e}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const USAGE: &str = "\
edge-test-monitor: runs edge-test suites in e2e mode, on demand and on schedules

usage:
  edge-test-monitor serve [options]         serve the page, the API and /metrics; run the schedules
  edge-test-monitor run <suite> [options]   run a suite now, print its results; exit 1 if it failed

options (each overrides the configuration file; the environment's EDGE_TEST_MONITOR_*
variables sit between the two):
  --config <file>        the configuration (EDGE_TEST_MONITOR_CONFIG; default edge-test-monitor.toml)
  --database <file>      the SQLite database (EDGE_TEST_MONITOR_DATABASE)
  --listen <addr:port>   where to serve (EDGE_TEST_MONITOR_LISTEN)
  --webhook <url>        POSTed a JSON summary of each failed run (EDGE_TEST_MONITOR_WEBHOOK)
  --partition count:M/N  run this share of each suite's tests (EDGE_TEST_MONITOR_PARTITION)
  --key <key>            (run) the run's idempotency key: a run with this key is not run again
";

/// The `edge-test-monitor` command.
pub fn main() -> ExitCode {
    match command(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge-test-monitor: {e}");
            ExitCode::from(2)
        }
    }
}

fn command(args: Vec<String>) -> Result<ExitCode, String> {
    let mut flags = Overrides::default();
    let mut config_path = std::env::var_os("EDGE_TEST_MONITOR_CONFIG")
        .map_or_else(|| PathBuf::from("edge-test-monitor.toml"), PathBuf::from);
    let mut key = None;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--config" => config_path = value()?.into(),
            "--database" => flags.database = Some(value()?.into()),
            "--listen" => flags.listen = Some(value()?),
            "--webhook" => flags.webhook = Some(value()?),
            "--partition" => flags.partition = Some(value()?.parse()?),
            "--key" => key = Some(value()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option {flag}\n\n{USAGE}"));
            }
            _ => positional.push(arg),
        }
    }
    let config = Config::load(&config_path, &[config::from_env()?, flags])?;
    match positional
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => serve_until_signalled(config),
        ["run", suite] => run_once(config, suite, key.as_deref()),
        _ => Err(format!("say what to do\n\n{USAGE}")),
    }
}

fn serve_until_signalled(config: Config) -> Result<ExitCode, String> {
    let served = serve(config)?;
    println!("edge-test-monitor: serving on http://{}", served.addr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, String>(())
    })?;
    // Said where stdout may be gone (a closed pipe): a shutdown must not panic on it.
    say("edge-test-monitor: shutting down");
    served.shutdown();
    say("edge-test-monitor: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The first line of the panic message in a libtest failure's output.
fn panic_message(output: &str) -> Option<&str> {
    let mut lines = output.lines();
    lines.find(|l| l.starts_with("thread '") && l.contains("panicked at"))?;
    lines.next().map(str::trim).filter(|l| !l.is_empty())
}

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn run_once(config: Config, suite: &str, key: Option<&str>) -> Result<ExitCode, String> {
    let monitor = Monitor::open(config, format!("cli {}", std::process::id()))?;
    let (run, created) = monitor.request_run(suite, key, "cli", None)?;
    if !created {
        println!(
            "run #{} already has the key {:?}: {}",
            run.id,
            key.unwrap_or(""),
            run.status
        );
        return Ok(if run.status == "failed" {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let ended = runner::execute(&monitor, run.id)?;
    for test in monitor.store(|s| s.tests(run.id))? {
        let detail = test
            .detail
            .clone()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        println!("{:<12} {}{detail}", test.result, test.name);
        if matches!(test.result.as_str(), "failed" | "soft_failed") {
            let attempts = monitor.store(|s| s.attempts(test.id))?;
            if let Some(why) = attempts.last().and_then(|a| panic_message(&a.output)) {
                println!("{:<12}   {why}", "");
            }
        }
    }
    if let Some(note) = monitor.store(|s| s.run(run.id))?.and_then(|r| r.note) {
        println!("note: {note}");
    }
    let c = ended.counts;
    println!(
        "run #{} of `{suite}`: {} ({} passed, {} failed, {} flaky, {} soft failed, {} skipped)",
        run.id, ended.status, c.passed, c.failed, c.flaky, c.soft_failed, c.skipped
    );
    Ok(if ended.status == "passed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
