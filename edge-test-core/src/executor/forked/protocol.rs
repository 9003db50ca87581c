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

/// One message as it goes on the wire: JSON, then a newline.
pub(super) fn encode(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// One line received, its newline included or not.
pub(super) fn decode<T: DeserializeOwned>(line: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(line).map_err(std::io::Error::other)
}

pub(super) fn send(stream: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    stream.write_all(&encode(message)?)?;
    stream.flush()
}

/// `Ok(None)` at end of stream: the other side has gone.
pub(super) fn receive<T: DeserializeOwned>(
    stream: &mut impl BufRead,
) -> std::io::Result<Option<T>> {
    let mut line = Vec::new();
    if stream.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    decode(&line).map(Some)
}
