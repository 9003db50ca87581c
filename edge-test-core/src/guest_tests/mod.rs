//! A target runner for the unit tests inside a guest crate: `cargo test` (or `cargo nextest
//! run`) builds the crate's `#[test]` functions into a wasm32-wasip1 module with libtest in
//! it, and runs `edge-test-runner <module> <libtest arguments>`.
//!
//! `viceroy run` as the runner compiles the whole module in every process (every test, under
//! nextest) and, under `cargo test`, runs every test in one instance, sharing one cache and
//! one set of stores, where the first panic aborts the rest (a wasm guest cannot unwind).
//! This runner asks the guest's own libtest which tests the arguments select (so filters,
//! `--exact` and `--skip` mean what they mean natively), then runs each test as the guest's
//! libtest running that test alone, in an instance of its own forked from a template the
//! shared host compiled once per machine and module: a fresh cache, the stores as
//! `fastly.toml` declares them, its own output. A panic, trap, time-out or running out of
//! memory fails that test alone, shown with what it printed and logged.
//!
//! nextest lists with `--list --format terse [--ignored]` (passed through from the guest)
//! and runs each test as `<name> --exact --nocapture [--ignored]`, which goes to the guest's
//! libtest as it is, in one instance. Both calls reach this code in the runner server, on
//! behalf of the thin `edge-test-runner` nextest starts (`thin_runner`); the rest in the
//! whole runner's own process (`main`).

mod args;
mod report;
pub(crate) mod thin_runner;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::executor::{InvocationReport, InvocationRequest, Outcome, Session, SessionSpec};
use crate::manifest::Manifest;
use crate::mock::server::MockHub;
use args::{Ignored, LibtestArgs, RunnerArgs};
pub(crate) use report::Streams;
use report::{Output, TestResult, Verdict};

/// Set to a `fastly.toml` to use instead of the crate's own (`--fastly-toml` wins).
const FASTLY_TOML_ENV: &str = "EDGE_TEST_FASTLY_TOML";
/// How long one test may run, in milliseconds (`--guest-timeout-ms` wins).
const TIMEOUT_ENV: &str = "EDGE_TEST_GUEST_TIMEOUT_MS";
/// libtest's exit status for failed tests, which cargo and nextest expect.
const TESTS_FAILED: u8 = 101;
/// The runner could not run the tests at all (bad arguments, module or manifest).
const CANNOT_RUN: u8 = 2;

/// The runner's `main`: what the `edge-test-runner` binary runs.
///
/// Set it as cargo's target runner for wasm32-wasip1 in the guest crate's
/// `.cargo/config.toml`:
///
/// ```toml
/// [target.wasm32-wasip1]
/// runner = "edge-test-runner"
/// ```
pub fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("edge-test-runner: error: an argument is not UTF-8: {bad:?}");
            return ExitCode::from(CANNOT_RUN);
        }
    };
    thin_runner::serve_if_asked();
    thin_runner::start_server_for_thin_runner();
    let env = CallEnv::of_this_process();
    let mut streams = Streams::of_this_process();
    let code = match prepare(&args, &env, None) {
        Ok((suite, args)) if !is_passed_through(&args.libtest) => suite
            .run_selected(&args.libtest)
            .unwrap_or_else(|why| cannot_run(&why, &mut streams)),
        prepared => pass_through_call(&prepared, &mut streams),
    };
    ExitCode::from(code)
}

/// What the runner sees of the process that called it: its environment and working
/// directory. Its own, or, when the runner server runs a call for a thin runner, the thin
/// runner's.
#[derive(Debug)]
pub(crate) struct CallEnv {
    vars: BTreeMap<String, String>,
    cwd: PathBuf,
}

impl CallEnv {
    pub(crate) fn new(vars: BTreeMap<String, String>, cwd: PathBuf) -> Self {
        Self { vars, cwd }
    }

    fn of_this_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            cwd: std::env::current_dir().unwrap_or_default(),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// `path` as the caller meant it: relative to its working directory.
    fn path(&self, path: &Path) -> PathBuf {
        self.cwd.join(path)
    }
}

/// Whether a call is one the guest's libtest answers in a single instance, its output and
/// status passed through: a listing, or one test named exactly (nextest's two calls).
fn is_passed_through(libtest: &LibtestArgs) -> bool {
    libtest.list || libtest.is_single_exact()
}

/// The arguments read and the suite ready, or why not.
fn prepare(
    args: &[String],
    env: &CallEnv,
    server: Option<&'static thin_runner::ServerParts>,
) -> Result<(Suite, RunnerArgs), String> {
    let args = args::parse(args)?;
    let suite = Suite::new(&args, env, server)?;
    Ok((suite, args))
}

