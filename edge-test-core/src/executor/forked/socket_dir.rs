//! Where a test binary's host listens: a directory only this user can open, and a socket
//! named after the exact test binary, so a rebuilt binary never talks to a stale host.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::error::EdgeError;

pub(super) struct HostPaths {
    pub socket: PathBuf,
    /// Held while starting a host, so that concurrent test processes start one. One for
    /// the directory, not one per binary: every rebuild would leave another file behind.
    pub start_lock: PathBuf,
    /// The host's own output: never the test's stdout or stderr.
    pub log: PathBuf,
}

pub(super) fn host_paths() -> Result<HostPaths, EdgeError> {
    let dir = private_dir()?;
    let exe = std::env::current_exe()
        .map_err(|e| EdgeError::Runtime(format!("cannot find the test binary: {e}")))?;
    let meta = std::fs::metadata(&exe)
        .map_err(|e| EdgeError::Runtime(format!("cannot stat the test binary: {e}")))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &exe,
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
    )
        .hash(&mut hasher);
    let id = format!("{:016x}", hasher.finish());
    Ok(HostPaths {
        socket: dir.join(format!("host-{id}.sock")),
        start_lock: dir.join("host-start.lock"),
        log: dir.join(format!("host-{id}.log")),
    })
}

/// `$XDG_RUNTIME_DIR/edge-test` or `/tmp/edge-test-<uid>`, mode 0700, owned by us; anything
/// else is refused rather than trusted.
fn private_dir() -> Result<PathBuf, EdgeError> {
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("edge-test"),
        _ => std::env::temp_dir().join(format!("edge-test-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(EdgeError::Runtime(format!(
                "cannot create {}: {e}",
                dir.display()
            )));
        }
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| EdgeError::Runtime(format!("cannot stat {}: {e}", dir.display())))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(EdgeError::Runtime(format!(
            "{} must be a directory owned by uid {uid} with mode 0700; remove it and run again",
            dir.display()
        )));
    }
    Ok(dir)
}
