//! The host that compiles each service once and forks a worker per test: crashes, kills,
//! concurrency across processes, and what is left behind.
//!
//! Several tests drive this binary's own `helper_*` tests in child processes (they are
//! `#[ignore]`d so that a normal run skips them).

#![cfg(target_os = "linux")]

mod support;

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use edge_test::Edge;
use support::Internals;
use support::process::{
    all_pids, helper, is_running, kill, parent_of, printed_pid, process_name, run_to_end,
    scratch_dir, wait_until,
};

fn forked_edge(test: &str) -> (Edge, u32) {
    let edge = Edge::start("misbehave", test).expect("misbehave starts");
    let pid = edge
        .worker_pid()
        .expect("tests run in forked workers unless EDGE_TEST_HOST=off");
    (edge, pid)
}

#[test]
fn tests_share_one_host_and_get_a_worker_each() {
    let (_a, worker_a) = forked_edge("a");
    let (_b, worker_b) = forked_edge("b");
    assert_ne!(worker_a, worker_b);
    assert_eq!(
        parent_of(worker_a),
        parent_of(worker_b),
        "one host forks both"
    );
    assert_ne!(
        parent_of(worker_a),
        std::process::id(),
        "the host is not the test process"
    );
    // Named, so that `ps` tells them from the test processes of the same binary.
    assert_eq!(process_name(parent_of(worker_a)), "edge-test host");
    assert_eq!(process_name(worker_a), "edge-test guest");
}

#[test]
fn a_crashed_worker_fails_its_test_with_the_reason() {
    let (edge, worker) = forked_edge("crash");
    assert_eq!(edge.get("/ok").send_blocking().text(), "ok");
    kill(worker, "-9");

    let panic = std::panic::catch_unwind(|| edge.get("/ok").send_blocking())
        .expect_err("the worker is gone");
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains(&format!(
            "the worker process running this test's guest (pid {worker}) died"
        )),
        "{message}"
    );
    assert!(message.contains("crashed or was killed"), "{message}");
}

#[test]
fn a_killed_host_is_replaced_by_the_next_test() {
    // In a process with a host of its own: killing the shared one would pull it from
    // under the other tests of this binary.
    let runtime_dir = scratch_dir("killed-host");
    let output = run_to_end(
        helper("helper_kill_the_host")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .spawn()
            .unwrap(),
    );
    assert!(output.contains("replaced"), "{output}");
    // The killed host's log is kept for whoever investigates, not overwritten by the next.
    let kept: Vec<PathBuf> = std::fs::read_dir(runtime_dir.join("edge-test"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("host-") && n.matches('.').count() == 2)
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let log = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(log.contains("listening on"), "{log}");
    assert!(
        log.contains("runs service `misbehave` for test before"),
        "the log names the test each worker served: {log}"
    );
}

#[test]
fn a_template_is_compiled_once_per_configuration() {
    let a = Edge::start("misbehave", "a").unwrap();
    let b = Edge::start("misbehave", "b").unwrap();
    let impatient = Edge::start("misbehave-impatient", "impatient").unwrap();
    let reseeded = Edge::start("misbehave-reseeded", "reseeded").unwrap();
    let reseeded_again = Edge::start("misbehave-reseeded", "reseeded again").unwrap();
    let template = |edge: &Edge| edge.template_id().expect("a forked worker");

    assert_eq!(
        template(&a),
        template(&b),
        "one compile for one configuration"
    );
    assert_eq!(
        template(&a),
        template(&impatient),
        "a time limit applies per request; it is not compiled in"
    );
    assert_ne!(
        template(&a),
        template(&reseeded),
        "another fastly.toml is another configuration"
    );
    assert_eq!(template(&reseeded), template(&reseeded_again));
    assert_eq!(a.get("/kv/seed").send_blocking().text(), "from fastly.toml");
    assert_eq!(
        reseeded.get("/kv/seed").send_blocking().text(),
        "from another fastly.toml"
    );
}

#[test]
fn a_killed_test_process_leaves_no_worker_behind() {
    let mut child = helper("helper_report_worker_then_wait").spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("worker pid ").map(str::to_owned))
        .expect("the helper reports its worker");
    let worker: u32 = line.trim().parse().unwrap();
    assert!(is_running(worker));

    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the orphaned worker exits", Duration::from_secs(5), || {
        !is_running(worker)
    });
}

