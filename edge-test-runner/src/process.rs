//! The process without the C library: its entry point, its arguments and environment as the
//! kernel laid them out, and the system calls rustix keeps out of its stable API (`execve`,
//! `exit_group`, `rt_sigaction`), and the one mapping `exec` needs. With `memory`, the only
//! `unsafe` of the runner.

#![allow(unsafe_code)]

use core::ffi::{CStr, c_char};

use rustix::fd::BorrowedFd;
use rustix::io::Errno;

use edge_test_runner::text::split_entry;

/// What the kernel hands a new process: its arguments and its environment, pointers to
/// NUL-terminated strings that stay where they are for the life of the process.
pub struct Process {
    args: &'static [*const c_char],
    env: &'static [*const c_char],
}

impl Process {
    /// The arguments after the program's name.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &'static CStr> + Clone + '_ {
        self.args.iter().skip(1).map(|&arg| c_str(arg))
    }

    /// The environment's entries, `NAME=VALUE` (or whatever else a parent put there).
    pub fn env(&self) -> impl ExactSizeIterator<Item = &'static CStr> + Clone + '_ {
        self.env.iter().map(|&entry| c_str(entry))
    }

    /// The value of the environment variable `name`, as `std::env::var_os` finds it (the
    /// first entry of that name).
    pub fn var(&self, name: &[u8]) -> Option<&'static [u8]> {
        self.env().find_map(|entry| {
            let (entry_name, value) = split_entry(entry.to_bytes())?;
            (entry_name == name).then_some(value)
        })
    }
}

fn c_str(pointer: *const c_char) -> &'static CStr {
    // SAFETY: `pointer` is one of the argument or environment pointers `entry` collected:
    // the kernel put a NUL-terminated string there, and nothing in this program writes to
    // or frees it.
    unsafe { CStr::from_ptr(pointer) }
}

// The entry point the kernel jumps to, with the stack pointer at the argument count: a call
// to `entry` with that address, on a stack aligned as the C calling convention wants, and
// no frame above it.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start, %function",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "and sp, x0, #-16",
    "bl {entry}",
    "udf #0",
    entry = sym entry,
);

/// # Safety
/// `stack` is the stack pointer a process starts with.
unsafe extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: a process's first stack holds its argument count, that many pointers and a
    // null, then the environment's pointers and a null (the System V ABI, as Linux lays it
    // out everywhere); it outlives everything here, and nothing writes to it.
    let process = unsafe {
        let count = *stack;
        let args = stack.add(1).cast::<*const c_char>();
        let env = args.add(count + 1);
        let mut entries = 0;
        while !(*env.add(entries)).is_null() {
            entries += 1;
        }
        Process {
            args: core::slice::from_raw_parts(args, count),
            env: core::slice::from_raw_parts(env, entries),
        }
    };
    ignore_sigpipe();
    exit(crate::run(&process))
}

/// Output nobody reads must not kill the runner (std's programs ignore SIGPIPE too, and
/// the whole runner this one may become does so again).
fn ignore_sigpipe() {
    /// The kernel's `struct sigaction` (with `sa_restorer`, on both architectures).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    const SIGPIPE: usize = 13;
    const SIG_IGN: usize = 1;
    let ignore = KernelSigaction {
        handler: SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let action = core::ptr::from_ref(&ignore) as usize;
    let size = core::mem::size_of::<u64>();
    // SAFETY: `rt_sigaction(SIGPIPE, &ignore, NULL, 8)` reads `ignore`, which lives across
    // the call, and writes nothing; ignoring a signal installs no handler to run.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", inlateout("rax") 13usize => _, in("rdi") SIGPIPE,
            in("rsi") action, in("rdx") 0usize, in("r10") size,
            lateout("rcx") _, lateout("r11") _, options(nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc 0", in("x8") 134usize, inlateout("x0") SIGPIPE => _,
            in("x1") action, in("x2") 0usize, in("x3") size, options(nostack));
    }
}

