//! A local process as a backend (`process_backend`): routed from here, its output printed
//! when a test that used it fails.

use super::Edge;
use crate::process_backend::{Process, ProcessHandle};

impl Edge {
    /// Answers this service's backend `backend` with the local process `process` (started
    /// if it is not running, and waited for until it is ready): requests no mock matches
    /// are sent to it on loopback, and recorded as the backend's calls like any other.
    /// Panics, naming the process, what happened and its last output, when it cannot start,
    /// exits before it is ready, or is not ready in time.
    ///
    /// ```no_run
    /// # fn doc(edge: edge_test_core::Edge) {
    /// use edge_test_core::Process;
    /// let api = edge.route_process("origin", &Process::new("api", "target/debug/api-server"));
    /// let resp = edge.get("/todos/1").send_blocking();      // reaches the api server
    /// # let _ = (api, resp);
    /// # }
    /// ```
    pub fn route_process(&self, backend: &str, process: &Process) -> ProcessHandle {
        let _ = self.backend(backend);
        let handle =
            crate::process_backend::start(process).unwrap_or_else(|e| panic!("edge-test: {e}"));
        self.inner.mocks.set_process(backend, handle.running());
        crate::sync::lock(&self.inner.processes).push(handle.running());
        handle
    }

    /// What the processes this test routed to printed: said on stderr (which libtest shows
    /// for a failing test) when the test body panics.
    pub(crate) fn print_process_output(&self) {
        for process in crate::sync::lock(&self.inner.processes).iter() {
            eprintln!(
                "edge-test: {} (used by this test) printed, last lines:\n{}",
                process.describe(),
                process.last_output(40)
            );
        }
        let exchanges = self.session().deployed_exchanges();
        if !exchanges.is_empty() {
            eprintln!(
                "edge-test: this test's exchanges with the deployment (the last {}):\n{}",
                exchanges.len(),
                exchanges.join("\n\n")
            );
        }
    }
}
