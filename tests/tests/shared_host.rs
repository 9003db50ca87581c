//! One host per machine (per user and build of edge-test): every test binary shares it and
//! its templates, across rebuilds of the binaries; another build gets a host of its own;
//! the templates it keeps are bounded. Each test runs helpers in a runtime directory of
//! its own, so the hosts it makes are its alone, and checks they leave nothing behind.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_test::Edge;
use support::Internals;
use support::process::{
    ScratchDir, asked_to_run, helper_in, is_running, parent_of, printed_pid, run_to_end,
    scratch_dir, wait_until,
};

/// Where this binary's guests are built: a copy of the binary elsewhere uses them too,
/// rather than building them again.
fn guests_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .join("edge-test")
        .join("guests")
}

/// A helper run in `runtime_dir`, from `exe` (this binary, or a copy standing for another
/// test binary), with a short idle time so that its host leaves when the test is done.
fn run_helper(exe: &Path, name: &str, runtime_dir: &ScratchDir, env: &[(&str, &str)]) -> String {
    let mut command = helper_in(exe, name);
    command
        .env("XDG_RUNTIME_DIR", &**runtime_dir)
        .env("EDGE_TEST_HOST_IDLE_MS", "1500")
        .env("EDGE_TEST_TARGET_DIR", guests_dir());
    for (key, value) in env {
        command.env(key, value);
    }
    run_to_end(command.spawn().unwrap())
}

