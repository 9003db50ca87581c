//! Where the host listens: a directory only this user can open, and a socket named after
//! the build of edge-test (`build_id`), so that every test binary of this user built from
//! the same edge-test shares one host and its templates, across rebuilds of the binaries,
//! and a binary built from other edge-test sources never talks to it.
//! `EDGE_TEST_HOST_SCOPE=binary` gives each test binary a host of its own (the behaviour of
//! edge-test before this), for whoever wants that isolation.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) struct HostPaths {
    /// This test binary: the host runs it, and the socket is named after it.
    pub exe: PathBuf,
    pub socket: PathBuf,
    /// Held while starting a host, so that concurrent test processes start one. One for
    /// the directory, not one per binary: every rebuild would leave another file behind.
    pub start_lock: PathBuf,
    /// The host's own output: never the test's stdout or stderr.
    pub log: PathBuf,
}

/// Every error is one that trying again in this process would meet again.
pub(super) fn host_paths() -> Result<HostPaths, String> {
    let dir = crate::private_dir::private_dir()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (build_id(), super::protocol::VERSION).hash(&mut hasher);
    if std::env::var_os("EDGE_TEST_HOST_SCOPE").is_some_and(|scope| scope == "binary") {
        let meta =
            std::fs::metadata(&exe).map_err(|e| format!("cannot stat the test binary: {e}"))?;
        (
            &exe,
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
        )
            .hash(&mut hasher);
    }
    let id = format!("{:016x}", hasher.finish());
    Ok(HostPaths {
        exe: exe.clone(),
        socket: dir.join(format!("host-{id}.sock")),
        start_lock: dir.join("host-start.lock"),
        log: dir.join(format!("host-{id}.log")),
    })
}

/// This build of edge-test: its version and a hash of its sources (`build.rs`). A host
/// serves only test binaries of the same build. `EDGE_TEST_HOST_BUILD_ID` stands in for it,
/// for edge-test's own tests of two builds side by side.
pub(super) fn build_id() -> String {
    std::env::var("EDGE_TEST_HOST_BUILD_ID")
        .ok()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| env!("EDGE_TEST_BUILD_ID").to_owned())
}

pub(super) use crate::private_dir::cannot;

/// Creates the log a new host writes to. A log left there already belongs to a host that
/// crashed or was killed (one that exits idle removes its own): it is kept under another
/// name for whoever investigates, and swept with the others after a day. The first line is
/// written here, so that a full disk is found now, with a clear message, rather than by the
/// host as it starts.
pub(super) fn new_host_log(paths: &HostPaths, exe: &Path) -> Result<std::fs::File, String> {
    if paths.log.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_millis());
        let kept = paths.log.with_extension(format!("{stamp}.log"));
        let _ = std::fs::rename(&paths.log, kept);
    }
    let mut log =
        std::fs::File::create(&paths.log).map_err(|e| cannot("create", &paths.log, &e))?;
    writeln!(log, "edge-test host log for {}", exe.display())
        .and_then(|()| log.sync_data())
        .map_err(|e| cannot("write", &paths.log, &e))?;
    Ok(log)
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
        // A kept log (`host-<id>.<stamp>.log`) never has a socket beside it.
        if is_host_log && old && !log.with_extension("sock").exists() {
            let _ = std::fs::remove_file(&log);
        }
    }
}
