//! Fastly's HTTP caching semantics for a backend response ("HTTP caching semantics" in
//! Fastly's guide): whether it may be stored, and for how long.

use alloc::vec::Vec;

use crate::host::Headers;

/// What Fastly stores a response without freshness headers for.
pub const DEFAULT_TTL_NS: u64 = 120 * SECOND;
pub const SECOND: u64 = 1_000_000_000;

/// The statuses Fastly caches.
pub const CACHEABLE_STATUSES: [u16; 7] = [200, 203, 300, 301, 302, 404, 410];

/// What to do with a backend response (`fastly_http_cache::HttpStorageAction`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Insert = 0,
    Update = 1,
    DoNotStore = 2,
    RecordUncacheable = 3,
}

/// The values of every header named `name` (ASCII case-insensitive), in order.
pub fn values<'h>(headers: &'h Headers, name: &'h [u8]) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The directives of every `name` header, comma-separated: `(directive, argument)`, the
/// directive in lower case.
fn directives(headers: &Headers, name: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut found = Vec::new();
    for value in values(headers, name) {
        for part in value.split(|b| *b == b',') {
            let part = trim(part);
            if part.is_empty() {
                continue;
            }
            let (directive, argument) = match part.iter().position(|b| *b == b'=') {
                Some(eq) => (
                    trim(&part[..eq]),
                    Some(trim_quotes(trim(&part[eq + 1..])).to_vec()),
                ),
                None => (part, None),
            };
            found.push((directive.to_ascii_lowercase(), argument));
        }
    }
    found
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn trim_quotes(bytes: &[u8]) -> &[u8] {
    bytes
        .strip_prefix(b"\"")
        .and_then(|b| b.strip_suffix(b"\""))
        .unwrap_or(bytes)
}

fn seconds(argument: &Option<Vec<u8>>) -> Option<u64> {
    let digits = argument.as_deref()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value = 0u64;
    for d in digits {
        value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Some(value)
}

fn directive_seconds(list: &[(Vec<u8>, Option<Vec<u8>>)], name: &[u8]) -> Option<u64> {
    list.iter()
        .find(|(d, _)| d.as_slice() == name)
        .and_then(|(_, a)| seconds(a))
}

fn has(list: &[(Vec<u8>, Option<Vec<u8>>)], name: &[u8]) -> bool {
    list.iter().any(|(d, _)| d.as_slice() == name)
}

/// Whether and how a response is stored, before the guest's `after_send` has its say.
pub fn storage(status: u16, headers: &Headers) -> Storage {
    if !CACHEABLE_STATUSES.contains(&status) {
        return Storage::DoNotStore;
    }
    let surrogate = directives(headers, b"surrogate-control");
    let cache_control = directives(headers, b"cache-control");
    if has(&cache_control, b"private") {
        return Storage::RecordUncacheable;
    }
    if surrogate.is_empty() && has(&cache_control, b"no-store") {
        return Storage::RecordUncacheable;
    }
    if values(headers, b"vary").any(|v| trim(v) == b"*") {
        return Storage::RecordUncacheable;
    }
    Storage::Insert
}

/// The cache options a response's headers ask for.
pub struct Freshness {
    /// From the response's birth at the origin (so it includes `initial_age_ns`).
    pub max_age_ns: u64,
    pub initial_age_ns: u64,
    pub stale_while_revalidate_ns: u64,
    pub stale_if_error_ns: u64,
    /// Space-separated, lower case.
    pub vary_rule: Vec<u8>,
    pub length: Option<u64>,
}

/// `Surrogate-Control: max-age`, else `Cache-Control: s-maxage`, else `max-age`, else
/// `Expires` against `Date`, else [`DEFAULT_TTL_NS`]; stale-while-revalidate and
/// stale-if-error from `Surrogate-Control`, else `Cache-Control`; `Age` as the initial age.
pub fn freshness(headers: &Headers) -> Freshness {
    let surrogate = directives(headers, b"surrogate-control");
    let cache_control = directives(headers, b"cache-control");
    let expires = || {
        let expires = http_date(values(headers, b"expires").next()?)?;
        let date = values(headers, b"date")
            .next()
            .and_then(http_date)
            .unwrap_or(expires);
        Some(expires.saturating_sub(date))
    };
    let ttl_s = directive_seconds(&surrogate, b"max-age")
        .or_else(|| directive_seconds(&cache_control, b"s-maxage"))
        .or_else(|| directive_seconds(&cache_control, b"max-age"))
        .or_else(expires);
    let either = |name: &[u8]| {
        directive_seconds(&surrogate, name)
            .or_else(|| directive_seconds(&cache_control, name))
            .unwrap_or(0)
    };
    let age_s = values(headers, b"age")
        .next()
        .and_then(|v| seconds(&Some(trim(v).to_vec())))
        .unwrap_or(0);
    let mut vary_rule = Vec::new();
    for value in values(headers, b"vary") {
        for name in value.split(|b| *b == b',') {
            let name = trim(name);
            if name.is_empty() || name == b"*" {
                continue;
            }
            if !vary_rule.is_empty() {
                vary_rule.push(b' ');
            }
            vary_rule.extend(name.to_ascii_lowercase());
        }
    }
    let length = values(headers, b"content-length")
        .next()
        .and_then(|v| seconds(&Some(trim(v).to_vec())));
    Freshness {
        max_age_ns: ttl_s.map_or(DEFAULT_TTL_NS, |s| s.saturating_mul(SECOND)),
        initial_age_ns: age_s.saturating_mul(SECOND),
        stale_while_revalidate_ns: either(b"stale-while-revalidate").saturating_mul(SECOND),
        stale_if_error_ns: either(b"stale-if-error").saturating_mul(SECOND),
        vary_rule,
        length,
    }
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form
/// RFC 9110 requires senders to use.
pub fn http_date(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    let parts: Vec<&[u8]> = value
        .split(|b| *b == b' ')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 6 || parts[5] != b"GMT" {
        return None;
    }
    let number = |bytes: &[u8]| seconds(&Some(bytes.to_vec()));
    let day = number(parts[1])?;
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? as u64 + 1;
    let year = number(parts[3])?;
    let time: Vec<&[u8]> = parts[4].split(|b| *b == b':').collect();
    if time.len() != 3 {
        return None;
    }
    let (h, m, s) = (number(time[0])?, number(time[1])?, number(time[2])?);
    // Days from the civil date (Howard Hinnant's algorithm), for years after 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}
