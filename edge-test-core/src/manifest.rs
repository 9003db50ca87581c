//! A service's `fastly.toml`: validated once, handed to each session as text.

use std::path::Path;

use viceroy_lib::config::FastlyConfig;

use crate::error::EdgeError;

#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    /// Kept as text: every session parses its own copy, so its KV stores are its own
    /// (viceroy's stores are shared handles, a parsed config must never be reused).
    pub text: String,
    /// The backends the service declares; each one gets a mock server per test.
    pub backends: Vec<String>,
}

impl Manifest {
    pub(crate) fn read(service: &str, path: &Path) -> Result<Self, EdgeError> {
        let error = |reason: String| EdgeError::Manifest {
            service: service.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        let config: FastlyConfig = text.parse().map_err(|e| error(format!("{e}")))?;
        let mut backends: Vec<String> = config.backends().keys().cloned().collect();
        backends.sort();
        Ok(Self { text, backends })
    }
}
