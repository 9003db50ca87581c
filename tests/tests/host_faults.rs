//! Faults of the host and its surroundings, each injected for real: a seccomp supervisor
//! already in place, a stopped host, a full disk, a directory squatted by someone else, a
//! panicking worker, a hostile client. Each runs in a child process with a host of its own
//! (its own `XDG_RUNTIME_DIR`), so that the host the other tests share is never touched.

#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edge_test::{Edge, GuestFailureKind, Service};
use support::Internals;
use support::process::{
    helper, is_running, kill, parent_of, printed_pid, run_to_end, scratch_dir, wait_until,
};

/// Services that differ only in their fastly.toml: each is a template of its own, so that
/// a test can keep the host compiling while it forks workers.
macro_rules! variants {
    ($($name:literal => $n:literal),*) => {
        $(edge_test::register_service!($name, || {
            Service::guest_crate("guests/misbehave").fastly_toml(variant_toml($n))
        });)*
    };
}
variants!("variant-0" => 0, "variant-1" => 1, "variant-2" => 2, "variant-3" => 3, "variant-4" => 4);

/// Written into the helper's runtime directory, a scratch directory its test removes.
fn variant_toml(n: u32) -> std::path::PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        .join("variants");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("variant-{n}.toml"));
    let toml = std::fs::read_to_string("guests/misbehave/fastly.toml")
        .unwrap()
        .replace("from fastly.toml", &format!("from variant {n}"));
    std::fs::write(&path, toml).unwrap();
    path
}

const FENCE_WARNING: &str = "guests in this process run without the network fence";

#[test]
fn a_fence_the_kernel_refuses_leaves_guests_unfenced_with_one_warning_in_process() {
    let output = run_to_end(
        helper("helper_under_a_seccomp_supervisor")
            .env("EDGE_TEST_HOST", "off")
            .spawn()
            .unwrap(),
    );
    assert_unfenced_once(&output, false);
}

#[test]
fn a_fence_the_kernel_refuses_leaves_guests_unfenced_with_one_warning_forked() {
    let runtime_dir = scratch_dir("fence-refused");
    let output = run_to_end(
        helper("helper_under_a_seccomp_supervisor")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .spawn()
            .unwrap(),
    );
    assert_unfenced_once(&output, true);
}

#[test]
fn without_the_fence_a_dynamic_backend_fails_the_test_instead_of_reaching_nowhere() {
    for host in ["off", "on"] {
        let runtime_dir = scratch_dir("fence-refused-dynamic");
        let output = run_to_end(
            helper("helper_dynamic_backend_unfenced")
                .env("EDGE_TEST_HOST", host)
                .env("XDG_RUNTIME_DIR", &*runtime_dir)
                .env("EDGE_TEST_HOST_IDLE_MS", "300")
                .spawn()
                .unwrap(),
        );
        assert!(
            output.contains(
                "tried to connect to dynamic backend `dynamic` to api.example.com:8080 (not \
                 mocked: seccomp refused the fence"
            ),
            "EDGE_TEST_HOST={host}: {output}"
        );
    }
}

/// Guests ran (forked or not), unfenced, with the reason said once.
fn assert_unfenced_once(output: &str, forked: bool) {
    assert!(output.contains(&format!("forked: {forked}")), "{output}");
    assert_eq!(output.matches(FENCE_WARNING).count(), 1, "{output}");
    assert!(
        output.contains("already under a seccomp supervisor"),
        "{output}"
    );
}

#[test]
fn a_start_lock_held_too_long_is_named_and_tests_run_in_process() {
    let runtime_dir = scratch_dir("held-start-lock");
    let dir = runtime_dir.join("edge-test");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Held by this process, as by a test process stopped while it starts a host.
    let lock = std::fs::File::create(dir.join("host-start.lock")).unwrap();
    lock.lock().unwrap();
    let output = run_to_end(
        helper("helper_two_edges")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_ANSWER_MS", "200")
            .spawn()
            .unwrap(),
    );
    assert!(output.contains("forked: false"), "{output}");
    assert!(
        output.contains("host-start.lock for 600ms while starting the edge-test host"),
        "{output}"
    );
}

#[test]
fn a_worker_that_does_not_take_a_request_is_stopped_and_named() {
    let runtime_dir = scratch_dir("deaf-worker");
    let output = run_to_end(
        helper("helper_stop_the_worker")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .spawn()
            .unwrap(),
    );
    let worker = printed_pid(&output, "stopped worker ");
    assert!(
        output.contains(&format!(
            "the worker process running this test's guest (pid {worker}) did not take the \
             request within 5s; it was stopped"
        )),
        "{output}"
    );
    wait_until("the stuck worker is gone", Duration::from_secs(10), || {
        !is_running(worker)
    });
}

