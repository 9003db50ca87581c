//! On Linux the runner is its own program from the first instruction: no C library, no
//! dynamic loader, a static executable at a fixed address (see src/main.rs for why).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
