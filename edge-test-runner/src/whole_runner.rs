//! Where the whole runner is (beside this binary), and where its runner server listens.

// Paths are text on the stack (there is no heap), returned once per call.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

use core::ffi::CStr;
use core::fmt::{self, Write};

use rustix::fs::{AtFlags, CWD, FileType, Stat};

use crate::Process;
use edge_test_runner::text::{OsError, Shown, Text};

/// Paths as long as Linux's `PATH_MAX`.
pub type PathText = Text<4096>;

/// `edge-test-runner-host`, as found.
pub struct WholeRunner {
    path: PathText,
    meta: Stat,
}

impl WholeRunner {
    pub fn path(&self) -> &CStr {
        // `find` made it a C string.
        self.path.as_c_str().unwrap_or(c"")
    }
}

/// Why there is no whole runner to hand calls to.
pub enum Missing {
    OwnBinary(rustix::io::Errno),
    NotThere(PathText),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::OwnBinary(e) => write!(
                f,
                "cannot find the runner's own binary: {}",
                OsError(e.raw_os_error())
            ),
            Missing::NotThere(path) => write!(
                f,
                "{} is not there: edge-test-runner runs the tests through it, and it is \
                 installed beside edge-test-runner. Install both with `cargo install edge-test \
                 edge-test-runner` (or, from edge-test's repository, `cargo install --path \
                 edge-test` and `cargo install --path edge-test-runner`)",
                Shown(path.bytes())
            ),
        }
    }
}

/// The whole runner: this binary's name with `-host`, in its directory (`cargo install`
/// puts both there).
pub fn find() -> Result<WholeRunner, Missing> {
    let mut exe = [0u8; 4096];
    let length = rustix::fs::readlinkat_raw(CWD, c"/proc/self/exe", &mut exe[..])
        .map_err(Missing::OwnBinary)?;
    if length >= exe.len() {
        return Err(Missing::OwnBinary(rustix::io::Errno::NAMETOOLONG));
    }
    let mut path = PathText::new();
    path.push(&exe[..length]);
    path.push(b"-host");
    let Some(c_path) = path.as_c_str() else {
        return Err(Missing::NotThere(path));
    };
    match rustix::fs::statat(CWD, c_path, AtFlags::empty()) {
        Ok(meta) if FileType::from_raw_mode(meta.st_mode) == FileType::RegularFile => {
            Ok(WholeRunner { path, meta })
        }
        _ => Err(Missing::NotThere(path)),
    }
}

/// Where the runner server of `whole` listens, in edge-test's private directory (as
/// edge-test-core's `private_dir` names it): named after the whole runner's file (another
/// build of it is another server) and the settings that choose which host its sessions use.
/// `None`: there is no private directory of this user's yet, or it is not private (the
/// whole runner says why), or the name is too long for a socket.
pub fn server_socket(process: &Process, whole: &WholeRunner) -> Option<PathText> {
    let uid = rustix::process::getuid().as_raw();
    let mut socket = PathText::new();
    match process.var(b"XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => {
            socket.push(runtime);
            separate(&mut socket);
            socket.push(b"edge-test");
        }
        _ => {
            socket.push(process.var(b"TMPDIR").unwrap_or(b"/tmp"));
            separate(&mut socket);
            write!(socket, "edge-test-{uid}").ok()?;
        }
    }
    let dir = rustix::fs::statat(CWD, socket.as_c_str()?, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let private = FileType::from_raw_mode(dir.st_mode) == FileType::Directory
        && dir.st_uid == uid
        && dir.st_mode & 0o077 == 0;
    if !private {
        return None;
    }
    let meta = &whole.meta;
    // The fields' types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    write!(
        socket,
        "/runner-{:x}-{:x}-{:x}-{:x}.{:x}-{:016x}.sock",
        meta.st_dev as u64,
        meta.st_ino as u64,
        meta.st_size as u64,
        meta.st_mtime as i64,
        meta.st_mtime_nsec as i64,
        settings(process)
    )
    .ok()?;
    socket.as_c_str()?;
    Some(socket)
}

/// A `/` before what follows, unless there is one (or nothing, as `Path::join` does).
fn separate(path: &mut PathText) {
    if !path.bytes().is_empty() && !path.bytes().ends_with(b"/") {
        path.push(b"/");
    }
}

/// The settings that choose the host a server's sessions use, hashed (FNV-1a).
fn settings(process: &Process) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for name in [&b"EDGE_TEST_HOST_SCOPE"[..], b"EDGE_TEST_HOST_BUILD_ID"] {
        match process.var(name) {
            Some(value) => {
                eat(&[1]);
                eat(&(value.len() as u64).to_le_bytes());
                eat(value);
            }
            None => eat(&[0]),
        }
    }
    hash
}