/// Runs a listing or a single test (or reports why it cannot), its output to `streams`.
fn pass_through_call(prepared: &Result<(Suite, RunnerArgs), String>, streams: &mut Streams) -> u8 {
    let (suite, args) = match prepared {
        Ok(ready) => ready,
        Err(why) => return cannot_run(why, streams),
    };
    let libtest = &args.libtest;
    let outcome = if libtest.list {
        suite.pass_through("(listing)", &listing_args(libtest), streams)
    } else {
        suite.pass_through(&libtest.filters[0], &libtest.for_single_run(), streams)
    };
    outcome.unwrap_or_else(|why| cannot_run(&why, streams))
}

fn cannot_run(why: &str, streams: &mut Streams) -> u8 {
    let _ = writeln!(streams.err, "edge-test-runner: error: {why}");
    CANNOT_RUN
}

/// The guest's own `--list`, with the arguments given (`--format`, filters, `--ignored`).
fn listing_args(libtest: &LibtestArgs) -> Vec<String> {
    let mut args = vec!["--list".to_owned()];
    if let Some(format) = &libtest.format {
        args.extend(["--format".to_owned(), format.clone()]);
    }
    args.extend(libtest.selection.iter().cloned());
    args.extend(libtest.ignored.flag().map(str::to_owned));
    args
}

/// One test module and what every instance of it is given.
struct Suite {
    /// The module's file name: the program name its libtest is run under.
    program: String,
    spec: SessionSpec,
    /// Declared backends whose `url` is on loopback: the guest reaches them as they are.
    loopback: BTreeMap<String, SocketAddr>,
    /// Declared backends whose `url` is not, with it: answered by edge-test with an error, and
    /// the test fails naming them (nothing leaves loopback).
    off_loopback: BTreeMap<String, String>,
    timeout: Duration,
    /// What the runner server lends the suite when it runs the call (its mock hubs' runtime,
    /// instances forked ahead); else each hub has a runtime of its own.
    server: Option<&'static thin_runner::ServerParts>,
}

