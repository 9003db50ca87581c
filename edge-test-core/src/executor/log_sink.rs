//! The sink viceroy writes every log-endpoint entry into, drained once per invocation.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use super::LogLine;

/// viceroy formats each entry as `<endpoint> :: <message>\n`, one `write_all` per entry.
#[derive(Clone, Default)]
pub(super) struct LogSink {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl LogSink {
    pub(super) fn as_writer(&self) -> Arc<Mutex<dyn Write + Send>> {
        Arc::new(Mutex::new(self.clone()))
    }

    /// Everything written since the last drain. One invocation runs at a time per session,
    /// so what is drained after a guest finished is exactly that guest's output.
    pub(super) fn drain(&self) -> Vec<LogLine> {
        let bytes = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        parse_entries(&bytes)
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One line per entry for log endpoints (each `write` is one log message, as on Fastly).
/// stdout and stderr are byte streams, so their entries are split into lines instead: a
/// Rust panic arrives as one write, `"\nthread 'main' panicked at ...:\n<message>"`.
fn parse_entries(bytes: &[u8]) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for entry in String::from_utf8_lossy(bytes).lines() {
        let (endpoint, message) = entry.split_once(" :: ").unwrap_or(("", entry));
        let line = |message: &str| LogLine {
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        };
        if endpoint == "stdout" || endpoint == "stderr" {
            // viceroy escapes a message's inner newlines as `\n`.
            lines.extend(message.split("\\n").filter(|l| !l.is_empty()).map(line));
        } else {
            lines.push(line(message));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_splits_entries_by_endpoint_and_empties_the_sink() {
        let sink = LogSink::default();
        let writer = sink.as_writer();
        writer
            .lock()
            .unwrap()
            .write_all(b"access :: GET / 200\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"stderr :: a :: b\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"stderr :: \\nthread 'main' panicked at src/main.rs:1:1:\\nboom\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"audit :: kept \\n as written\n")
            .unwrap();

        let lines = sink.drain();
        assert_eq!(
            lines,
            vec![
                LogLine {
                    endpoint: "access".into(),
                    message: "GET / 200".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "a :: b".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "thread 'main' panicked at src/main.rs:1:1:".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "boom".into()
                },
                LogLine {
                    endpoint: "audit".into(),
                    message: "kept \\n as written".into()
                },
            ]
        );
        assert!(
            sink.drain().is_empty(),
            "a drained sink starts the next invocation empty"
        );
    }
}
