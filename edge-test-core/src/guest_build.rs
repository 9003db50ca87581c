//! Builds a Rust guest crate for wasm32-wasip1, once per process and once across processes.
//!
//! cargo decides whether the sources changed (it knows the guest's path dependencies, build
//! scripts and features better than any fingerprint of ours). Asking it costs 0.1 s or more
//! even when nothing changed, which under cargo nextest every test process would pay, so a
//! process first checks the files cargo's dep-info lists for the last build's module
//! against the moment that build started, and runs cargo only when one is as new or newer
//! (or anything is missing). A file lock makes parallel test processes wait for one build
//! instead of racing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use crate::error::EdgeError;

pub(crate) const GUEST_TARGET: &str = "wasm32-wasip1";

/// Variables cargo sets for the test process that must not leak into the guest's build:
/// they would retarget it, add host flags, or point it at the host's target directory.
const LEAKED_BUILD_VARS: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
];

/// edge-test's own KV guest (`kv-guest/` beside this crate's sources), built once per
/// process like a service's guest crate; see `executor::guest::kv_guest`.
pub(crate) fn kv_guest_wasm() -> Result<PathBuf, EdgeError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kv-guest");
            build_guest_crate("edge-test's KV guest", &dir).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| EdgeError::Host { reason })
}

/// edge-test's HTTP cache shim (`http-cache-shim/` beside this crate's sources), built once
/// per process; see `executor::guest::module_rewrite::http_cache`.
pub(crate) fn http_cache_shim_wasm() -> Result<PathBuf, EdgeError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("http-cache-shim");
            build_guest_crate("edge-test's HTTP cache shim", &dir).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| EdgeError::Host { reason })
}

