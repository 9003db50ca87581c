//! The binaries are linked as fixed-address executables on Linux: a position-independent
//! one of the whole runner's size (edge-test-runner-host, which the thin edge-test-runner
//! runs whenever no runner server answers) spends most of its start applying relocations,
//! each a page fault and a copy. See BENCHMARKS.md, "Unit tests inside the guest".
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
