//! Unit tests inside a guest crate, run by `edge-test-runner` (built here from its own
//! workspace, as `guest-test-runner` beside the whole runner this package builds): each test
//! in a pristine instance of its own, failures alone and named, libtest's arguments as
//! libtest reads them, under `cargo test` and `cargo nextest run` as the target runner. The
//! guest is `guests/unit-tests`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::origin::Origin;
use support::process::{ScratchDir, scratch_dir};

#[path = "support/thin_runner.rs"]
mod thin_runner;

/// The thin runner, built from its own workspace and put beside the whole one this package
/// builds, once per test process.
fn runner() -> &'static Path {
    static RUNNER: OnceLock<PathBuf> = OnceLock::new();
    RUNNER.get_or_init(|| {
        thin_runner::thin_runner_beside(Path::new(env!("CARGO_BIN_EXE_guest-test-runner-host")))
    })
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/unit-tests")
}

/// Where the guest's tests are built: beside this test binary's target directory, shared by
/// every process (cargo locks it).
fn guest_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    target.join("edge-test").join("guest-tests")
}

fn cargo_in_guest() -> Command {
    cargo_in(&guest_dir())
}

fn cargo_in(crate_dir: &Path) -> Command {
    thin_runner::nested_cargo(crate_dir, &guest_target_dir())
}

/// The guest's test module, built once per process (cargo's own fingerprints make later
/// processes quick).
fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| test_module_of(&guest_dir()))
}

/// The test module of the guest crate at `crate_dir`, built.
fn test_module_of(crate_dir: &Path) -> PathBuf {
    let output = cargo_in(crate_dir)
        .args(["test", "--no-run", "--target", "wasm32-wasip1"])
        .arg("--message-format=json-render-diagnostics")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building the guest's tests failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|msg| Some(PathBuf::from(msg["executable"].as_str()?)))
        .expect("cargo names the test module")
}