pub fn build_guest_crate(service: &str, crate_dir: &Path) -> Result<PathBuf, EdgeError> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(EdgeError::GuestBuild {
            service: service.to_owned(),
            crate_dir: crate_dir.to_owned(),
            output: format!(
                "no Cargo.toml at {}: `Service::guest_crate` needs a crate directory",
                manifest.display()
            ),
        });
    }
    let target_dir = guests_target_dir();
    let record = last_build_record(&target_dir, crate_dir);
    // The common case, and the one every nextest process hits: nothing changed since the
    // last build, which a look at the files tells faster than starting cargo.
    if let Some(wasm) = up_to_date_wasm(&record, crate_dir) {
        return Ok(wasm);
    }
    std::fs::create_dir_all(&target_dir)
        .map_err(|e| EdgeError::io(format!("cannot create {}", target_dir.display()), e))?;
    let lock = File::create(target_dir.join(".edge-test-build.lock"))
        .map_err(|e| EdgeError::io("cannot create the guest build lock", e))?;
    lock.lock()
        .map_err(|e| EdgeError::io("cannot lock the guest build", e))?;
    // Another process may have built it while this one waited for the lock.
    if let Some(wasm) = up_to_date_wasm(&record, crate_dir) {
        return Ok(wasm);
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
            "--target",
            GUEST_TARGET,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(crate_dir);
    for var in LEAKED_BUILD_VARS {
        command.env_remove(var);
    }
    // Straight to stderr, past libtest's capture: the first build can take a minute and
    // the person waiting should know why.
    let _ = writeln!(
        std::io::stderr(),
        "edge-test: building guest `{service}` ({}) for {GUEST_TARGET}",
        crate_dir.display()
    );
    // When cargo started, by the file clock that stamps the sources: a source saved during
    // the build may not be in it, and must count as newer.
    let started = build_start_stamp(&record);
    let output = command
        .output()
        .map_err(|e| EdgeError::io(format!("cannot run cargo to build guest `{service}`"), e))?;
    drop(lock);

    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(classify_build_failure(service, crate_dir, &stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = built_wasm(&stdout, &manifest).ok_or_else(|| EdgeError::GuestBuild {
        service: service.to_owned(),
        crate_dir: crate_dir.to_owned(),
        output: format!(
            "cargo built no binary for {GUEST_TARGET}: a guest crate needs a `main`.\n{stderr}"
        ),
    })?;
    // Best effort: without the record, the next process simply asks cargo again.
    if let Some(started) = started {
        let _ = std::fs::write(&record, format!("{started}\n{}", wasm.display()));
    }
    Ok(wasm)
}

fn classify_build_failure(service: &str, crate_dir: &Path, stderr: &str) -> EdgeError {
    if stderr.contains(GUEST_TARGET) && stderr.contains("target may not be installed") {
        EdgeError::WasmTargetMissing {
            target: GUEST_TARGET.to_owned(),
        }
    } else {
        EdgeError::GuestBuild {
            service: service.to_owned(),
            crate_dir: crate_dir.to_owned(),
            output: stderr.to_owned(),
        }
    }
}

/// Where the last successful build of `crate_dir` left its module.
fn last_build_record(target_dir: &Path, crate_dir: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    crate_dir
        .canonicalize()
        .unwrap_or_else(|_| crate_dir.to_owned())
        .hash(&mut hasher);
    target_dir.join(format!(".edge-test-{:016x}.wasm-path", hasher.finish()))
}

/// Touches a file next to the record and returns its modification time (nanoseconds since
/// the epoch): the file system's own clock, the one source files are stamped with, which
/// may be coarser than the system's.
fn build_start_stamp(record: &Path) -> Option<u128> {
    let stamp = record.with_extension("started");
    std::fs::write(&stamp, b"").ok()?;
    let modified = std::fs::metadata(&stamp).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

/// The module of the last build, if none of its inputs changed since that build started:
/// every source file in cargo's dep-info for it (path dependencies included), the manifest
/// and the lock file. Anything unreadable, newer, or as new (the file clock can be coarse)
/// means cargo decides.
fn up_to_date_wasm(record: &Path, crate_dir: &Path) -> Option<PathBuf> {
    let record = std::fs::read_to_string(record).ok()?;
    let (started, wasm) = record.split_once('\n')?;
    let started: u128 = started.parse().ok()?;
    let wasm = PathBuf::from(wasm.trim());
    if !wasm.is_file() {
        return None;
    }
    let dep_info = std::fs::read_to_string(wasm.with_extension("d")).ok()?;
    let (_, sources) = dep_info.lines().next()?.split_once(": ")?;
    let mut inputs = split_dep_info(sources);
    // Two guest crates with the same name share one output path in the shared target
    // directory: the module is this crate's only if its own sources built it.
    let own_sources = crate_dir.canonicalize().ok()?.join("src");
    if !inputs.iter().any(|input| input.starts_with(&own_sources)) {
        return None;
    }
    inputs.push(crate_dir.join("Cargo.toml"));
    // The lock file (and the manifest beside it, which holds the profiles) sits at the root
    // of the guest's workspace: the crate itself or an ancestor.
    if let Some(root) = crate_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
    {
        inputs.push(root.join("Cargo.lock"));
        inputs.push(root.join("Cargo.toml"));
    }
    let unchanged = |input: &PathBuf| {
        std::fs::metadata(input)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|t| t.as_nanos() < started)
    };
    inputs.iter().all(unchanged).then_some(wasm)
}

/// Paths in a make-style dep-info line: separated by spaces, with spaces in names escaped.
fn split_dep_info(line: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(PathBuf::from(current));
    }
    paths
}

/// The `.wasm` cargo reported for the crate's binary.
fn built_wasm(json_lines: &str, manifest: &Path) -> Option<PathBuf> {
    let normalize = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let manifest = normalize(manifest);
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| {
            msg["manifest_path"]
                .as_str()
                .is_some_and(|p| normalize(Path::new(p)) == manifest)
        })
        .find_map(|msg| {
            // A binary names its executable; a library (edge-test's shim) its `.wasm` file.
            let library = || {
                msg["filenames"]
                    .as_array()?
                    .iter()
                    .filter_map(|f| f.as_str())
                    .find(|f| f.ends_with(".wasm"))
            };
            msg["executable"]
                .as_str()
                .or_else(library)
                .map(PathBuf::from)
        })
}

