//! Names this build of edge-test for the host every test binary of a machine shares: two
//! test binaries may use one host only if both were built from the same sources of this
//! crate (the host runs the first binary's copy of them for every later one).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut files = Vec::new();
    for dir in ["src", "kv-guest/src", "http-cache-shim/src"] {
        println!("cargo:rerun-if-changed={dir}");
        collect(&root.join(dir), &mut files);
    }
    for file in [
        "Cargo.toml",
        "kv-guest/Cargo.toml",
        "kv-guest/Cargo.lock",
        "http-cache-shim/Cargo.toml",
        "http-cache-shim/Cargo.lock",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={file}");
        files.push(root.join(file));
    }
    // In this repository's workspace, the lock file pins viceroy-lib and wasmtime: a host
    // built against other versions of them is another build. (A published edge-test-core
    // pins viceroy-lib exactly, so its version says the same.)
    let lock = root.join("../Cargo.lock");
    if lock.is_file() {
        println!("cargo:rerun-if-changed=../Cargo.lock");
        files.push(lock);
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    for file in &files {
        file.strip_prefix(&root).unwrap_or(file).hash(&mut hasher);
        std::fs::read(file).unwrap_or_default().hash(&mut hasher);
    }
    println!(
        "cargo:rustc-env=EDGE_TEST_BUILD_ID={}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        hasher.finish()
    );
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