#[test]
fn a_stopped_host_is_replaced() {
    let runtime_dir = scratch_dir("stopped-host");
    let output = run_to_end(
        helper("helper_stop_the_host")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .env("EDGE_TEST_HOST_ANSWER_MS", "1000")
            .spawn()
            .unwrap(),
    );
    let stopped = printed_pid(&output, "stopped host ");
    assert!(
        output.contains(&format!(
            "the edge-test host (pid {stopped}) did not answer within 1s: it is stuck"
        )),
        "{output}"
    );
    assert!(!is_running(stopped), "the stuck host was stopped for good");
}

#[test]
fn a_full_disk_is_named_once_and_tests_run_in_process() {
    if !Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: this machine cannot make a private mount namespace (unshare -m)");
        return;
    }
    let runtime_dir = scratch_dir("full-disk");
    // A private mount namespace with a 64 KiB tmpfs, filled up, as the runtime directory.
    let mut command = Command::new("unshare");
    command
        .args(["-m", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=64k tmpfs \"$1\" || exit 1; \
             dd if=/dev/zero of=\"$1/fill\" bs=4k 2>/dev/null; \
             exec \"$0\" --ignored --exact helper_two_edges --nocapture",
        )
        .arg(std::env::current_exe().unwrap())
        .arg(&*runtime_dir)
        .env("XDG_RUNTIME_DIR", &*runtime_dir)
        .env(support::process::HELPER_ENV, "helper_two_edges")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = run_to_end(command.spawn().unwrap());
    assert!(output.contains("forked: false"), "{output}");
    assert_eq!(
        output.matches("No space left on device").count(),
        1,
        "said once, not retried: {output}"
    );
    assert!(
        output.contains("is full: free space there, or point XDG_RUNTIME_DIR at"),
        "{output}"
    );
}

#[test]
fn a_squatted_socket_directory_is_named_once_and_tests_run_in_process() {
    use std::os::unix::fs::PermissionsExt;
    let runtime_dir = scratch_dir("squatted");
    let squatted = runtime_dir.join("edge-test");
    std::fs::create_dir(&squatted).unwrap();
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = run_to_end(
        helper("helper_two_edges")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .spawn()
            .unwrap(),
    );
    assert!(output.contains("forked: false"), "{output}");
    assert_eq!(
        output
            .matches("is not a private directory of this user")
            .count(),
        1,
        "said once, not retried: {output}"
    );
    assert!(output.contains("mode 777"), "{output}");
}

#[test]
fn a_panic_in_a_worker_reaches_the_test() {
    let runtime_dir = scratch_dir("worker-panic");
    let output = run_to_end(
        helper("helper_worker_panics")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .env("EDGE_TEST_INJECT_FAULT", "worker-panic")
            .spawn()
            .unwrap(),
    );
    assert!(
        output.contains(
            "caught: edge-test: GET /ok to service `misbehave` was not run: the edge-test worker"
        ),
        "{output}"
    );
    assert!(
        output.contains(
            "panicked while running it: a fault injected by EDGE_TEST_INJECT_FAULT=worker-panic"
        ),
        "{output}"
    );
}

#[test]
fn an_idle_host_sleeps() {
    let runtime_dir = scratch_dir("idle-host");
    let output = run_to_end(
        helper("helper_two_edges")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "5000")
            .spawn()
            .unwrap(),
    );
    let host = printed_pid(&output, "host pid ");
    // Wake-ups of all the host's threads over a second of idleness: viceroy's epoch thread
    // alone used to wake 20,000 times a second per template. A count, not a timing.
    let before = wakeups(host);
    std::thread::sleep(Duration::from_secs(1));
    let after = wakeups(host);
    assert!(is_running(host), "the host was still there to be measured");
    assert!(
        after - before < 500,
        "an idle host woke {} times in a second",
        after - before
    );
}