/// Guests get a target directory of their own (a wasm build must not contend with the host
/// build's lock), next to the test binary's: `<target>/edge-test/guests`.
fn guests_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGE_TEST_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // A test binary lives in `<target>/<profile>/deps/`, an example in
    // `<target>/<profile>/examples/`, a binary (`edge-test-runner`) in `<target>/<profile>/`
    // beside cargo's `.fingerprint`.
    let host_target = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        if dir.join(".fingerprint").is_dir() {
            return dir.parent().map(Path::to_owned);
        }
        matches!(dir.file_name()?.to_str()?, "deps" | "examples")
            .then(|| dir.parent()?.parent().map(Path::to_owned))
            .flatten()
    });
    host_target
        .unwrap_or_else(std::env::temp_dir)
        .join("edge-test")
        .join("guests")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_missing_target_is_told_apart_from_a_compile_error() {
        // What cargo prints when wasm32-wasip1 is not installed.
        let missing = "error[E0463]: can't find crate for `core`\n  |\n  = note: the `wasm32-wasip1` \
                       target may not be installed\n  = help: consider downloading the target with \
                       `rustup target add wasm32-wasip1`";
        let err = classify_build_failure("todo", Path::new("guest"), missing);
        assert!(
            matches!(&err, EdgeError::WasmTargetMissing { target } if target == "wasm32-wasip1"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("rustup target add wasm32-wasip1"),
            "{err}"
        );

        let type_error = "error[E0308]: mismatched types";
        let err = classify_build_failure("todo", Path::new("guest"), type_error);
        assert!(
            matches!(err, EdgeError::GuestBuild { ref output, .. } if output.contains("E0308")),
            "{err}"
        );
    }

    /// A crate whose last build is recorded as started at `started`, with a module and the
    /// dep-info cargo would have written for it.
    fn recorded_build(dir: &Path, started: SystemTime) -> (PathBuf, PathBuf) {
        let crate_dir = dir.join("guest");
        std::fs::create_dir_all(crate_dir.join("src")).unwrap();
        let main = crate_dir.join("src/main.rs");
        for file in [
            main.clone(),
            crate_dir.join("Cargo.toml"),
            crate_dir.join("Cargo.lock"),
        ] {
            std::fs::write(&file, "").unwrap();
            set_modified(&file, started - Duration::from_secs(60));
        }
        let wasm = dir.join("target/guest.wasm");
        std::fs::create_dir_all(wasm.parent().unwrap()).unwrap();
        std::fs::write(&wasm, "\0asm").unwrap();
        let main = main.canonicalize().unwrap();
        std::fs::write(
            wasm.with_extension("d"),
            format!("{}: {}\n", wasm.display(), main.display()),
        )
        .unwrap();
        let record = dir.join("target/.edge-test-guest.wasm-path");
        let nanos = started.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        std::fs::write(&record, format!("{nanos}\n{}", wasm.display())).unwrap();
        (crate_dir, record)
    }

    fn set_modified(file: &Path, when: SystemTime) {
        File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edge-test-build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn an_unchanged_crate_skips_cargo_and_a_touched_one_does_not() {
        let dir = scratch("fresh");
        let started = SystemTime::now();
        let (crate_dir, record) = recorded_build(&dir, started);
        let wasm = up_to_date_wasm(&record, &crate_dir);
        assert_eq!(wasm, Some(dir.join("target/guest.wasm")));

        // Saved the moment the build started: it may or may not be in the module.
        set_modified(&crate_dir.join("src/main.rs"), started);
        assert_eq!(up_to_date_wasm(&record, &crate_dir), None);
        set_modified(
            &crate_dir.join("src/main.rs"),
            started - Duration::from_secs(1),
        );
        assert!(up_to_date_wasm(&record, &crate_dir).is_some());

        // A manifest or lock file edited after the build counts as well.
        set_modified(
            &crate_dir.join("Cargo.lock"),
            started + Duration::from_secs(1),
        );
        assert_eq!(up_to_date_wasm(&record, &crate_dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_module_built_from_another_crate_of_the_same_name_is_not_taken() {
        let dir = scratch("same-name");
        let started = SystemTime::now();
        let (guest, record) = recorded_build(&dir, started);
        assert!(up_to_date_wasm(&record, &guest).is_some());
        // Unchanged as well, but the module in that path was not built from its sources.
        let other = dir.join("other");
        std::fs::create_dir_all(other.join("src")).unwrap();
        std::fs::write(other.join("Cargo.toml"), "").unwrap();
        set_modified(&other.join("Cargo.toml"), started - Duration::from_secs(60));
        assert_eq!(up_to_date_wasm(&record, &other), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dep_info_paths_keep_escaped_spaces() {
        assert_eq!(
            split_dep_info("/a/src/main.rs /my\\ dir/lib.rs  /b.rs"),
            vec![
                PathBuf::from("/a/src/main.rs"),
                PathBuf::from("/my dir/lib.rs"),
                PathBuf::from("/b.rs")
            ]
        );
        assert!(split_dep_info("").is_empty());
    }

    #[test]
    fn the_wasm_is_found_in_cargo_json_messages() {
        let dir = std::env::temp_dir();
        let manifest = dir.join("Cargo.toml");
        let messages = format!(
            "{{\"reason\":\"compiler-artifact\",\"manifest_path\":\"/elsewhere/Cargo.toml\",\"executable\":\"/x/dep.wasm\"}}\n\
             {{\"reason\":\"compiler-artifact\",\"manifest_path\":{:?},\"executable\":\"/x/guest.wasm\"}}\n\
             {{\"reason\":\"build-finished\",\"success\":true}}",
            manifest.display().to_string()
        );
        assert_eq!(
            built_wasm(&messages, &manifest),
            Some(PathBuf::from("/x/guest.wasm"))
        );
        assert_eq!(
            built_wasm("{\"reason\":\"build-finished\"}", &manifest),
            None
        );
    }
}