/// A copy of the guest's `fastly.toml` whose `local` backend is `origin`, in a directory
/// removed when the test drops it.
fn manifest_for(origin: &Origin, name: &str) -> (ScratchDir, PathBuf) {
    let text = std::fs::read_to_string(guest_dir().join("fastly.toml")).unwrap();
    let text = text.replace("http://127.0.0.1:9", &origin.url());
    let dir = scratch_dir(&format!("guest-tests-{name}"));
    let path = dir.join("fastly.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn assert_has(&self, text: &str) {
        assert!(
            self.stdout.contains(text) || self.stderr.contains(text),
            "expected {text:?} in the runner's output:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// The section a failure's output and reason are shown in.
    fn failure_of(&self, test: &str) -> &str {
        let start = self
            .stdout
            .find(&format!("---- {test} stdout ----"))
            .unwrap_or_else(|| panic!("no failure section for {test}:\n{}", self.stdout));
        let rest = &self.stdout[start..];
        let end = rest[5..].find("\n---- ").map_or(rest.len(), |i| i + 5);
        let end = rest[..end].find("\nfailures:").unwrap_or(end);
        &rest[..end]
    }
}

/// Runs the runner as cargo does: `<runner> [options] <module> <libtest args>`.
fn run(options: &[&str], libtest: &[&str]) -> Ran {
    let mut command = Command::new(runner());
    command
        .args(options)
        .arg(module())
        .args(libtest)
        // As cargo runs it: in the crate, which it names.
        .env("CARGO_MANIFEST_DIR", guest_dir())
        .current_dir(guest_dir());
    Ran::from(command.output().unwrap())
}

#[test]
fn passing_tests_pass_each_in_a_pristine_instance() {
    let origin = Origin::start();
    let (_scratch, manifest) = manifest_for(&origin, "passing");
    let ran = run(&["--fastly-toml", manifest.to_str().unwrap()], &["passing"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    // Both halves of each pair find the store and the cache as declared: neither sees the
    // other's write, whichever runs second.
    for test in [
        "greets",
        "reads_the_config_store_fastly_toml_declares",
        "kv_first",
        "kv_second",
        "cache_first",
        "cache_second",
        "prints_and_logs",
    ] {
        ran.assert_has(&format!("test passing::{test} ... ok"));
    }
    ran.assert_has("test passing::ignored_but_passes ... ignored");
    ran.assert_has("running 8 tests");
    ran.assert_has("test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 10 filtered out");
    // Output is shown for failures only, as libtest does.
    assert!(
        !ran.stdout.contains("printed by prints_and_logs"),
        "{}",
        ran.stdout
    );
}

#[test]
fn each_failure_fails_its_test_alone_and_says_how() {
    let origin = Origin::start();
    let (_scratch, manifest) = manifest_for(&origin, "failing");
    let ran = run(
        &["--fastly-toml", manifest.to_str().unwrap()],
        &["--skip", "slow"],
    );
    assert_eq!(ran.code, Some(101), "{}{}", ran.stdout, ran.stderr);
    // The other tests ran to the end, each in its own instance, and passed.
    ran.assert_has("test passing::kv_second ... ok");
    ran.assert_has("test backends::reaches_the_local_server_fastly_toml_names ... ok");
    ran.assert_has(
        "test result: FAILED. 8 passed; 7 failed; 1 ignored; 0 measured; 2 filtered out",
    );

    let panics = ran.failure_of("failing::panics");
    for shown in [
        "context printed before the panic",
        "audit :: logged before the panic",
        "the test panicked: boom in a unit test",
    ] {
        assert!(panics.contains(shown), "{shown:?} missing from:\n{panics}");
    }
    let traps = ran.failure_of("failing::traps");
    assert!(traps.contains("the guest trapped: "), "{traps}");
    assert!(traps.contains("unreachable"), "{traps}");
    let error = ran.failure_of("failing::returns_an_error");
    assert!(error.contains("Error: \"went wrong\""), "{error}");
    assert!(error.contains("exited with status 101"), "{error}");
    let exits = ran.failure_of("failing::exits");
    assert!(
        exits.contains("the guest's libtest exited with status 3"),
        "{exits}"
    );
    let memory = ran.failure_of("failing::exhausts_memory");
    assert!(memory.contains("memory allocation of"), "{memory}");
    let off = ran.failure_of("failing::calls_a_backend_off_loopback");
    assert!(
        off.contains(
            "the guest sent GET /v1 to backend `remote`, whose url in fastly.toml \
             (https://api.example.com) is off loopback"
        ),
        "{off}"
    );
    let dynamic = ran.failure_of("failing::calls_a_dynamic_backend");
    assert!(
        dynamic.contains(
            "the guest sent GET /u/ada.png to dynamic backend `avatars` (avatars.example.net:443)"
        ),
        "{dynamic}"
    );
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The compiled module has no DWARF (every fork would copy it); a trap's frames get their
/// files and lines from the module on disk, as wasmtime would have written them. The guest
/// imports nothing edge-test rewrites, so its code is cargo's own.
#[test]
fn a_trap_names_the_file_and_line_of_each_frame() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/plain-unit-tests");
    let ran = Ran::from(
        Command::new(runner())
            .arg(test_module_of(&crate_dir))
            .env("CARGO_MANIFEST_DIR", &crate_dir)
            .current_dir(&crate_dir)
            .output()
            .unwrap(),
    );
    assert_eq!(ran.code, Some(101), "{}", ran.stdout);
    ran.assert_has("test tests::sums ... ok");
    let failure = ran.failure_of("tests::traps_in_a_helper");
    // The DWARF names the source as cargo saw it when it built the module (another checkout's
    // path, if that one built it into the shared target directory last).
    let source = "plain-unit-tests/src/main.rs";
    let frame = failure
        .lines()
        .position(|l| l.contains("!plain_unit_tests::checksum::"))
        .unwrap_or_else(|| panic!("no frame for the helper:\n{failure}"));
    let next = failure.lines().nth(frame + 1).unwrap_or_default().trim();
    assert!(
        next.starts_with("at /") && next.ends_with(&format!("{source}:8:9")),
        "the helper's frame is followed by its line (the `unreachable` call):\n{failure}"
    );
    assert!(
        failure.contains(&format!("{source}:24:9\n")),
        "the test's own frame names its line:\n{failure}"
    );
}

#[test]
fn a_test_that_loops_is_stopped_at_its_time_limit() {
    let ran = run(&["--guest-timeout-ms", "300"], &["slow::loops"]);
    assert_eq!(ran.code, Some(101), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test slow::loops_forever ... FAILED");
    let failure = ran.failure_of("slow::loops_forever");
    assert!(
        failure.contains("the test ran past its time limit of 300ms and was stopped"),
        "{failure}"
    );
}

#[test]
fn a_test_that_floods_its_output_fails_at_the_cap_not_at_its_time_limit() {
    // A minute: were the output not bounded, the test would be stopped there instead, and
    // this one would fail on the message.
    let ran = run(&["--guest-timeout-ms", "60000"], &["slow::floods"]);
    assert_eq!(ran.code, Some(101), "{}", ran.stderr);
    ran.assert_has("test slow::floods_stdout ... FAILED");
    let failure = ran.failure_of("slow::floods_stdout");
    assert!(
        failure.contains(
            "the test wrote more than 33554432 bytes to stdout and stderr; its writes past \
             that failed, and only the first 33554432 bytes are kept"
        ),
        "{}",
        &failure[failure.len().saturating_sub(2000)..]
    );
    assert!(!failure.contains("time limit"));
    // What it wrote first is shown, up to the cap.
    assert!(failure.contains(&"x".repeat(64 << 10)));
    assert!(ran.stdout.len() < 34 << 20, "{} bytes", ran.stdout.len());
}

#[test]
fn ignored_tests_run_with_ignored_and_include_ignored() {
    let ran = run(&[], &["--ignored"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test passing::ignored_but_passes ... ok");
    ran.assert_has("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 17 filtered out");

    let ran = run(&[], &["passing::", "--include-ignored", "--nocapture"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test passing::ignored_but_passes ... ok");
    // --nocapture shows what passing tests print, and their log lines.
    ran.assert_has("the ignored test ran");
    ran.assert_has("printed by prints_and_logs");
    ran.assert_has("audit :: logged by prints_and_logs");
    ran.assert_has("test result: ok. 8 passed; 0 failed; 0 ignored");
}

#[test]
fn filters_exact_and_skip_select_as_libtest_does() {
    let ran = run(&[], &["kv_", "--skip", "second"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test passing::kv_first ... ok");
    assert!(!ran.stdout.contains("kv_second"), "{}", ran.stdout);
    ran.assert_has("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 17 filtered out");

    // Two exact names (one exact name is nextest's call, below).
    let ran = run(&[], &["passing::greets", "passing::kv", "--exact"]);
    ran.assert_has("test passing::greets ... ok");
    ran.assert_has("running 1 test");
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
}

#[test]
fn the_listing_is_the_guests_own() {
    let ran = run(&[], &["--list", "--format", "terse"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let mut listed: Vec<&str> = ran.stdout.lines().collect();
    listed.sort();
    assert_eq!(listed.len(), 18, "{listed:?}");
    assert!(listed.contains(&"passing::kv_first: test"), "{listed:?}");
    let ran = run(&[], &["--list", "--format", "terse", "--ignored"]);
    assert_eq!(ran.stdout, "passing::ignored_but_passes: test\n");
    // An option libtest does not know is libtest's to name.
    let ran = run(&[], &["--frobnicate"]);
    assert_eq!(ran.code, Some(2));
    ran.assert_has("frobnicate");
}

/// nextest's call: one test by its exact name, its output as it comes, libtest's exit status.
#[test]
fn one_exact_test_runs_as_nextest_runs_it() {
    let ran = run(&[], &["passing::prints_and_logs", "--exact", "--nocapture"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("printed by prints_and_logs");
    ran.assert_has("audit :: logged by prints_and_logs");
    ran.assert_has("test result: ok. 1 passed");

    let ran = run(&[], &["failing::panics", "--exact", "--nocapture"]);
    assert_eq!(ran.code, Some(101), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("boom in a unit test");
    ran.assert_has("edge-test-runner: the test panicked: boom in a unit test");

    let ran = run(
        &[],
        &["passing::ignored_but_passes", "--exact", "--ignored"],
    );
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("the ignored test ran");
}

#[test]
fn in_process_the_results_are_the_same() {
    let mut command = Command::new(runner());
    command
        .arg(module())
        .args(["cache_", "--test-threads", "1"])
        .env("EDGE_TEST_HOST", "off")
        .env("CARGO_MANIFEST_DIR", guest_dir())
        .current_dir(guest_dir());
    let ran = Ran::from(command.output().unwrap());
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test passing::cache_first ... ok");
    ran.assert_has("test passing::cache_second ... ok");
}

#[test]
fn bad_input_is_named_with_the_fix() {
    let ran = Ran::from(
        Command::new(runner())
            .arg("/nonexistent/tests.wasm")
            .output()
            .unwrap(),
    );
    assert_eq!(ran.code, Some(2));
    ran.assert_has("edge-test-runner: error: cannot read the test module /nonexistent/tests.wasm");
    ran.assert_has("cargo test --target wasm32-wasip1");

    let corrupt =
        std::env::temp_dir().join(format!("edge-test-corrupt-{}.wasm", std::process::id()));
    std::fs::write(&corrupt, b"\0asm\x01\0\0\0 this is not a module").unwrap();
    let ran = Ran::from(
        Command::new(runner())
            .arg("--fastly-toml")
            .arg(guest_dir().join("fastly.toml"))
            .arg(&corrupt)
            .output()
            .unwrap(),
    );
    let _ = std::fs::remove_file(&corrupt);
    assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("the runtime cannot load");

    // No fastly.toml where cargo runs the tests, none named.
    let ran = Ran::from(
        Command::new(runner())
            .arg(module())
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("EDGE_TEST_FASTLY_TOML")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap(),
    );
    assert_eq!(ran.code, Some(2));
    ran.assert_has("no fastly.toml in the guest crate");
    ran.assert_has("--fastly-toml PATH");
    let ran = run(&["--fastly-toml", "/nonexistent/fastly.toml"], &[]);
    assert_eq!(ran.code, Some(2));
    ran.assert_has("the fastly.toml named (/nonexistent/fastly.toml) does not exist");
}

/// The runner as cargo's target runner: `cargo test` in the guest crate.
#[test]
fn cargo_test_runs_the_guests_tests_through_it() {
    let origin = Origin::start();
    let (_scratch, manifest) = manifest_for(&origin, "cargo-test");
    let output = cargo_in_guest()
        .args([
            "test",
            "--target",
            "wasm32-wasip1",
            "--",
            "--skip",
            "slow",
            "--skip",
            "failing",
        ])
        .env("CARGO_TARGET_WASM32_WASIP1_RUNNER", runner())
        .env("EDGE_TEST_FASTLY_TOML", &manifest)
        .output()
        .unwrap();
    let ran = Ran::from(output);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test result: ok. 8 passed; 0 failed; 1 ignored; 0 measured; 9 filtered out");
}

/// The runner as nextest's target runner: its listing, one process per test, its retries'
/// exit statuses. nextest is CI's (`.ci/run` installs it); elsewhere the test says it did
/// not run rather than passing.
#[test]
fn cargo_nextest_runs_the_guests_tests_through_it() {
    let has_nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nextest {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-nextest is not installed, and CI needs this test to run"
        );
        eprintln!("not run: cargo-nextest is not installed (cargo install cargo-nextest)");
        return;
    }
    let origin = Origin::start();
    let (_scratch, manifest) = manifest_for(&origin, "nextest");
    let nextest = |filters: &[&str]| {
        let output = cargo_in_guest()
            .args([
                "nextest",
                "run",
                "--target",
                "wasm32-wasip1",
                "--no-fail-fast",
            ])
            .args(["--run-ignored", "all", "--color", "never"])
            .args(filters)
            .env("CARGO_TARGET_WASM32_WASIP1_RUNNER", runner())
            .env("EDGE_TEST_FASTLY_TOML", &manifest)
            .output()
            .unwrap();
        Ran::from(output)
    };
    let ran = nextest(&["passing", "backends"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("9 tests run: 9 passed");

    let ran = nextest(&["failing::panics", "failing::exits"]);
    assert_eq!(ran.code, Some(100), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("2 tests run: 0 passed, 2 failed");
    ran.assert_has("edge-test-runner: the test panicked: boom in a unit test");
    ran.assert_has("edge-test-runner: the guest's libtest exited with status 3");
}

/// The thin runner and the whole one it runs, copied into `dir`: a runner server of their
/// own (its socket is named after the whole runner's file), which a test may stop or kill
/// without touching the other tests' server.
fn runners_in(dir: &Path) -> (PathBuf, PathBuf) {
    let thin = dir.join("guest-test-runner");
    let whole = dir.join("guest-test-runner-host");
    std::fs::copy(runner(), &thin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_guest-test-runner-host"), &whole).unwrap();
    (thin, whole)
}

/// The log of the runner server serving the whole runner `whole`, once one has started.
fn server_log_of(whole: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("edge-test"),
        _ => std::env::temp_dir().join(format!("edge-test-{uid}")),
    };
    // As the thin runner names it, up to the settings' hash: an inode of a copy removed
    // earlier may be this copy's again.
    let meta = std::fs::metadata(whole).unwrap();
    let named = format!(
        "runner-{:x}-{:x}-{:x}-{:x}.{:x}-",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.extension().is_some_and(|ext| ext == "log")
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&named))
        })
}

/// The pid of the server whose log is `log` (its first line says it).
fn server_pid(log: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(log).ok()?;
    let first = text.lines().next()?;
    first
        .strip_prefix("edge-test runner server ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn run_with(runner: &Path, libtest: &[&str], vars: &[(&str, &str)]) -> Ran {
    let mut command = Command::new(runner);
    command
        .arg(module())
        .args(libtest)
        .envs(vars.iter().copied())
        .env("CARGO_MANIFEST_DIR", guest_dir())
        .current_dir(guest_dir());
    Ran::from(command.output().unwrap())
}

/// Waits, within a bound, for the server of `whole` to have logged `text`.
#[track_caller]
fn wait_for_server_log(whole: &Path, text: &str) -> PathBuf {
    for _ in 0..200 {
        if let Some(log) = server_log_of(whole)
            && std::fs::read_to_string(&log).is_ok_and(|t| t.contains(text))
        {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "the runner server of {} never logged {text:?}",
        whole.display()
    );
}

/// nextest's calls (a listing, one test named exactly) go to the runner server once the
/// first has started it, and are answered as the whole runner answers them: output, the
/// failure's reason, the exit status, off-loopback and dynamic backends named.
#[test]
fn nextests_calls_are_served_by_the_runner_server_as_the_whole_runner_serves_them() {
    let dir = scratch_dir("runner-server-serves");
    let _servers = KillServersFrom(&dir);
    let (thin, whole, _) = server_started(&dir);

    let listed = run_with(&thin, &["--list", "--format", "terse"], &[]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    listed.assert_has("passing::greets: test");
    let printed = run_with(
        &thin,
        &["passing::prints_and_logs", "--exact", "--nocapture"],
        &[],
    );
    assert_eq!(
        printed.code,
        Some(0),
        "{}{}",
        printed.stdout,
        printed.stderr
    );
    printed.assert_has("printed by prints_and_logs");
    printed.assert_has("audit :: logged by prints_and_logs");
    let panicked = run_with(&thin, &["failing::panics", "--exact", "--nocapture"], &[]);
    assert_eq!(
        panicked.code,
        Some(101),
        "{}{}",
        panicked.stdout,
        panicked.stderr
    );
    panicked.assert_has("edge-test-runner: the test panicked: boom in a unit test");
    let off = run_with(
        &thin,
        &["failing::calls_a_backend_off_loopback", "--exact"],
        &[],
    );
    assert_eq!(off.code, Some(101), "{}{}", off.stdout, off.stderr);
    off.assert_has("the guest sent GET /v1 to backend `remote`, whose url in fastly.toml");
    let dynamic = run_with(&thin, &["failing::calls_a_dynamic_backend", "--exact"], &[]);
    assert_eq!(
        dynamic.code,
        Some(101),
        "{}{}",
        dynamic.stdout,
        dynamic.stderr
    );
    dynamic.assert_has("the guest sent GET /u/ada.png to dynamic backend `avatars`");
    let bad = run_with(&thin, &["passing::greets", "--exact", "--bogus"], &[]);
    assert_ne!(bad.code, Some(0), "{}{}", bad.stdout, bad.stderr);
    bad.assert_has("bogus");

    // Each of those was the server's, not a whole runner's of its own.
    let log = server_log_of(&whole).unwrap();
    let served = std::fs::read_to_string(&log).unwrap();
    for call in [
        "--list --format terse`: exit status 0",
        "passing::prints_and_logs --exact --nocapture`: exit status 0",
        "failing::panics --exact --nocapture`: exit status 101",
        "failing::calls_a_backend_off_loopback --exact`: exit status 101",
        "failing::calls_a_dynamic_backend --exact`: exit status 101",
    ] {
        assert!(
            served.contains(call),
            "{call:?} not in the server's log:\n{served}"
        );
    }
}

/// Kills the servers of the runners copied into a directory when dropped, the test passed
/// or not: none is left for its idle limit.
struct KillServersFrom<'d>(&'d Path);

impl Drop for KillServersFrom<'_> {
    fn drop(&mut self) {
        kill_servers_from(self.0);
    }
}

/// Kills every runner server running a binary in `dir` (those of copied runners).
fn kill_servers_from(dir: &Path) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        // Servers only: a host the copied whole runner started (when none ran) serves every
        // test of this build, and its workers run the other tests' guests.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if exe.starts_with(dir) && comm.trim_end() == "edge-test runs" {
            // SAFETY: a signal to a process of a binary this test copied and ran.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A server stopped (SIGSTOP) is passed by within the answer limit and replaced; one killed
/// while it runs a test leaves that test to the whole runner, which runs it again from the
/// start: the call still ends with the test's own result, not a hang or a lost report.
#[test]
fn a_stopped_or_killed_runner_server_leaves_the_call_to_the_whole_runner() {
    let dir = scratch_dir("runner-server-faults");
    let _servers = KillServersFrom(&dir);
    let (thin, whole, stopped) = server_started(&dir);

    // SAFETY: signals to a process this test started.
    unsafe { libc::kill(stopped, libc::SIGSTOP) };
    let passed_by = run_with(
        &thin,
        &["passing::greets", "--exact"],
        &[("EDGE_TEST_HOST_ANSWER_MS", "300")],
    );
    assert_eq!(
        passed_by.code,
        Some(0),
        "{}{}",
        passed_by.stdout,
        passed_by.stderr
    );
    passed_by.assert_has("test result: ok. 1 passed");
    // The thin runner stopped the stuck server: it is not left behind, stopped forever.
    wait_until_gone(stopped);
    // The whole runner started a server in its place.
    let replaced = (0..200)
        .find_map(|_| {
            let pid = server_log_of(&whole).as_deref().and_then(server_pid);
            if pid.is_some_and(|pid| pid != stopped) {
                return pid;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
        .expect("a new runner server");

    // Killed mid-test: a loop with a short limit, the server killed while it runs.
    let ran = loop_while(
        &thin,
        &whole,
        &[("EDGE_TEST_GUEST_TIMEOUT_MS", "1500")],
        || {
            // SAFETY: a signal to a process this test's runner started.
            unsafe { libc::kill(replaced, libc::SIGKILL) };
        },
    );
    assert_eq!(ran.code, Some(101), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("the test ran past its time limit of 1.5s and was stopped");
}

/// A server that breaks the wire after the test's output began (a frame of a kind the thin
/// runner does not know, or the connection closed before the exit status) fails the call at
/// once, with the output so far and a reason naming the server's log: never a hang, never a
/// pass. The server here is a stand-in listening where the real one did.
#[test]
fn a_server_that_breaks_the_wire_fails_the_call_naming_its_log() {
    use std::io::{Read, Write};
    let dir = scratch_dir("runner-server-wire");
    let _servers = KillServersFrom(&dir);
    let (thin, whole, server) = server_started(&dir);
    // SAFETY: a signal to the server this test's runner started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    wait_until_gone(server);
    let log = server_log_of(&whole).unwrap();
    let socket = log.with_extension("sock");
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    fn frame(kind: u8, bytes: &[u8]) -> Vec<u8> {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        frame.extend_from_slice(bytes);
        frame
    }
    let stand_in = std::thread::spawn(move || {
        for ending in [frame(9, b"?"), Vec::new()] {
            let (mut call, _) = listener.accept().unwrap();
            // The call: its magic, its length, its payload.
            let mut header = [0u8; 8];
            call.read_exact(&mut header).unwrap();
            let length = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
            call.read_exact(&mut vec![0; length]).unwrap();
            let mut accepted = 10_000u64.to_le_bytes().to_vec();
            accepted.extend_from_slice(&std::process::id().to_le_bytes());
            call.write_all(&frame(1, &accepted)).unwrap();
            call.write_all(&frame(2, b"output so far\n")).unwrap();
            call.write_all(&ending).unwrap();
        }
    });
    let unknown = run_with(&thin, &["passing::greets", "--exact"], &[]);
    let closed = run_with(&thin, &["passing::greets", "--exact"], &[]);
    stand_in.join().unwrap();
    let _ = std::fs::remove_file(&socket);

    let log = log.display().to_string();
    for ran in [&unknown, &closed] {
        assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
        assert_eq!(ran.stdout, "output so far\n");
        ran.assert_has(&format!("; its log is {log}"));
    }
    unknown.assert_has(
        "edge-test-runner: error: the edge-test runner server sent a frame of unknown kind 9",
    );
    closed.assert_has(
        "edge-test-runner: error: the edge-test runner server stopped before the test finished \
         (it closed the connection)",
    );
}

/// Runners copied into `dir` (`runners_in`), and the pid of the server their first call
/// started: that call finds no server, so the whole runner runs it and starts one.
fn server_started(dir: &Path) -> (PathBuf, PathBuf, i32) {
    let (thin, whole) = runners_in(dir);
    let first = run_with(&thin, &["passing::greets", "--exact"], &[]);
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    let log = wait_for_server_log(&whole, "listening on");
    let pid = server_pid(&log).unwrap();
    (thin, whole, pid)
}

/// Runs the guest's looping test through `thin` with `vars`, does `meanwhile` once the
/// server of `whole` runs it, and returns how the call ended.
fn loop_while(thin: &Path, whole: &Path, vars: &[(&str, &str)], meanwhile: impl FnOnce()) -> Ran {
    let looping = {
        let thin = thin.to_owned();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_with(&thin, &["slow::loops_forever", "--exact"], &vars)
        })
    };
    wait_for_server_log(whole, "slow::loops_forever --exact`");
    meanwhile();
    looping.join().unwrap()
}

/// Waits, within a bound, for process `pid` to have ended (gone, or a zombie).
#[track_caller]
fn wait_until_gone(pid: i32) {
    for _ in 0..200 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit_once(") ").map_or("", |(_, rest)| rest);
        if state.is_empty() || state.starts_with('Z') {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("process {pid} is still there");
}

/// A server stopped while it runs a test: the thin runner, watching its pid, notices within
/// the answer limit, stops it for good, and the whole runner runs the test again, to its
/// own result.
#[test]
fn a_runner_server_stopped_mid_test_is_replaced_and_the_test_run_again() {
    let dir = scratch_dir("runner-server-stopped");
    let _servers = KillServersFrom(&dir);
    let (thin, whole, server) = server_started(&dir);
    let vars = [
        ("EDGE_TEST_GUEST_TIMEOUT_MS", "2000"),
        ("EDGE_TEST_HOST_ANSWER_MS", "1000"),
    ];
    let ran = loop_while(&thin, &whole, &vars, || {
        // SAFETY: a signal to a process this test's runner started.
        unsafe { libc::kill(server, libc::SIGSTOP) };
    });
    assert_eq!(ran.code, Some(101), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("the test ran past its time limit of 2s and was stopped");
    wait_until_gone(server);
}

/// Output nobody reads (stdout a pipe whose reader is gone, as when a pager quits): the
/// test's own status, from the whole runner's first call and the server's next, never a
/// runner killed by SIGPIPE.
#[test]
fn output_nobody_reads_does_not_fail_the_test() {
    let dir = scratch_dir("runner-unread-output");
    let _servers = KillServersFrom(&dir);
    let (thin, whole) = runners_in(&dir);
    let unread = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = Command::new(&thin)
            .arg(module())
            .args(["passing::prints_and_logs", "--exact", "--nocapture"])
            .env("CARGO_MANIFEST_DIR", guest_dir())
            .current_dir(guest_dir())
            .stdout(writer)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}");
    };
    // No server yet: the whole runner runs it, and starts one.
    unread();
    wait_for_server_log(&whole, "listening on");
    unread();
    let log = server_log_of(&whole).unwrap();
    let served = std::fs::read_to_string(log).unwrap();
    assert!(
        served.contains("passing::prints_and_logs --exact --nocapture`: exit status 0"),
        "the second call is the server's:\n{served}"
    );
}

/// An environment of thousands of entries reaches the whole runner when the thin one hands
/// it the call (its arrays are as long as the call needs), and the server when one runs.
#[test]
fn a_large_environment_reaches_the_test_either_way() {
    let dir = scratch_dir("runner-large-env");
    let _servers = KillServersFrom(&dir);
    let (thin, whole) = runners_in(&dir);
    let vars: Vec<(String, String)> = (0..6000)
        .map(|i| (format!("EDGE_TEST_FILLER_{i}"), "x".repeat(16)))
        .collect();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for _ in 0..2 {
        let ran = run_with(&thin, &["passing::greets", "--exact"], &vars);
        assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
        ran.assert_has("test result: ok. 1 passed");
    }
    let log = wait_for_server_log(&whole, "passing::greets --exact`: exit status 0");
    assert!(server_pid(&log).is_some());
}

/// The thin runner's unit tests (its workspace is its own: see edge-test-runner/Cargo.toml),
/// run as part of this suite.
#[test]
fn the_thin_runners_own_unit_tests_pass() {
    let target = guest_target_dir().parent().unwrap().join("thin-runner");
    let output = thin_runner::cargo_in_its_workspace(&target)
        .arg("test")
        .output()
        .unwrap();
    let ran = Ran::from(output);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("test result: ok.");
    ran.assert_has("environment_entries_split_as_std_splits_them ... ok");
}

/// The thin runner alone, without the whole runner beside it: an error saying how to
/// install both.
#[test]
fn the_thin_runner_without_the_whole_one_names_the_fix() {
    let dir = scratch_dir("runner-alone");
    let thin = dir.join("guest-test-runner");
    std::fs::copy(runner(), &thin).unwrap();
    let ran = run_with(&thin, &["passing::greets", "--exact"], &[]);
    assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has("guest-test-runner-host is not there");
    ran.assert_has("cargo install edge-test");
}

/// A whole runner beside it that cannot be run (not executable), with no server to hand the
/// call to: the thin runner says which file and why, and exits as a runner that could not run.
#[test]
fn a_whole_runner_that_cannot_run_is_named_with_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("runner-not-executable");
    let (thin, whole) = runners_in(&dir);
    std::fs::set_permissions(&whole, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ran = run_with(&thin, &["passing::greets", "--exact"], &[]);
    assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
    ran.assert_has(&format!(
        "edge-test-runner: error: cannot run {}: Permission denied",
        whole.display()
    ));
}

/// The server reads a call's manifest as the caller's own process would: `--fastly-toml`
/// and the store files it names relative to the caller's working directory, not the
/// server's. A store that moved to a file changes the module's template too: the answer is
/// the file's.
#[test]
fn the_runner_server_reads_a_manifest_relative_to_the_callers_directory() {
    let dir = scratch_dir("runner-server-relative");
    let text = std::fs::read_to_string(guest_dir().join("fastly.toml")).unwrap();
    let inline = "    format = \"inline-toml\"\n    [local_server.config_stores.settings.contents]\n    greeting = \"hello from fastly.toml\"\n";
    assert!(
        text.contains(inline),
        "the guest's manifest changed:\n{text}"
    );
    let text = text.replace(
        inline,
        "    format = \"json\"\n    file = \"store/settings.json\"\n",
    );
    std::fs::write(dir.join("fastly.toml"), text).unwrap();
    std::fs::create_dir(dir.join("store")).unwrap();
    std::fs::write(
        dir.join("store/settings.json"),
        r#"{ "greeting": "hello from fastly.toml" }"#,
    )
    .unwrap();
    let test = "passing::reads_the_config_store_fastly_toml_declares";
    let call = || {
        Ran::from(
            Command::new(runner())
                .args(["--fastly-toml", "fastly.toml"])
                .arg(module())
                .args([test, "--exact"])
                .env("CARGO_MANIFEST_DIR", &*dir)
                .current_dir(&*dir)
                .output()
                .unwrap(),
        )
    };
    // The first may find no server (the whole runner runs it); the second is the server's.
    let first = call();
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    wait_for_server_log(
        Path::new(env!("CARGO_BIN_EXE_guest-test-runner-host")),
        "listening on",
    );
    let second = call();
    assert_eq!(second.code, Some(0), "{}{}", second.stdout, second.stderr);
    second.assert_has("test result: ok. 1 passed");
    let log = server_log_of(Path::new(env!("CARGO_BIN_EXE_guest-test-runner-host"))).unwrap();
    let served = std::fs::read_to_string(log).unwrap();
    assert!(
        served.contains(&format!(
            "--fastly-toml fastly.toml {} {test} --exact`: exit status 0",
            module().display()
        )),
        "the server did not run it:\n{served}"
    );
}
