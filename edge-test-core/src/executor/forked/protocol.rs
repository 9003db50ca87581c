//! What test processes, the host and its workers say to each other: one JSON message per
//! line over a Unix socket.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::EdgeError;
use crate::executor::{InvocationReport, InvocationRequest, SessionSpec};

/// Test process -> host, once per connection.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Hello {
    pub spec: SessionSpec,
    /// The test process, so the host can tell when it is gone.
    pub client_pid: u32,
}

/// Host (or, once forked, the worker) -> test process, once.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Welcome {
    /// A worker forked from the compiled template now owns this connection.
    Ready {
        worker_pid: u32,
        /// Which compiled template the worker was forked from (unique to the host).
        template_id: u64,
    },
    Refused(EdgeError),
}

/// Test process -> worker: one per invocation. Worker -> test process: the report.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Invoke(pub InvocationRequest);

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Report(pub InvocationReport);

pub(super) fn send(stream: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()
}

/// `Ok(None)` at end of stream: the other side has gone.
pub(super) fn receive<T: DeserializeOwned>(
    stream: &mut impl BufRead,
) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(std::io::Error::other)
}