impl Suite {
    fn new(
        args: &RunnerArgs,
        env: &CallEnv,
        server: Option<&'static thin_runner::ServerParts>,
    ) -> Result<Self, String> {
        let module = &env.path(&args.module);
        let program = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "test".to_owned());
        match std::fs::metadata(module) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(format!(
                    "the test module {} is not a file",
                    module.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the test module {}: {e}. Run the tests through cargo \
                     (`cargo test --target wasm32-wasip1`), which builds it and passes its path",
                    module.display()
                ));
            }
        }
        let manifest_path = fastly_toml(args.fastly_toml.as_deref(), env)?;
        // As the caller's own process would read it: its directory, its environment.
        let manifest = Manifest::read_for(&program, &manifest_path, &env.cwd, &|name| {
            env.var(name).map(str::to_owned)
        })
        .map_err(|e| e.to_string())?;
        let (loopback, off_loopback) = backend_targets(&manifest)?;
        let timeout = match args.timeout {
            Some(limit) => limit,
            None => match env.var(TIMEOUT_ENV) {
                Some(text) => Duration::from_millis(text.parse().map_err(|_| {
                    format!("{TIMEOUT_ENV} takes a whole number of milliseconds, not {text:?}")
                })?),
                None => args::DEFAULT_TEST_TIMEOUT,
            },
        };
        let http_cache_shim = if args.no_http_cache {
            None
        } else {
            Some(crate::guest_build::http_cache_shim_wasm().map_err(|e| e.to_string())?)
        };
        let spec = SessionSpec {
            service: program.clone(),
            test: String::new(),
            wasm: module.clone(),
            fastly_toml: Some(manifest.text.clone()),
            backend_addrs: BTreeMap::new(),
            kv_guest: None,
            http_cache_shim,
            // Written as libtest wrote it: the output of a failing test is read by people.
            capture_stdio: true,
        };
        Ok(Self {
            program,
            spec,
            loopback,
            off_loopback,
            timeout,
            server,
        })
    }

    /// Runs every test the arguments select, each in an instance of its own, several at a
    /// time, and reports them as libtest does.
    fn run_selected(&self, libtest: &LibtestArgs) -> Result<u8, String> {
        let started = Instant::now();
        // The listings share one session: they run no test, and in process each session
        // is a compile.
        let lister = self.session("(listing)")?;
        let selected = self.list(&lister, &libtest.selection, Ignored::Include)?;
        let ignored = self.list(&lister, &libtest.selection, Ignored::Only)?;
        let unfiltered = libtest.filters.is_empty() && !libtest.skips;
        let total = if unfiltered {
            selected.len()
        } else {
            self.list(&lister, &[], Ignored::Include)?.len()
        };
        drop(lister);
        let plan: Vec<(String, bool)> = selected
            .into_iter()
            .map(|name| {
                let is_ignored = ignored.contains(&name);
                let runs = match libtest.ignored {
                    Ignored::Skip => !is_ignored,
                    Ignored::Only => is_ignored,
                    Ignored::Include => true,
                };
                (name, runs)
            })
            // Ignored tests are reported as such, unless `--ignored` left the others out.
            .filter(|(_, runs)| *runs || libtest.ignored == Ignored::Skip)
            .collect();
        // As libtest counts them: every test the arguments leave out.
        let filtered_out = total - plan.len();
        let mut printer = report::Printer::new(libtest, plan.len(), filtered_out);
        let threads = libtest
            .test_threads
            .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .unwrap_or(1)
            .max(1);
        let queue = std::sync::Mutex::new(plan.into_iter());
        let (results, received) = std::sync::mpsc::channel::<TestResult>();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let results = results.clone();
                let queue = &queue;
                scope.spawn(move || {
                    loop {
                        let next = crate::sync::lock(queue).next();
                        let Some((name, runs)) = next else { break };
                        let result = if runs {
                            self.run_test(&name)
                        } else {
                            TestResult::ignored(name)
                        };
                        if results.send(result).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(results);
            for result in received {
                printer.print(result);
            }
        });
        Ok(printer.finish(started.elapsed()))
    }

    /// The names of the tests `selection` chooses, as the guest's libtest lists them:
    /// all of them, or only the ignored ones.
    fn list(
        &self,
        lister: &Instance,
        selection: &[String],
        which: Ignored,
    ) -> Result<Vec<String>, String> {
        let mut args = vec!["--list".to_owned(), "--format".into(), "terse".into()];
        args.extend(selection.iter().cloned());
        args.extend(which.flag().map(str::to_owned));
        let listed = self.run(lister, "(listing)", &args);
        if let Verdict::Failed(why) = &listed.verdict {
            report::print_output(
                &listed.output,
                report::Filter::Nothing,
                &mut Streams::of_this_process(),
            );
            return Err(format!(
                "the guest's libtest could not list its tests: {why}"
            ));
        }
        Ok(listed
            .output
            .lines_of("stdout")
            .into_iter()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_owned)
            .collect())
    }

    /// One test, alone in its instance, as the guest's libtest runs it.
    fn run_test(&self, name: &str) -> TestResult {
        let args = [
            name.to_owned(),
            "--exact".into(),
            "--include-ignored".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
            // Only a progress mark of libtest's own, which the report leaves out.
            "--quiet".into(),
        ];
        match self.session(name) {
            Ok(instance) => self.run(&instance, name, &args),
            Err(why) => TestResult::failed(name.to_owned(), why),
        }
    }

    /// Runs the guest's libtest with `args` in one instance, its output and exit status
    /// passed through: a listing, or one test as nextest runs it. `test` names the session
    /// (in the host's log).
    fn pass_through(&self, test: &str, args: &[String], to: &mut Streams) -> Result<u8, String> {
        let ran = self.run(&self.session(test)?, test, args);
        report::print_output(&ran.output, report::Filter::Nothing, to);
        match ran.verdict {
            Verdict::Passed | Verdict::Ignored => Ok(0),
            Verdict::Failed(why) => {
                let _ = writeln!(to.err, "edge-test-runner: {why}");
                Ok(match ran.outcome {
                    Outcome::Exited { code } => u8::try_from(code).unwrap_or(TESTS_FAILED),
                    _ => TESTS_FAILED,
                })
            }
        }
    }

    /// A pristine guest of the module, with its off-loopback backends answered by
    /// edge-test. `Err`: none could be had (the module does not load, say).
    fn session(&self, test: &str) -> Result<Instance, String> {
        let spare = self
            .server
            .and_then(|server| server.spares.take(&self.spare_key().ok()?));
        if let Some(spare) = spare {
            return Ok(spare);
        }
        self.new_session(test)
    }

    fn new_session(&self, test: &str) -> Result<Instance, String> {
        let off_loopback: Vec<String> = self.off_loopback.keys().cloned().collect();
        let hub = match self.server {
            Some(server) => MockHub::start_on(&server.mocks, &off_loopback),
            None => MockHub::start(&off_loopback),
        }
        .map_err(|e| e.to_string())?;
        let mut spec = self.spec.clone();
        spec.test = test.to_owned();
        spec.backend_addrs = self.loopback.clone();
        spec.backend_addrs
            .extend(hub.addrs().iter().map(|(k, v)| (k.clone(), *v)));
        let session = Session::start(spec).map_err(|e| e.to_string())?;
        Ok(Instance { session, hub })
    }

    /// In the runner server, after a call: forks the instance the next call of this suite
    /// will take (nextest's next test), while nothing waits for it. Each is as pristine as
    /// one forked on demand: from the same template, never run.
    fn lay_spare(&self) {
        let (Some(server), Ok(key)) = (self.server, self.spare_key()) else {
            return;
        };
        if server.spares.wants(&key)
            && let Ok(spare) = self.new_session("(the next test, forked ahead)")
        {
            server.spares.keep(key, spare);
        }
    }

    /// What an instance laid ahead must have been made from to serve this suite: the module
    /// file as it is now (a rebuilt one is another) and everything its session is given.
    fn spare_key(&self) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::MetadataExt;
        let module = std::fs::metadata(&self.spec.wasm).map_err(|e| e.to_string())?;
        let file = (
            module.dev(),
            module.ino(),
            module.len(),
            module.mtime(),
            module.mtime_nsec(),
        );
        let key = (
            file,
            &self.spec,
            &self.loopback,
            self.off_loopback.keys().collect::<Vec<_>>(),
        );
        postcard::to_allocvec(&key).map_err(|e| e.to_string())
    }

    /// Runs the guest's libtest with `args` (each run is an instance of its own), and judges
    /// how it ended.
    fn run(&self, instance: &Instance, test: &str, args: &[String]) -> TestResult {
        let mut command = vec![self.program.clone()];
        command.extend(args.iter().cloned());
        let report = instance.session.run_blocking(InvocationRequest {
            guest_timeout: self.timeout,
            max_log_bytes: crate::service::DEFAULT_MAX_LOG_BYTES,
            dynamic_dispatcher: instance.hub.dynamic_dispatcher(),
            command: Some(command),
            ..InvocationRequest::default()
        });
        self.judge(test, report, &instance.hub)
    }

    /// A test's result from its instance's report: passed only if the guest's libtest
    /// exited 0 and nothing reached past loopback.
    fn judge(&self, test: &str, report: InvocationReport, hub: &MockHub) -> TestResult {
        let output = Output {
            stdio: report
                .stdio
                .as_ref()
                .map(|stdio| String::from_utf8_lossy(&stdio.bytes).into_owned()),
            lines: crate::executor::parse_log(&report.log),
        };
        let mut broken: Vec<String> = hub
            .take_failures()
            .into_iter()
            .map(|failure| self.off_loopback_failure(&failure))
            .collect();
        broken.extend(report.refused_connections.iter().map(|refused| {
            format!(
                "the guest connected to {refused}, off loopback: guest unit tests reach only \
                 the backends fastly.toml points at local servers"
            )
        }));
        let cap = crate::service::DEFAULT_MAX_LOG_BYTES;
        if report.dropped_log_bytes > 0 {
            broken.push(format!(
                "the test's log output passed {cap} bytes; {} bytes were dropped",
                report.dropped_log_bytes
            ));
        }
        if report.stdio.as_ref().is_some_and(|stdio| stdio.dropped > 0) {
            // The worker's file size limit refused the rest: the guest's writes failed.
            broken.push(format!(
                "the test wrote more than {cap} bytes to stdout and stderr; its writes past \
                 that failed, and only the first {cap} bytes are kept"
            ));
        }
        let failure = match &report.outcome {
            Outcome::Completed => None,
            Outcome::Exited { code } => {
                Some(format!("the guest's libtest exited with status {code}"))
            }
            Outcome::Trapped { message } => Some(guest_stopped(message, &output)),
            Outcome::TimedOut { limit } => Some(format!(
                "the test ran past its time limit of {limit:?} and was stopped \
                 (`--guest-timeout-ms` or {TIMEOUT_ENV} sets it)"
            )),
            Outcome::NotRun { reason } => Some(format!("the test could not run: {reason}")),
        };
        broken.extend(failure);
        if !report.runtime_warnings.is_empty() && !broken.is_empty() {
            broken.push(format!(
                "viceroy warned meanwhile:\n  {}",
                report.runtime_warnings.join("\n  ")
            ));
        }
        let verdict = if broken.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed(broken.join("\n"))
        };
        TestResult {
            name: test.to_owned(),
            verdict,
            output,
            outcome: report.outcome,
        }
    }

    fn off_loopback_failure(&self, failure: &crate::mock::verification::MockFailure) -> String {
        use crate::mock::verification::MockFailure;
        match failure {
            MockFailure::Unmatched {
                backend, request, ..
            } => format!(
                "the guest sent {} to backend `{backend}`, whose url in fastly.toml ({}) is \
                 off loopback: guest unit tests reach only local servers, so edge-test \
                 answered it with an error. Point `{backend}` at a server the test setup starts \
                 on 127.0.0.1 (or pass another manifest with --fastly-toml)",
                request.summary,
                self.off_loopback
                    .get(backend)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
            MockFailure::UnmockedDynamic {
                name,
                target,
                request,
            } => format!(
                "the guest sent {} to dynamic backend `{name}` ({target}): guest unit tests \
                 reach only the local servers fastly.toml names, so edge-test answered it \
                 with an error",
                request.summary
            ),
            other => other.to_string(),
        }
    }
}