/// Context switches of every thread of `pid` so far.
fn wakeups(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn a_hostile_client_cannot_make_the_host_allocate_or_stay() {
    let runtime_dir = scratch_dir("hostile");
    let output = run_to_end(
        helper("helper_two_edges")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "2000")
            .spawn()
            .unwrap(),
    );
    let host = printed_pid(&output, "host pid ");
    let socket = only_socket(&runtime_dir.join("edge-test"));

    // A frame that claims 300 MB: refused from its length, the connection closed.
    let mut client = UnixStream::connect(&socket).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client.write_all(&(300u32 << 20).to_le_bytes()).unwrap();
    // The host may refuse (close) before this arrives: a broken pipe here is the refusal.
    if let Err(e) = client.write_all(b"no more than this") {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    assert!(answer.is_empty(), "nothing is answered to a refused Hello");
    let rss_kib = std::fs::read_to_string(format!("/proc/{host}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .parse::<u64>()
                .ok()
        })
        .unwrap();
    assert!(rss_kib < 200 * 1024, "the host holds {rss_kib} KiB");

    // A client that connects and says nothing does not keep the host past its idle limit
    // and the Hello deadline.
    let _silent = UnixStream::connect(&socket).unwrap();
    wait_until("the idle host exits", Duration::from_secs(30), || {
        !is_running(host)
    });
    let log = std::fs::read_to_string(socket.with_extension("log")).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the host did not panic on either client: {log}"
    );
}

fn only_socket(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "sock"))
        .expect("the host's socket")
}

#[test]
fn workers_forked_while_templates_compile_trap_without_hanging() {
    let runtime_dir = scratch_dir("compile-while-forking");
    let output = run_to_end(
        helper("helper_compile_while_forking")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .spawn()
            .unwrap(),
    );
    assert!(output.contains("traps: 40, compiled: 4"), "{output}");
}

#[test]
fn a_worker_killed_while_another_test_is_in_its_handshake_is_reported_as_died() {
    let runtime_dir = scratch_dir("kill-during-handshake");
    let output = run_to_end(
        helper("helper_kill_a_worker_during_a_handshake")
            .env("XDG_RUNTIME_DIR", &*runtime_dir)
            .env("EDGE_TEST_HOST_IDLE_MS", "300")
            .spawn()
            .unwrap(),
    );
    assert!(
        output.contains("was not run: the worker process running this test's guest"),
        "{output}"
    );
    assert!(
        output.contains(") died ") && output.contains("it crashed or was killed"),
        "reported as died, not as a time-out: {output}"
    );
}

// ---- helpers run in child processes by the tests above ----

#[test]
#[ignore = "run by workers_forked_while_templates_compile_trap_without_hanging"]
fn helper_compile_while_forking() {
    if !support::process::asked_to_run("helper_compile_while_forking") {
        return;
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let warm = Edge::start("misbehave", "warm").unwrap();
    drop(warm);
    let stop = Arc::new(AtomicBool::new(false));
    // Load: the two cores are also busy spinning.
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let compiles: Vec<_> = (0..4)
        .map(|n| {
            std::thread::spawn(move || {
                let edge = Edge::start(&format!("variant-{n}"), "compiles").unwrap();
                assert_eq!(
                    edge.get("/kv/seed").send_blocking().text(),
                    format!("from variant {n}")
                );
            })
        })
        .collect();
    let forks: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..10 {
                    let edge = Edge::start("misbehave", "forks").unwrap();
                    let failure = edge
                        .get("/panic-before")
                        .try_send_blocking()
                        .expect_err("the guest traps");
                    assert!(
                        matches!(failure.kind(), GuestFailureKind::Trapped { .. }),
                        "a trap reported as something else: {failure}"
                    );
                }
            })
        })
        .collect();
    for thread in forks.into_iter().chain(compiles) {
        thread.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    spinners.into_iter().for_each(|s| s.join().unwrap());
    println!("traps: 40, compiled: 4");
}

#[test]
#[ignore = "run by a_worker_killed_while_another_test_is_in_its_handshake_is_reported_as_died"]
fn helper_kill_a_worker_during_a_handshake() {
    if !support::process::asked_to_run("helper_kill_a_worker_during_a_handshake") {
        return;
    }
    // A template exists for `misbehave`, none yet for `variant-4`.
    drop(Edge::start("misbehave", "warm").unwrap());
    // `slow` is in its handshake (its template compiling) while `quick` is forked.
    let slow = std::thread::spawn(|| Edge::start("variant-4", "slow").unwrap());
    std::thread::sleep(Duration::from_millis(150));
    let quick = Edge::start("misbehave", "quick").unwrap();
    let slow = slow.join().unwrap();
    slow.set_guest_timeout(Duration::from_secs(60));
    assert_eq!(slow.get("/ok").send_blocking().text(), "ok");

    kill(slow.worker_pid().expect("a forked worker"), "-9");
    let panic = std::panic::catch_unwind(|| slow.get("/ok").send_blocking())
        .expect_err("its worker is gone");
    println!("reported: {}", panic.downcast_ref::<String>().unwrap());
    drop(quick);
}

