//! `edge-test-runner`: cargo's target runner for a guest crate's own unit tests, each run in
//! a pristine instance forked from a module compiled once per machine. Set it in the guest
//! crate's `.cargo/config.toml`:
//!
//! ```toml
//! [target.wasm32-wasip1]
//! runner = "edge-test-runner"
//! ```
//!
//! and run `cargo test` or `cargo nextest run` there. See edge-test's README, "unit tests
//! inside the guest".
//!
//! This is the thin half of the runner. nextest starts one runner process per test, and the
//! whole runner (viceroy-lib and wasmtime in it) costs more to start and end than the test's
//! own instance; so this binary hands each call to the runner server, a long-lived process
//! of the whole runner, which runs it as the whole runner would and sends back what it
//! printed and its exit status (edge-test-core's `guest_tests::thin_runner` is the other
//! side, and spells out the wire). What the server does not run in place, and every call
//! when no server answers, goes to the whole runner, `edge-test-runner-host` beside this
//! binary (`cargo install edge-test` installs it there), which also starts a server at the socket
//! this binary names.
//!
//! On Linux it does without the C library: a dynamically linked program spends most of a
//! call starting up (the loader's relocations, and glibc reading the CPU's features and
//! caches, which is a trap to the hypervisor per instruction in a virtual machine), more
//! than the rest of the call together. Its system calls are rustix's, and the few rustix
//! keeps unstable are in `process`, with the entry point, and what the compiler would take
//! from the C library is in `memory`. See BENCHMARKS.md, "Unit tests
//! inside the guest".

#![cfg_attr(target_os = "linux", no_std, no_main, no_builtins)]

#[cfg(target_os = "linux")]
mod call;
#[cfg(target_os = "linux")]
mod memory;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod whole_runner;

#[cfg(target_os = "linux")]
use edge_test_runner::text::{OsError, Shown, Text};
#[cfg(target_os = "linux")]
use process::Process;

/// The runner could not run the tests at all (as the whole runner says it).
#[cfg(target_os = "linux")]
const CANNOT_RUN: u8 = 2;
/// Tells the whole runner where to start the runner server this binary looks for.
#[cfg(target_os = "linux")]
const SOCKET_ENV: &[u8] = b"EDGE_TEST_RUNNER_SOCKET";

/// The call, from the kernel's hands (`process::entry`) to an exit status.
#[cfg(target_os = "linux")]
fn run(process: &Process) -> u8 {
    let whole = match whole_runner::find() {
        Ok(whole) => whole,
        Err(why) => return cannot_run(format_args!("{why}")),
    };
    let socket = if host_is_off(process) {
        None
    } else {
        whole_runner::server_socket(process, &whole)
    };
    if let Some(socket) = &socket {
        match server::hand_over(socket, process) {
            server::Handed::Ran(code) => return code,
            server::Handed::Lost(why) => return cannot_run(format_args!("{}", Shown(why.bytes()))),
            server::Handed::NotRun => {}
        }
    }
    let mut socket_var = Text::<4096>::new();
    let extra = socket.as_ref().and_then(|socket| {
        socket_var.push(SOCKET_ENV);
        socket_var.push(b"=");
        socket_var.push(socket.bytes());
        socket_var.as_c_str()
    });
    let error = process::exec(whole.path(), process, SOCKET_ENV, extra);
    cannot_run(format_args!(
        "cannot run {}: {}",
        Shown(whole.path().to_bytes()),
        OsError(error.raw_os_error())
    ))
}

/// Says why on stderr, as the whole runner would, and gives the status for it.
#[cfg(target_os = "linux")]
fn cannot_run(why: core::fmt::Arguments<'_>) -> u8 {
    use core::fmt::Write;
    let mut message = Text::<8192>::new();
    let _ = writeln!(message, "edge-test-runner: error: {why}");
    process::write_all(process::stderr(), message.bytes());
    CANNOT_RUN
}

/// `EDGE_TEST_HOST=off`: every test in process, which only the whole runner does.
#[cfg(target_os = "linux")]
fn host_is_off(process: &Process) -> bool {
    process
        .var(b"EDGE_TEST_HOST")
        .is_some_and(|v| matches!(v, b"off" | b"0" | b"false"))
}

/// Elsewhere there is no runner server (nor a fork to run a test in): the whole runner runs
/// every call, in process.
#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("edge-test-runner: error: cannot find the runner's own binary: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut name = exe.file_name().unwrap_or_default().to_owned();
    name.push("-host");
    let whole = exe.with_file_name(name);
    match std::process::Command::new(&whole)
        .args(std::env::args_os().skip(1))
        .status()
    {
        Ok(status) => std::process::ExitCode::from(status.code().unwrap_or(2) as u8),
        Err(e) => {
            eprintln!(
                "edge-test-runner: error: cannot run {}: {e}; it is installed beside \
                 edge-test-runner by `cargo install edge-test`",
                whole.display()
            );
            std::process::ExitCode::from(2)
        }
    }
}
