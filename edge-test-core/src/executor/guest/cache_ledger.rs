//! Which core-cache keys the guest (and the test) used, and what each write said about
//! its entry: what viceroy-lib 0.22's `Cache` cannot tell (it cannot list its keys, nor
//! return an entry's surrogate keys or stale-while-revalidate period).
//!
//! The rewritten module reports each lookup and write after making it
//! (`module_rewrite::CACHE_CALLS`, on the log endpoint `CACHE_ENDPOINT`); the log sink hands
//! those entries here. Transactional writes name a cache handle, not a key, so the ledger
//! follows handles from the lookup (or the busy handle's wait) that returned them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::module_rewrite::{CACHE_ENDPOINT, decode_hex as hex};

/// What the ledger knows of one key's entry, from the last write to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub surrogate_keys: Vec<String>,
    pub stale_while_revalidate: Duration,
}

#[derive(Clone, Default)]
pub(crate) struct CacheLedger {
    state: Arc<Mutex<LedgerState>>,
}

#[derive(Default)]
struct LedgerState {
    /// Every key looked up or written, with what its last write said (if one was seen).
    keys: BTreeMap<Vec<u8>, Option<Written>>,
    /// The invocation's cache handles and busy handles, by the key they were looked up with.
    handles: HashMap<u32, Vec<u8>>,
    busy: HashMap<u32, Vec<u8>>,
}

impl CacheLedger {
    /// Handles are the sandbox's: each invocation starts with none.
    pub(crate) fn begin_invocation(&self) {
        let mut state = crate::sync::lock(&self.state);
        state.handles.clear();
        state.busy.clear();
    }

    /// A write the test made (`CacheSeed`).
    pub(crate) fn seeded(&self, key: &[u8], written: Written) {
        crate::sync::lock(&self.state)
            .keys
            .insert(key.to_vec(), Some(written));
    }

    /// Every key the guest or the test used, and what the last write said of it.
    pub(crate) fn keys(&self) -> Vec<(Vec<u8>, Option<Written>)> {
        crate::sync::lock(&self.state)
            .keys
            .iter()
            .map(|(key, written)| (key.clone(), written.clone()))
            .collect()
    }

    /// What the last write to `key` said.
    pub(crate) fn written(&self, key: &[u8]) -> Option<Written> {
        crate::sync::lock(&self.state)
            .keys
            .get(key)
            .cloned()
            .flatten()
    }

    /// Takes a log entry that is a cache-call report (returning `true`), or leaves it.
    pub(crate) fn take_report(&self, entry: &[u8]) -> bool {
        let Some(report) = entry
            .strip_prefix(CACHE_ENDPOINT.as_bytes())
            .and_then(|rest| rest.strip_prefix(b" :: "))
        else {
            return false;
        };
        let report = String::from_utf8_lossy(report);
        // A report that does not parse is dropped: the listing then lacks one key, which
        // a lookup by key still finds.
        let _ = self.record(report.trim_end_matches(['\n', '\r']));
        true
    }

    fn record(&self, report: &str) -> Option<()> {
        let mut fields = report.split(' ');
        let op = fields.next()?;
        let fields: Vec<Vec<u8>> = fields.map(hex).collect::<Option<_>>()?;
        let status = word(fields.first()?)?;
        if status != 0 {
            return Some(());
        }
        let mut state = crate::sync::lock(&self.state);
        match (op, &fields[1..]) {
            ("lookup" | "transaction_lookup", [key, handle]) => {
                state.handles.insert(word(handle)?, key.clone());
                state.keys.entry(key.clone()).or_default();
            }
            ("transaction_lookup_async", [key, busy]) => {
                state.busy.insert(word(busy)?, key.clone());
                state.keys.entry(key.clone()).or_default();
            }
            ("cache_busy_handle_wait", [busy, handle]) => {
                let key = state.busy.get(&word(busy)?)?.clone();
                state.handles.insert(word(handle)?, key);
            }
            ("insert", [key, mask, options, surrogate_keys]) => {
                let written = written(word(mask)?, options, surrogate_keys)?;
                state.keys.insert(key.clone(), Some(written));
            }
            (
                "transaction_insert" | "transaction_update",
                [handle, mask, options, surrogate_keys],
            )
            | ("transaction_insert_and_stream_back", [handle, mask, options, surrogate_keys, _]) => {
                let key = state.handles.get(&word(handle)?)?.clone();
                let written = written(word(mask)?, options, surrogate_keys)?;
                state.keys.insert(key, Some(written));
            }
            _ => return None,
        }
        Some(())
    }
}

/// What a write's `CacheWriteOptions` (wasm32) say: stale-while-revalidate at 32 when bit
/// 4 is set; the surrogate keys, space-separated, when bit 5 is.
fn written(mask: u32, options: &[u8], surrogate_keys: &[u8]) -> Option<Written> {
    let swr = if mask & (1 << 4) != 0 {
        u64::from_le_bytes(options.get(32..40)?.try_into().ok()?)
    } else {
        0
    };
    Some(Written {
        surrogate_keys: String::from_utf8_lossy(surrogate_keys)
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        stale_while_revalidate: Duration::from_nanos(swr),
    })
}

fn word(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn report(op: &str, fields: &[&[u8]]) -> Vec<u8> {
        let mut text = format!("{CACHE_ENDPOINT} :: {op} {}", hex_of(&0u32.to_le_bytes()));
        for field in fields {
            text.push(' ');
            text.push_str(&hex_of(field));
        }
        text.into_bytes()
    }

    #[test]
    fn a_transactional_write_is_followed_from_its_lookup_to_its_key() {
        let ledger = CacheLedger::default();
        let mut options = [0u8; 80];
        options[32..40].copy_from_slice(&5_000_000_000u64.to_le_bytes());
        let mask = ((1u32 << 4) | (1 << 5)).to_le_bytes();
        assert!(ledger.take_report(&report(
            "transaction_lookup_async",
            &[b"todo:1", &7u32.to_le_bytes()]
        )));
        assert!(ledger.take_report(&report(
            "cache_busy_handle_wait",
            &[&7u32.to_le_bytes(), &3u32.to_le_bytes()]
        )));
        assert!(ledger.take_report(&report(
            "transaction_insert",
            &[&3u32.to_le_bytes(), &mask, &options, b"todos todo-1"]
        )));
        assert_eq!(
            ledger.written(b"todo:1"),
            Some(Written {
                surrogate_keys: vec!["todos".into(), "todo-1".into()],
                stale_while_revalidate: Duration::from_secs(5),
            })
        );
        assert!(
            !ledger.take_report(b"access :: GET / 200"),
            "other entries stay logs"
        );
    }

    #[test]
    fn a_lookup_lists_a_key_without_saying_what_it_holds() {
        let ledger = CacheLedger::default();
        ledger.take_report(&report("lookup", &[b"k", &1u32.to_le_bytes()]));
        assert_eq!(ledger.keys(), [(b"k".to_vec(), None)]);
    }
}