/// Ends the process (every thread of it: there is one) with `code`.
pub fn exit(code: u8) -> ! {
    // SAFETY: `exit_group` takes a status and does not return; the process has no buffers
    // to flush (every write here is a system call) and nothing registered to run at exit.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", in("rax") 231usize, in("rdi") usize::from(code),
            options(noreturn, nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc 0", in("x8") 94usize, in("x0") usize::from(code),
            options(noreturn, nostack));
    }
}

/// Becomes the program at `path`, with this process's arguments after its own name, and
/// this process's environment with the entry `extra` (`name=...`) in place of any entry
/// called `name`. Returns only if the kernel refused, with why.
pub fn exec(path: &CStr, process: &Process, name: &[u8], extra: Option<&CStr>) -> Errno {
    // Both arrays in one mapping of their own (there is no heap), each ending in a null.
    let slots = (process.args.len().max(1) + 1) + (process.env.len() + 2);
    let size = slots * core::mem::size_of::<*const c_char>();
    // SAFETY: a new private anonymous mapping: no existing memory is touched.
    let mapping = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            size,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::PRIVATE,
        )
    };
    let mapping = match mapping {
        Ok(mapping) => mapping,
        Err(e) => return e,
    };
    // SAFETY: the mapping is `size` bytes, readable, writable, aligned to a page, zeroed
    // (nulls), and only this slice refers to it; it is never unmapped (the process becomes
    // another program or exits).
    let slots = unsafe { core::slice::from_raw_parts_mut(mapping.cast::<*const c_char>(), slots) };
    let (args, env) = slots.split_at_mut(process.args.len().max(1) + 1);
    args[0] = path.as_ptr();
    let rest = process.args.get(1..).unwrap_or_default();
    args[1..=rest.len()].copy_from_slice(rest);
    let mut count = 0;
    for (&pointer, entry) in process.env.iter().zip(process.env()) {
        let replaced = extra.is_some()
            && split_entry(entry.to_bytes()).is_some_and(|(entry_name, _)| entry_name == name);
        if !replaced {
            env[count] = pointer;
            count += 1;
        }
    }
    if let Some(extra) = extra {
        env[count] = extra.as_ptr();
    }
    // Both arrays end in a null: they are one longer than anything written to them.
    let (path, args, env) = (
        path.as_ptr() as usize,
        args.as_ptr() as usize,
        env.as_ptr() as usize,
    );
    let result: isize;
    // SAFETY: `execve` reads `path` and the two null-terminated arrays of pointers to C
    // strings (the first stack's, `path`'s, `extra`'s), all alive across the call; it
    // replaces the process, or returns a negated errno and changes nothing.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", inlateout("rax") 59isize => result, in("rdi") path,
            in("rsi") args, in("rdx") env, lateout("rcx") _, lateout("r11") _,
            options(nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc 0", in("x8") 221usize, inlateout("x0") path => result,
            in("x1") args, in("x2") env, options(nostack));
    }
    Errno::from_raw_os_error(-result as i32)
}

pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: descriptor 1 is never closed by this program; if the parent left it closed,
    // writes to it fail with EBADF, which `write_all` ignores.
    unsafe { BorrowedFd::borrow_raw(1) }
}

pub fn stderr() -> BorrowedFd<'static> {
    // SAFETY: as for `stdout`, descriptor 2.
    unsafe { BorrowedFd::borrow_raw(2) }
}

/// Writes all of `bytes` to `fd`, or as much as it takes: output nobody reads does not fail
/// the test (as with the whole runner).
pub fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return,
            Ok(written) => bytes = &bytes[written..],
            Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// A bug of the runner's own: said as one, with the status for a runner that could not run.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let mut message = edge_test_runner::text::Text::<2048>::new();
    let _ = writeln!(
        message,
        "edge-test-runner: error: the runner failed ({info}); this is a bug in edge-test, \
         please report it"
    );
    write_all(stderr(), message.bytes());
    exit(crate::CANNOT_RUN)
}