/// A session of the module's and the mock hub answering its off-loopback backends.
struct Instance {
    session: Session,
    hub: MockHub,
}

/// Why a guest stopped, in words: its panic's message when it printed one (a wasm guest's
/// panic aborts the instance), else the trap.
fn guest_stopped(trap: &str, output: &Output) -> String {
    match crate::logs::panic_message_in(&output.lines_of("stderr")) {
        Some(message) => format!("the test panicked: {message}\n({trap})"),
        None if output
            .lines_of("stderr")
            .iter()
            .any(|l| l.starts_with("memory allocation of")) =>
        {
            format!(
                "the test ran out of memory (a guest may have {} MiB): {trap}",
                crate::executor::GUEST_MEMORY_MIB
            )
        }
        None => format!("the guest trapped: {trap}"),
    }
}

/// The manifest to use: `--fastly-toml`, else `EDGE_TEST_FASTLY_TOML`, else the crate's
/// own `fastly.toml` (cargo runs tests in the crate's directory and names it in
/// `CARGO_MANIFEST_DIR`).
fn fastly_toml(given: Option<&Path>, env: &CallEnv) -> Result<PathBuf, String> {
    let named = given
        .or_else(|| env.var(FASTLY_TOML_ENV).map(Path::new))
        .map(|path| env.path(path));
    if let Some(path) = named {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "the fastly.toml named ({}) does not exist",
                path.display()
            ))
        };
    }
    let crate_dir = env
        .var("CARGO_MANIFEST_DIR")
        .map_or_else(|| env.cwd.clone(), |dir| env.path(Path::new(dir)));
    let path = crate_dir.join("fastly.toml");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no fastly.toml in the guest crate ({} does not exist): the tests' stores and \
             backends come from it. Add one, or name it with `--fastly-toml PATH` in the \
             runner setting or {FASTLY_TOML_ENV}",
            path.display()
        ))
    }
}