#[test]
fn ten_test_processes_at_once_stay_isolated() {
    let children: Vec<Child> = (0..10)
        .map(|i| {
            helper("helper_claim_shared_keys")
                .env("EDGE_TEST_HELPER_ID", format!("p{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        run_to_end(child);
    }
}

#[test]
fn a_full_run_leaves_no_process_or_socket_behind() {
    let runtime_dir = scratch_dir("leftovers");
    let child = helper("helper_claim_shared_keys")
        .env("XDG_RUNTIME_DIR", &*runtime_dir)
        .env("EDGE_TEST_HOST_IDLE_MS", "300")
        .env("EDGE_TEST_HELPER_ID", "solo")
        .spawn()
        .unwrap();
    let output = run_to_end(child);
    let host = printed_pid(&output, "host pid ");

    wait_until("the idle host exits", Duration::from_secs(10), || {
        !is_running(host)
    });
    let left: Vec<PathBuf> = std::fs::read_dir(runtime_dir.join("edge-test"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "sock" || ext == "pid")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The host's proxies and workers were its own: with it gone, nothing of this run is
    // still listening or running.
    let children: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&pid| is_running(pid) && parent_of(pid) == host)
        .collect();
    assert!(children.is_empty(), "workers left: {children:?}");
}

#[test]
fn logs_of_dead_hosts_are_swept_after_a_day() {
    let runtime_dir = scratch_dir("stale-logs");
    let dir = runtime_dir.join("edge-test");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let log = |name: &str, age: Duration| {
        let path = dir.join(name);
        std::fs::write(&path, "edge-test host 1 listening").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let day = Duration::from_secs(24 * 60 * 60);
    let stale = log("host-00000000000000aa.log", 2 * day);
    let recent = log("host-00000000000000bb.log", Duration::from_secs(60));
    let not_ours = log("notes.log", 2 * day);

    // Starting a host sweeps the directory.
    run_to_end(
        helper("helper_claim_shared_keys")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .env("EDGE_TEST_HELPER_ID", "sweeper")
            .spawn()
            .unwrap(),
    );
    assert!(!stale.exists(), "a day-old log of a dead host is removed");
    assert!(
        recent.exists(),
        "a recent one is kept for whoever investigates"
    );
    assert!(
        not_ours.exists(),
        "files that are not host logs are left alone"
    );
}

#[test]
fn the_host_socket_lives_where_only_this_user_can_reach_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let runtime_dir = scratch_dir("private");
    let output = run_to_end(
        helper("helper_claim_shared_keys")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .env("EDGE_TEST_HELPER_ID", "private")
            .spawn()
            .unwrap(),
    );
    assert!(output.contains("host pid "), "{output}");
    let dir = std::fs::metadata(runtime_dir.join("edge-test")).unwrap();
    assert_eq!(
        dir.permissions().mode() & 0o777,
        0o700,
        "only the owner may enter"
    );
    assert_eq!(dir.uid(), std::fs::metadata(&*runtime_dir).unwrap().uid());
}

// ---- helpers run in child processes by the tests above ----

#[test]
#[ignore = "run by a_killed_test_process_leaves_no_worker_behind"]
fn helper_report_worker_then_wait() {
    if !support::process::asked_to_run("helper_report_worker_then_wait") {
        return;
    }
    let (_edge, worker) = forked_edge("orphan");
    println!("worker pid {worker}");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
#[ignore = "run by a_killed_host_is_replaced_by_the_next_test"]
fn helper_kill_the_host() {
    if !support::process::asked_to_run("helper_kill_the_host") {
        return;
    }
    let (survivor, worker) = forked_edge("before");
    let old_host = parent_of(worker);
    kill(old_host, "-9");
    wait_until("the old host is gone", Duration::from_secs(5), || {
        !is_running(old_host)
    });

    let (fresh, new_worker) = forked_edge("after");
    assert_ne!(parent_of(new_worker), old_host);
    assert_eq!(fresh.get("/ok").send_blocking().text(), "ok");
    // A running test keeps its worker: its requests do not go through the host.
    assert_eq!(survivor.get("/ok").send_blocking().text(), "ok");
    println!("replaced host {old_host} by {}", parent_of(new_worker));
}

#[test]
#[ignore = "run by the multi-process tests"]
fn helper_claim_shared_keys() {
    if !support::process::asked_to_run("helper_claim_shared_keys") {
        return;
    }
    let me = std::env::var("EDGE_TEST_HELPER_ID").unwrap_or_else(|_| "me".into());
    let (edge, worker) = forked_edge("claim");
    println!("host pid {}", parent_of(worker));
    assert_eq!(
        edge.get("/kv/shared").send_blocking().status(),
        404,
        "KV starts as fastly.toml declares it"
    );
    assert_eq!(
        edge.get("/cache/shared").send_blocking().status(),
        404,
        "the cache starts empty"
    );
    edge.put(&format!("/kv/shared/{me}")).send_blocking();
    edge.put(&format!("/cache/shared/{me}")).send_blocking();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(edge.get("/kv/shared").send_blocking().text(), me);
    assert_eq!(edge.get("/cache/shared").send_blocking().text(), me);
}
