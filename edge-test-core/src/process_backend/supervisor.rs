//! One process per declaration for all of a user's test processes at once (cargo nextest
//! runs each test in a process of its own), stopped when the last of them is done, and never
//! left behind.
//!
//! The declaration's directory (in the user's private directory, named by a hash of it)
//! holds:
//! - `lease`: each test process using the process holds a shared lock on it until it exits
//!   (the kernel lets go of a killed process's locks);
//! - `start.lock`: held while a test process looks for the process and starts it;
//! - `spec.json`, `state.json`, `output.log`: the declaration, what became of the process,
//!   and what it printed.
//!
//! The supervisor is the test binary run again with [`SUPERVISOR_ENV`] set: a constructor in
//! `.init_array` runs it before libtest's `main`, as the host is run. It starts the process
//! (dying, it takes it along: `PR_SET_PDEATHSIG`), waits until it is ready, and then watches:
//! once it can lock the lease exclusively for a whole second (no test process holds it), it
//! stops the process and exits; if the process ends, it says how in `state.json` and exits.

use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Owner, Process, Readiness, Running};

/// Set in a supervisor's environment: the directory of the process it runs.
const SUPERVISOR_ENV: &str = "EDGE_TEST_PROCESS_SUPERVISOR";

/// How long no test process must hold the lease before the process is stopped: enough for
/// nextest to start the next test process of a run.
const GRACE: Duration = Duration::from_secs(1);

// SAFETY: `.init_array` holds plain function pointers that the loader calls before main,
// and this one is an `extern "C" fn()` taking nothing, as the loader expects.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static SUPERVISE_WHEN_ASKED: extern "C" fn() = supervise_when_asked;

extern "C" fn supervise_when_asked() {
    if let Some(dir) = std::env::var_os(SUPERVISOR_ENV) {
        supervise(Path::new(&dir));
    }
}

