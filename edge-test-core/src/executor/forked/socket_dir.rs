//! Where a test binary's host listens: a directory only this user can open, and a socket
//! named after the exact test binary, so a rebuilt binary never talks to a stale host.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

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

/// A host removes its log when it exits idle; one that crashed or was killed leaves it for
/// whoever investigates. Logs a day old with no host listening beside them go, so that the
/// directory does not collect one per killed host. Called under the start lock: no other
/// host is between creating its log and listening.
pub(super) fn remove_stale_logs(paths: &HostPaths) {
    const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);
    let Some(dir) = paths.log.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for log in entries.flatten().map(|entry| entry.path()) {
        let is_host_log = log.extension().is_some_and(|ext| ext == "log")
            && log
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("host-"));
        let old = std::fs::metadata(&log)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > KEPT_FOR));
        if is_host_log && old && !log.with_extension("sock").exists() {
            let _ = std::fs::remove_file(&log);
        }
    }
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
