//! The thin `edge-test-runner` for tests that run guests' unit tests: built from its own
//! workspace (`edge-test-runner/`, where it builds without the C library and so with
//! `panic = "abort"`, which this workspace's test builds cannot take), and put beside the
//! whole runner a package of this workspace builds (`<name>-host`), as `<name>`, where it
//! looks for it. examples/todo's tests include this file too.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables of a test process that must not reach a nested cargo: they would retarget it
/// or point it at the test's own target directory.
const CARGO_VARS: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
];

/// The thin runner beside `whole` (a path ending in `-host`), built and put there: the
/// path to run.
pub fn thin_runner_beside(whole: &Path) -> PathBuf {
    let name = whole.file_name().unwrap().to_str().unwrap();
    let thin = whole.with_file_name(name.strip_suffix("-host").expect("a `-host` binary"));
    // `<target>/<profile>/<name>-host`: the thin runner's builds go to
    // `<target>/edge-test/thin-runner`.
    let target = whole
        .ancestors()
        .nth(2)
        .unwrap()
        .join("edge-test/thin-runner");
    let output = cargo_in_its_workspace(&target)
        .args(["build", "--release"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building the thin runner failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Under another name, then renamed: another test process may be running the one there.
    let staged = thin.with_extension(format!("{}.new", std::process::id()));
    std::fs::copy(target.join("release/edge-test-runner"), &staged).unwrap();
    std::fs::rename(&staged, &thin).unwrap();
    thin
}

/// cargo, for the thin runner's workspace, building into `target`.
pub fn cargo_in_its_workspace(target: &Path) -> Command {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("edge-test-runner/Cargo.toml"))
        .find(|manifest| manifest.is_file())
        .expect("the thin runner's workspace, edge-test-runner/, in this repository");
    nested_cargo(manifest.parent().unwrap(), target)
}

/// cargo in `dir`, another workspace than the test's, building into `target` (never the
/// target directory of the build running this test, whose lock that build holds).
pub fn nested_cargo(dir: &Path, target: &Path) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cargo.current_dir(dir);
    for var in CARGO_VARS {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_TARGET_DIR", target);
    cargo
}
