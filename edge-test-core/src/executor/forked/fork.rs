//! The only place the host forks, and the contract its workers live by.
//!
//! The host is multi-threaded: threads that accept arriving tests and serve them (one of
//! them may be compiling a template), a proxy thread per backend connection, a reaper, an
//! idle clock. It runs no async runtime: tokio keeps process-wide descriptors (its signal
//! pipe) that a worker, which closes every descriptor it was not given, would inherit as
//! dangling, and its own runtime could not start (the thin runner's server, which runs mock
//! hubs, is therefore a process of its own: `guest_tests::thin_runner`).
//! `fork` copies only the calling thread, and every lock another thread held at that moment
//! stays held in the child forever. So:
//!
//! - **The gate.** Work that takes process-wide locks a worker needs later runs inside
//!   [`outside_forks`]; [`fork_worker`] waits until no such work is in progress and keeps
//!   new work out until the child exists. Writing the host's log is such work (std's stderr
//!   lock: a worker takes it to flush its captured output, a guest to write to stderr). The
//!   other that matters is compiling a template:
//!   wasmtime write-locks its process-global code registry while it registers a module, and
//!   its trap handler read-locks that registry, so a worker forked mid-registration would
//!   hang at its guest's first trap (and be reported as a time-out). Compiles can still run
//!   alongside each other; only forks wait for them.
//! - **Descriptors.** The child closes every descriptor but stdin, stdout, stderr (the
//!   host's log) and the one it is given: the test's connection. Otherwise it would hold
//!   the listening socket, the proxies' sockets and the connections of other tests still in
//!   their handshake, and a test whose worker died would not see its connection close while
//!   another worker kept a copy of it.
//! - **What the child may touch.** Its copy of the template it was forked for (plain memory
//!   and the compiled module), the connection it was given, the environment, and threads and
//!   descriptors it makes itself. Not: locks of the host's own state (the routes lock the
//!   forking thread holds is forgotten, never released or taken), the host's threads (they
//!   do not exist in the child), or anything a host thread may have been in the middle of.
//!   glibc resets malloc's locks and its thread bookkeeping in the child itself.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{RwLock, RwLockReadGuard};

/// Held shared by work that must not be cut in half by a fork, exclusively by a fork.
static GATE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work` (a compile) while no fork is in progress, and keeps forks out until it is
/// done.
pub(super) fn outside_forks<T>(work: impl FnOnce() -> T) -> T {
    let _gate = shared();
    work()
}

/// Who returned from [`fork_worker`].
pub(super) enum Forked {
    /// The new worker: the only thread of its process.
    Child,
    Parent {
        child: u32,
    },
}

/// Forks a worker that keeps `connection` (and stdin, stdout, stderr) and no other
/// descriptor of the host's.
pub(super) fn fork_worker(connection: BorrowedFd<'_>) -> std::io::Result<Forked> {
    let gate = GATE.write().unwrap_or_else(|p| p.into_inner());
    // SAFETY: see the module's contract: the gate keeps compiles (and their locks) out, and
    // the child touches nothing a host thread could have been holding.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            // The gate's lock is the host's: the child never takes it.
            std::mem::forget(gate);
            close_all_but(connection.as_raw_fd());
            Ok(Forked::Child)
        }
        child => Ok(Forked::Parent {
            child: child as u32,
        }),
    }
}

/// Closes every descriptor from 3 up but `keep`.
fn close_all_but(keep: i32) {
    let close_range = |first: u32, last: u32| {
        // SAFETY: close_range takes plain integers and only closes descriptors; none of
        // those it closes is used again in the child.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }
    };
    let keep = keep as u32;
    let below = if keep > 3 {
        close_range(3, keep - 1)
    } else {
        0
    };
    let above = close_range(keep + 1, u32::MAX);
    if below != 0 || above != 0 {
        // Kernels before 5.9 have no close_range: close what /proc lists instead.
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let open: Vec<i32> = entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect();
            for fd in open.into_iter().filter(|&fd| fd > 2 && fd != keep as i32) {
                // SAFETY: as above; the directory's own descriptor may already be gone.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Ends a worker at once: no exit handlers, no flushing of buffers it inherited from the
/// host (they hold the host's output, not the worker's).
pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Makes malloc give every allocation of a megabyte or more a mapping of its own, returned
/// to the kernel when it is freed. By default the threshold rises to the largest block freed
/// so far: after one module file is read and dropped, the next read of it (17 MB for a debug
/// test module) comes from an arena, whose freed top `malloc_trim` leaves resident outside
/// the main arena, and every fork would copy it.
pub(super) fn map_large_allocations_alone() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets malloc's tunables; called before the host starts a thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Compiling leaves megabytes of freed memory in malloc's arenas. Every fork copies the page
/// tables of all of it, and every worker's exit tears them down again: hand it back first.
pub(super) fn give_back_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
