//! The sink viceroy writes every log-endpoint entry into, drained once per invocation.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use super::cache_ledger::CacheLedger;
use super::dynamic_backends::DynamicSlots;

/// viceroy formats each entry as `<endpoint> :: <message>\n`, one `write_all` per entry.
///
/// Bounded: a guest printing in a loop must not take the test process's memory with it.
/// Entries past the invocation's limit are counted and dropped whole (never cut in half).
#[derive(Clone, Default)]
pub(crate) struct LogSink {
    state: Arc<Mutex<SinkState>>,
}

#[derive(Default)]
struct SinkState {
    buffer: Vec<u8>,
    limit: usize,
    dropped: u64,
    /// Take the rewritten module's reports out of the guest's logs.
    dynamic: Option<DynamicSlots>,
    cache: Option<CacheLedger>,
}

/// One invocation's output, drained from the sink.
pub(crate) struct Drained {
    /// As viceroy wrote it: parsed into lines only by the test (`viceroy_compat::parse_log`), so that
    /// a forked worker sends one run of bytes rather than a message per line.
    pub bytes: Vec<u8>,
    /// Bytes written past the limit and dropped.
    pub dropped: u64,
}

impl LogSink {
    pub(crate) fn as_writer(&self) -> Arc<Mutex<dyn Write + Send>> {
        Arc::new(Mutex::new(self.clone()))
    }

    /// From now on, the rewritten module's reports (`module_rewrite`) go to `slots` and
    /// `ledger`, not to the logs.
    pub(crate) fn take_reports(&self, slots: DynamicSlots, ledger: CacheLedger) {
        let mut state = self.lock();
        state.dynamic = Some(slots);
        state.cache = Some(ledger);
    }

    /// Starts an invocation that may write `limit` bytes.
    pub(crate) fn begin(&self, limit: usize) {
        let mut state = self.lock();
        state.buffer.clear();
        state.dropped = 0;
        state.limit = limit;
    }

    /// Everything written since the last drain. One invocation runs at a time per session,
    /// so what is drained after a guest finished is exactly that guest's output.
    pub(crate) fn drain(&self) -> Drained {
        let mut state = self.lock();
        let bytes = std::mem::take(&mut state.buffer);
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);
        Drained { bytes, dropped }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        crate::sync::lock(&self.state)
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.lock();
        if state.dynamic.as_ref().is_some_and(|s| s.take_report(buf))
            || state.cache.as_ref().is_some_and(|l| l.take_report(buf))
        {
            return Ok(buf.len());
        }
        if state.buffer.len() + buf.len() <= state.limit {
            state.buffer.extend_from_slice(buf);
        } else {
            state.dropped += buf.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_counted_and_dropped_whole() {
        let sink = LogSink::default();
        sink.begin(40);
        let writer = sink.as_writer();
        for i in 0..5 {
            writer
                .lock()
                .unwrap()
                .write_all(format!("stdout :: line {i}\n").as_bytes())
                .unwrap();
        }
        let drained = sink.drain();
        let lines = super::super::viceroy_compat::parse_log(&drained.bytes);
        let kept: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(kept, ["line 0", "line 1"], "only whole entries are kept");
        assert_eq!(drained.dropped, 3 * 17);

        sink.begin(40);
        assert_eq!(
            sink.drain().dropped,
            0,
            "each invocation starts its own count"
        );
    }
}
