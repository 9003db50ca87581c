//! Shared by the test binaries of this crate: `mod support;` registers every service.
use edge_test::Service;

pub mod origin;
pub mod process;

/// The message of a caught panic.
#[allow(dead_code)]
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Where an edge's guest runs: hidden from the public API, for these tests only.
#[allow(dead_code)]
pub trait Internals {
    fn worker_pid(&self) -> Option<u32>;
    fn template_id(&self) -> Option<u64>;
}

impl Internals for edge_test::Edge {
    fn worker_pid(&self) -> Option<u32> {
        edge_test::__private::worker_pid(self)
    }
    fn template_id(&self) -> Option<u64> {
        edge_test::__private::template_id(self)
    }
}

edge_test::register_service!("misbehave", || Service::guest_crate("guests/misbehave"));
edge_test::register_service!("broken", || Service::guest_crate("guests/broken"));
edge_test::register_service!("missing-wasm", || Service::wasm(
    "fixtures/does-not-exist.wasm"
));
edge_test::register_service!("not-wasm", || Service::wasm("fixtures/not-wasm.wasm"));
edge_test::register_service!("unknown-import", || Service::wasm(
    "fixtures/unknown-import.wat"
));
edge_test::register_service!("bad-manifest", || {
    Service::wasm("fixtures/unknown-import.wat").fastly_toml("fixtures/bad-fastly.toml")
});
edge_test::register_service!("missing-file", || {
    Service::wasm("fixtures/unknown-import.wat").fastly_toml("fixtures/missing-file-fastly.toml")
});
edge_test::register_service!("missing-manifest", || {
    Service::wasm("fixtures/unknown-import.wat").fastly_toml("fixtures/no-such-fastly.toml")
});
edge_test::register_service!("misbehave-impatient", || {
    Service::guest_crate("guests/misbehave").guest_timeout(std::time::Duration::from_millis(250))
});
edge_test::register_service!("misbehave-reseeded", || {
    Service::guest_crate("guests/misbehave").fastly_toml("fixtures/misbehave-reseeded.toml")
});
// Guests whose dynamic backends the rewrite cannot redirect: the network fence stops them.
edge_test::register_service!("dynamic-by-ip", || Service::wasm(
    "fixtures/dynamic-backend-by-ip.wat"
));
edge_test::register_service!("dynamic-by-name", || Service::wasm(
    "fixtures/dynamic-backend-by-name.wat"
));
edge_test::register_service!("http-cache", || Service::guest_crate("guests/http-cache"));
edge_test::register_service!("http-cache-off", || {
    Service::guest_crate("guests/http-cache").http_cache(false)
});
// Every request reaches its backend (cassette tests count them): no HTTP cache.
edge_test::register_service!("misbehave-uncached", || {
    Service::guest_crate("guests/misbehave").http_cache(false)
});
edge_test::register_service!("misbehave-uncached-impatient", || {
    Service::guest_crate("guests/misbehave")
        .http_cache(false)
        .guest_timeout(std::time::Duration::from_secs(1))
});
// A guest whose layout leaves the HTTP cache no room: refused, unless it opts out.
edge_test::register_service!("http-cache-low-stack", || Service::wasm(
    "fixtures/http-cache-low-stack.wat"
));
edge_test::register_service!("http-cache-low-stack-off", || {
    Service::wasm("fixtures/http-cache-low-stack.wat").http_cache(false)
});
// The middle of a chain of services (the same guest as `misbehave-uncached`, another service).
edge_test::register_service!("misbehave-chain-b", || {
    Service::guest_crate("guests/misbehave").http_cache(false)
});
