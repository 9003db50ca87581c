//! What the shim keeps beside a cached body, as the core-cache entry's user metadata: the
//! response's status and headers, and the HTTP-cache facts the core cache does not keep
//! (its TTL apart from stale-if-error, stale-if-error itself, surrogate keys, vary rule).
//! Hit-for-pass entries are a marker with a TTL.

use alloc::vec::Vec;

use crate::host::Headers;

const MAGIC: &[u8] = b"edge-test-http-cache/1\n";

/// The prefix of the keys under which hit counts are kept (edge-test lists none of them).
pub const HITS_PREFIX: &[u8] = b"edge-test-http-cache-hits/";

#[derive(Clone, Default)]
pub struct Meta {
    pub hit_for_pass: bool,
    pub status: u16,
    pub headers: Headers,
    /// The freshness lifetime the guest stored, from the response's birth.
    pub max_age_ns: u64,
    pub stale_while_revalidate_ns: u64,
    pub stale_if_error_ns: u64,
    pub sensitive: bool,
    pub vary_rule: Vec<u8>,
    pub surrogate_keys: Vec<u8>,
    /// Names this stored object (not its key: a purge and a new insert make another), for
    /// its hit count.
    pub nonce: u64,
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(u8::from(self.hit_for_pass));
        out.push(u8::from(self.sensitive));
        out.extend(self.status.to_le_bytes());
        for n in [
            self.nonce,
            self.max_age_ns,
            self.stale_while_revalidate_ns,
            self.stale_if_error_ns,
        ] {
            out.extend(n.to_le_bytes());
        }
        put(&mut out, &self.vary_rule);
        put(&mut out, &self.surrogate_keys);
        out.extend((self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            put(&mut out, name);
            put(&mut out, value);
        }
        out
    }

    /// `None` for metadata the shim did not write (an entry the guest stored through the
    /// core cache under the same key).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let hit_for_pass = r.take(1)?[0] != 0;
        let sensitive = r.take(1)?[0] != 0;
        let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let nonce = r.u64()?;
        let max_age_ns = r.u64()?;
        let stale_while_revalidate_ns = r.u64()?;
        let stale_if_error_ns = r.u64()?;
        let vary_rule = r.bytes()?;
        let surrogate_keys = r.bytes()?;
        let count = r.u32()?;
        let mut headers = Vec::new();
        for _ in 0..count {
            headers.push((r.bytes()?, r.bytes()?));
        }
        Some(Self {
            hit_for_pass,
            status,
            headers,
            max_age_ns,
            stale_while_revalidate_ns,
            stale_if_error_ns,
            sensitive,
            vary_rule,
            surrogate_keys,
            nonce,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
}
