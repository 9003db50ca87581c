//! What test processes, the host and its workers say to each other over a Unix socket: one
//! frame per message, a little-endian `u32` length and then the message in postcard (but a
//! worker's reports, whose bytes go first: `report_wire`).
//!
//! Why not JSON lines: bodies and logs are bytes, and JSON wrote them as arrays of numbers
//! (five times their size), and finding a line's end meant searching what had arrived again
//! after every read. A length prefix lets each side read exactly what it needs, in time
//! linear in the message, and refuse a frame larger than it will ever accept before it
//! allocates anything.

use std::io::{ErrorKind, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::EdgeError;
use crate::executor::{InvocationReport, InvocationRequest, SessionSpec};

/// The largest Hello the host reads: a `fastly.toml` with inline store data fits many
/// times over; a stray or hostile client cannot make the host allocate more.
pub(super) const MAX_HELLO: usize = 16 << 20;
/// The largest request or report either side reads (bodies and logs included).
pub(super) const MAX_MESSAGE: usize = 1 << 30;

const LENGTH: usize = std::mem::size_of::<u32>();

/// The host protocol's version, part of the socket's name with the build of edge-test: a
/// host and a test process only ever meet when both speak it.
pub(super) const VERSION: u32 = 3;

/// Test process -> host, once per connection.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Hello {
    /// The build of edge-test the test process runs (`socket_dir::build_id`): the host
    /// serves only its own.
    pub build_id: String,
    pub spec: SessionSpec,
    /// The test process, so the host can tell when it is gone.
    pub client_pid: u32,
}

/// Host -> test process, at once after a Hello: the host is alive and working on it
/// (compiling a template can take seconds; a host that does not even say this is stuck).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Accepted {
    pub host_pid: u32,
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
    Refused(Refusal),
}

impl Welcome {
    pub(super) fn refused(error: &EdgeError) -> Self {
        Welcome::Refused(Refusal::from(error))
    }
}

/// An [`EdgeError`] on the wire: the public error carries no serde, and an io error
/// crosses as its kind and message.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Refusal {
    GuestLoad {
        service: String,
        wasm: std::path::PathBuf,
        reason: String,
    },
    Io {
        what: String,
        kind: String,
        message: String,
    },
    Host {
        reason: String,
    },
}

impl From<&EdgeError> for Refusal {
    fn from(error: &EdgeError) -> Self {
        match error {
            EdgeError::GuestLoad {
                service,
                wasm,
                reason,
            } => Refusal::GuestLoad {
                service: service.clone(),
                wasm: wasm.clone(),
                reason: reason.clone(),
            },
            EdgeError::Io { what, source } => Refusal::Io {
                what: what.clone(),
                kind: format!("{:?}", source.kind()),
                message: source.to_string(),
            },
            // The host meets no other error; any would still reach the test, as text.
            other => Refusal::Host {
                reason: other
                    .to_string()
                    .trim_start_matches("edge-test: ")
                    .to_owned(),
            },
        }
    }
}

impl Refusal {
    pub(super) fn into_error(self) -> EdgeError {
        match self {
            Refusal::GuestLoad {
                service,
                wasm,
                reason,
            } => EdgeError::GuestLoad {
                service,
                wasm,
                reason,
            },
            Refusal::Io {
                what,
                kind,
                message,
            } => EdgeError::io(
                format!("in the edge-test host, {what}"),
                std::io::Error::other(format!("{message} ({kind})")),
            ),
            Refusal::Host { reason } => EdgeError::Host { reason },
        }
    }
}

/// Test process -> worker: one per invocation. Worker -> test process: the report.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Invoke(pub InvocationRequest);

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Report(pub InvocationReport);

/// One message as it goes on the wire: its length, then its bytes.
pub(super) fn encode(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    // Sized first, so that a large report is written once into one allocation.
    let size = postcard::experimental::serialized_size(message).map_err(std::io::Error::other)?;
    let length = u32::try_from(size)
        .map_err(|_| std::io::Error::other("a message of 4 GiB or more cannot be sent"))?;
    let mut frame = vec![0; LENGTH + size];
    frame[..LENGTH].copy_from_slice(&length.to_le_bytes());
    postcard::to_slice(message, &mut frame[LENGTH..]).map_err(std::io::Error::other)?;
    Ok(frame)
}

/// A message's payload (the frame without its length).
pub(super) fn decode<T: DeserializeOwned>(payload: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(payload).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

fn too_large(length: usize, limit: usize) -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidData,
        format!("a message of {length} bytes is larger than the {limit} bytes accepted"),
    )
}

pub(super) fn send(stream: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    stream.write_all(&encode(message)?)?;
    stream.flush()
}

/// Reads one whole message of at most `limit` bytes. `Ok(None)`: the other side hung up
/// before a message began.
pub(super) fn receive<T: DeserializeOwned>(
    stream: &mut impl Read,
    limit: usize,
) -> std::io::Result<Option<T>> {
    let mut prefix = [0; LENGTH];
    match stream.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(prefix) as usize;
    if length > limit {
        return Err(too_large(length, limit));
    }
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload)?;
    decode(&payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_length_then_its_message() {
        let frame = encode(&Accepted { host_pid: 7 }).unwrap();
        let back: Accepted = receive(&mut frame.as_slice(), 100).unwrap().unwrap();
        assert_eq!(back.host_pid, 7);
        assert!(
            receive::<Accepted>(&mut [].as_slice(), 100)
                .unwrap()
                .is_none(),
            "a hang-up before a frame is the end, not an error"
        );
    }

    #[test]
    fn a_refusal_crosses_as_the_error_it_was() {
        let load = EdgeError::GuestLoad {
            service: "s".into(),
            wasm: "/m.wasm".into(),
            reason: "not wasm".into(),
        };
        let frame = encode(&Welcome::refused(&load)).unwrap();
        let Some(Welcome::Refused(refusal)) = receive(&mut frame.as_slice(), 1024).unwrap() else {
            unreachable!("a refusal was sent")
        };
        assert_eq!(refusal.into_error().to_string(), load.to_string());

        let io = EdgeError::io(
            "cannot fork",
            std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        );
        let back = Refusal::from(&io).into_error();
        assert_eq!(
            back.to_string(),
            "edge-test: in the edge-test host, cannot fork: out of memory (OutOfMemory)"
        );
        assert!(std::error::Error::source(&back).is_some());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut frame = (300u32 << 20).to_le_bytes().to_vec();
        frame.extend_from_slice(b"never read");
        let error = receive::<Accepted>(&mut frame.as_slice(), MAX_HELLO).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert!(
            error
                .to_string()
                .contains("314572800 bytes is larger than the 16777216 bytes accepted"),
            "{error}"
        );
    }

    #[test]
    fn bodies_travel_as_bytes() {
        let body = vec![0xABu8; 1 << 20];
        let frame = encode(&Invoke(crate::executor::InvocationRequest {
            method: "POST".into(),
            uri: "http://edge.test/".into(),
            headers: Vec::new(),
            body: body.clone(),
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            guest_timeout: std::time::Duration::from_secs(1),
            max_log_bytes: 0,
            ..Default::default()
        }))
        .unwrap();
        assert!(
            frame.len() < body.len() + 64,
            "a 1 MiB body takes {} bytes on the wire",
            frame.len()
        );
    }
}
