//! The runtime of edge-test: runs a Fastly Compute guest on viceroy-lib, one pristine edge
//! per test, with every backend mocked on loopback. Users depend on the `edge-test` facade;
//! this crate holds everything the `#[edge_test]` expansion calls into.
//!
//! Unsafe code is denied but in the few places that need it, each block with its reason:
//! `executor::forked::fork` (the fork and the child's exit), `executor::network_fence`
//! (seccomp's notifications), and single statements in `executor::forked` (the host's
//! constructor, its session, its environment, the socket registered for one async wait).
//! Everything else uses rustix's safe calls, and kernel structs are `#[repr(C)]` with
//! `offset_of!` rather than byte offsets.
#![deny(unsafe_code)]

mod backend_request;
pub mod cassette;
mod e2e;
mod edge;
mod error;
mod executor;
mod guest_build;
pub mod guest_tests;
mod logs;
mod manifest;
mod manifest_edits;
pub mod mock;
mod outbound;
mod platform;
mod private_dir;
mod process_backend;
mod response;
mod service;
pub mod snapshot;
mod staying_threads;
mod sync;
mod test_runner;
mod wire;

pub use backend_request::{BackendRequest, DynamicBackend};
pub use edge::{Edge, RequestBuilder};
pub use error::EdgeError;
pub use logs::{LogLine, Logs};
pub use platform::{
    CONFIG_KEY_MAX_CHARS, CONFIG_VALUE_MAX_CHARS, CacheControl, CacheSeed, CachedObject,
    ConfigStore, Device, Geo, KvEntry, KvStore, SecretStore, Tls,
};
pub use process_backend::{Process, ProcessHandle};
pub use response::{FailurePhase, GuestFailure, GuestFailureKind, Response};
pub use service::{DEFAULT_GUEST_TIMEOUT, DEFAULT_MAX_LOG_BYTES, Service};

/// What `#[edge_test]` and `register_service!` expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::edge::internals::{template_id, worker_pid};
    /// Builds a guest crate as a registered service's is built: for edge-test's own tests.
    pub use crate::guest_build::build_guest_crate;
    /// A POST to a real server (http or https): the monitor's webhook.
    pub use crate::outbound::post;
    pub use crate::service::ServiceRegistration;
    pub use crate::test_runner::{E2e, TestMeta, TestOutput, run_async, run_sync};
    pub use inventory;
}
