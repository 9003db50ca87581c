//! Running this test binary's own `helper_*` tests in child processes, and looking at
//! processes: for the tests of the host, whose faults (kills, stops, a full disk) must not
//! touch the host that the other tests of the binary share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a helper may run before the test fails instead of hanging.
const HELPER_LIMIT: Duration = Duration::from_secs(120);

/// Names the helper a child process was started to run. Helpers are `#[ignore]`d, and
/// `cargo test -- --include-ignored` runs them all in the test process itself: one stops
/// the host, another kills it, another sleeps a minute. So a helper does its work only in
/// a child started for it, and returns at once anywhere else.
pub const HELPER_ENV: &str = "EDGE_TEST_RUN_HELPER";

/// Whether this process was started to run the helper `name` (see [`HELPER_ENV`]).
pub fn asked_to_run(name: &str) -> bool {
    let asked = std::env::var(HELPER_ENV).is_ok_and(|helper| helper == name);
    if !asked {
        println!("{name} is a helper: it runs only in the child process its test starts");
    }
    asked
}

/// This binary, set to run one `#[ignore]`d helper test.
pub fn helper(name: &str) -> Command {
    helper_in(&std::env::current_exe().unwrap(), name)
}

/// [`helper`], run from `exe`: this test binary, or a copy of it standing for another.
pub fn helper_in(exe: &Path, name: &str) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env(HELPER_ENV, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for a helper (at most two minutes, then kills it and fails), asserts that it
/// passed, and returns what it printed.
pub fn run_to_end(mut child: Child) -> String {
    let deadline = Instant::now() + HELPER_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the helper ran past {HELPER_LIMIT:?} and was killed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "helper failed:\n{text}");
    text
}

pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

pub fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

pub fn process_name(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    comm.trim_end().to_owned()
}

/// Alive and not a zombie waiting to be reaped.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The pid a helper printed as `<label> <pid>`.
pub fn printed_pid(output: &str, label: &str) -> u32 {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("the helper printed no `{label}`:\n{output}"))
        .trim()
        .parse()
        .unwrap()
}

/// A directory of this test's own, removed when the test ends (passed or not).
pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch_dir(name: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!("edge-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}
