//! The shim shares the guest's memory (viceroy gives a core module one): its data goes low,
//! where the guest's shadow stack would only reach after growing nearly 1 MiB down (rustc
//! puts a wasm guest's stack first, below its data). edge-test checks the guest's layout
//! before merging.
fn main() {
    println!("cargo:rustc-link-arg=--global-base=1024");
    println!("cargo:rustc-link-arg=-zstack-size=0");
    println!("cargo:rerun-if-changed=build.rs");
}