#[test]
#[ignore = "run by the tests above"]
fn helper_two_edges() {
    if !support::process::asked_to_run("helper_two_edges") {
        return;
    }
    two_edges();
}

/// Two edges and a request each; says whether they were forked, and by which host.
fn two_edges() {
    let a = Edge::start("misbehave", "a").unwrap();
    let b = Edge::start("misbehave", "b").unwrap();
    assert_eq!(a.get("/ok").send_blocking().text(), "ok");
    assert_eq!(b.get("/ok").send_blocking().text(), "ok");
    println!("forked: {}", a.worker_pid().is_some());
    if let Some(worker) = a.worker_pid() {
        println!("host pid {}", parent_of(worker));
    }
}

#[test]
#[ignore = "run by the fence tests"]
fn helper_under_a_seccomp_supervisor() {
    if !support::process::asked_to_run("helper_under_a_seccomp_supervisor") {
        return;
    }
    occupy_the_seccomp_listener();
    two_edges();
}

#[test]
#[ignore = "run by the fence tests"]
fn helper_dynamic_backend_unfenced() {
    if !support::process::asked_to_run("helper_dynamic_backend_unfenced") {
        return;
    }
    occupy_the_seccomp_listener();
    let edge = Edge::start("misbehave", "unfenced-dynamic").unwrap();
    edge_test::mock::Mock::given(edge_test::mock::matchers::path("/"))
        .respond_with(edge_test::mock::Reply::text(200, "never reached"))
        .mount(&edge.dynamic_backend("api.example.com:8080"));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        edge.get("/dynamic-backend/api.example.com:8080")
            .send_blocking()
    }))
    .expect_err("an unmocked dynamic backend fails the test");
    println!("caught: {}", panic.downcast_ref::<String>().unwrap());
}

#[test]
#[ignore = "run by a_stopped_host_is_replaced"]
fn helper_stop_the_host() {
    if !support::process::asked_to_run("helper_stop_the_host") {
        return;
    }
    let first = Edge::start("misbehave", "first").unwrap();
    let host = parent_of(first.worker_pid().expect("a forked worker"));
    kill(host, "-STOP");
    println!("stopped host {host}");
    let second = Edge::start("misbehave", "second").unwrap();
    let new_host = parent_of(second.worker_pid().expect("a forked worker"));
    assert_ne!(new_host, host);
    assert_eq!(second.get("/ok").send_blocking().text(), "ok");
}

#[test]
#[ignore = "run by a_worker_that_does_not_take_a_request_is_stopped_and_named"]
fn helper_stop_the_worker() {
    if !support::process::asked_to_run("helper_stop_the_worker") {
        return;
    }
    let edge = Edge::start("misbehave", "deaf").unwrap();
    let worker = edge.worker_pid().expect("a forked worker");
    kill(worker, "-STOP");
    println!("stopped worker {worker}");
    // Larger than the socket's buffers, so that sending it waits on the worker.
    let panic =
        std::panic::catch_unwind(|| edge.post("/ok").body(vec![0u8; 16 << 20]).send_blocking())
            .expect_err("the worker never took the request");
    println!("caught: {}", panic.downcast_ref::<String>().unwrap());
}

#[test]
#[ignore = "run by a_panic_in_a_worker_reaches_the_test"]
fn helper_worker_panics() {
    if !support::process::asked_to_run("helper_worker_panics") {
        return;
    }
    let edge = Edge::start("misbehave", "panics").unwrap();
    let panic = std::panic::catch_unwind(|| edge.get("/ok").send_blocking())
        .expect_err("the worker panicked");
    println!("caught: {}", panic.downcast_ref::<String>().unwrap());
}

/// Puts this thread (and every process and thread it starts from now on) under a seccomp
/// filter with a listener, as a sandbox supervising the test run would: the kernel then
/// refuses a second listener with EBUSY, which is what the fence meets there. The filter
/// only catches `acct`, which nothing here calls, and the listener stays open for the rest
/// of the process.
fn occupy_the_seccomp_listener() {
    let load_nr = libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let is_acct = libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: 1,
        k: libc::SYS_acct as u32,
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = [
        load_nr,
        is_acct,
        ret(libc::SECCOMP_RET_USER_NOTIF),
        ret(libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl takes plain integers; seccomp reads `prog`, which points at `program`,
    // both alive for the call.
    let listener = unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    assert!(
        listener >= 0,
        "installing the supervisor's filter: {}",
        std::io::Error::last_os_error()
    );
}
