//! How a worker's report crosses the socket: its bytes first, each read straight into a
//! buffer of its own.
//!
//! `[body length: u64][log length: u64][rest length: u32][body][log][rest]`, little-endian,
//! where `rest` is the report without its body and log, in postcard. A report is most of
//! what a test reads, and its body and log can be tens of megabytes: knowing their lengths
//! up front, the reader allocates each once, at its size, and the kernel copies the bytes
//! into it; nothing is copied again, searched or parsed on the way.

use std::io::{ErrorKind, Read, Write};

use super::protocol::{self, MAX_MESSAGE, Report};
use crate::executor::InvocationReport;

const PREFIX: usize = 8 + 8 + 4;

/// Sends `report` as described above.
pub(super) fn send(stream: &mut impl Write, mut report: InvocationReport) -> std::io::Result<()> {
    let body = report
        .response
        .as_mut()
        .map(|response| std::mem::take(&mut response.body))
        .unwrap_or_default();
    let log = std::mem::take(&mut report.log);
    let rest = postcard::to_stdvec(&Report(report)).map_err(std::io::Error::other)?;
    let rest_length = u32::try_from(rest.len()).map_err(std::io::Error::other)?;
    let mut prefix = [0u8; PREFIX];
    prefix[..8].copy_from_slice(&(body.len() as u64).to_le_bytes());
    prefix[8..16].copy_from_slice(&(log.len() as u64).to_le_bytes());
    prefix[16..].copy_from_slice(&rest_length.to_le_bytes());
    for part in [&prefix[..], &body, &log, &rest] {
        stream.write_all(part)?;
    }
    stream.flush()
}

/// A report being read, part by part, from a socket that may have only some of it.
#[derive(Default)]
pub(super) struct IncomingReport {
    prefix: Vec<u8>,
    /// Body, log and rest, once the prefix told their lengths.
    parts: Option<[Part; 3]>,
}

#[derive(Default)]
struct Part {
    bytes: Vec<u8>,
    length: usize,
}

impl IncomingReport {
    /// Reads what `stream` holds of this report, never past its end, and returns it once
    /// it is whole. A non-blocking socket that holds no more for now gives `WouldBlock`
    /// (call again when it is readable: what was read is kept); `UnexpectedEof` means the
    /// other side hung up.
    pub(super) fn read_from(
        &mut self,
        stream: &mut impl Read,
    ) -> std::io::Result<InvocationReport> {
        loop {
            let Some(parts) = &mut self.parts else {
                read_up_to(stream, &mut self.prefix, PREFIX)?;
                self.parts = Some(lengths(&self.prefix)?);
                continue;
            };
            let Some(part) = parts.iter_mut().find(|part| part.bytes.len() < part.length) else {
                return self.finish();
            };
            read_up_to(stream, &mut part.bytes, part.length)?;
        }
    }

    fn finish(&mut self) -> std::io::Result<InvocationReport> {
        let [body, log, rest] = self.parts.take().expect("a whole report has its parts");
        self.prefix.clear();
        let Report(mut report) = protocol::decode(&rest.bytes)?;
        report.log = log.bytes;
        if let Some(response) = report.response.as_mut() {
            response.body = body.bytes;
        }
        Ok(report)
    }
}

/// The three lengths, checked against what a report may hold before anything is allocated.
fn lengths(prefix: &[u8]) -> std::io::Result<[Part; 3]> {
    let word = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes[..range.len()].copy_from_slice(&prefix[range]);
        u64::from_le_bytes(bytes)
    };
    let (body, log, rest) = (word(0..8), word(8..16), word(16..20));
    let total = body.saturating_add(log).saturating_add(rest);
    if total > MAX_MESSAGE as u64 {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("a report of {total} bytes is larger than the {MAX_MESSAGE} bytes accepted"),
        ));
    }
    Ok([body, log, rest].map(|length| Part {
        bytes: Vec::with_capacity(length as usize),
        length: length as usize,
    }))
}

/// Reads into `buffer` until it holds `length` bytes (or the stream has no more for now:
/// its error). Reads in windows of at most 1 MiB, so that no more than that is zeroed
/// ahead of what arrives.
fn read_up_to(stream: &mut impl Read, buffer: &mut Vec<u8>, length: usize) -> std::io::Result<()> {
    const WINDOW: usize = 1 << 20;
    while buffer.len() < length {
        let filled = buffer.len();
        buffer.resize(length.min(filled + WINDOW), 0);
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => {
                buffer.truncate(filled);
                return Err(ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => buffer.truncate(filled + n),
            Err(e) => {
                buffer.truncate(filled);
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{Outcome, ReceivedResponse};

    fn report(body: &[u8], log: &[u8]) -> InvocationReport {
        InvocationReport {
            response: Some(ReceivedResponse {
                status: 200,
                headers: vec![("x".into(), b"y".to_vec())],
                body: body.to_vec(),
                body_error: None,
                from_runtime: false,
            }),
            log: log.to_vec(),
            outcome: Outcome::Completed,
            ..InvocationReport::not_run("")
        }
    }

    /// Hands out what it holds a few bytes at a time, then says it has no more for now.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len() - self.1);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn a_report_read_in_pieces_comes_back_whole() {
        let mut wire = Vec::new();
        send(&mut wire, report(b"the body", b"stdout :: a line\n")).unwrap();
        let mut stream = Trickle(wire, 0);
        let mut incoming = IncomingReport::default();
        let whole = incoming.read_from(&mut stream).unwrap();
        let response = whole.response.unwrap();
        assert_eq!(response.body, b"the body");
        assert_eq!(response.headers, [("x".to_owned(), b"y".to_vec())]);
        assert_eq!(whole.log, b"stdout :: a line\n");
    }

    #[test]
    fn a_report_larger_than_accepted_is_refused_from_its_prefix() {
        let mut prefix = (u64::MAX / 2).to_le_bytes().to_vec();
        prefix.extend_from_slice(&[0; 12]);
        let error = IncomingReport::default()
            .read_from(&mut prefix.as_slice())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
    }
}