/// Where each declared backend's `url` points: loopback ones as socket addresses, the
/// others as they are written.
type Targets = (BTreeMap<String, SocketAddr>, BTreeMap<String, String>);

fn backend_targets(manifest: &Manifest) -> Result<Targets, String> {
    let table: toml::Table = manifest
        .text
        .parse()
        .map_err(|e| format!("fastly.toml does not parse: {e}"))?;
    let declared = table
        .get("local_server")
        .and_then(|t| t.get("backends"))
        .and_then(toml::Value::as_table);
    let (mut loopback, mut off) = (BTreeMap::new(), BTreeMap::new());
    for name in &manifest.backends {
        let url = declared
            .and_then(|b| b.get(name))
            .and_then(|b| b.get("url"))
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        match loopback_addr(url) {
            Some(addr) => {
                loopback.insert(name.clone(), addr);
            }
            None => {
                off.insert(name.clone(), url.to_owned());
            }
        }
    }
    Ok((loopback, off))
}

/// A backend url's address when it is on loopback (`http://127.0.0.1:8787`,
/// `http://localhost:3000`, `http://[::1]`), looked up without asking any resolver.
fn loopback_addr(url: &str) -> Option<SocketAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        literal => literal.parse().ok()?,
    };
    (ip, port)
        .to_socket_addrs()
        .ok()?
        .next()
        .filter(|addr| addr.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_reached_as_they_are() {
        assert_eq!(
            loopback_addr("http://127.0.0.1:8787"),
            Some("127.0.0.1:8787".parse().unwrap())
        );
        assert_eq!(
            loopback_addr("http://localhost"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            loopback_addr("http://[::1]:9000/x"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(loopback_addr("https://api.todo.example"), None);
        assert_eq!(loopback_addr("http://10.0.0.1:80"), None);
        assert_eq!(loopback_addr("not a url"), None);
    }
}
