//! Where edge-test keeps what the test processes of one user share: the host's socket and
//! log (`executor::forked::socket_dir`), and the state of shared process backends
//! (`process_backend`).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `$XDG_RUNTIME_DIR/edge-test` or `/tmp/edge-test-<uid>`, mode 0700, owned by us; anything
/// else is refused rather than trusted.
pub(crate) fn private_dir() -> Result<PathBuf, String> {
    let uid = rustix::process::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("edge-test"),
        _ => std::env::temp_dir().join(format!("edge-test-{uid}")),
    };
    ensure_private(&dir)?;
    Ok(dir)
}

/// Makes `dir` (its parent must exist) with mode 0700, or checks that it is a directory of
/// this user's that no one else can reach; `Err` says what it is instead and what to do.
/// Everything edge-test keeps in its private directory goes through here, so that no file
/// of edge-test's makes that directory (or one in it) with the process's default mode first.
pub(crate) fn ensure_private(dir: &Path) -> Result<(), String> {
    let uid = rustix::process::getuid().as_raw();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(cannot("create", dir, &e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| cannot("stat", dir, &e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of this user (it must be a directory owned by uid \
             {uid} with mode 0700, and is {}, owned by uid {}, mode {:o}), so edge-test will \
             not keep its host or processes there: remove it, or point XDG_RUNTIME_DIR at a directory \
             of your own",
            dir.display(),
            if meta.is_symlink() {
                "a symbolic link"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "a file"
            },
            meta.uid(),
            meta.permissions().mode() & 0o7777,
        ));
    }
    Ok(())
}

/// What went wrong with a file of edge-test's there, and what to do about it.
pub(crate) fn cannot(verb: &str, path: &Path, error: &std::io::Error) -> String {
    let dir = path.parent().unwrap_or(path).display();
    let fix = match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => format!(
            "the disk holding {dir} is full: free space there, or point XDG_RUNTIME_DIR at \
             a directory on another disk"
        ),
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => format!(
            "{dir} cannot be written by this user: fix its permissions, or point \
             XDG_RUNTIME_DIR at a directory this user can write"
        ),
        _ => format!("check {dir}, or point XDG_RUNTIME_DIR at another directory"),
    };
    format!("cannot {verb} {}: {error}; {fix}", path.display())
}