/// This test binary copied elsewhere: a binary of the same build at another path, as a
/// second test binary or a rebuilt one is.
fn another_binary(dir: &ScratchDir) -> PathBuf {
    let copy = dir.join("another-test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    copy
}

fn template_of(output: &str) -> u64 {
    output
        .lines()
        .find_map(|line| line.strip_prefix("template "))
        .unwrap_or_else(|| panic!("no template in: {output}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits for the hosts of `outputs` to leave on their own, their sockets with them.
fn assert_hosts_leave(outputs: &[&str], runtime_dir: &ScratchDir) {
    for output in outputs {
        let host = printed_pid(output, "host pid");
        wait_until("the idle host leaves", Duration::from_secs(20), || {
            !is_running(host)
        });
    }
    let left: Vec<_> = std::fs::read_dir(runtime_dir.join("edge-test"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sock") || name.ends_with(".pid"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn two_test_binaries_share_one_host_and_one_template() {
    let runtime_dir = scratch_dir("shared-host");
    let exe = std::env::current_exe().unwrap();
    let copy = another_binary(&runtime_dir);
    let first = run_helper(&exe, "helper_report_host", &runtime_dir, &[]);
    let second = run_helper(&copy, "helper_report_host", &runtime_dir, &[]);
    assert_eq!(
        printed_pid(&first, "host pid"),
        printed_pid(&second, "host pid"),
        "one host:\n{first}\n{second}"
    );
    assert_eq!(
        template_of(&first),
        template_of(&second),
        "the second binary forks from the first one's template, with no compile"
    );
    assert_hosts_leave(&[&second], &runtime_dir);
}

#[test]
fn binaries_starting_at_once_still_share_one_host() {
    let runtime_dir = scratch_dir("shared-host-race");
    let exe = std::env::current_exe().unwrap();
    let copy = another_binary(&runtime_dir);
    let outputs: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = [&exe, &copy, &exe, &copy]
            .into_iter()
            .map(|binary| {
                let runtime_dir = &runtime_dir;
                scope.spawn(move || run_helper(binary, "helper_report_host", runtime_dir, &[]))
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let hosts: std::collections::BTreeSet<u32> =
        outputs.iter().map(|o| printed_pid(o, "host pid")).collect();
    let templates: std::collections::BTreeSet<u64> =
        outputs.iter().map(|o| template_of(o)).collect();
    assert_eq!(hosts.len(), 1, "{outputs:?}");
    assert_eq!(templates.len(), 1, "one compile: {outputs:?}");
    assert_hosts_leave(&[&outputs[0]], &runtime_dir);
}

#[test]
fn another_build_of_edge_test_gets_a_host_of_its_own() {
    let runtime_dir = scratch_dir("other-build");
    let exe = std::env::current_exe().unwrap();
    // Idle long enough that the first host is still there when the second has started.
    let idle = ("EDGE_TEST_HOST_IDLE_MS", "8000");
    let ours = run_helper(&exe, "helper_report_host", &runtime_dir, &[idle]);
    let theirs = run_helper(
        &exe,
        "helper_report_host",
        &runtime_dir,
        &[idle, ("EDGE_TEST_HOST_BUILD_ID", "0.0.0-another-build")],
    );
    let (our_host, their_host) = (
        printed_pid(&ours, "host pid"),
        printed_pid(&theirs, "host pid"),
    );
    assert_ne!(our_host, their_host, "a host serves only its own build");
    assert!(
        is_running(our_host) && is_running(their_host),
        "side by side"
    );
    assert_hosts_leave(&[&ours, &theirs], &runtime_dir);
}

#[test]
fn a_host_per_binary_when_asked() {
    let runtime_dir = scratch_dir("binary-scope");
    let exe = std::env::current_exe().unwrap();
    let copy = another_binary(&runtime_dir);
    let scope = [("EDGE_TEST_HOST_SCOPE", "binary")];
    let first = run_helper(&exe, "helper_report_host", &runtime_dir, &scope);
    let second = run_helper(&copy, "helper_report_host", &runtime_dir, &scope);
    assert_ne!(
        printed_pid(&first, "host pid"),
        printed_pid(&second, "host pid")
    );
    assert_hosts_leave(&[&first, &second], &runtime_dir);
}

#[test]
fn the_templates_a_host_keeps_are_bounded() {
    let runtime_dir = scratch_dir("template-cap");
    let exe = std::env::current_exe().unwrap();
    let output = run_helper(
        &exe,
        "helper_three_configurations",
        &runtime_dir,
        &[("EDGE_TEST_HOST_MAX_TEMPLATES", "1")],
    );
    let templates: Vec<u64> = output
        .lines()
        .filter_map(|line| line.strip_prefix("template "))
        .map(|id| id.trim().parse().unwrap())
        .collect();
    let [first, second, again] = templates[..] else {
        panic!("three templates: {output}")
    };
    assert_ne!(first, second);
    assert_ne!(
        first, again,
        "with room for one, the first was dropped and compiled again"
    );
    assert!(
        output.contains("dropped 1 least recently used template(s); 1 kept"),
        "the host's log says so: {output}"
    );
    assert_hosts_leave(&[&output], &runtime_dir);
}

// ---- helpers run in child processes by the tests above ----

#[test]
#[ignore = "run by the shared host tests"]
fn helper_report_host() {
    if !asked_to_run("helper_report_host") {
        return;
    }
    let edge = Edge::start("misbehave", "shared-host").unwrap();
    assert_eq!(edge.get("/ok").send_blocking().text(), "ok");
    let worker = edge.worker_pid().expect("a forked worker");
    println!("host pid {}", parent_of(worker));
    println!("template {}", edge.template_id().unwrap());
}

#[test]
#[ignore = "run by the_templates_a_host_keeps_are_bounded"]
fn helper_three_configurations() {
    if !asked_to_run("helper_three_configurations") {
        return;
    }
    let mut host = 0;
    for service in ["misbehave", "misbehave-reseeded", "misbehave"] {
        let edge = Edge::start(service, "template-cap").unwrap();
        assert_eq!(edge.get("/ok").send_blocking().text(), "ok");
        host = parent_of(edge.worker_pid().unwrap());
        println!("template {}", edge.template_id().unwrap());
    }
    println!("host pid {host}");
    // What the host says of its templates, read while it runs (it removes its log when it
    // leaves idle).
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap()).join("edge-test");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".log") {
            for line in std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
            {
                if line.contains("template") {
                    println!("host log: {line}");
                }
            }
        }
    }
}