/// The shared process for `process`, started by a supervisor unless one runs it already.
pub(super) fn start_shared(process: &Process) -> Result<Running, String> {
    // Referenced here so that the constructor is linked into every binary that shares one.
    std::hint::black_box(&SUPERVISE_WHEN_ASKED);
    let dir = directory(process)?;
    hold_lease(&dir, LEASE_WAIT)?;
    let deadline = Instant::now() + process.start_timeout + Duration::from_secs(10);
    let start_lock = open(&dir.join("start.lock"))?;
    while start_lock.try_lock().is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "process backend `{}`: another test process has been starting it for too \
                 long ({} is locked)",
                process.name,
                dir.join("start.lock").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(running) = ready_process(process, &dir) {
        return Ok(running);
    }
    let _ = std::fs::remove_file(dir.join("state.json"));
    std::fs::write(dir.join("spec.json"), to_json(process).to_string())
        .map_err(|e| format!("cannot write {}: {e}", dir.join("spec.json").display()))?;
    start_supervisor(&dir)?;
    loop {
        match read_state(&dir) {
            Some(state) if state["status"] == "ready" => {
                return ready_process(process, &dir)
                    .ok_or_else(|| "its supervisor said ready, then was gone".to_owned());
            }
            Some(state) if state["status"] == "failed" => {
                return Err(state["reason"].as_str().unwrap_or("it failed").to_owned());
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "process backend `{}`: its supervisor did not say whether it started \
                     within {:?} (see {})",
                    process.name,
                    process.start_timeout,
                    dir.display()
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The process `dir`'s supervisor runs, if it is ready and both are alive.
fn ready_process(process: &Process, dir: &Path) -> Option<Running> {
    let state = read_state(dir)?;
    let (supervisor, child, port) = (
        state["supervisor"].as_u64()? as u32,
        state["child"].as_u64()? as u32,
        state["port"].as_u64()? as u16,
    );
    (state["status"] == "ready" && alive(supervisor) && alive(child)).then(|| Running {
        name: process.name.clone(),
        pid: child,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        owner: Owner::Supervised(dir.to_owned()),
        isolated: false,
    })
}

/// How the supervised process `pid` ended, if it has.
pub(super) fn exit_of(dir: &Path, pid: u32) -> Option<String> {
    let ended = |state: &Value| {
        state["status"] == "failed" && state["child"].as_u64() == Some(u64::from(pid))
    };
    if let Some(state) = read_state(dir).filter(ended) {
        return state["exit"].as_str().map(str::to_owned);
    }
    if alive(pid) {
        return None;
    }
    // Gone: its supervisor writes how within a moment.
    std::thread::sleep(Duration::from_millis(200));
    Some(
        read_state(dir)
            .filter(ended)
            .and_then(|state| state["exit"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "ended".to_owned()),
    )
}

/// What the supervised process printed (the last [`super::KEPT_LINES`] lines).
pub(super) fn output_of(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("output.log")).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let skip = lines.len().saturating_sub(super::KEPT_LINES);
    lines.into_iter().skip(skip).collect()
}

fn directory(process: &Process) -> Result<PathBuf, String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    process.key().hash(&mut hasher);
    let dir = crate::private_dir::private_dir()?
        .join("processes")
        .join(format!("{:016x}", hasher.finish()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// How long a test process waits for a lease a supervisor holds exclusively: it does only
/// while it stops its process and exits, which takes moments.
const LEASE_WAIT: Duration = Duration::from_secs(10);

/// Takes this test process's shared lock on `dir`'s lease, once, until it exits.
fn hold_lease(dir: &Path, limit: Duration) -> Result<(), String> {
    static HELD: std::sync::Mutex<Vec<(PathBuf, File)>> = std::sync::Mutex::new(Vec::new());
    let mut held = crate::sync::lock(&HELD);
    if held.iter().any(|(d, _)| d == dir) {
        return Ok(());
    }
    let path = dir.join("lease");
    let lease = open(&path)?;
    let deadline = Instant::now() + limit;
    while lease.try_lock_shared().is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "{path} has been locked for {limit:?} by a process supervisor that should only \
                 hold it while stopping its process: if a stopped `edge-test procs` process \
                 holds it, kill it",
                path = path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    held.push((dir.to_owned(), lease));
    Ok(())
}

fn start_supervisor(dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let mut command = Command::new(exe);
    command
        .env(SUPERVISOR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
    // are allowed: `setsid` is a single system call. Its own session keeps it out of the
    // process group a runner (nextest) stops with the test.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start a process supervisor: {e}"))?;
    // Reaped when it exits, so that it leaves no zombie while this test process lives.
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn read_state(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).ok()?).ok()
}

/// Written whole: a reader sees the old state or the new one.
fn write_state(dir: &Path, state: &Value) {
    let partial = dir.join(format!("state.json.{}", std::process::id()));
    let _ = std::fs::write(&partial, state.to_string())
        .and_then(|()| std::fs::rename(&partial, dir.join("state.json")));
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn to_json(process: &Process) -> Value {
    let (ready, ready_arg) = match &process.ready {
        Readiness::Listening => ("listening", String::new()),
        Readiness::HttpOk(path) => ("http", path.clone()),
        Readiness::Output(text) => ("output", text.clone()),
    };
    json!({
        "name": process.name,
        "program": process.program,
        "args": process.args,
        "env": process.env,
        "current_dir": process.current_dir,
        "port": process.port,
        "ready": ready,
        "ready_arg": ready_arg,
        "start_timeout_ms": process.start_timeout.as_millis() as u64,
    })
}

fn from_json(spec: &Value) -> Option<Process> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let ready_arg = text(&spec["ready_arg"]).unwrap_or_default();
    Some(Process {
        name: text(&spec["name"])?,
        program: PathBuf::from(text(&spec["program"])?),
        args: spec["args"].as_array()?.iter().filter_map(text).collect(),
        env: spec["env"]
            .as_array()?
            .iter()
            .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
            .collect(),
        current_dir: text(&spec["current_dir"]).map(PathBuf::from),
        port: spec["port"].as_u64().map(|p| p as u16),
        ready: match spec["ready"].as_str()? {
            "http" => Readiness::HttpOk(ready_arg),
            "output" => Readiness::Output(ready_arg),
            _ => Readiness::Listening,
        },
        start_timeout: Duration::from_millis(spec["start_timeout_ms"].as_u64()?),
        isolated: false,
    })
}

/// The supervisor's life: start the process, say how that went, watch the lease.
fn supervise(dir: &Path) -> ! {
    let _ = rustix::thread::set_name(c"edge-test procs");
    let me = std::process::id();
    let spec = std::fs::read_to_string(dir.join("spec.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|spec| from_json(&spec));
    let Some(process) = spec else {
        write_state(
            dir,
            &json!({ "status": "failed", "supervisor": me,
            "reason": format!("its declaration in {} is unreadable", dir.display()) }),
        );
        std::process::exit(1);
    };
    let log = File::create(dir.join("output.log")).ok();
    let running = match super::launch(&process, log) {
        Ok(running) => running,
        Err(reason) => {
            write_state(
                dir,
                &json!({ "status": "failed", "supervisor": me, "reason": reason }),
            );
            std::process::exit(0);
        }
    };
    write_state(
        dir,
        &json!({ "status": "ready", "supervisor": me, "child": running.pid,
                 "port": running.addr.port() }),
    );
    let lease = match open(&dir.join("lease")) {
        Ok(lease) => lease,
        Err(_) => {
            running.stop();
            std::process::exit(1);
        }
    };
    let mut unheld_since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(exit) = running.exit() {
            write_state(
                dir,
                &json!({ "status": "failed", "supervisor": me, "child": running.pid,
                         "exit": exit, "reason": format!("{} {exit}", running.describe()) }),
            );
            std::process::exit(0);
        }
        if lease.try_lock().is_err() {
            unheld_since = None;
            continue;
        }
        match unheld_since {
            // Held exclusively now: no test process can take it while the process stops.
            Some(since) if since.elapsed() >= GRACE => {
                running.stop();
                let _ = std::fs::remove_file(dir.join("state.json"));
                std::process::exit(0);
            }
            Some(_) => {}
            None => unheld_since = Some(Instant::now()),
        }
        // Let go until the grace is over, so that a test process arriving is not kept waiting.
        let _ = lease.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_held_exclusively_past_the_bound_is_named() {
        let dir = std::env::temp_dir().join(format!("edge-test-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let supervisor = open(&dir.join("lease")).unwrap();
        supervisor.lock().unwrap();
        let error = hold_lease(&dir, Duration::from_millis(100)).expect_err("bounded");
        assert!(
            error.contains("has been locked for 100ms by a process supervisor"),
            "{error}"
        );
        supervisor.unlock().unwrap();
        hold_lease(&dir, Duration::from_millis(100)).expect("free again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
